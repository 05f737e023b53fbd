"""Gates never pass silently: a threshold whose rows are missing, or whose comparison could not be
made, is a FAIL line naming what is missing (pure checks, and a regression against real runs)."""
from __future__ import annotations

import json

import pytest

from test_export import run_dir_with

from lfcc_deploy.bench.report import derive
from lfcc_deploy.gate import gate_checks, run_gate
from lfcc_deploy.gate_config import GatesConfig


def _row(model="student", backend="onnxruntime", precision="fp32", batch=1, p50=1.0):
    return dict(model=model, backend=backend, precision=precision, device="cpu", batch=batch, mode="compute",
                status="ok", reason="", latency=dict(p50_ms=p50, p99_ms=p50), accuracy=0.9, size_bytes=10)


def _report(run_dir, rows):
    return dict(schema="lfcc-deploy/bench-report", version=1, run_dir=str(run_dir), config=dict(threads=1),
                rows=derive(rows))


def _failed(checks, gate):
    return [c for c in checks if c["gate"] == gate and c["status"] == "FAIL"]


def test_quantized_must_be_faster_without_quantized_rows_fails():
    checks = gate_checks(_report("r", [_row()]), GatesConfig(quantized_must_be_faster=True))
    (fail,) = _failed(checks, "quantized_must_be_faster")
    assert "int8 or fp16" in fail["row"] and fail["note"] == "row missing from the report"


def test_max_regression_without_student_rows_fails():
    report = _report("r", [_row(model="teacher")])
    checks = gate_checks(report, GatesConfig(max_regression=0.1), regression={})
    assert _failed(checks, "max_regression") and not all(c["passed"] for c in checks)


def test_regression_against_a_run_lacking_the_artifact_is_a_fail_line(tmp_path):
    run = run_dir_with(tmp_path, "test_resnet", {}, img_size=16)  # weights, no export/student.onnx
    (run / "report.json").write_text(json.dumps(_report(run, [_row()])))
    result = run_gate(run, thresholds=GatesConfig(max_regression=0.1), baseline=run, seconds=0.05)
    (fail,) = _failed(result["checks"], "max_regression")
    assert not result["passed"] and "student.onnx" in fail["note"]


def test_a_cpu_budget_holds_only_at_the_thread_count_it_was_measured_with():
    gate = dict(backend="onnxruntime", device="cpu", batch=1, max_p50_ms=2.0)
    report = _report("r", [_row(p50=1.0)])  # benchmarked with 1 thread
    assert all(c["passed"] for c in gate_checks(report, GatesConfig(latency=[dict(gate, threads=1)])))
    assert all(c["passed"] for c in gate_checks(report, GatesConfig(latency=[gate])))  # no count given
    (fail,) = _failed(gate_checks(report, GatesConfig(latency=[dict(gate, threads=2)])), "latency max_p50_ms")
    assert fail["measured"] == 1.0 and "at threads 1, the budget is for threads 2" in fail["note"]


def test_latency_gates_must_agree_on_the_cpu_thread_count():
    gate = dict(backend="onnxruntime", device="cpu", batch=1, max_p50_ms=2.0)
    assert GatesConfig(latency=[dict(gate, threads=4), dict(gate, batch=8, threads=4)]).cpu_threads == 4
    with pytest.raises(ValueError, match="different CPU `threads`"):
        GatesConfig(latency=[dict(gate, threads=1), dict(gate, batch=8, threads=2)])
