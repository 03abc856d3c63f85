"""Fixtures shared by every suite: the real protocol peers of tests/peers.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import peers


@pytest.fixture(scope="session")
def _wiremock_process() -> Iterator[peers.WireMock]:
    with peers.wiremock() as wm:
        yield wm


@pytest.fixture
def wiremock(_wiremock_process: peers.WireMock) -> Iterator[peers.WireMock]:
    """A WireMock with no stubs and no recorded requests (one process per test worker)."""
    _wiremock_process.reset()
    yield _wiremock_process


@pytest.fixture(scope="session")
def hubspot_prism() -> Iterator[str]:
    """Prism mocking HubSpot's CRM objects API (../shared/peers/hubspot/objects.json)."""
    with peers.prism_mock(peers.HUBSPOT / "objects.json") as url:
        yield url


@pytest.fixture(scope="session")
def hubspot_proxy(_wiremock_process: peers.WireMock) -> Iterator[str]:
    """Prism checking requests and answers against HubSpot's CRM objects spec, passing them to the
    session's WireMock (stub it through the `wiremock` fixture)."""
    with peers.prism_proxy(peers.HUBSPOT / "objects.json", _wiremock_process.url) as url:
        yield url
