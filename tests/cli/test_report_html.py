"""The HTML report opened in headless Chromium: the charts render, and every number on the page
is the one `--format json` gives.

Chromium is Debian's package `chromium`. When it is missing the fixture installs it with
apt-get (as root, as .ci/run does); a browser that cannot be installed or started fails the
test loudly, it is never skipped.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from cli_helpers import run_cli
from report_data import CATALOG, ENTITY, SEEDS_STAGES, seed_book, seed_funnel
from engine.store import Store

BROWSER_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]


def _install_chromium() -> str:
    found = shutil.which("chromium")
    if found:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.fail("chromium is not installed and cannot be installed here (needs root and apt-get): "
                    "apt-get install -y chromium")
    # Test workers (pytest -n) share the machine: one installs, the others wait for it.
    with open(Path(tempfile.gettempdir()) / "playbook-chromium-install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        found = shutil.which("chromium")
        proc = None if found else subprocess.run(["apt-get", "install", "-y", "chromium"], capture_output=True,
                                                  text=True, timeout=900)
    found = shutil.which("chromium")
    if not found and proc is None:
        pytest.fail("chromium is still not on PATH after another worker installed it")
    if not found:
        assert proc is not None
        pytest.fail(f"apt-get install -y chromium failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return found


@pytest.fixture(scope="module")
def chromium() -> str:
    return _install_chromium()


def rendered_dom(browser: str, page: Path, profile: Path) -> str:
    proc = subprocess.run([browser, *BROWSER_FLAGS, f"--user-data-dir={profile}", "--dump-dom", page.as_uri()],
                          capture_output=True, text=True, timeout=120)
    if proc.returncode != 0 or "<body" not in proc.stdout:
        pytest.fail(f"chromium did not render {page} (exit {proc.returncode}): {proc.stderr[-2000:]}")
    return proc.stdout


class Dom(HTMLParser):
    """The elements the test reads: data-field cells with their text, charts and their marks."""

    def __init__(self) -> None:
        super().__init__()
        self.fields: dict[str, str] = {}
        self.charts: dict[str, dict[str, str]] = {}
        self.marks: dict[str, list[dict[str, str]]] = {}
        self.body: dict[str, str] = {}
        self._field: str | None = None
        self._chart: str | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "body":
            self.body = a
        if tag == "svg" and "chart" in a.get("class", ""):
            self._chart = a["id"]
            self.charts[a["id"]] = a
            self.marks[a["id"]] = []
        if self._chart is not None and "data-mark" in a:
            self.marks[self._chart].append(a)
        if "data-field" in a:
            self._field, self._text = a["data-field"], []

    def handle_endtag(self, tag: str) -> None:
        if tag == "svg":
            self._chart = None
        if self._field is not None and tag in ("td", "strong", "span"):
            self.fields[self._field] = "".join(self._text).strip()
            self._field = None

    def handle_data(self, data: str) -> None:
        if self._field is not None:
            self._text.append(data)


def at(doc: dict[str, Any], path: str) -> Any:
    node: Any = doc
    for part in path.split("."):
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def same(shown: str, value: Any) -> bool:
    """The page's text says the JSON's value (as a reader would read it: $ and , are formatting)."""
    if value is None or value == "":
        return shown in ("", "—")
    if isinstance(value, str):
        return shown == value
    return abs(float(shown.replace("$", "").replace(",", "")) - float(value)) < 0.5


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory, chromium: str) -> tuple[dict[str, Any], Dom]:
    folder = tmp_path_factory.mktemp("html")
    (folder / "rules").mkdir()
    (folder / "rules" / "account.play").write_text(ENTITY)
    url = f"sqlite:///{folder}/store.db"
    with Store.open(url, catalog=CATALOG) as store:
        seed_book(store)
        seed_funnel(store)
    args = ["report", "all", "--db", url, "--rules", str(folder / "rules"), "--today", "2026-09-15",
            "--stages", ",".join(SEEDS_STAGES), "--cost", "9000"]
    as_json = run_cli(*args, "--format", "json")
    assert as_json.code == 0, as_json.stderr
    page = folder / "report.html"
    as_html = run_cli(*args, "--format", "html", "--out", str(page))
    assert as_html.code == 0, as_html.stderr
    dom = Dom()
    dom.feed(rendered_dom(chromium, page, folder / "profile"))
    return json.loads(as_json.stdout)["reports"], dom


def test_the_script_ran_in_the_browser(report: tuple[dict[str, Any], Dom]) -> None:
    _, dom = report
    assert dom.body.get("data-rendered") == "yes"
    assert dom.body.get("data-reports") == "funnel,plays,revenue,sla,triggers"


@pytest.mark.parametrize("chart", ["chart-funnel", "chart-fire-rate", "chart-nrr"])
def test_each_chart_is_laid_out_with_every_mark_drawn(report: tuple[dict[str, Any], Dom], chart: str) -> None:
    _, dom = report
    marks = dom.marks[chart]
    assert marks, f"{chart} has no marks"
    assert int(dom.charts[chart]["data-rendered-marks"]) == len(marks)
    assert int(dom.charts[chart]["data-rendered-width"]) > 300


def test_the_charts_plot_the_json_numbers(report: tuple[dict[str, Any], Dom]) -> None:
    doc, dom = report
    assert [int(m["data-count"]) for m in dom.marks["chart-funnel"]] == [1000, 600, 400, 250, 150, 75]
    assert [int(m["data-count"]) for m in dom.marks["chart-funnel"]] == [s["count"] for s in doc["funnel"]["stages"]]
    rates = {(m["data-trigger"], m["data-quarter"]): float(m["data-rate"]) for m in dom.marks["chart-fire-rate"]}
    assert rates == {(r["trigger"], r["quarter"]): r["fire_rate"] for r in doc["triggers"]["rows"]}
    nrr = {m["data-segment"]: float(m["data-nrr"]) for m in dom.marks["chart-nrr"]}
    # The funnel's 1,000 accounts have no segment and no ARR: no NRR to plot.
    assert nrr == {s["segment"]: s["nrr"] for s in doc["revenue"]["by_segment"] if s["nrr"] is not None}
    assert sorted(nrr) == ["enterprise", "smb"]


def test_every_number_on_the_page_is_the_jsons(report: tuple[dict[str, Any], Dom]) -> None:
    doc, dom = report
    assert len(dom.fields) > 60
    wrong = {f: (shown, at(doc, f)) for f, shown in dom.fields.items() if not same(shown, at(doc, f))}
    assert wrong == {}
    assert dom.fields["funnel.overall_conversion_percent"] == "7.5%"
    assert dom.fields["revenue.overall.nrr_percent"] == "104.5%"
