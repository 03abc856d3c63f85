"""Strict, sandboxed rendering: a missing value fails, never "Hi ,"."""

from __future__ import annotations

import pytest

from connectors.base import PermanentError, RenderError
from connectors.render import render


def test_renders_values():
    assert render("Hi {{ name }}, {{ account.usage }}", {"name": "Ada", "account": {"usage": "85%"}}) == "Hi Ada, 85%"


def test_missing_value_fails_and_names_it():
    with pytest.raises(RenderError, match=r"\{\{ first_name \}\} has no value"):
        render("Hi {{ first_name }},", {"name": "Ada"}, what="template hello")


def test_missing_attribute_fails():
    with pytest.raises(RenderError, match="field 'csm' has no value"):
        render("{{ account.csm }}", {"account": {}})


def test_render_errors_are_not_retryable():
    with pytest.raises(PermanentError) as info:
        render("{{ x }", {})
    assert info.value.retryable is False


def test_sandbox_blocks_python_internals():
    with pytest.raises(RenderError):
        render("{{ ''.__class__.__mro__[1].__subclasses__() }}", {})
