"""A partial bench adds to report.json: rows it measured replace their earlier selves by key, the
others stay, and the run says which were replaced and which kept."""
from __future__ import annotations

import json

from test_export import run_dir_with

from lfcc_deploy.bench.run import BenchConfig, bench_run
from lfcc_deploy.bench.timing import TimingConfig
from lfcc_deploy.gate import run_gate
from lfcc_deploy.gate_config import GatesConfig, LatencyGate

FAST = TimingConfig(warmup_ms=1, duration_s=0.01, min_iters=2)


def test_partial_bench_merges_rows_by_key(tmp_path):
    run = run_dir_with(tmp_path, "test_resnet", {}, img_size=16)
    bench_run(run, BenchConfig(backends=["torch"], batches=[1, 2], accuracy_images=32, timing=FAST))
    first = {r["batch"]: r for r in json.loads((run / "report.json").read_text())["rows"]}
    said: list[str] = []
    report = bench_run(run, BenchConfig(backends=["torch"], batches=[2], accuracy_images=32, timing=FAST),
                       say=said.append)
    rows = {r["batch"]: r for r in report["rows"]}
    assert sorted(rows) == [1, 2] and rows[1] == first[1]  # kept as it was
    assert rows[2]["measured_at"] == report["created"] and rows[2]["latency"] != first[2]["latency"]
    assert any("1 of them replacing" in s and "1 earlier rows kept" in s for s in said)
    assert any("replaced: student torch fp32 cpu b2" in s for s in said)
    assert any("kept: student torch fp32 cpu b1" in s for s in said)
    gates = GatesConfig(latency=[LatencyGate(backend="torch", device="cpu", batch=1, max_p50_ms=1e6)])
    assert run_gate(run, thresholds=gates)["passed"]  # the batch-1 row the partial bench skipped is still there
