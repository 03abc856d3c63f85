"""Every diagnostic code the toolchain emits is documented, once."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_emitted_code_is_in_docs_diagnostics():
    emitted = set()
    for path in (ROOT / "dsl").glob("*.py"):
        emitted |= set(re.findall(r'"(PB\d{3})"', path.read_text()))
    documented = re.findall(r"^\| (PB\d{3}) \|", (ROOT / "docs/diagnostics.md").read_text(), re.M)
    assert len(documented) == len(set(documented)), "a code is documented twice"
    assert emitted - set(documented) == set()
