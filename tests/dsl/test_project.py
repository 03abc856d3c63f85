"""dsl.project.load: parsing a large folder in worker processes gives exactly
what the serial loop gives (modules, order, spans, diagnostics)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel

from dsl import loader
from dsl import nodes as n
from dsl.project import load, load_text

FIXTURE = (Path(__file__).with_name("fixtures") / "everything.play").read_text(encoding="utf-8")

PLAY = """\
# play {i}
trigger signal_{i} "Signal {i}"
  when account.usage_percent >= {u}%
   and account.health_score > 40
  then start play_{i}

score fit_{i}
  = account.health_score * 0.4 + account.nps * 3
  band high   80..100  "Immediate outreach"
  band low    ..<80    "Monitor"

play play_{i} "Play {i}"
  kind upsell
  owner account.csm
  day 1   task account.csm "Follow up {i}" due 2 business days
"""

# Files that produce diagnostics of every kind the parser makes.
BROKEN = [
    b"trigger t\n  when account.arr > \n",  # syntax error
    b"play p\n  day 1 email\n    indented wrongly\n   x\n",  # bad dedent
    b"\xff\xfe not utf-8",  # undecodable
    b"\xef\xbb\xbftrigger bom_t\r\n  when account.arr > 1\r\n  then start play_1\r\n",  # BOM + CRLF
    b"score s\n  = " + b"(" * 100 + b"1" + b")" * 100 + b"\n",  # nests too deep
    b"",  # empty
]


def _deep_equal(a: object, b: object, where: str = "") -> None:
    """Equality that also compares what Node.__eq__ ignores: spans and fields-set."""
    assert type(a) is type(b), where
    if isinstance(a, BaseModel):
        assert a.__pydantic_fields_set__ == b.__pydantic_fields_set__, where  # type: ignore[attr-defined]
        assert a.__pydantic_extra__ == b.__pydantic_extra__, where  # type: ignore[attr-defined]
        assert a.__dict__.keys() == b.__dict__.keys(), where
        for k, v in a.__dict__.items():
            _deep_equal(v, b.__dict__[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where  # type: ignore[arg-type]
        for i, (x, y) in enumerate(zip(a, b)):  # type: ignore[call-overload]
            _deep_equal(x, y, f"{where}[{i}]")
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where  # type: ignore[attr-defined]
        for k in a:
            _deep_equal(a[k], b[k], f"{where}[{k!r}]")  # type: ignore[index]
    else:
        assert a == b, where


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "sub").mkdir()
    (tmp_path / "everything.play").write_text(FIXTURE, encoding="utf-8")
    for i in range(150):
        where = tmp_path / "sub" if i % 3 == 0 else tmp_path
        (where / f"play_{i:03d}.play").write_text(PLAY.format(i=i, u=50 + i % 40), encoding="utf-8")
    for i, raw in enumerate(BROKEN):
        (tmp_path / f"broken_{i}.play").write_bytes(raw)
    return tmp_path


@pytest.fixture
def forkable(monkeypatch: pytest.MonkeyPatch) -> None:
    if sys.platform != "linux":
        pytest.skip("the parallel path forks (Linux only)")
    monkeypatch.setattr(loader, "_fork_safe", lambda: True)  # pytest-xdist runs helper threads
    monkeypatch.setattr(loader, "usable_cpus", lambda: 2)  # also on a 1-CPU runner
    monkeypatch.setattr(loader, "_load_average", lambda: 0.0)  # also on a busy one
    monkeypatch.delenv("PLAYBOOK_JOBS", raising=False)


def _assert_same(serial, parallel) -> None:
    assert [m.file for m in parallel.modules] == [m.file for m in serial.modules]
    assert parallel.modules == serial.modules
    _deep_equal(parallel.modules, serial.modules, "modules")
    _deep_equal(parallel.diagnostics, serial.diagnostics, "diagnostics")
    assert parallel.sources == serial.sources
    _deep_equal(parallel.catalog.__dict__, serial.catalog.__dict__, "catalog")


def test_parallel_load_equals_serial(folder: Path, forkable: None, monkeypatch: pytest.MonkeyPatch) -> None:
    serial = load([folder], jobs=1)
    assert len(serial.modules) == 157 and serial.diagnostics  # the broken files did produce diagnostics
    shipped = []
    real_loads = loader.loads
    monkeypatch.setattr(loader, "loads", lambda b: shipped.append(b) or real_loads(b))
    assert loader.processes(157) == 2
    parallel = load([folder])
    assert shipped, "no chunk came back from a worker: the parallel path did not run"
    _assert_same(serial, parallel)


def test_pool_failure_falls_back_to_serial(folder: Path, forkable: None, monkeypatch: pytest.MonkeyPatch) -> None:
    serial = load([folder], jobs=1)

    class Broken:
        def __init__(self, *a, **k):
            raise OSError("cannot fork")

    monkeypatch.setattr(loader, "ProcessPoolExecutor", Broken)
    _assert_same(serial, load([folder], jobs=2))


def test_worker_dying_falls_back_to_serial(folder: Path, forkable: None, monkeypatch: pytest.MonkeyPatch) -> None:
    serial = load([folder], jobs=1)
    monkeypatch.setattr(loader, "_worker", _die)
    _assert_same(serial, load([folder], jobs=2))


def _die(files):  # runs in the forked worker
    os._exit(3)


def test_when_it_stays_serial(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loader, "_fork_safe", lambda: True)
    monkeypatch.setattr(loader, "_load_average", lambda: 0.0)
    monkeypatch.delenv("PLAYBOOK_JOBS", raising=False)
    monkeypatch.setattr(loader, "usable_cpus", lambda: 2)
    assert loader.processes(loader.THRESHOLD - 1) == 1  # small folder
    assert loader.processes(1000) == 2
    assert loader.processes(1000, jobs=1) == 1
    monkeypatch.setenv("PLAYBOOK_JOBS", "1")
    assert loader.processes(1000) == 1
    monkeypatch.delenv("PLAYBOOK_JOBS")
    monkeypatch.setattr(loader, "usable_cpus", lambda: 1)  # one CPU: never fork
    assert loader.processes(1000) == 1
    monkeypatch.setattr(loader, "usable_cpus", lambda: 2)
    monkeypatch.setattr(loader, "_load_average", lambda: 3.5)  # busy machine: serial unless asked
    assert loader.processes(1000) == 1
    assert loader.processes(1000, jobs=2) == 2
    monkeypatch.setattr(loader, "_load_average", lambda: 0.0)
    monkeypatch.setattr(loader, "_fork_safe", lambda: False)  # other threads running
    assert loader.processes(1000) == 1


def test_wire_format_round_trip() -> None:
    project = load_text(FIXTURE, "everything.play")
    extra = n.Number(value=1.5)  # default span: NO_SPAN must come back as itself
    back = loader.loads(loader.dumps([project.modules, project.diagnostics, extra]))
    _deep_equal(back, [project.modules, project.diagnostics, extra])
    assert back[2].span is n.NO_SPAN
