"""Source syncs from a warehouse (PostgreSQL, a schema of its own) and HubSpot (Prism, WireMock)."""

from __future__ import annotations

import asyncio
import datetime as dt
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from connectors.sources import HubSpotReader, WarehouseReader, load_source_settings
from dsl import nodes as n
from dsl.project import load_text
from engine.store import Store
from engine.sync import SourceUnreachable, SyncRefused, run_sync, runs

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))
from store_backends import PG_URL, pg_schema  # noqa: E402
from source_support import Crashing  # noqa: E402

ENTITY = '''\
entity account
  field arr money?
  field health_score number? 0..100
  field renewal_date date?
'''

WAREHOUSE = ENTITY + '''
source usage from warehouse
  query """
    select account_id, arr, health, updated_at from {schema}.accounts_daily
    """
  incremental by updated_at
  account.id           = account_id
  account.arr          = arr
  account.health_score = health
'''

T0 = dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.timezone.utc)


def project(text: str) -> Any:
    p = load_text(text, "sources.play")
    assert p.diagnostics == []
    return p


def decl(p: Any, name: str) -> n.SourceDecl:
    return p.catalog.sources[name]


@pytest.fixture
def warehouse() -> Iterator[tuple[str, str]]:
    """A PostgreSQL schema of its own standing for the warehouse: (URL, schema)."""
    with pg_schema("accounts_daily (account_id text primary key, arr numeric, health double precision, "
                   "updated_at timestamptz not null)") as schema:
        yield PG_URL, schema


def put(url: str, schema: str, rows: list[tuple[str, Any, Any, dt.datetime]]) -> None:
    eng = sa.create_engine(url)
    with eng.begin() as conn:
        conn.execute(sa.text(
            f'INSERT INTO "{schema}".accounts_daily VALUES (:id, :arr, :h, :at) ON CONFLICT (account_id) DO UPDATE '
            'SET arr = excluded.arr, health = excluded.health, updated_at = excluded.updated_at'),
            [{"id": r[0], "arr": r[1], "h": r[2], "at": r[3]} for r in rows])
    eng.dispose()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store.open(f"sqlite:///{tmp_path}/store.db")
    try:
        yield s
    finally:
        s.close()


def accounts(store: Store) -> dict[str, tuple[Any, Any]]:
    with store.engine.connect() as conn:
        return {r[0]: (r[1], r[2]) for r in conn.execute(sa.text("SELECT id, arr, health_score FROM accounts"))}


def sync(store: Store, p: Any, reader: Any, full: bool = False) -> Any:
    return asyncio.run(run_sync(store, p.catalog, decl(p, reader.decl.name), reader, full=full))


def wh_reader(p: Any, url: str, batch_size: int = 1000) -> WarehouseReader:
    return WarehouseReader(decl(p, "usage"), load_source_settings("usage", url=url, batch_size=batch_size))


# ---------------------------------------------------------------- warehouse


def test_warehouse_first_sync_loads_every_row_then_only_rows_past_the_cursor(warehouse, store):
    url, schema = warehouse
    p = project(WAREHOUSE.format(schema=schema))
    put(url, schema, [(f"a{i}", 1000 * i, 50, T0 + dt.timedelta(minutes=i)) for i in range(5)])
    first = sync(store, p, wh_reader(p, url, batch_size=2))
    assert (first.status, first.read, first.batches, first.created) == ("ok", 5, 3, 5)
    assert accounts(store)["a3"] == (3000, 50)
    put(url, schema, [("a1", 1500, 60, T0 + dt.timedelta(hours=1)), ("a9", 9000, 90, T0 + dt.timedelta(hours=2))])
    second = sync(store, p, wh_reader(p, url, batch_size=2))
    assert (second.status, second.read, second.created, second.updated) == ("ok", 2, 1, 1)
    assert second.changed == 2  # a1's arr and health
    assert accounts(store)["a1"] == (1500, 60) and accounts(store)["a9"] == (9000, 90)
    third = sync(store, p, wh_reader(p, url, batch_size=2))
    assert (third.read, third.batches) == (0, 0)


def test_warehouse_rows_sharing_a_cursor_value_across_a_batch_edge_are_all_read(warehouse, store):
    url, schema = warehouse
    p = project(WAREHOUSE.format(schema=schema))
    put(url, schema, [(f"a{i}", i, 10, T0) for i in range(7)])
    result = sync(store, p, wh_reader(p, url, batch_size=3))
    assert result.read == 7 and len(accounts(store)) == 7


def test_warehouse_full_sync_reads_everything_again(warehouse, store):
    url, schema = warehouse
    p = project(WAREHOUSE.format(schema=schema))
    put(url, schema, [(f"a{i}", i, 10, T0) for i in range(3)])
    sync(store, p, wh_reader(p, url))
    again = sync(store, p, wh_reader(p, url), full=True)
    assert (again.read, again.created, again.updated, again.full) == (3, 0, 3, True)


def test_a_sync_that_dies_resumes_from_the_cursor_of_its_last_written_batch(warehouse, store):
    url, schema = warehouse
    p = project(WAREHOUSE.format(schema=schema))
    put(url, schema, [(f"a{i}", i, 10, T0 + dt.timedelta(minutes=i)) for i in range(10)])
    with pytest.raises(SourceUnreachable):
        sync(store, p, Crashing(wh_reader(p, url, batch_size=3), batches=2))
    assert sorted(accounts(store)) == [f"a{i}" for i in range(6)]  # two batches of three, nothing of the third
    with store.engine.connect() as conn:
        died = runs(conn, "usage")[0]
    assert (died["status"], died["batches"], died["read"]) == ("failed", 2, 6)
    assert died["cursor"]["key"] == "a5"
    resumed = sync(store, p, wh_reader(p, url, batch_size=3))
    assert (resumed.status, resumed.read, resumed.created) == ("ok", 4, 4)  # only what was not written
    assert len(accounts(store)) == 10


def test_a_mapping_error_names_source_record_and_field_and_writes_nothing_of_the_batch(warehouse, store):
    url, schema = warehouse
    p = project(WAREHOUSE.format(schema=schema))
    put(url, schema, [("a1", 100, 50, T0), ("a2", 200, 150, T0 + dt.timedelta(minutes=1)),
                      ("a3", 300, 50, T0 + dt.timedelta(minutes=2))])
    with pytest.raises(SyncRefused) as err:
        sync(store, p, wh_reader(p, url))
    (problem,) = err.value.errors
    assert (problem.source, problem.record, problem.field) == ("usage", "a2 (account_id)",
                                                               "account.health_score <- health")
    assert "outside" in problem.reason or "100" in problem.reason
    assert str(problem).startswith("source usage: record a2 (account_id): account.health_score <- health: ")
    assert accounts(store) == {}
    with store.engine.connect() as conn:
        run = runs(conn, "usage")[0]
    assert (run["status"], run["read"], run["refused"], run["cursor"]) == ("refused", 3, 1, None)


def test_a_query_naming_a_missing_column_is_a_problem_naming_it(warehouse, store):
    url, schema = warehouse
    p = project(WAREHOUSE.format(schema=schema).replace("account.arr          = arr",
                                                        "account.arr          = arr_usd"))
    put(url, schema, [("a1", 100, 50, T0)])
    from engine.sync import SourceProblem

    with pytest.raises(SourceProblem, match="no column 'arr_usd'"):
        sync(store, p, wh_reader(p, url))


def test_an_unreachable_warehouse_is_unreachable_and_its_url_is_never_shown(store, tmp_path):
    p = project(WAREHOUSE.format(schema="x"))
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"postgresql+psycopg2://u:sekrit@127.0.0.1:{port}/db"
    with pytest.raises(SourceUnreachable) as err:
        sync(store, p, wh_reader(p, url))
    assert "sekrit" not in str(err.value)


# ---------------------------------------------------------------- HubSpot

TOKEN = "pat-na1-11111111-2222-3333-4444-555555555555"
CRM = ENTITY + '''
source crm from hubspot companies
  incremental by hs_lastmodifieddate
  account.id  = id
  account.name = name
  account.arr = annualrevenue
'''


def company(cid: str, name: str, arr: str, modified: str) -> dict[str, Any]:
    return {"id": cid, "properties": {"name": name, "annualrevenue": arr, "hs_lastmodifieddate": modified,
                                      "hs_object_id": cid},
            "archived": False, "createdAt": "2026-01-01T00:00:00.000Z", "updatedAt": modified}


def page(*companies: dict[str, Any], after: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"results": list(companies)}
    if after:
        body["paging"] = {"next": {"after": after, "link": "?after=" + after}}
    return {"status": 200, "headers": {"Content-Type": "application/json"}, "jsonBody": body}


def search(*companies: dict[str, Any], after: str | None = None) -> dict[str, Any]:
    answer = page(*companies, after=after)
    answer["jsonBody"]["total"] = len(companies)
    return answer


def hs_reader(p: Any, url: str, transport: Any = None, sleeps: list[float] | None = None, **settings: Any) -> HubSpotReader:
    async def sleep(seconds: float) -> None:
        if sleeps is not None:
            sleeps.append(seconds)

    values = {"token": TOKEN, "base_url": url, "timeout": 5.0, **settings}
    return HubSpotReader(decl(p, "crm"), load_source_settings("crm", **values), sleep=sleep, transport=transport)


@pytest.fixture
def spec() -> Iterator[Any]:
    from hubspot_shapes import SpecChecked

    checked = SpecChecked()
    yield checked
    assert checked.violations == [], "Prism found requests or answers outside HubSpot's spec"


def test_hubspot_list_and_search_requests_pass_hubspots_spec_on_prisms_mock(hubspot_prism, store, spec):
    from engine.sync import store_cursor

    p = project(CRM)
    # The spec's example answer holds two companies with the same id ("string"): refused, and named.
    with pytest.raises(SyncRefused) as err:
        sync(store, p, hs_reader(p, hubspot_prism, spec))
    assert "source crm: record string (id): account.id <- id: duplicate id 'string'" in str(err.value)
    with store.engine.begin() as conn:
        store_cursor(conn, "crm", {"mode": "incremental", "since": "2026-12-01T00:00:00.000Z"})
    with pytest.raises(SyncRefused):
        sync(store, p, hs_reader(p, hubspot_prism, spec))
    # The example answer always names the same next page: read once more, then a cursor that does not
    # move ends the paging.
    assert [(m, path) for m, path, _ in spec.sent] == [("GET", "/crm/v3/objects/companies")] * 2 + [
        ("POST", "/crm/v3/objects/companies/search")] * 2
    assert accounts(store) == {}


def test_hubspot_full_load_follows_pages_then_searches_past_the_last_modified_time(
        hubspot_proxy, wiremock, spec, store):
    import peers  # noqa: F401 - the fixtures' module
    from hubspot_shapes import received

    p = project(CRM)
    wiremock.stub({"request": {"method": "GET", "urlPath": "/crm/v3/objects/companies",
                               "queryParameters": {"after": {"absent": True}}},
                   "response": page(company("101", "Acme", "12000", "2026-12-01T10:00:00.000Z"), after="2")})
    wiremock.stub({"request": {"method": "GET", "urlPath": "/crm/v3/objects/companies",
                               "queryParameters": {"after": {"equalTo": "2"}}},
                   "response": page(company("102", "Globex", "30000", "2026-12-01T11:30:00.000Z"))})
    first = sync(store, p, hs_reader(p, hubspot_proxy, spec, batch_size=1))
    assert (first.status, first.read, first.batches, first.created) == ("ok", 2, 2, 2)
    assert first.cursor == {"mode": "incremental", "since": "2026-12-01T11:30:00.000Z"}
    assert accounts(store) == {"101": (12000, None), "102": (30000, None)}
    wiremock.stub({"request": {"method": "POST", "urlPath": "/crm/v3/objects/companies/search"},
                   "response": search(company("101", "Acme", "15000", "2026-12-02T08:00:00.000Z"))})
    second = sync(store, p, hs_reader(p, hubspot_proxy, spec))
    assert (second.read, second.updated, second.changed) == (1, 1, 1)
    assert accounts(store)["101"] == (15000, None)
    (body,) = received(wiremock, "POST", "/crm/v3/objects/companies/search")
    assert body["filterGroups"][0]["filters"][0] == {
        "propertyName": "hs_lastmodifieddate", "operator": "GT",
        "value": str(int(dt.datetime(2026, 12, 1, 11, 30, tzinfo=dt.timezone.utc).timestamp() * 1000))}
    assert body["sorts"] == ["hs_lastmodifieddate"] and body["after"] == "0"
    assert second.cursor == {"mode": "incremental", "since": "2026-12-02T08:00:00.000Z"}


def test_hubspot_429_waits_as_told_and_the_sync_completes(hubspot_proxy, wiremock, spec, store):
    p = project(CRM)
    limited = {"status": 429, "headers": {"Content-Type": "application/json", "Retry-After": "2"},
               "jsonBody": {"status": "error", "message": "You have reached your secondly limit.",
                            "errorType": "RATE_LIMIT", "correlationId": "aeb5f871-7f07-4993-9211-075dc63e7cbf",
                            "policyName": "SECONDLY", "category": "RATE_LIMITS"}}
    for state, then, answer in [("Started", "ok", limited),
                                ("ok", "ok", page(company("101", "Acme", "1", "2026-12-01T10:00:00.000Z")))]:
        wiremock.stub({"scenarioName": "rate", "requiredScenarioState": state, "newScenarioState": then,
                       "request": {"method": "GET", "urlPath": "/crm/v3/objects/companies"}, "response": answer})
    sleeps: list[float] = []
    result = sync(store, p, hs_reader(p, hubspot_proxy, spec, sleeps=sleeps))
    assert result.status == "ok" and result.read == 1 and sleeps == [2.0]


def test_hubspot_5xx_past_the_retries_stops_unreachable_keeping_what_was_written(hubspot_proxy, wiremock, spec, store):
    p = project(CRM)
    wiremock.stub({"request": {"method": "GET", "urlPath": "/crm/v3/objects/companies",
                               "queryParameters": {"after": {"absent": True}}},
                   "response": page(company("101", "Acme", "1", "2026-12-01T10:00:00.000Z"), after="2")})
    wiremock.stub({"request": {"method": "GET", "urlPath": "/crm/v3/objects/companies",
                               "queryParameters": {"after": {"equalTo": "2"}}},
                   "response": {"status": 503, "headers": {"Content-Type": "application/json"},
                                "jsonBody": {"status": "error", "message": "Service unavailable",
                                             "correlationId": "aeb5f871-7f07-4993-9211-075dc63e7cbf",
                                             "category": "SERVICE_UNAVAILABLE"}}})
    sleeps: list[float] = []
    with pytest.raises(SourceUnreachable, match="server error 503"):
        sync(store, p, hs_reader(p, hubspot_proxy, spec, sleeps=sleeps, batch_size=1, retries=2))
    assert len(sleeps) == 2 and TOKEN not in str(sleeps)
    assert list(accounts(store)) == ["101"]
    with store.engine.connect() as conn:
        run = runs(conn, "crm")[0]
    assert run["status"] == "failed" and run["cursor"] == {"mode": "full", "after": "2",
                                                           "max": "2026-12-01T10:00:00.000Z"}
    assert TOKEN not in (run["error"] or "")


def test_a_killed_sync_process_resumes_from_the_page_after_its_last_written_batch(wiremock, tmp_path):
    import os
    import signal
    import subprocess
    import time

    folder = tmp_path / "rules"
    folder.mkdir()
    (folder / "s.play").write_text(CRM, encoding="utf-8")
    db = f"sqlite:///{tmp_path}/store.db"
    first = {"request": {"method": "GET", "urlPath": "/crm/v3/objects/companies",
                         "queryParameters": {"after": {"absent": True}}},
             "response": page(company("101", "Acme", "1", "2026-12-01T10:00:00.000Z"), after="2")}
    second_slow = {"scenarioName": "kill", "requiredScenarioState": "Started", "newScenarioState": "again",
                   "request": {"method": "GET", "urlPath": "/crm/v3/objects/companies",
                               "queryParameters": {"after": {"equalTo": "2"}}},
                   "response": {**page(company("102", "Globex", "2", "2026-12-01T11:00:00.000Z")),
                                "fixedDelayMilliseconds": 60_000}}
    second = {"scenarioName": "kill", "requiredScenarioState": "again",
              "request": second_slow["request"],
              "response": page(company("102", "Globex", "2", "2026-12-01T11:00:00.000Z"))}
    for mapping in (first, second_slow, second):
        wiremock.stub(mapping)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]), "PLAYBOOK_SOURCE_CRM_TOKEN": TOKEN,
           "PLAYBOOK_SOURCE_CRM_BASE_URL": wiremock.url, "PLAYBOOK_SOURCE_CRM_BATCH_SIZE": "1",
           "PLAYBOOK_SOURCE_CRM_TIMEOUT": "90"}
    argv = [sys.executable, "-m", "cli.main", "sync", "crm", "--rules", str(folder), "--db", db]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        store = None
        while time.monotonic() < deadline:  # wait for the first batch's cursor, then for page 2 to be asked
            asked = [r for r in wiremock.requests() if "after=2" in r["url"]]
            if asked:
                break
            time.sleep(0.2)
        assert asked, "the sync never asked for the second page"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    store = Store.open(db)
    try:
        assert list(accounts(store)) == ["101"]
        with store.engine.connect() as conn:
            (died,) = runs(conn, "crm")
        assert died["status"] == "interrupted" and died["cursor"]["after"] == "2"  # killed: it never finished
        resumed = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
        assert resumed.returncode == 0, resumed.stderr
        assert sorted(accounts(store)) == ["101", "102"]
        firsts = [r for r in wiremock.requests() if "after=" not in r["url"]]
        assert len(firsts) == 1  # the resumed sync did not read the first page again
        with store.engine.connect() as conn:
            last, died = runs(conn, "crm")
            stored = conn.execute(sa.text("SELECT status FROM sync_runs ORDER BY id")).scalars().all()
        assert (last["status"], last["read"], last["created"]) == ("ok", 1, 1)
        assert stored == ["interrupted", "ok"]  # the resumed sync wrote what the listing showed
    finally:
        store.close()


CONTACTS = ENTITY + '''
entity contact
  field first_name text?

source people from hubspot contacts
  incremental by lastmodifieddate
  contact.id         = id
  contact.account_id = associatedcompanyid
  contact.email      = email
'''


def test_hubspot_contacts_land_as_contacts_of_their_company_and_a_bad_email_is_named(
        hubspot_proxy, wiremock, spec, store):
    p = project(CONTACTS)
    with store.engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO accounts (id) VALUES ('101')"))

    def person(pid: str, email: str) -> dict[str, Any]:
        return {"id": pid, "properties": {"email": email, "associatedcompanyid": "101",
                                          "lastmodifieddate": "2026-12-01T10:00:00.000Z"},
                "archived": False, "createdAt": "2026-01-01T00:00:00.000Z", "updatedAt": "2026-12-01T10:00:00.000Z"}

    wiremock.stub({"request": {"method": "GET", "urlPath": "/crm/v3/objects/contacts"},
                   "response": page(person("501", "ada@acme.test"), person("502", "not-an-address"))})
    reader = HubSpotReader(decl(p, "people"), load_source_settings("people", token=TOKEN, base_url=hubspot_proxy),
                           transport=spec)
    with pytest.raises(SyncRefused) as err:
        asyncio.run(run_sync(store, p.catalog, decl(p, "people"), reader))
    (problem,) = err.value.errors
    assert (problem.record, problem.field) == ("502 (id)", "contact.email <- email")
    wiremock.reset()
    wiremock.stub({"request": {"method": "GET", "urlPath": "/crm/v3/objects/contacts"},
                   "response": page(person("501", "ada@acme.test"), person("502", "bo@acme.test"))})
    reader = HubSpotReader(decl(p, "people"), load_source_settings("people", token=TOKEN, base_url=hubspot_proxy),
                           transport=spec)
    result = asyncio.run(run_sync(store, p.catalog, decl(p, "people"), reader))
    assert (result.status, result.created) == ("ok", 2)
    with store.engine.connect() as conn:
        assert sorted(conn.execute(sa.text("SELECT id, account_id, email FROM contacts")).all()) == [
            ("501", "101", "ada@acme.test"), ("502", "101", "bo@acme.test")]
