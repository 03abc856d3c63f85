"""HubSpot CRM over its REST API (v3 objects, private-app token): tasks, deals, stage moves, notes.

| step kind       | in HubSpot                                                                 |
|-----------------|----------------------------------------------------------------------------|
| `task`          | a task (`/crm/v3/objects/tasks`), owner from `owners`, due = `hs_timestamp` |
| `opportunity`   | a deal in `pipeline` at the stage `new_deal_stage` maps to                 |
| `stage`         | the play's open deal for the account moved (`PATCH dealstage`); none: a deal opened at that stage |
| any other kind  | a note on the company saying what the play asks (`set`, `trial`): for a person to carry out |
| messages        | refused: email, notify and webhook have connectors of their own            |

Every object is associated with the account's company (inline `associations`
on create; the company id is the account field `company_field`).

HubSpot has no idempotency key on create, so ours is stored on the object
in a custom property (`idempotency_property`, default
`playbook_idempotency_key`, which the portal must have on tasks, deals and
notes: docs/connectors.md says how to create it) and looked up before
creating (deals by the key itself, tasks and notes through search): a retry
whose first answer was lost finds the object and returns it as a duplicate
instead of making a second one.

Failures: 429 -> TransientError with Retry-After (or HubSpot's own policy:
ten seconds for the rolling limits, an hour for the daily one), 5xx, 408,
timeouts and dropped connections -> TransientError; 401/403 ->
PermanentError naming the token setting (never the token); other 4xx ->
PermanentError with HubSpot's message.
"""

from __future__ import annotations

import datetime as dt
import html
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Self
from urllib.parse import quote

import httpx
import pydantic_settings
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from connectors import base as cb
from connectors.http import retry_after
from dsl import pipeline as csql  # the built-in stages (`pipeline` is a setting here)
from dsl.suggest import closest
from engine.settings import FileBackedSettings, SettingsError, setting_problems, settings_file, table_source

ENV_PREFIX = "PLAYBOOK_HUBSPOT_"
TABLE = "hubspot"

# HubSpot-defined association types (from the object to the company).
TASK_TO_COMPANY = 192
NOTE_TO_COMPANY = 190
DEAL_TO_COMPANY = 5  # the deal's primary company

# The built-in CSQL stages (dsl/pipeline.py) onto HubSpot's default sales
# pipeline ("default"), one to one in order, so a HubSpot stage id always
# means one stage of ours. A stand-in: a portal that runs the CSQL process
# makes a pipeline with these seven stages and maps them in [hubspot.stages].
DEFAULT_STAGES: dict[str, str] = {
    csql.TRIGGER_FIRED: "appointmentscheduled",
    csql.CSQL_CREATED: "qualifiedtobuy",
    csql.QUALIFIED: "presentationscheduled",
    csql.PROPOSAL_SENT: "decisionmakerboughtin",
    csql.NEGOTIATION: "contractsent",
    csql.CLOSED_WON: "closedwon",
    csql.CLOSED_LOST: "closedlost",
}

# Deal stages in HubSpot carry a win probability; 1.0 and 0.0 are its won and lost.
PROBABILITY: dict[str, str] = {
    csql.TRIGGER_FIRED: "0.1", csql.CSQL_CREATED: "0.2", csql.QUALIFIED: "0.4", csql.PROPOSAL_SENT: "0.6",
    csql.NEGOTIATION: "0.8", csql.CLOSED_WON: "1.0", csql.CLOSED_LOST: "0.0",
}

# Without a Retry-After header: HubSpot's burst limits roll over ten seconds,
# its daily limit resets at the portal's midnight (whose zone we do not know).
BURST_BACKOFF = 10.0
DAILY_BACKOFF = 3600.0
SEARCH_PAGE = 100  # deals of one company searched for the play's open deal, a page at a time,
SEARCH_PAGES = 10  # up to 1,000 deals Playbook made on one company


class HubSpotSettingsError(SettingsError):
    """A [hubspot] setting is missing or malformed (never shown with its value)."""


class HubSpotSettings(FileBackedSettings):
    """`PLAYBOOK_HUBSPOT_<NAME>` or `<name>` in `[hubspot]` of the settings file (dicts as JSON in the environment)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)
    file_source = table_source(TABLE)

    base_url: str = "https://api.hubapi.com"
    token: SecretStr | None = None  # a private app's access token
    timeout: float = Field(default=10.0, gt=0)  # seconds, per request
    company_field: str | None = "hubspot_company_id"  # the account field holding the company id; "id": the account id
    idempotency_property: str = "playbook_idempotency_key"
    pipeline: str = "default"
    stages: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_STAGES))  # our stage -> dealstage id
    new_deal_stage: str = csql.CSQL_CREATED  # where an `opportunity` step's deal starts (one of `stages`)
    owners: dict[str, str] = Field(default_factory=dict)  # our user id or email -> HubSpot owner id
    require_owner: bool = True  # a task whose assignee has no HubSpot owner fails instead of being unowned
    verify_pipeline: bool = True  # the first deal step reads the pipeline and checks every mapped stage id
    unique_deal_key: bool = True  # deals' key property has unique values: deals are read by key, not searched

    @field_validator("company_field")
    @classmethod
    def _empty_is_none(cls, value: str | None) -> str | None:
        return value.strip() or None if value is not None else None

    @field_validator("stages")
    @classmethod
    def _our_stages_onto_distinct_ids(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if name not in csql.BY_NAME:
                near = closest(name, csql.NAMES)
                hint = f"did you mean '{near}'? " if near else ""
                raise ValueError(f"{name!r} is no pipeline stage; {hint}stages: {', '.join(csql.NAMES)}")
        seen: dict[str, str] = {}
        for name, stage_id in value.items():
            if stage_id in seen:
                # A HubSpot stage id must say one stage of ours, for HubSpot's own stage changes too.
                raise ValueError(f"{seen[stage_id]!r} and {name!r} both map onto {stage_id!r}: one id per stage")
            seen[stage_id] = name
        return value

    @model_validator(mode="after")
    def _deals_start_at_a_mapped_open_stage(self) -> Self:
        start = csql.BY_NAME.get(self.new_deal_stage)
        if start is None or start.closed or self.new_deal_stage not in self.stages:
            raise ValueError(f"new_deal_stage {self.new_deal_stage!r} must be an open stage of `stages` "
                             f"({', '.join(n for n in self.stages if not csql.BY_NAME[n].closed)})")
        return self

    def stage_of(self, stage_id: str | None) -> str | None:
        """Our stage for a HubSpot dealstage id (None: an id `stages` does not map)."""
        return next((name for name, mapped in self.stages.items() if mapped == stage_id), None)

    @field_validator("base_url")
    @classmethod
    def _no_trailing_slash(cls, value: str) -> str:
        return value.rstrip("/")

    def where(self, name: str) -> str:
        """Where a setting is set, for errors: `PLAYBOOK_HUBSPOT_TOKEN or token in [hubspot] of FILE`."""
        path, _ = settings_file()
        return f"{ENV_PREFIX}{name.upper()} or `{name}` in [{TABLE}] of {path}"


def load_hubspot_settings(**overrides: Any) -> HubSpotSettings:
    """The HubSpot settings now: `overrides`, the environment, the settings file, the defaults."""
    try:
        return HubSpotSettings(**overrides)
    except pydantic_settings.SettingsError as exc:  # a dict setting whose environment value is no JSON
        field = re.search(r'field "(\w+)"', str(exc))
        name = field.group(1) if field else "?"
        raise HubSpotSettingsError(f"{ENV_PREFIX}{name.upper()}: not valid JSON (write a JSON object, "
                                   f'{{"Qualified": "qualifiedtobuy"}}), or set `{name}` in [{TABLE}] '
                                   f"of {settings_file()[0]}") from None
    except ValidationError as exc:
        raise HubSpotSettingsError(setting_problems(exc, ENV_PREFIX, TABLE)) from None


CompanyLookup = Callable[[str], Awaitable[Any]]  # account id -> the value of its company field


class HubSpotConnector:
    """Tasks, deals, stage moves and notes in one HubSpot portal; idempotent by a stored key.

    `company_of` reads the account's `company_field` (connectors/store.py
    `account_field` over the store); not needed when the field is `id`.
    """

    def __init__(self, settings: HubSpotSettings, *, company_of: CompanyLookup | None = None,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.settings = settings
        self.company_of = company_of
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._pipeline_checked = False

    # ------------------------------------------------------------ plumbing
    def _http(self) -> httpx.AsyncClient:
        if self.settings.token is None or not self.settings.token.get_secret_value().strip():
            raise cb.PermanentError(f"HubSpot needs a private-app token: set {self.settings.where('token')}")
        if self._client is None:
            self._client = httpx.AsyncClient(
                base_url=self.settings.base_url, transport=self._transport,
                timeout=httpx.Timeout(self.settings.timeout),
                headers={"Authorization": f"Bearer {self.settings.token.get_secret_value().strip()}",
                         "Accept": "application/json"})
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _call(self, method: str, path: str, what: str, body: dict[str, Any] | None = None,
                    ok_statuses: tuple[int, ...] = ()) -> tuple[int, dict[str, Any]]:
        """One request; HubSpot's answer as JSON, or the ConnectorError it means."""
        client = self._http()
        _heartbeat(what)
        try:
            response = await client.request(method, path, json=body)
        except httpx.TimeoutException as exc:
            raise cb.TransientError(f"HubSpot {what}: no answer within {self.settings.timeout:g} s "
                                    f"({type(exc).__name__})") from exc
        except httpx.TransportError as exc:
            raise cb.TransientError(f"HubSpot {what}: connection failed ({type(exc).__name__}: {exc})") from exc
        if response.is_success:
            return response.status_code, _json(response, what)
        if response.status_code in ok_statuses:  # an answer the caller expects (not found, conflict): no body needed
            return response.status_code, {}
        raise self._error(response, what)

    def _error(self, response: httpx.Response, what: str) -> cb.ConnectorError:
        status = response.status_code
        detail = _message(response)
        if status == 429:
            return cb.TransientError(f"HubSpot {what}: rate limited (429){detail}",
                                     retry_after=_retry_after(response))
        if status >= 500 or status == 408:
            return cb.TransientError(f"HubSpot {what}: server error {status}{detail}",
                                     retry_after=retry_after(response.headers))
        if status == 401:
            return cb.PermanentError(f"HubSpot {what}: the private-app token was refused (401): "
                                     f"check {self.settings.where('token')}{detail}")
        if status == 403:
            return cb.PermanentError(f"HubSpot {what}: the private-app token lacks a scope (403){detail}; "
                                     f"grant it to the app whose token is {self.settings.where('token')}")
        return cb.PermanentError(f"HubSpot {what}: refused ({status}){detail}")

    async def _company(self, action: cb.Action) -> str | None:
        field = self.settings.company_field
        if field is None:
            return None
        if field == "id":
            return action.account_id
        if self.company_of is None:
            raise cb.PermanentError(f"HubSpot: the company id is the account field {field!r}, but no store "
                                    f"was given to read it (or set {self.settings.where('company_field')})")
        value = await self.company_of(action.account_id)
        if value is None or str(value).strip() == "":
            raise cb.MissingDataError(f"account {action.account_id} has no HubSpot company id "
                                      f"(its field {field!r} is empty)")
        return str(value).strip()

    async def read_pipeline(self) -> dict[str, str]:
        """The stages of the deal pipeline `pipeline` (id -> label, archived ones left out)."""
        pipeline = self.settings.pipeline
        status, found = await self._call("GET", f"/crm/v3/pipelines/deals/{quote(pipeline, safe='')}",
                                         "read the deal pipeline", ok_statuses=(404,))
        if status == 404:
            raise cb.PermanentError(f"HubSpot has no deal pipeline {pipeline!r}: set {self.settings.where('pipeline')} "
                                    "to a deal pipeline's id (GET /crm/v3/pipelines/deals lists them)")
        return {str(st.get("id")): str(st.get("label") or "") for st in found.get("stages") or []
                if isinstance(st, Mapping) and not st.get("archived")}

    async def _check_pipeline(self) -> None:
        """Once: does the pipeline exist, and has it every stage id `stages` maps onto? A wrong mapping
        then fails the first deal step with the pipeline's own stages listed, not a bare 400 later."""
        if self._pipeline_checked or not self.settings.verify_pipeline:
            return
        stages = await self.read_pipeline()
        wrong = [f"{ours!r} -> {theirs!r}" for ours, theirs in self.settings.stages.items() if theirs not in stages]
        if wrong:
            known = ", ".join(f"{sid} ({label})" for sid, label in stages.items()) or "none"
            raise cb.PermanentError(
                f"HubSpot pipeline {self.settings.pipeline!r} has no stage for {', '.join(wrong)}: fix "
                f"{self.settings.where('stages')} (the pipeline's stages: {known})")
        self._pipeline_checked = True

    async def create_csql_pipeline(self, label: str = "Expansion (CSQL)") -> tuple[str, dict[str, str]]:
        """A deal pipeline with the seven built-in stages (dsl/pipeline.py), in order, closed ones at
        probability 1 and 0 as HubSpot marks won and lost; (its id, our stage -> its stage id)."""
        body = {"label": label, "displayOrder": 0, "stages": [
            {"label": st.name, "displayOrder": i, "metadata": {"probability": PROBABILITY[st.name]}}
            for i, st in enumerate(csql.STAGES)]}
        _, made = await self._call("POST", "/crm/v3/pipelines/deals", "create the deal pipeline", body)
        ids = {str(st.get("label")): str(st.get("id")) for st in made.get("stages") or [] if isinstance(st, Mapping)}
        missing = [name for name in csql.NAMES if name not in ids]
        if "id" not in made or missing:
            raise cb.PermanentError(f"HubSpot made pipeline {made.get('id')!r} without the stages "
                                    f"{', '.join(missing)}: look at it in HubSpot before mapping it")
        return str(made["id"]), {name: ids[name] for name in csql.NAMES}

    def _stage_id(self, stage: str) -> str:
        found = self.settings.stages.get(stage)
        if found is None:
            raise cb.PermanentError(
                f"HubSpot: stage {stage!r} has no HubSpot dealstage; map it in "
                f"{self.settings.where('stages')} (mapped: {', '.join(self.settings.stages)})")
        return found

    def _owner(self, person: str | None, what: str) -> str | None:
        if person is None:
            return None
        owner = self.settings.owners.get(person)
        if owner is None and person.isdigit():  # already a HubSpot owner id
            owner = person
        if owner is None and self.settings.require_owner:
            raise cb.PermanentError(f"HubSpot: {what} {person!r} has no HubSpot owner id; map it in "
                                    f"{self.settings.where('owners')} (or set require_owner = false)")
        return owner

    # ------------------------------------------------------------ objects
    async def _find(self, object_type: str, key: str) -> dict[str, Any] | None:
        """The object a previous attempt made with this key, if any.

        Deals are read by the key itself (`idProperty`: the property has unique
        values on deals), which sees a deal made a moment ago; tasks and notes
        cannot have unique properties and are searched for, and HubSpot's
        search index trails its writes by a few seconds.
        """
        prop = self.settings.idempotency_property
        if object_type == "deals" and self.settings.unique_deal_key:
            status, deal = await self._call(
                "GET", f"/crm/v3/objects/deals/{quote(key, safe='')}?idProperty={quote(prop)}&properties={quote(prop)}",
                "read deal by key", ok_statuses=(404,))
            return deal if status != 404 and (deal.get("properties") or {}).get(prop) == key else None
        _, found = await self._call("POST", f"/crm/v3/objects/{object_type}/search", f"search {object_type}", {
            "filterGroups": [{"filters": [{"propertyName": prop, "operator": "EQ", "value": key}]}],
            "properties": [prop], "sorts": [], "limit": 1, "after": "0"})
        results = [r for r in found.get("results") or [] if (r.get("properties") or {}).get(prop) == key]
        return results[0] if results else None

    async def _create_once(self, object_type: str, action: cb.Action, properties: dict[str, str],
                           association: int) -> tuple[str, bool]:
        """(object id, duplicate): searched by our key first, created with it otherwise."""
        existing = await self._find(object_type, action.key)
        if existing is not None:
            return str(existing["id"]), True
        company = await self._company(action)
        associations = [] if company is None else [{
            "to": {"id": company},
            "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": association}]}]
        body = {"properties": {**properties, self.settings.idempotency_property: action.key},
                "associations": associations}
        status, created = await self._call("POST", f"/crm/v3/objects/{object_type}", f"create {object_type}",
                                           body, ok_statuses=(409,))
        if status == 409:
            # The key property is unique in this portal and an object holds it
            # already: ours, from an attempt whose answer was lost.
            again = await self._find(object_type, action.key)
            if again is None:
                raise cb.TransientError(f"HubSpot create {object_type}: conflict (409) on our key, and the "
                                        "object is not searchable yet")
            return str(again["id"]), True
        return str(created["id"]), False

    # ------------------------------------------------------------ actions
    async def act(self, action: cb.Action) -> cb.Result:
        self._http()  # no token: refused before anything else is looked at
        match action:
            case cb.OutboxMessage():
                raise cb.PermanentError(f"HubSpot does not send {action.kind} messages: choose another "
                                        f"connector for them (PLAYBOOK_CONNECTOR_{action.kind.upper()})")
            case cb.NewTask():
                return await self.create_task(action)
            case cb.NewOpportunity():
                return await self.create_deal(action)
            case cb.StageChange():
                return await self.move_stage(action)
            case _:
                return await self.note(action)

    async def create_task(self, task: cb.NewTask) -> cb.TaskResult:
        owner = self._owner(task.assignee, "task assignee")
        body = f"From play {task.play} (step {task.step}) for account {task.account_id}."
        if owner is None:
            body += f" Assignee in Playbook: {task.assignee} (no HubSpot owner mapped)."
        properties = {
            "hs_task_subject": task.title, "hs_task_body": body, "hs_task_status": "NOT_STARTED",
            "hs_task_type": "TODO", "hs_timestamp": _millis(task.due_at or task.requested_at)}
        if owner is not None:
            properties["hubspot_owner_id"] = owner
        task_id, dup = await self._create_once("tasks", task, properties, TASK_TO_COMPANY)
        return cb.TaskResult(key=task.key, duplicate=dup, external_id=task_id)

    async def create_deal(self, opportunity: cb.NewOpportunity) -> cb.OpportunityResult:
        deal_id, dup = await self._open_deal(opportunity, opportunity.title, self.settings.new_deal_stage,
                                             opportunity.amount, self._owner(opportunity.owner, "opportunity owner"))
        return cb.OpportunityResult(key=opportunity.key, duplicate=dup, external_id=deal_id)

    async def _open_deal(self, action: cb.Action, title: str, stage: str, amount: float | None,
                         owner: str | None) -> tuple[str, bool]:
        properties = {"dealname": title, "pipeline": self.settings.pipeline, "dealstage": self._stage_id(stage)}
        await self._check_pipeline()
        if amount is not None:
            properties["amount"] = f"{amount:g}" if isinstance(amount, float) else str(amount)
        if owner is not None:
            properties["hubspot_owner_id"] = owner
        return await self._create_once("deals", action, properties, DEAL_TO_COMPANY)

    async def move_stage(self, change: cb.StageChange) -> cb.StageResult:
        """The play's open deal for the account (the newest it made) moved forward to the step's stage.

        As in the built-in store: a deal already at that stage or past it stays
        where it is; with no open deal, one is opened at the stage (none is
        opened just to be closed).
        """
        try:
            wanted = csql.stage(change.stage)
        except csql.PipelineError as exc:
            raise cb.PermanentError(f"stage step: {exc}") from exc
        target = self._stage_id(change.stage)
        await self._check_pipeline()
        deal = await self._open_deal_of(change)
        if deal is None:
            if wanted.closed:
                return cb.StageResult(key=change.key, stage=change.stage)
            deal_id, dup = await self._open_deal(change, change.play, change.stage, None, None)
            return cb.StageResult(key=change.key, duplicate=dup, external_id=deal_id, stage=change.stage)
        deal_id, current = str(deal["id"]), (deal.get("properties") or {}).get("dealstage")
        previous = self.settings.stage_of(current) or current
        here = csql.BY_NAME.get(previous) if previous else None
        if current == target or (here is not None and here.order >= wanted.order):
            # Already there or past it (an earlier attempt moved it, or a person did).
            return cb.StageResult(key=change.key, external_id=deal_id, previous=previous,
                                  stage=previous or change.stage)
        try:
            await self._call("PATCH", f"/crm/v3/objects/deals/{deal_id}", "move deal stage",
                             {"properties": {"dealstage": target}})
        except cb.PermanentError as exc:
            raise cb.PermanentError(f"{exc} (deal {deal_id}, to stage {change.stage!r} = {target!r})") from exc
        return cb.StageResult(key=change.key, external_id=deal_id, previous=previous, stage=change.stage)

    async def _open_deal_of(self, change: cb.StageChange) -> dict[str, Any] | None:
        """The newest deal this play made for this account that is not closed, searched on its company."""
        company = await self._company(change)
        if company is None:
            raise cb.PermanentError(f"HubSpot: a stage move finds the play's deal through the account's company; "
                                    f"set {self.settings.where('company_field')}")
        prop = self.settings.idempotency_property
        closed = [self.settings.stages[s] for s in csql.CLOSED if s in self.settings.stages]
        filters: list[dict[str, Any]] = [
            {"propertyName": "associations.company", "operator": "EQ", "value": company},
            {"propertyName": prop, "operator": "HAS_PROPERTY"},
            {"propertyName": "pipeline", "operator": "EQ", "value": self.settings.pipeline}]
        if closed:
            filters.append({"propertyName": "dealstage", "operator": "NOT_IN", "values": closed})
        # Our keys begin play:<play>:<account>: (workflows/play.py idempotency_key).
        prefix = f"play:{change.play}:{change.account_id}:"
        ours: list[dict[str, Any]] = []
        after = "0"
        for _ in range(SEARCH_PAGES):
            _, found = await self._call("POST", "/crm/v3/objects/deals/search", "search deals", {
                "filterGroups": [{"filters": filters}], "properties": [prop, "dealstage", "createdate"],
                "sorts": [], "limit": SEARCH_PAGE, "after": after})
            ours += [r for r in found.get("results") or []
                     if str((r.get("properties") or {}).get(prop) or "").startswith(prefix)
                     and (r.get("properties") or {}).get("dealstage") not in closed]
            following = str(((found.get("paging") or {}).get("next") or {}).get("after") or "")
            if not following or following == after:
                break
            after = following
        return max(ours, key=lambda r: (str(r.get("createdAt") or ""), str(r.get("id")))) if ours else None

    async def note(self, action: cb.Action) -> cb.Result:
        """A request no HubSpot object carries out (a field to set, a trial to grant): a note on the company."""
        fields = action.model_dump(mode="json", exclude=set(cb.Action.model_fields))
        lines = [f"<p><strong>Playbook: {html.escape(action.summary())}</strong></p>",
                 f"<p>Play {html.escape(action.play)}, step {html.escape(action.step)}, "
                 f"account {html.escape(action.account_id)}.</p>"]
        lines += [f"<p>{html.escape(str(k))}: {html.escape(str(v))}</p>" for k, v in fields.items()]
        note_id, dup = await self._create_once("notes", action, {
            "hs_note_body": "".join(lines), "hs_timestamp": _millis(action.requested_at)}, NOTE_TO_COMPANY)
        return action.result(key=action.key, duplicate=dup, external_id=note_id)


# ---------------------------------------------------------------------------


def _heartbeat(what: str) -> None:
    """Inside an activity, say we are alive before each call, so a killed worker is noticed in seconds."""
    from temporalio import activity

    if activity.in_activity():
        activity.heartbeat(what)


def _millis(at: dt.datetime) -> str:
    if at.tzinfo is None:  # naive times are UTC, as the workflow's are
        at = at.replace(tzinfo=dt.timezone.utc)
    return str(int(at.timestamp() * 1000))


def _json(response: httpx.Response, what: str) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        raise cb.TransientError(f"HubSpot {what}: answer {response.status_code} is not JSON") from None
    if not isinstance(data, dict):
        raise cb.TransientError(f"HubSpot {what}: answer {response.status_code} is not a JSON object")
    return data


def _message(response: httpx.Response) -> str:
    """HubSpot's own words about an error (`message`, then each detail's), for the error text."""
    try:
        data = response.json()
    except ValueError:
        return ""
    if not isinstance(data, Mapping):
        return ""
    parts = [str(data["message"])] if data.get("message") else []
    for detail in data.get("errors") or []:
        if isinstance(detail, Mapping) and detail.get("message") and detail["message"] not in parts:
            parts.append(str(detail["message"]))
    return (": " + "; ".join(parts))[:1000] if parts else ""


def _retry_after(response: httpx.Response) -> float:
    """Seconds until HubSpot takes requests again: its Retry-After, else its policy's window."""
    told = retry_after(response.headers)
    if told is not None:
        return told
    try:
        policy = str(response.json().get("policyName", ""))
    except (ValueError, AttributeError):
        policy = ""
    return DAILY_BACKOFF if policy.upper() == "DAILY" else BURST_BACKOFF


__all__ = ["DEFAULT_STAGES", "HubSpotConnector", "HubSpotSettings", "HubSpotSettingsError", "load_hubspot_settings"]
