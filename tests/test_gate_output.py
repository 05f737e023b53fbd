"""Gate results as CI reads them: one line per check at any width, JUnit XML, the GitHub step summary, --json."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from conftest import tiny_recipe_text

from lfcc_deploy.bench.report import derive

ROOT = Path(__file__).resolve().parent.parent
LONG_REASON = "onnxruntime raised " + "a very long explanation of what went wrong " * 5


def _row(model, backend, precision, p50, accuracy, size, status="ok", reason=""):
    return dict(model=model, backend=backend, precision=precision, device="cpu", batch=32, status=status,
                reason=reason, mode="compute", unstable=False, file="x", params=1, accuracy=accuracy,
                size_bytes=size, latency=dict(p50_ms=p50, p99_ms=p50 * 1.5) if status == "ok" else None)


@pytest.fixture
def run(tmp_path):
    """A run directory with a hand-written report: a passing, a failing and a broken row."""
    d = tmp_path / "run"
    d.mkdir()
    (d / "recipe.toml").write_text(tiny_recipe_text())
    rows = [_row("student", "onnxruntime", "fp32", 2.0, 0.90, 4_000_000),
            _row("student", "onnxruntime", "int8", 1.0, 0.80, 1_000_000),
            _row("teacher", "onnxruntime", "fp32", 8.0, 0.95, 9_000_000),
            _row("student", "torch", "fp32", 0, 0, 0, status="failed", reason=LONG_REASON)]
    (d / "report.json").write_text(json.dumps(dict(schema="lfcc-deploy/bench-report", version=1, run_dir=str(d),
                                                   config=dict(threads=1), rows=derive(rows))))
    return d


GATES = ("--set", "gates.min_accuracy=0.85", "--set", "gates.max_model_mb=2",
         "--set", 'gates.latency=[{backend="tensorrt",precision="int8",device="cuda",batch=32,max_p99_ms=1}]')


def test_every_check_is_one_line_in_a_narrow_pipe(run):
    """`COLUMNS=60 lfcc-deploy gate RUN | cat`: each check on its own line, nothing wrapped."""
    env = dict(os.environ, COLUMNS="60", PYTHONPATH=str(ROOT))
    res = subprocess.run([sys.executable, "-m", "lfcc_deploy", "gate", str(run), *GATES], capture_output=True,
                         text=True, env=env, timeout=300)
    assert res.returncode == 1, res.stderr
    checks = json.loads((run / "gate.json").read_text())["checks"]
    lines = res.stdout.splitlines()
    assert len(lines) == len(checks) and len(checks) >= 5
    for line, c in zip(lines, checks):
        assert line.startswith(c["status"]) and c["row"] in line and f"limit {c['limit']}" in line
    assert any(LONG_REASON.strip() in ln for ln in lines)  # the longest note too, whole


@pytest.mark.parametrize("gates, drop_broken, code", [(GATES, False, 1), (("--set", "gates.min_accuracy=0.5"), False, 1),
                                                      (("--set", "gates.max_model_mb=5"), True, 0)])
def test_junit_has_one_testcase_per_check_and_failures_match_the_exit_code(run, cli, tmp_path, gates, drop_broken,
                                                                           code):
    if drop_broken:  # without the broken bench row every check can pass
        report = json.loads((run / "report.json").read_text())
        report["rows"] = [r for r in report["rows"] if r["status"] == "ok"]
        (run / "report.json").write_text(json.dumps(report))
    xml = tmp_path / "out" / "gate.xml"
    res = cli("gate", run, *gates, "--junit", xml)
    assert res.code == code, res.err
    checks = json.loads((run / "gate.json").read_text())["checks"]
    root = ET.parse(xml).getroot()
    cases = root.findall(".//testcase")
    failures = [c for c in cases if c.find("failure") is not None]
    assert len(cases) == len(checks) == int(root.get("tests"))
    assert len(failures) == sum(not c["passed"] for c in checks) == int(root.get("failures"))
    assert (len(failures) > 0) == (code == 1)
    for case, c in zip(cases, checks):
        assert case.get("name") == c["row"] and case.get("classname").endswith(c["gate"].replace(" ", "_"))
        if not c["passed"]:
            msg = case.find("failure").get("message")
            assert f"limit {c['limit']}" in msg and "measured" in msg
            if c["measured"] is not None:
                assert f"{c['measured']:.6g}" in msg


def test_step_summary_is_appended_as_markdown(run, cli, tmp_path, monkeypatch):
    summary = tmp_path / "step_summary.md"
    summary.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    assert cli("gate", run, *GATES).code == 1
    text = summary.read_text()
    checks = json.loads((run / "gate.json").read_text())["checks"]
    assert text.startswith("earlier step\n")
    table = [ln for ln in text.splitlines() if ln.startswith("| ") and any(s in ln for s in ("PASS", "FAIL", "SKIP"))]
    assert len(table) == len(checks) and f"{sum(not c['passed'] for c in checks)} of {len(checks)} checks failed" in text


def test_json_prints_the_verdict_and_nothing_else(run, cli, monkeypatch):
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    res = cli("gate", run, *GATES, "--json")
    assert res.code == 1
    assert json.loads(res.out) == json.loads((run / "gate.json").read_text())


def test_recipe_option_as_a_run_name_gates_that_run_with_its_own_gates(run, cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    run.rename(tmp_path / "runs" / "mine")
    res = cli("gate", "--recipe", "mine", "--set", "gates.max_model_mb=5")
    assert "run directory: runs/mine (the run of --recipe mine" in res.err
    assert res.code == 1 and (tmp_path / "runs" / "mine" / "gate.json").is_file()  # the broken bench row fails
    res = cli("gate", "runs/mine", "--recipe", "no_such_recipe")
    assert res.code == 2 and "recipe file not found" in res.err
