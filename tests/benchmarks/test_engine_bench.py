"""benchmarks/engine_bench.py's data set: made once, never replaced unasked."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import engine_bench  # noqa: E402


def test_a_store_without_its_marker_is_refused_not_replaced(tmp_path: Path) -> None:
    db = tmp_path / "store.sqlite"
    db.write_bytes(b"an hour of generated data")
    with pytest.raises(SystemExit, match="exists but it has no marker.*--regenerate"):
        engine_bench.ensure_db(db, 10)
    assert db.read_bytes() == b"an hour of generated data"


def test_a_store_whose_marker_names_another_size_is_refused_not_replaced(tmp_path: Path) -> None:
    db = tmp_path / "store.sqlite"
    db.write_bytes(b"data")
    db.with_suffix(".json").write_text('{"accounts": 99, "seed": 7, "today": "2026-06-01"}')
    with pytest.raises(SystemExit, match="its marker .* says"):
        engine_bench.ensure_db(db, 10)
    assert db.read_bytes() == b"data"


def test_regenerate_replaces_it_and_writes_the_marker_the_next_run_reuses(tmp_path: Path) -> None:
    db = tmp_path / "store.sqlite"
    db.write_bytes(b"old")
    assert engine_bench.ensure_db(db, 20, regenerate=True) is not None
    assert engine_bench.ensure_db(db, 20) is None  # reused
