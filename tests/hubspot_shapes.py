"""HubSpot's CRM shapes for WireMock stubs, and the check that Prism found nothing outside HubSpot's spec.

Shared by the HubSpot connector's tests (tests/connectors/test_hubspot.py)
and the plays that run through it (tests/workflows/test_hubspot_play.py).
"""

from __future__ import annotations

import json
from typing import Any

import httpx

import peers

PROP = "playbook_idempotency_key"
JSON = {"Content-Type": "application/json"}
CORRELATION = "aeb5f871-7f07-4993-9211-075dc63e7cbf"


class SpecChecked(httpx.AsyncBaseTransport):
    """The connector's transport: every answer read, and any Prism violation kept.

    Prism answers a request outside HubSpot's spec with 422 (problem+json
    from stoplight.io) and a stub answer outside it with 500 and
    `sl-violations`: either is our bug, whatever the connector made of it.
    """

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.violations: list[str] = []
        self.sent: list[tuple[str, str, Any]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        self.sent.append((request.method, request.url.path, body))
        response = await self.inner.handle_async_request(request)
        content = await response.aread()
        if "sl-violations" in response.headers or b"stoplight.io/prism/errors" in content:
            self.violations.append(f"{request.method} {request.url.path}: {response.status_code} "
                                   f"{response.headers.get('sl-violations') or content[:600]!r}")
        return httpx.Response(response.status_code, headers=response.headers, content=content, request=request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def obj(object_id: str, **properties: str) -> dict[str, Any]:
    """A SimplePublicObject."""
    return {"id": object_id, "properties": properties, "archived": False,
            "createdAt": "2026-03-09T09:00:00.000Z", "updatedAt": "2026-03-09T09:00:00.000Z"}


def found(*objects: dict[str, Any]) -> dict[str, Any]:
    return {"status": 200, "headers": JSON, "jsonBody": {"total": len(objects), "results": list(objects)}}


def created(object_id: str, **properties: str) -> dict[str, Any]:
    return {"status": 201, "headers": JSON, "jsonBody": obj(object_id, **properties)}


def error(status: int, message: str, category: str, **extra: Any) -> dict[str, Any]:
    headers = {**JSON, **extra.pop("headers", {})}
    return {"status": status, "headers": headers,
            "jsonBody": {"message": message, "category": category, "correlationId": CORRELATION, **extra}}


def stub(wm: peers.WireMock, method: str, path: str, response: dict[str, Any], *, scenario: str | None = None,
         state: str | None = None, then: str | None = None, path_regex: bool = False) -> None:
    mapping: dict[str, Any] = {"request": {"method": method, ("urlPathPattern" if path_regex else "urlPath"): path},
                               "response": response}
    if scenario:
        mapping["scenarioName"] = scenario
        mapping["requiredScenarioState"] = state or "Started"
        if then:
            mapping["newScenarioState"] = then
    wm.stub(mapping)


def received(wm: peers.WireMock, method: str, path: str) -> list[dict[str, Any]]:
    """The JSON bodies WireMock received for one method and path, oldest first."""
    return [json.loads(r["body"]) for r in wm.requests() if r["method"] == method and r["url"] == path]


def found_by_key(object_id: str, **properties: str) -> dict[str, Any]:
    """A search answer holding one object whose key is the one searched for (WireMock's templating)."""
    body = json.dumps({"total": 1, "results": [obj(object_id, **properties, **{PROP: "KEY"})]})
    searched = "{{jsonPath request.body '$.filterGroups[0].filters[0].value'}}"
    return {"status": 200, "headers": JSON, "transformers": ["response-template"],
            "body": body.replace('"KEY"', '"' + searched + '"')}


DEAL_BY_KEY = "/crm/v3/objects/deals/play.*"  # GET .../deals/{our key}?idProperty=playbook_idempotency_key


def no_deal() -> dict[str, Any]:
    """HubSpot's answer to a deal read by a key no deal holds."""
    return error(404, "Object not found.  objectId are usually numeric.", "OBJECT_NOT_FOUND")
