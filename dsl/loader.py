"""Parse many .play files, on every core when there are enough of them.

`parse_all(files)` returns one `ParseResult` per file, in order, exactly as
the serial loop `[parse_file(f, str(f)) for f in files]` would. Above
`THRESHOLD` files, on a machine with two or more usable CPUs, it forks
worker processes (start method 'fork' only: the parser is built before the
fork and inherited, so a worker starts at once) and the calling process
parses too. Files go in chunks: workers take them from the front, the
caller from the back (a shared claim per chunk decides who parses it), so
the split balances itself on a busy machine. Any failure of the
pool falls back to parsing the missing chunks here: the result never
depends on whether the pool worked.

Results come back as bytes from `dumps`, a pickler that ships pydantic
models as (class, field dict, fields-set) instead of pydantic's own state,
and spans as seven plain values: 1,000 files' ASTs are ~460,000 objects,
and the default pickling cost about a third of the parse time it saved.

Knobs: `PLAYBOOK_JOBS=1` (or `jobs=1`) forces the serial path; `PLAYBOOK_JOBS=N`
asks for N processes (the caller counts as one) even on a busy machine,
where by default (1-minute load average at or above the cores) it stays serial.
"""

from __future__ import annotations

import io
import os
import pickle
import sys
import threading
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel

from dsl import nodes as n
from dsl.parser import ParseResult, lark_parser, parse_file

if TYPE_CHECKING:  # for an annotation only (sharedctypes loads ctypes)
    from multiprocessing.sharedctypes import SynchronizedArray

THRESHOLD = 64  # fewer files than this: forking costs more than it saves
CHUNK = 16  # files per task


# ---------------------------------------------------------------- wire format

_setattr = object.__setattr__
_new = object.__new__
_fields_sets: dict[frozenset[str], frozenset[str]] = {}  # interned, so the pickle memo shares them


def _model(cls: type[BaseModel], values: dict, fields_set: frozenset[str]) -> BaseModel:
    """What pydantic's __setstate__ does, minus the state dict: no validation, same object."""
    obj = _new(cls)
    _setattr(obj, "__dict__", values)
    _setattr(obj, "__pydantic_fields_set__", set(fields_set))
    _setattr(obj, "__pydantic_extra__", None)
    _setattr(obj, "__pydantic_private__", None)
    return obj


def _span(file: str, l1: int, c1: int, o1: int, l2: int, c2: int, o2: int) -> n.Span:
    return n.Span(file, n.Position(l1, c1, o1), n.Position(l2, c2, o2))


class _Pickler(pickle.Pickler):
    def reducer_override(self, obj: object):
        if obj is n.NO_SPAN:
            return "NO_SPAN"  # by reference: the module-level default stays the same object
        if type(obj) is n.Span:
            return _span, (obj.file, *obj.start, *obj.end)
        if not isinstance(obj, BaseModel):
            return NotImplemented
        if obj.__pydantic_extra__ is not None or obj.__pydantic_private__ is not None:
            return NotImplemented  # pydantic's own pickling
        fs = frozenset(obj.__pydantic_fields_set__)
        return _model, (type(obj), obj.__dict__, _fields_sets.setdefault(fs, fs))


def dumps(value: object) -> bytes:
    buf = io.BytesIO()
    _Pickler(buf, protocol=pickle.HIGHEST_PROTOCOL).dump(value)
    return buf.getvalue()


loads = pickle.loads


# ---------------------------------------------------------------- parsing


def _parse_chunk(files: list[Path]) -> list[ParseResult]:
    return [parse_file(f, str(f)) for f in files]


def _worker(index: int, files: list[Path]) -> bytes | None:
    if not _claim(index):
        return None  # the calling process took this chunk
    return dumps(_parse_chunk(files))


# One byte per chunk, set by whichever process parses it (set before the pool
# forks, so the workers inherit it).
_claims: SynchronizedArray[int] | None = None


def _claim(index: int) -> bool:
    claims = _claims
    assert claims is not None  # set by _parallel before any chunk is claimed
    with claims.get_lock():
        if claims[index]:
            return False
        claims[index] = 1
        return True


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _load_average() -> float:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return 0.0


def _fork_safe() -> bool:
    return sys.platform == "linux" and threading.active_count() == 1


def processes(count: int, jobs: int | None = None) -> int:
    """How many processes (the caller included) to parse `count` files with; 1 = serial."""
    if jobs is None:
        env = os.environ.get("PLAYBOOK_JOBS", "").strip()
        jobs = int(env) if env.isdigit() and int(env) > 0 else None
    if jobs == 1 or count < THRESHOLD:
        return 1
    # fork only: spawn would re-import everything and rebuild the parser per
    # worker; and never with other threads running (a lock one of them holds
    # at the fork stays held forever in the child).
    if not _fork_safe():
        return 1
    cpus = usable_cpus()
    # Unless asked for (jobs / PLAYBOOK_JOBS), no worker on a machine whose
    # cores are all busy already: on 2 cores at load average ~4 the worker
    # made `playbook check` slower; at ~1.3 it cut 5.5 s to 3.9 s.
    if jobs is None and _load_average() >= cpus:
        return 1
    return max(1, min(cpus, jobs or cpus, count // CHUNK))


def parse_all(files: list[Path], jobs: int | None = None) -> list[ParseResult]:
    procs = processes(len(files), jobs)
    if procs <= 1:
        return _parse_chunk(files)
    lark_parser()  # built once here, inherited by the workers
    chunks = [files[i:i + CHUNK] for i in range(0, len(files), CHUNK)]
    done: dict[int, list[ParseResult]] = {}
    try:
        _parallel(chunks, procs - 1, done)
    except Exception:  # noqa: BLE001 - any pool failure: the rest is parsed here, same results
        pass
    out: list[ParseResult] = []
    for i, chunk in enumerate(chunks):
        out += done[i] if i in done else _parse_chunk(chunk)
    return out


def _parallel(chunks: list[list[Path]], workers: int, done: dict[int, list[ParseResult]]) -> None:
    """Workers take chunks from the front, this process from the back (a claim
    per chunk decides), and reads the workers' results as they arrive."""
    global _claims
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    _claims = ctx.Array("b", len(chunks))
    try:
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            futures: list[Future[bytes | None]] = [pool.submit(_worker, i, c) for i, c in enumerate(chunks)]
            first = 0
            for i in range(len(chunks) - 1, -1, -1):
                while first < i and futures[first].done():
                    _collect(futures, first, done)
                    first += 1
                if not _claim(i):
                    break
                done[i] = _parse_chunk(chunks[i])
            for i in range(first, len(chunks)):
                _collect(futures, i, done)
    finally:
        _claims = None


def _collect(futures: list[Future[bytes | None]], i: int, done: dict[int, list[ParseResult]]) -> None:
    if i not in done:
        data = futures[i].result()
        if data is not None:
            done[i] = loads(data)
