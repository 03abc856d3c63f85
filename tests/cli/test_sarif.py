"""`playbook check --format sarif`: SARIF 2.1.0 that code-scanning tools read."""

from __future__ import annotations

import json

from cli.main import run

SOURCE = '''\
entity account
  field health_score number 0..100

trigger t
  when account.helth_score > 60
  then start p
'''


def test_sarif_names_each_finding_by_code_and_place(tmp_path, capsys):
    path = tmp_path / "t.play"
    path.write_text(SOURCE)
    assert run(["check", str(path), "--format", "sarif"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["version"] == "2.1.0"
    [sarif_run] = doc["runs"]
    assert sarif_run["columnKind"] == "unicodeCodePoints"
    rules = [r["id"] for r in sarif_run["tool"]["driver"]["rules"]]
    first = sarif_run["results"][0]
    assert first["ruleId"] == "PB102" and rules[first["ruleIndex"]] == "PB102"
    assert first["level"] == "error"
    assert first["message"]["text"].startswith("unknown field 'helth_score'")
    loc = first["locations"][0]["physicalLocation"]
    assert loc["artifactLocation"]["uri"] == str(path)
    assert loc["region"] == {"startLine": 5, "startColumn": 16, "endLine": 5, "endColumn": 27}


def test_sarif_of_a_clean_folder_has_no_results(tmp_path, capsys):
    (tmp_path / "ok.play").write_text("entity account\n  field a int\n")
    assert run(["check", str(tmp_path), "--format", "sarif"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["runs"][0]["results"] == []
