"""What the source tests share: a reader that dies mid-sync."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from engine.sync import Batch, SourceUnreachable


class Crashing:
    """A reader that dies (as a killed worker would) after `batches` batches."""

    def __init__(self, inner: Any, batches: int) -> None:
        self.inner, self.left, self.decl = inner, batches, inner.decl

    async def batches(self, cursor: Any, *, full: bool) -> AsyncIterator[Batch]:
        async for b in self.inner.batches(cursor, full=full):
            if self.left == 0:
                raise SourceUnreachable("connection reset mid-sync")
            self.left -= 1
            yield b

    async def aclose(self) -> None:
        await self.inner.aclose()
