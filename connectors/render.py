"""Rendering of message templates: Jinja2's sandbox with strict undefined.

A value the account does not have fails loudly (RenderError, not retryable)
instead of producing "Hi ,". The sandbox keeps a template from reaching
Python internals: templates live in a git repository many people edit.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateError, UndefinedError
from jinja2.sandbox import SandboxedEnvironment

from connectors.base import RenderError


@lru_cache(maxsize=1)
def environment() -> SandboxedEnvironment:
    # autoescape off: bodies are plain text; an HTML email connector escapes itself.
    # keep_trailing_newline: what the author wrote is what is sent.
    return SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)


@lru_cache(maxsize=512)
def _compile(source: str):  # noqa: ANN202 - jinja2.Template
    return environment().from_string(source)


def render(source: str, context: Mapping[str, Any], *, what: str = "template") -> str:
    """`source` rendered with `context`; RenderError names the missing value."""
    try:
        return _compile(source).render(**context)
    except UndefinedError as exc:
        raise RenderError(f"{what}: {_missing(exc.message or '')}") from exc
    except TemplateError as exc:
        raise RenderError(f"{what}: {exc}") from exc
    except Exception as exc:  # a filter on the wrong type, a sandbox refusal
        raise RenderError(f"{what}: {type(exc).__name__}: {exc}") from exc


def _missing(message: str) -> str:
    """Jinja's "'first_name' is undefined" in the words of a template author, the placeholder named."""
    bare = re.fullmatch(r"'([^']+)' is undefined", message)
    if bare:
        return f"{{{{ {bare.group(1)} }}}} has no value here (the field is empty, or not a field)"
    attribute = re.fullmatch(r"'[^']+' has no attribute '([^']+)'", message)
    if attribute:
        return f"the placeholder's field '{attribute.group(1)}' has no value here (empty, or not a field)"
    return message
