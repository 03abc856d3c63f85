"""Fixtures and markers of the workflow suites; helpers live in workflow_support.py."""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "slow: runs real servers and processes (tens of seconds); `-m 'not slow'` skips")
