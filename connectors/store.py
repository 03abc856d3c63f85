"""The built-in connector: acts on the store's own tables (engine/schema.py).

- email, notify, webhook (any `OutboxMessage`) -> a row in `outbox`
  (transactional outbox: a dispatcher or a later SMTP/Slack/HTTP connector
  sends pending rows), with the idempotency key in its UNIQUE column;
- tasks -> `tasks` (UNIQUE idempotency key);
- opportunities -> `opportunities` (UNIQUE idempotency key) with their first
  `stage_history` row;
- stage changes -> `opportunities.stage` + a `stage_history` row with time
  and actor;
- field changes and trials -> the account row / the audit log;
- any other kind -> the audit log (`<kind>.request`), for a person or a
  later connector to carry out.

Every action writes an `audit_log` row whose `subject` is the idempotency
key. For stage changes, field changes and trials, which have no UNIQUE key
column of their own, that audit row is the idempotency record (read and
written in the same transaction as the change; Temporal never runs two
attempts of one activity at once).

Rows are dated with the step's workflow time (`requested_at`), not the
wall clock, so simulated days land on the days they simulate.
Blocking database calls run in a thread.

The one connector that writes engine tables itself (ARCHITECTURE: the
store connector may import `engine`): each action is one transaction of
lookups and inserts keyed by its idempotency key, written here; what is
shared with other writers (an opportunity's stage move, also made by the
simulated CRM) is an engine/actions.py function taking this transaction.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from connectors import base as cb
from dsl import pipeline
from engine import actions, changes, schema
from engine.store import Store, insert_ignore

T = TypeVar("T")

OUTBOX = schema.OutboxMessage.__table__
TASKS = schema.Task.__table__
OPPS = schema.Opportunity.__table__
STAGES = schema.StageChange.__table__
AUDIT = schema.AuditEntry.__table__
CONTACTS = schema.Contact.__table__


class StoreConnector:
    """Every capability, on the store. `initial_stage`: where a new opportunity starts
    (a play opens a deal when its trigger fired: the CSQL clock starts there)."""

    def __init__(self, store: Store, *, initial_stage: str = pipeline.FIRST) -> None:
        pipeline.check_move(None, initial_stage)
        self.store = store
        self.initial_stage = initial_stage

    # ------------------------------------------------------------ plumbing
    async def _tx(self, work: Callable[[Connection], T]) -> T:
        def run() -> T:
            try:
                with self.store.begin() as conn:
                    return work(conn)
            except sa.exc.OperationalError as exc:  # locked, connection lost, server gone
                raise cb.TransientError(f"store: {exc.orig}") from exc
            except sa.exc.IntegrityError as exc:  # not our key (that one is ON CONFLICT DO NOTHING)
                raise cb.PermanentError(f"store: {exc.orig}") from exc

        return await asyncio.to_thread(run)

    @staticmethod
    def _audit(conn: Connection, action: cb.Action, what: str, detail: dict[str, Any]) -> None:
        conn.execute(AUDIT.insert().values(at=action.requested_at, actor=action.actor, action=what,
                                           subject=action.key, detail=_jsonable(detail)))

    @staticmethod
    def _done(conn: Connection, key: str, what: str) -> dict[str, Any] | None:
        row = conn.execute(sa.select(AUDIT.c.detail).where(AUDIT.c.subject == key, AUDIT.c.action == what)).first()
        return None if row is None else (row[0] or {})

    def _outbox(self, action: cb.Action, *, channel: str, recipient: str, subject: str | None, body: str,
                status: str = "pending") -> Callable[[Connection], tuple[int, bool]]:
        def work(conn: Connection) -> tuple[int, bool]:
            existing = conn.execute(sa.select(OUTBOX.c.id).where(OUTBOX.c.idempotency_key == action.key)).first()
            if existing is not None:
                return int(existing[0]), True
            insert_ignore(conn, OUTBOX, [{
                "idempotency_key": action.key, "channel": channel, "recipient": recipient, "subject": subject,
                "body": body, "status": status, "account_id": action.account_id, "play": action.play,
                "created_at": action.requested_at, "attempts": 0,
            }], ["idempotency_key"])
            row_id = conn.execute(sa.select(OUTBOX.c.id).where(OUTBOX.c.idempotency_key == action.key)).scalar_one()
            self._audit(conn, action, f"outbox.{channel}", {"outbox_id": row_id, "recipient": recipient, "step": action.step})
            return int(row_id), False

        return work

    async def act(self, action: cb.Action) -> cb.Result:
        """Any step kind's action: its own table where it has one, else the outbox
        (messages) or the audit log (a request recorded for a person or a later connector)."""
        match action:
            case cb.EmailMessage():
                return await self.send_email(action)
            case cb.OutboxMessage():
                return await self.to_outbox(action)
            case cb.NewTask():
                return await self.create_task(action)
            case cb.NewOpportunity():
                return await self.create_opportunity(action)
            case cb.StageChange():
                return await self.change_stage(action)
            case cb.FieldChange():
                return await self.set_field(action)
            case cb.TrialGrant():
                return await self.enable_trial(action)
            case _:
                return await self.record(action)

    # ------------------------------------------------------------ outbox
    async def send_email(self, message: cb.EmailMessage) -> cb.EmailResult:
        def work(conn: Connection) -> tuple[int, bool]:
            # The store knows who unsubscribed or bounced: such a message is recorded, never sent.
            unsub = conn.execute(sa.select(CONTACTS.c.id).where(
                CONTACTS.c.email == message.to,
                sa.or_(CONTACTS.c.unsubscribed_at.is_not(None), CONTACTS.c.bounced_at.is_not(None)))).first()
            return self._outbox(message, channel="email", recipient=message.to, subject=message.subject,
                                body=message.body, status="cancelled" if unsub else "pending")(conn)

        row_id, dup = await self._tx(work)
        return cb.EmailResult(key=message.key, duplicate=dup, external_id=str(row_id))

    async def to_outbox(self, message: cb.OutboxMessage) -> cb.Result:
        """A message for a dispatcher to send: channel = its step kind (notify, webhook, ...)."""
        recipient, subject, body = message.outbox()
        row_id, dup = await self._tx(self._outbox(message, channel=message.kind, recipient=recipient,
                                                  subject=subject, body=body))
        return message.result(key=message.key, duplicate=dup, external_id=str(row_id))

    # ------------------------------------------------------------ tasks
    async def create_task(self, task: cb.NewTask) -> cb.TaskResult:
        def work(conn: Connection) -> tuple[int, bool]:
            existing = conn.execute(sa.select(TASKS.c.id).where(TASKS.c.idempotency_key == task.key)).first()
            if existing is not None:
                return int(existing[0]), True
            insert_ignore(conn, TASKS, [{
                "idempotency_key": task.key, "account_id": task.account_id, "play": task.play,
                "assignee": task.assignee, "title": task.title, "due": task.due_at, "status": "open",
                "created_at": task.requested_at,
            }], ["idempotency_key"])
            row_id = conn.execute(sa.select(TASKS.c.id).where(TASKS.c.idempotency_key == task.key)).scalar_one()
            self._audit(conn, task, "task.create", {"task_id": row_id, "assignee": task.assignee})
            return int(row_id), False

        row_id, dup = await self._tx(work)
        return cb.TaskResult(key=task.key, duplicate=dup, external_id=str(row_id))

    # ------------------------------------------------------------ pipeline
    async def create_opportunity(self, opportunity: cb.NewOpportunity) -> cb.OpportunityResult:
        def work(conn: Connection) -> tuple[str, bool]:
            existing = conn.execute(sa.select(OPPS.c.id).where(OPPS.c.idempotency_key == opportunity.key)).first()
            if existing is not None:
                return str(existing[0]), True
            # Derived from the key, so a retry that lost its answer recreates the same id.
            opp_id = f"opp-{uuid.uuid5(uuid.NAMESPACE_URL, opportunity.key).hex[:16]}"
            self._new_opportunity(conn, opportunity, opp_id, opportunity.title, self.initial_stage,
                                  opportunity.amount, opportunity.owner)
            return opp_id, False

        opp_id, dup = await self._tx(work)
        return cb.OpportunityResult(key=opportunity.key, duplicate=dup, external_id=opp_id)

    def _new_opportunity(self, conn: Connection, action: cb.Action, opp_id: str, title: str, stage: str,
                         amount: float | None, owner: str | None) -> None:
        insert_ignore(conn, OPPS, [{
            "id": opp_id, "account_id": action.account_id, "play": action.play, "title": title, "stage": stage,
            "amount": amount, "owner": owner, "idempotency_key": action.key, "created_at": action.requested_at,
            "updated_at": action.requested_at,
        }], ["idempotency_key"])
        conn.execute(STAGES.insert().values(opportunity_id=opp_id, from_stage=None, stage=stage,
                                            at=action.requested_at, actor=action.actor))
        self._audit(conn, action, "opportunity.create", {"opportunity_id": opp_id, "stage": stage, "amount": amount})

    async def change_stage(self, change: cb.StageChange) -> cb.StageResult:
        """The play's open deal moves to the step's stage. A play only moves a deal forward:
        one a person already moved past that stage stays where it is (recorded, not moved)."""
        try:
            target = pipeline.stage(change.stage)
        except pipeline.PipelineError as exc:
            raise cb.PermanentError(f"stage step: {exc}") from exc

        def work(conn: Connection) -> cb.StageResult:
            done = self._done(conn, change.key, "opportunity.stage")
            if done is not None:
                return cb.StageResult(key=change.key, duplicate=True, external_id=done.get("opportunity_id"),
                                      previous=done.get("from"), stage=done.get("to") or change.stage)
            # The play's open opportunity for this account: the latest one it created.
            row = conn.execute(
                sa.select(OPPS.c.id, OPPS.c.stage)
                .where(OPPS.c.account_id == change.account_id, OPPS.c.play == change.play, OPPS.c.closed_at.is_(None))
                .order_by(OPPS.c.created_at.desc(), OPPS.c.id.desc())
            ).first()
            opp_id: str | None
            if row is None and target.closed:
                opp_id, previous, now = None, None, change.stage  # no deal to close: recorded only
            elif row is None:
                # No deal yet: a stage step opens one at that stage (history starts there).
                opp_id = f"opp-{uuid.uuid5(uuid.NAMESPACE_URL, change.key).hex[:16]}"
                self._new_opportunity(conn, change, opp_id, change.play, change.stage, None, None)
                previous, now = None, change.stage
            else:
                opp_id, previous = str(row[0]), row[1]
                here = pipeline.BY_NAME.get(previous)
                if here is not None and here.order >= target.order:
                    now = previous  # already there or past it
                else:
                    now = change.stage
                    actions.move_stage(conn, opp_id, previous, now, change.requested_at, change.actor)
            self._audit(conn, change, "opportunity.stage", {"opportunity_id": opp_id, "from": previous,
                                                             "to": now, "asked": change.stage})
            return cb.StageResult(key=change.key, external_id=opp_id, previous=previous, stage=now)

        return await self._tx(work)

    # ------------------------------------------------------------ account and product
    async def set_field(self, change: cb.FieldChange) -> cb.FieldResult:
        entity, _, column = change.field.partition(".")
        if entity != "account" or not column:
            raise cb.PermanentError(f"can only set account fields, not {change.field}")
        accounts = self.store.table("account")
        if column not in accounts.c:
            raise cb.PermanentError(f"account has no column {column!r} (declare the field, then sync the store)")

        def work(conn: Connection) -> cb.FieldResult:
            done = self._done(conn, change.key, "account.set")
            if done is not None:
                return cb.FieldResult(key=change.key, duplicate=True, previous=done.get("from"))
            previous = conn.execute(sa.select(accounts.c[column]).where(accounts.c.id == change.account_id)).scalar()
            conn.execute(accounts.update().where(accounts.c.id == change.account_id).values({column: change.value}))
            changes.mark(conn, [change.account_id])
            self._audit(conn, change, "account.set", {"field": change.field, "from": previous, "to": change.value})
            return cb.FieldResult(key=change.key, previous=previous)

        return await self._tx(work)

    async def enable_trial(self, grant: cb.TrialGrant) -> cb.TrialResult:
        # No product API in the embedded setup: the grant is recorded for a
        # product connector (or a person) to apply.
        def work(conn: Connection) -> cb.TrialResult:
            if self._done(conn, grant.key, "trial.enable") is not None:
                return cb.TrialResult(key=grant.key, duplicate=True)
            self._audit(conn, grant, "trial.enable", {"feature": grant.feature, "ends_at": grant.ends_at})
            return cb.TrialResult(key=grant.key)

        return await self._tx(work)


    async def record(self, action: cb.Action) -> cb.Result:
        """A kind with no table of its own: the request is kept in the audit log, once per key."""
        what = f"{action.kind}.request"

        def work(conn: Connection) -> cb.Result:
            if self._done(conn, action.key, what) is not None:
                return action.result(key=action.key, duplicate=True)
            self._audit(conn, action, what, action.model_dump(exclude=set(cb.Action.model_fields)))
            return action.result(key=action.key)

        return await self._tx(work)


def account_field(store: Store, field: str) -> Callable[[str], Awaitable[Any]]:
    """One account field's value by account id, for a connector that needs it (HubSpot's company id).

    The field is read by name, declared or not, so the connector needs no catalog;
    a field the store has no column for is a PermanentError naming it.
    """
    accounts = sa.table(schema.ENTITY_TABLES["account"], sa.column("id"), sa.column(field))
    query = sa.select(accounts.c[field]).where(accounts.c.id == sa.bindparam("account_id"))

    def read(account_id: str) -> Any:
        try:
            with store.connect() as conn:
                return conn.execute(query, {"account_id": account_id}).scalar()
        except sa.exc.OperationalError as exc:
            if "no such column" in str(exc.orig) or "does not exist" in str(exc.orig):
                raise cb.PermanentError(f"the store's accounts have no field {field!r} "
                                        "(declare it in an `entity account` and import it)") from exc
            raise cb.TransientError(f"store: {exc.orig}") from exc
        except sa.exc.ProgrammingError as exc:  # PostgreSQL: an undefined column
            raise cb.PermanentError(f"the store's accounts have no field {field!r} "
                                    "(declare it in an `entity account` and import it)") from exc

    async def value(account_id: str) -> Any:
        return await asyncio.to_thread(read, account_id)

    return value


def _jsonable(detail: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(detail, default=str))
