"""The baseline of benchmarks/workflow_bench.py: the bench play's 5 steps written by hand.

What an engineer would write without the interpreter: the same five
activities (PlayActivities: email, task, email, notify, email) with the same
requests, timeouts and retry policy, in a fixed order, and nothing else (no
schedule, no exit checks, no decision log, no search attributes).
"""

from __future__ import annotations

from pydantic import BaseModel
from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from dsl import nodes as n
    from dsl.plan import PlanTemplate
    from workflows.activities import PlayActivities
    from workflows.model import StepContext, StepRequest
    from workflows.play import ACT_RETRY, ACT_TIMEOUT


class HandInput(BaseModel):
    play: str
    plan_hash: str
    account_id: str
    enrollment: str
    hello: PlanTemplate
    followup: PlanTemplate


@workflow.defn(name="HandWrittenPlay")
class HandWrittenPlay:
    @workflow.run
    async def run(self, inp: HandInput) -> int:
        def ctx(label: str) -> StepContext:
            return StepContext(key=f"play:{inp.play}:{inp.account_id}:{inp.plan_hash}:{inp.enrollment}:{label}",
                               play=inp.play, plan_hash=inp.plan_hash, account_id=inp.account_id, step=label,
                               requested_at=workflow.now())

        admin, csm = n.Ref(path=["account", "admin"]), n.Ref(path=["account", "csm"])
        opts = {"start_to_close_timeout": ACT_TIMEOUT, "retry_policy": ACT_RETRY}
        def email(label: str, template: PlanTemplate) -> StepRequest:
            return StepRequest(ctx=ctx(label), action=n.EmailStep(to=admin, template=template.name),
                               templates={template.name: template})

        act = PlayActivities.act
        await workflow.execute_activity_method(act, email("hello", inp.hello), **opts)
        await workflow.execute_activity_method(act, StepRequest(ctx=ctx("call"), action=n.TaskStep(assignee=csm, title="Call {{ name }}")), **opts)
        await workflow.execute_activity_method(act, email("followup", inp.followup), **opts)
        await workflow.execute_activity_method(act, StepRequest(ctx=ctx("ping"), action=n.NotifyStep(channel="#cs", message="{{ name }} in play")), **opts)
        await workflow.execute_activity_method(act, email("last", inp.hello), **opts)
        return 5


__all__ = ["HandInput", "HandWrittenPlay"]
