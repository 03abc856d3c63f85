"""Every function of the registry is documented in docs/semantics.md's function table."""

import re
from pathlib import Path

from dsl.functions import FUNCTIONS

ROOT = Path(__file__).resolve().parents[2]


def test_every_function_is_in_the_semantics_table():
    text = (ROOT / "docs/semantics.md").read_text()
    table = text[text.index("## Functions"):]
    table = table[:table.index("\n## ")]
    # `avg/sum/min/max(metric, N days)` documents four names at once.
    documented = {name for cell in re.findall(r"`([a-z_/]+)\(", table) for name in cell.split("/")}
    assert set(FUNCTIONS) - documented == set()
