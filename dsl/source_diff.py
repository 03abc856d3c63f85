"""What a change to `source` declarations changes: for `playbook plan --against REV`.

A mapping change is reviewed like a rule change: the plan lists each source
added, removed or changed, and for a changed one what is read and where it
lands (`account.arr = annualrevenue -> arr_usd`).
"""

from __future__ import annotations

from dsl import nodes as n
from dsl.catalog import Catalog


def _reads(d: n.SourceDecl) -> str:
    what = " ".join(x for x in (d.system, d.object) if x)
    what += f", dated by {d.dated}" if d.dated else ""
    what += f", named by {d.named}" if d.named else ""
    return what + (f", incremental by {d.incremental}" if d.incremental else ", full each sync")


def changes(before: Catalog, after: Catalog) -> list[dict[str, object]]:
    """Per source whose declaration differs: name, status (added, removed, changed) and the differences."""
    out: list[dict[str, object]] = []
    for name in sorted(set(before.sources) | set(after.sources)):
        old, new = before.sources.get(name), after.sources.get(name)
        if old is not None and new is not None and old == new:
            continue
        if old is None and new is not None:
            out.append({"source": name, "status": "added", "details": [_reads(new)] + [
                f"+ {m.target} = {m.column}" for m in new.mappings]})
            continue
        if new is None and old is not None:
            out.append({"source": name, "status": "removed", "details": [_reads(old)]})
            continue
        assert old is not None and new is not None
        details: list[str] = []
        if _reads(old) != _reads(new):
            details.append(f"reads {_reads(old)} -> {_reads(new)}")
        if (old.query or "").strip() != (new.query or "").strip():
            details.append("query changed")
        was = {m.target: m.column for m in old.mappings}
        now = {m.target: m.column for m in new.mappings}
        for target in sorted(set(was) | set(now)):
            if target not in now:
                details.append(f"- {target} = {was[target]}")
            elif target not in was:
                details.append(f"+ {target} = {now[target]}")
            elif was[target] != now[target]:
                details.append(f"~ {target} = {was[target]} -> {now[target]}")
        out.append({"source": name, "status": "changed", "details": details})
    return out
