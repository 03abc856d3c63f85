"""Readers for declared sources (`source NAME from hubspot OBJECT` / `from warehouse`), and their settings.

Connection settings and secrets are not in git: `[sources.NAME]` of the
settings file or `PLAYBOOK_SOURCE_<NAME>_<SETTING>` (SourceSettings). A
reader yields `engine.sync.Batch`es in cursor order; engine/sync.py writes
them and stores each batch's cursor with it.

HubSpot (`/crm/v3/objects/{object}`): a full load pages through the list
endpoint (`after`); with `incremental by PROPERTY` the cursor then becomes
the greatest PROPERTY seen, and later syncs ask the search endpoint for
records whose PROPERTY is greater, ascending (HubSpot's search stops at
10,000 results a query: the reader then starts a new query from the last
value it saw, inclusive). Requests, errors and Retry-After are
connectors/hubspot.py's; a transient error (429, 5xx, timeouts) is retried
`retries` times, waiting what HubSpot says (at most `max_wait` seconds),
then the sync stops as unreachable, resuming from its cursor next time.

Warehouse: the declaration's query over any SQLAlchemy URL, wrapped as
`SELECT * FROM (query) q WHERE (cursor, key) > (last) ORDER BY cursor, key
LIMIT batch_size`: keyset paging on the cursor column and the key, so rows
that share a cursor value are neither skipped nor read twice at a batch's
edge.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from collections.abc import AsyncIterator, Mapping
from typing import Any, ClassVar

import pydantic_settings
import sqlalchemy as sa
from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import SettingsConfigDict

from connectors import base as cb
from dsl import nodes as n
from engine.settings import (
    FileBackedSettings,
    SettingsError,
    TableSource,
    read_settings_file,
    refuse_unknown,
    setting_problems,
    settings_file,
)
from engine.sync import Batch, SourceProblem, SourceUnreachable

ENV_PREFIX = "PLAYBOOK_SOURCE_"
TABLE = "sources"
HUBSPOT_PAGE = 100  # the list and search endpoints' largest page
SEARCH_LIMIT = 10_000  # HubSpot's search returns no result past this offset


class SourceSettingsError(SettingsError):
    """A [sources.NAME] setting is missing or malformed (never shown with its value)."""


class _SourceTable(TableSource):
    """`[sources.NAME]` of the settings file."""

    name: ClassVar[str]

    def __call__(self) -> dict[str, Any]:
        path, data = read_settings_file()
        sources = data.get(TABLE, {})
        if not isinstance(sources, dict):
            raise SettingsError(f"settings file {path}: `{TABLE}` must be a table of tables ([{TABLE}.NAME])")
        table = sources.get(self.name, {})
        if not isinstance(table, dict):
            raise SettingsError(f"settings file {path}: `{TABLE}.{self.name}` must be a table")
        refuse_unknown(path, f"{TABLE}.{self.name}", table, list(self.settings_cls.model_fields))
        return dict(table)


class SourceSettings(FileBackedSettings):
    """One source's connection: `PLAYBOOK_SOURCE_<NAME>_<SETTING>` or `[sources.NAME]` of the settings file."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)
    file_source: ClassVar[type[TableSource]] = _SourceTable
    source_name: ClassVar[str] = ""

    url: SecretStr | None = None  # warehouse: a SQLAlchemy URL (it may hold a password)
    token: SecretStr | None = None  # HubSpot: a private app's token (default: [hubspot] token)
    base_url: str | None = None  # HubSpot: default [hubspot] base_url
    timeout: float = Field(default=30.0, gt=0)  # seconds per request
    batch_size: int = Field(default=1000, ge=1)  # records written per transaction
    retries: int = Field(default=5, ge=0)  # transient errors retried per request
    max_wait: float = Field(default=60.0, ge=0)  # longest wait between retries, seconds
    every_minutes: int = Field(default=60, ge=1)  # the Temporal Schedule's interval

    def where(self, setting: str) -> str:
        path, _ = settings_file()
        return (f"{ENV_PREFIX}{self.source_name.upper()}_{setting.upper()} or `{setting}` in "
                f"[{TABLE}.{self.source_name}] of {path}")


def load_source_settings(name: str, **overrides: Any) -> SourceSettings:
    """The settings of source `name` now: `overrides`, the environment, the settings file, the defaults."""
    table = type(f"_SourceTable_{name}", (_SourceTable,), {"name": name})
    cls = type(f"SourceSettings_{name}", (SourceSettings,), {
        "model_config": SettingsConfigDict(env_prefix=f"{ENV_PREFIX}{name.upper()}_", extra="ignore", frozen=True),
        "file_source": table, "source_name": name, "__module__": __name__})
    try:
        return cls(**overrides)
    except ValidationError as exc:
        raise SourceSettingsError(setting_problems(exc, f"{ENV_PREFIX}{name}_", f"{TABLE}.{name}")) from None
    except pydantic_settings.SettingsError:
        raise SourceSettingsError(f"[{TABLE}.{name}] of {settings_file()[0]}: malformed") from None


# --------------------------------------------------------------------------
# HubSpot


class HubSpotReader:
    """Companies, contacts or deals of one portal, in pages, full then by last-modified time."""

    def __init__(self, decl: n.SourceDecl, settings: SourceSettings, *, sleep: Any = asyncio.sleep,
                 transport: Any = None) -> None:
        from connectors.hubspot import HubSpotConnector, load_hubspot_settings

        assert decl.object is not None
        self.decl, self.settings, self.sleep = decl, settings, sleep
        shared: dict[str, Any] = {"timeout": settings.timeout}
        if settings.token is not None:
            shared["token"] = settings.token
        if settings.base_url is not None:
            shared["base_url"] = settings.base_url
        hubspot = load_hubspot_settings(**shared)
        if hubspot.token is None or not hubspot.token.get_secret_value().strip():
            raise SourceProblem(f"source {decl.name}: HubSpot needs a private-app token: set "
                                f"{settings.where('token')} (or the [hubspot] token)")
        self.client = HubSpotConnector(hubspot, transport=transport)
        self.properties = sorted({m.column for m in decl.mappings if m.column != "id"}
                                 | ({decl.incremental} if decl.incremental else set()))

    async def aclose(self) -> None:
        await self.client.aclose()

    async def _call(self, method: str, path: str, what: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """One request, transient errors retried as HubSpot asks (Retry-After, capped by `max_wait`)."""
        attempt = 0
        while True:
            try:
                _, data = await self.client._call(method, path, what, body)
                return data
            except cb.TransientError as exc:
                attempt += 1
                if attempt > self.settings.retries:
                    raise SourceUnreachable(f"source {self.decl.name}: {exc} (gave up after {attempt} attempts)") \
                        from None
                wait = exc.retry_after if exc.retry_after is not None else min(2.0 ** attempt, 30.0)
                await self.sleep(min(wait, self.settings.max_wait))
            except cb.ConnectorError as exc:  # 401/403/4xx: the request or the token, not the network
                raise SourceProblem(f"source {self.decl.name}: {exc}") from None

    def _record(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        props = obj.get("properties") or {}
        return {**props, "id": obj.get("id"), "updatedAt": obj.get("updatedAt"), "createdAt": obj.get("createdAt")}

    async def batches(self, cursor: Any, *, full: bool) -> AsyncIterator[Batch]:
        state = None if full or not isinstance(cursor, dict) else cursor
        if state is None or state.get("mode") == "full":
            async for batch in self._full(state or {"mode": "full"}):
                yield batch
        else:
            async for batch in self._incremental(state):
                yield batch

    def _max(self, seen: str | None, records: list[dict[str, Any]]) -> str | None:
        prop = self.decl.incremental
        if prop is None:
            return None
        values = [v for v in (r.get(prop) for r in records) if isinstance(v, str) and v]
        return max([*values, *([seen] if seen else [])], key=_instant, default=None)

    async def _full(self, state: dict[str, Any]) -> AsyncIterator[Batch]:
        after, seen = state.get("after"), state.get("max")
        pending: list[dict[str, Any]] = []
        obj = self.decl.object
        while True:
            query = f"limit={HUBSPOT_PAGE}&archived=false&properties={','.join(self.properties)}"
            if after:
                query += f"&after={after}"
            data = await self._call("GET", f"/crm/v3/objects/{obj}?{query}", f"list {obj}")
            records = [self._record(o) for o in data.get("results") or [] if isinstance(o, Mapping)]
            pending += records
            seen = self._max(seen, records)
            previous, after = after, ((data.get("paging") or {}).get("next") or {}).get("after")
            if not after or after == previous:  # no next page, or one that does not move (it would never end)
                done = {"mode": "incremental", "since": seen} if self.decl.incremental and seen else None
                yield Batch(pending, done)
                return
            if len(pending) >= self.settings.batch_size:
                yield Batch(pending, {"mode": "full", "after": after, "max": seen})
                pending = []

    async def _incremental(self, state: dict[str, Any]) -> AsyncIterator[Batch]:
        prop = self.decl.incremental
        assert prop is not None
        since: str = state["since"]
        after: str | None = state.get("after")
        inclusive = bool(state.get("inclusive"))
        seen = since
        obj = self.decl.object
        pending: list[dict[str, Any]] = []
        while True:
            body: dict[str, Any] = {
                "filterGroups": [{"filters": [{"propertyName": prop, "operator": "GTE" if inclusive else "GT",
                                               "value": str(_millis(since))}]}],
                # HubSpot's spec types a sort as the property's name (ascending); `after` is required, "0" first.
                "sorts": [prop], "properties": self.properties, "limit": HUBSPOT_PAGE, "after": after or "0"}
            data = await self._call("POST", f"/crm/v3/objects/{obj}/search", f"search {obj}", body)
            records = [self._record(o) for o in data.get("results") or [] if isinstance(o, Mapping)]
            pending += records
            seen = self._max(seen, records) or seen
            previous, after = after, ((data.get("paging") or {}).get("next") or {}).get("after")
            if after == previous:  # a next page that does not move would never end
                after = None
            restarted = False
            if after and _offset(after) >= SEARCH_LIMIT and seen != since:
                # Past HubSpot's search window: a new query from the last value seen, that value included.
                since, after, inclusive, restarted = seen, None, True, True
            if not after and not restarted:
                yield Batch(pending, {"mode": "incremental", "since": seen})
                return
            if len(pending) >= self.settings.batch_size:
                position = {"mode": "incremental", "since": since, "inclusive": inclusive}
                yield Batch(pending, {**position, "after": after} if after else position)
                pending = []


def _instant(value: str) -> dt.datetime:
    try:
        at = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        try:
            return dt.datetime.fromtimestamp(int(value) / 1000, dt.timezone.utc)
        except (ValueError, OverflowError):
            return dt.datetime.min.replace(tzinfo=dt.timezone.utc)
    return at if at.tzinfo else at.replace(tzinfo=dt.timezone.utc)


def _millis(value: str) -> int:
    return int(_instant(value).timestamp() * 1000)


def _offset(after: str) -> int:
    return int(after) if after.isdigit() else 0


# --------------------------------------------------------------------------
# Warehouse


_PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class WarehouseReader:
    """The declaration's SQL query over any SQLAlchemy URL, in keyset pages by (cursor, key)."""

    def __init__(self, decl: n.SourceDecl, settings: SourceSettings) -> None:
        if settings.url is None or not settings.url.get_secret_value().strip():
            raise SourceProblem(f"source {decl.name}: no warehouse URL: set {settings.where('url')} "
                                "(a SQLAlchemy URL, e.g. postgresql://user@host/db)")
        self.decl, self.settings = decl, settings
        try:
            self.engine = sa.create_engine(settings.url.get_secret_value().strip(), pool_pre_ping=True)
        except (sa.exc.ArgumentError, ImportError) as exc:
            # The URL itself is not shown: it may hold a password.
            raise SourceProblem(f"source {decl.name}: the warehouse URL in {settings.where('url')} cannot be "
                                f"used ({type(exc).__name__}: {str(exc).split(':')[0][:120]})") from None

    async def aclose(self) -> None:
        self.engine.dispose()

    def _keys(self) -> list[str]:
        """The columns that tell one row from another, paged in this order: an entity's key; a metric row's
        account and date; an event row's account and time (and name, with `named by`: two events of an
        account may share a time)."""
        decl = self.decl
        assert decl.key is not None
        if decl.fills == "metric" and decl.dated is not None:
            return [decl.key.column, decl.dated]
        if decl.fills == "event":
            times = (m.column for m in decl.mappings if m.entity == "event" and m.prop is None)
            return list(dict.fromkeys([decl.key.column, *times, *([decl.named] if decl.named else [])]))
        return [decl.key.column]

    def _sql(self, cursor: Any) -> tuple[str, dict[str, Any]]:
        decl = self.decl
        assert decl.query is not None and decl.key is not None
        quote = self.engine.dialect.identifier_preparer.quote
        inner = decl.query.strip().rstrip(";")
        keys = [f"q.{quote(c)}" for c in self._keys()]
        # A row without an event time (or name) is no event: not read, so it cannot hold a page's edge.
        filters = [f"{k} IS NOT NULL" for k in keys[1:]] if decl.fills == "event" else []
        params: dict[str, Any] = {}
        after = ""
        if cursor is not None:
            last = cursor["keys"] if "keys" in cursor else [cursor["key"]]
            params = {f"k{i}": _cursor_value(v) for i, v in enumerate(last)}
            after = _after(keys, [f":k{i}" for i in range(len(keys))])
        if decl.incremental is None:
            order = ", ".join(keys)
            if after:
                filters.append(after)
        else:
            col = f"q.{quote(decl.incremental)}"
            order = ", ".join([col, *keys])
            if cursor is not None:
                filters.append(f"({col} > :c OR ({col} = :c AND {after}))")
                params["c"] = _cursor_value(cursor["value"])
        where = f"WHERE {' AND '.join(filters)}" if filters else ""
        return (f"SELECT * FROM ({inner}) q {where} ORDER BY {order} LIMIT {int(self.settings.batch_size)}",
                params)

    def _page(self, cursor: Any) -> list[dict[str, Any]]:
        sql, params = self._sql(cursor)
        try:
            with self.engine.connect() as conn:
                return [dict(r._mapping) for r in conn.execute(sa.text(sql), params)]
        except sa.exc.OperationalError as exc:
            from engine.store import unreachable

            if unreachable(exc, "warehouse") is not None:
                raise SourceUnreachable(f"source {self.decl.name}: the warehouse cannot be reached "
                                        f"({type(exc.orig).__name__})") from None
            raise SourceProblem(f"source {self.decl.name}: the query failed: {_first_line(exc)}") from None
        except sa.exc.DBAPIError as exc:
            if exc.connection_invalidated:
                raise SourceUnreachable(f"source {self.decl.name}: the warehouse connection was lost") from None
            raise SourceProblem(f"source {self.decl.name}: the query failed: {_first_line(exc)}") from None

    async def batches(self, cursor: Any, *, full: bool) -> AsyncIterator[Batch]:
        decl = self.decl
        assert decl.key is not None
        position = None if full or not isinstance(cursor, dict) else cursor
        # Without `incremental by`, a sync reads everything; the position only resumes a sync that died.
        if decl.incremental is None and position is not None and position.get("done"):
            position = None
        while True:
            rows = await asyncio.to_thread(self._page, position)
            if rows:
                missing = [c for c in [decl.key.column, *([decl.incremental] if decl.incremental else []),
                                       *([decl.dated] if decl.dated else []),
                                       *([decl.named] if decl.named else []),
                                       *(m.column for m in decl.mappings)] if c not in rows[0]]
                if missing:
                    raise SourceProblem(f"source {decl.name}: the query has no column "
                                        f"{', '.join(repr(c) for c in dict.fromkeys(missing))}; it returns "
                                        f"{', '.join(rows[0])}")
                last = rows[-1]
                keys = self._keys()
                # One key keeps the shape cursors stored before series sources had.
                position = ({"key": last[keys[0]]} if len(keys) == 1
                            else {"keys": [_cursor_json(last[k]) for k in keys]})
                if decl.incremental is not None:
                    position["value"] = _cursor_json(last[decl.incremental])
            end = len(rows) < self.settings.batch_size
            if end and decl.incremental is None:
                yield Batch(rows, {"done": True})
                return
            yield Batch(rows, position)
            if end:
                return


def _after(columns: list[str], values: list[str]) -> str:
    """`(a, b) > (:a, :b)` spelt out, for dialects without row comparison."""
    head, rest = columns[0], columns[1:]
    if not rest:
        return f"{head} > {values[0]}"
    return f"({head} > {values[0]} OR ({head} = {values[0]} AND {_after(rest, values[1:])}))"


def _cursor_json(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return {"datetime": value.isoformat()}
    if isinstance(value, dt.date):
        return {"date": value.isoformat()}
    if isinstance(value, (int, float, str)) or value is None:
        return value
    return str(value)


def _cursor_value(value: Any) -> Any:
    if isinstance(value, dict) and "datetime" in value:
        return dt.datetime.fromisoformat(value["datetime"])
    if isinstance(value, dict) and "date" in value:
        return dt.date.fromisoformat(value["date"])
    return value


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    return str(orig).strip().splitlines()[0][:300] if str(orig).strip() else type(orig).__name__


# --------------------------------------------------------------------------
# The registry: a system's reader


READERS: dict[str, Any] = {"hubspot": HubSpotReader, "warehouse": WarehouseReader}


def reader_for(decl: n.SourceDecl, settings: SourceSettings | None = None) -> Any:
    """The reader of `decl`'s system, with its settings (read now unless given)."""
    return READERS[decl.system](decl, settings or load_source_settings(decl.name))
