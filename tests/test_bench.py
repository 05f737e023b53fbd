"""Bench rows measured through each backend, reports, gates (each check on its own), baseline
regression and the one-command pipeline — through the CLI, on real (tiny) trained runs."""
from __future__ import annotations

import json
import shutil

import pytest
from conftest import tiny_recipe_text

from lfcc_deploy.training import distill, evaluate_run
from lfcc_deploy.recipe import load_recipe

FAST = ("--duration-s", "0.05", "--warmup-ms", "5", "--min-iters", "3")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A distilled tiny run with student and teacher exported (fp32 + INT8)."""
    from lfcc_deploy.export.run import export_run
    tmp = tmp_path_factory.mktemp("bench")
    (tmp / "tiny.toml").write_text(tiny_recipe_text(epochs=2, teacher_epochs=2))
    run = tmp / "run"
    distill(load_recipe(tmp / "tiny.toml"), out=run)
    for model in ("student", "teacher"):
        export_run(run, model=model, int8=True, overrides=["export.speed_seconds=0.1",
                                                            "export.int8.max_accuracy_drop=1",
                                                            "export.int8.min_agreement=0"])
    return run


def _report(run):
    return json.loads((run / "report.json").read_text())


def _fresh(run):
    """The rows the last bench measured (report.json keeps earlier rows it did not re-measure)."""
    report = _report(run)
    return [r for r in report["rows"] if r["measured_at"] == report["created"]]


def test_bench_rows_for_every_model_backend_precision_and_batch(exported, cli):
    res = cli("bench", exported, "--backends", "torch,onnxruntime", "--batch", "1,3", *FAST)
    assert res.code == 0, res.err
    report = _report(exported)
    assert report["schema"] == "lfcc-deploy/bench-report" and report["version"] == 1
    ok = [r for r in report["rows"] if r["status"] == "ok"]
    keys = {(r["model"], r["backend"], r["precision"], r["batch"]) for r in ok}
    want = {(m, b, p, n) for m in ("student", "teacher") for n in (1, 3)
            for b, p in (("torch", "fp32"), ("onnxruntime", "fp32"), ("onnxruntime", "int8"))}
    assert keys == want
    for r in ok:
        lat = r["latency"]
        assert lat["iters"] >= 3 and lat["min_ms"] <= lat["p50_ms"] <= lat["p90_ms"] <= lat["p99_ms"] <= lat["max_ms"]
        assert r["throughput_ips"] == pytest.approx(r["batch"] * 1000 / lat["mean_ms"], rel=1e-2)
        assert r["unstable"] == (lat["cov"] > 0.10) and r["size_bytes"] > 0 and r["params"] > 0
    # accuracy really goes through each backend: torch equals `eval`, INT8 equals export's parity figure
    acc = evaluate_run(exported, device="cpu")
    parity = json.loads((exported / "export" / "parity.json").read_text())
    for r in ok:
        if r["backend"] == "torch":
            assert r["accuracy"] == pytest.approx(acc[r["model"]]["test_acc"])
        else:
            assert r["accuracy"] == pytest.approx(parity[r["model"]]["precisions"][r["precision"]]["accuracy"])
    s_int8 = next(r for r in ok if r["model"] == "student" and r["precision"] == "int8" and r["batch"] == 3)
    s_fp32 = next(r for r in ok if r["model"] == "student" and r["backend"] == "onnxruntime"
                  and r["precision"] == "fp32" and r["batch"] == 3)
    teacher = next(r for r in ok if r["model"] == "teacher" and r["backend"] == "onnxruntime"
                   and r["precision"] == "fp32" and r["batch"] == 3)
    both = s_int8["vs_fp32_interleaved"]  # the speedup to quote: int8 and fp32 timed in turn, not separate rows
    assert both["rounds"] >= 3 and s_int8["speedup_vs_fp32"] == pytest.approx(both["fp32_ms"] / both["ms"], rel=1e-2)
    assert "vs_fp32_interleaved" not in s_fp32
    assert s_int8["accuracy_change_vs_fp32"] == pytest.approx(s_int8["accuracy"] - s_fp32["accuracy"], abs=1e-5)
    assert s_fp32["speedup_vs_teacher"] == pytest.approx(teacher["latency"]["p50_ms"] / s_fp32["latency"]["p50_ms"], rel=1e-2)
    md = (exported / "report.md").read_text()
    assert "p99 ms" in md and "compute mode" in md and (exported / "report.png").stat().st_size > 1000
    assert report["environment"]["threads"] >= 1 and report["environment"]["versions"]["onnxruntime"]


def test_unavailable_backends_are_skipped_rows_with_reasons(exported, cli):
    res = cli("bench", exported, "--batch", "2", "--model", "student", "--precisions", "fp32,int8", *FAST)
    assert res.code == 0, res.err
    rows = _fresh(exported)
    reasons = {(r["backend"], r["precision"]): r["reason"] for r in rows if r["status"] == "skipped"}
    assert "cuda only" in reasons[("torch-cudagraph", "fp32")]
    assert "TensorRT" in reasons[("tensorrt", "fp32")]
    assert "INT8" in reasons[("torch", "int8")]
    assert "skipped" in res.out


def test_e2e_mode_times_from_uint8_images(exported, cli):
    res = cli("bench", exported, "--backends", "onnxruntime", "--batch", "4", "--mode", "e2e",
              "--model", "student", *FAST)
    assert res.code == 0, res.err
    report = _report(exported)
    assert report["config"]["mode"] == "e2e" and "uint8 images on the host" in (exported / "report.md").read_text()
    assert all(r["status"] == "ok" and r["mode"] == "e2e" for r in _fresh(exported))


@pytest.mark.parametrize("args, needle", [
    (("--backends", "onnxrutime"), "onnxruntime"),
    (("--precisions", "fp8"), "fp8"),
    (("--device", "cuda"), "CUDA"),
    (("--batch", "0"), "batch"),
    (("--mode", "fast"), "compute or e2e"),
])
def test_bench_bad_input_is_exit_2(exported, cli, args, needle):
    res = cli("bench", exported, *args, *FAST)
    assert res.code == 2 and needle in res.err and "Traceback" not in res.err


def _synthetic(tmp_path, exported, rows):
    """A run directory with a hand-written report: every gate's arithmetic checked exactly."""
    run = tmp_path / "synthetic"
    run.mkdir(parents=True, exist_ok=True)
    shutil.copy(exported / "recipe.toml", run / "recipe.toml")
    base = dict(status="ok", reason="", device="cpu", mode="compute", unstable=False, file="x", params=1,
                speedup_vs_teacher=None, speedup_vs_fp32=None, accuracy_change_vs_fp32=None)
    full = [dict(base, **r, latency=dict(p50_ms=r.pop("p50"), p99_ms=r.pop("p99", 1.0))) for r in rows]
    from lfcc_deploy.bench.report import derive
    (run / "report.json").write_text(json.dumps(dict(schema="lfcc-deploy/bench-report", version=1,
                                                     run_dir=str(run), config=dict(threads=1), rows=derive(full))))
    return run


ROWS = [dict(model="student", backend="onnxruntime", precision="fp32", batch=32, p50=2.0, p99=3.0, accuracy=0.90,
             size_bytes=4_000_000),
        dict(model="student", backend="onnxruntime", precision="int8", batch=32, p50=1.0, accuracy=0.89,
             size_bytes=1_000_000),
        dict(model="student", backend="torch", precision="fp32", batch=32, p50=4.0, accuracy=0.90,
             size_bytes=4_000_000),
        dict(model="teacher", backend="onnxruntime", precision="fp32", batch=32, p50=8.0, accuracy=0.95,
             size_bytes=9_000_000),
        dict(model="teacher", backend="torch", precision="fp32", batch=32, p50=16.0, accuracy=0.95,
             size_bytes=9_000_000),
        dict(model="teacher", backend="onnxruntime", precision="int8", batch=32, p50=4.0, accuracy=0.95,
             size_bytes=3_000_000)]


@pytest.mark.parametrize("setting, code", [
    ("gates.min_accuracy=0.89", 0),                 # equality at the limit passes
    ("gates.min_accuracy=0.8901", 1),
    ("gates.max_accuracy_drop=0.01", 0),            # int8 drop 0.01 vs torch fp32, exactly the limit
    ("gates.max_accuracy_drop=0.009", 1),
    ("gates.min_speedup_vs_teacher=4.0", 0),        # onnxruntime fp32 8 / 2, int8 4 / 1, torch 16 / 4
    ("gates.min_speedup_vs_teacher=4.1", 1),
    ("gates.quantized_must_be_faster=true", 0),     # int8 2× its fp32
    ("gates.max_model_mb=4.0", 0),
    ("gates.max_model_mb=3.9", 1),
    ('gates.latency=[{backend="onnxruntime",device="cpu",batch=32,max_p99_ms=3.0}]', 0),
    ('gates.latency=[{backend="onnxruntime",device="cpu",batch=32,max_p50_ms=1.99}]', 1),
    ('gates.latency=[{backend="onnxruntime",device="cpu",batch=1,max_p50_ms=100}]', 1),   # missing row
    ('gates.latency=[{backend="tensorrt",precision="int8",device="cuda",batch=32,max_p99_ms=1}]', 1),
])
def test_each_gate_passes_and_fails_on_its_own(tmp_path, exported, cli, setting, code):
    run = _synthetic(tmp_path, exported, [dict(r) for r in ROWS])
    res = cli("gate", run, "--set", setting)
    assert res.code == code, res.out + res.err
    result = json.loads((run / "gate.json").read_text())
    assert result["passed"] == (code == 0) and result["checks"]
    if code:
        assert "FAIL" in res.out and "gate checks failed" in res.err
        if "batch=1" in setting or "tensorrt" in setting:
            assert "row missing" in res.out


def test_quantized_slower_than_fp32_fails(tmp_path, exported, cli):
    rows = [dict(r) for r in ROWS]
    rows[1]["p50"] = 2.5
    res = cli("gate", _synthetic(tmp_path, exported, rows), "--set", "gates.quantized_must_be_faster=true")
    assert res.code == 1 and "quantized_must_be_faster" in res.out


def test_speedup_needs_both_models_of_every_backend(tmp_path, exported, cli):
    rows = [dict(r) for r in ROWS if not (r["model"] == "teacher" and r["precision"] == "int8")]
    res = cli("gate", _synthetic(tmp_path, exported, rows), "--set", "gates.min_speedup_vs_teacher=1")
    assert res.code == 1 and "teacher onnxruntime int8 cpu b32" in res.out and "row missing" in res.out


def test_failed_bench_row_fails_the_gate(tmp_path, exported, cli):
    rows = [dict(r) for r in ROWS] + [dict(model="student", backend="onnxruntime", precision="fp16", batch=32,
                                           p50=1.0, accuracy=0.9, size_bytes=1)]
    run = _synthetic(tmp_path, exported, rows)
    report = json.loads((run / "report.json").read_text())
    report["rows"][-1].update(status="failed", reason="RuntimeError: kernel missing", latency=None)
    (run / "report.json").write_text(json.dumps(report))
    res = cli("gate", run, "--set", "gates.min_accuracy=0.5")
    assert res.code == 1 and "bench row failed" in res.out and "kernel missing" in res.out


@pytest.mark.parametrize("damage, needle", [
    (lambda rep: rep.pop("rows"), "rows"),
    (lambda rep: rep["rows"][0].pop("accuracy"), "accuracy"),
    (lambda rep: rep["rows"][0].update(accuracy="high"), "rows.0.accuracy"),
    (lambda rep: rep["rows"][0].update(batch="one"), "rows.0.batch"),
    (lambda rep: rep.update(rows="x"), "rows"),
])
def test_damaged_report_is_exit_2_and_leaves_no_old_verdict(tmp_path, exported, cli, damage, needle):
    run = _synthetic(tmp_path, exported, [dict(r) for r in ROWS])
    assert cli("gate", run, "--set", "gates.min_accuracy=0.5").code == 0 and (run / "gate.json").is_file()
    report = json.loads((run / "report.json").read_text())
    damage(report)
    (run / "report.json").write_text(json.dumps(report))
    res = cli("gate", run, "--set", "gates.min_accuracy=0.5")
    assert res.code == 2 and needle in res.err and "Traceback" not in res.err
    assert not (run / "gate.json").exists()


def test_missing_reference_row_fails_not_passes(tmp_path, exported, cli):
    rows = [dict(r) for r in ROWS if r["backend"] != "torch"]
    res = cli("gate", _synthetic(tmp_path, exported, rows), "--set", "gates.max_accuracy_drop=0.5")
    assert res.code == 1 and "row missing" in res.out


@pytest.mark.parametrize("setting, needle", [
    ("gates.min_accuracy=95", "gates.min_accuracy"),
    ("gates.max_p99=3", "gates.max_p99"),
    ('gates.latency=[{backend="onnxruntime",device="cpu",batch=1}]', "max_p50_ms or max_p99_ms"),
    ('gates.latency=[{backend="onnxruntime",device="tpu",batch=1,max_p50_ms=1}]', "gates.latency"),
])
def test_bad_gates_input_is_exit_2(tmp_path, exported, cli, setting, needle):
    res = cli("gate", _synthetic(tmp_path, exported, [dict(r) for r in ROWS]), "--set", setting)
    assert res.code == 2 and needle in res.err and "Traceback" not in res.err


def test_gate_without_a_report_is_exit_2(tmp_path, cli):
    assert cli("gate", tmp_path).code == 2


def test_stored_report_baseline_compares_p50(tmp_path, exported, cli):
    new = _synthetic(tmp_path / "new", exported, [dict(r) for r in ROWS])
    old = _synthetic(tmp_path / "old", exported, [dict(r, p50=r["p50"] * 1.5) for r in ROWS])
    res = cli("gate", new, "--baseline", old / "report.json", "--set", "gates.max_regression=0.1")
    assert res.code == 0 and "stored reports" in res.out     # new is faster: -33 %
    res = cli("gate", old, "--baseline", new / "report.json", "--set", "gates.max_regression=0.1")
    assert res.code == 1 and "max_regression" in res.out     # +50 %


def test_baseline_run_is_re_measured_interleaved(tmp_path, exported, cli):
    """Itself as baseline passes; a student ~10× slower (resnet18 vs test_resnet) fails."""
    (exported / "report.json").unlink()  # a bench adds to the report: start from this one row
    assert cli("bench", exported, "--backends", "onnxruntime", "--model", "student", "--batch", "8",
               "--precisions", "fp32", *FAST).code == 0
    same = cli("gate", exported, "--baseline", exported, "--duration-s", "0.3", "--set", "gates.max_regression=0.5")
    assert same.code == 0, same.out + same.err
    assert "interleaved" in same.out and json.loads((exported / "gate.json").read_text())["regression_mode"] == "interleaved"
    wide = tmp_path / "wide.toml"
    wide.write_text(tiny_recipe_text(epochs=1).replace('model = "test_resnet"', 'model = "resnet18"'))
    slow = tmp_path / "slow"
    distill(load_recipe(wide, ["teacher.checkpoint=" + str(exported / "teacher.safetensors")]), out=slow)
    assert cli("export", slow, "--set", "export.parity_images=64").code == 0
    assert cli("bench", slow, "--backends", "onnxruntime", "--model", "student", "--batch", "8", *FAST).code == 0
    res = cli("gate", slow, "--baseline", exported, "--duration-s", "0.3", "--set", "gates.max_regression=0.10")
    assert res.code == 1 and "FAIL  max_regression" in res.out


def test_pipeline_runs_every_stage_then_reuses_them(tmp_path, cli):
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(tiny_recipe_text(epochs=1) + "\n[gates]\nmin_accuracy = 0.05\nmax_model_mb = 50\n"
                      "[[gates.latency]]\nbackend = 'onnxruntime'\ndevice = 'cpu'\nbatch = 3\nmax_p50_ms = 1000\n"
                      "threads = 1\n")
    args = ("pipeline", recipe, "--out", tmp_path / "run", "--duration-s", "0.05",
            "--set", "export.speed_seconds=0.1", "--set", "export.int8.max_accuracy_drop=1",
            "--set", "export.int8.min_agreement=0")
    first = cli(*args, "--quiet")
    assert first.code == 0, first.err
    assert "exporting" not in first.err and "epoch" not in first.err  # -q: no progress, results only
    run = tmp_path / "run"
    assert json.loads((run / "gate.json").read_text())["passed"]
    # the bench ran at the thread count and the batch the latency budget names, beside the defaults
    report = json.loads((run / "report.json").read_text())
    assert report["config"]["threads"] == 1 and report["config"]["batches"] == [1, 3, 32]
    assert (run / "export" / "student.int8.onnx").is_file() and (run / "report.json").is_file()
    stamp = (run / "student.safetensors").stat().st_mtime_ns
    again = cli(*args, "--set", "gates.min_accuracy=0.999")
    assert again.code == 1 and "reusing" in again.err and "FAIL  min_accuracy" in again.out
    assert (run / "student.safetensors").stat().st_mtime_ns == stamp
    assert json.loads((run / "gate.json").read_text())["passed"] is False


def test_bench_input_edge_cases(exported, cli, tmp_path):
    assert cli("bench", exported, "--backends", "onnxruntime", "--model", "student", "--batch", "2", *FAST).code == 0
    before = (exported / "report.json").read_bytes()
    res = cli("bench", exported, "--precisions", "fp16", "--model", "student", *FAST)  # nothing exported in fp16
    assert res.code == 2 and "nothing could be measured" in res.err
    assert (exported / "report.json").read_bytes() == before
    assert cli("bench", exported, "--backends", "", *FAST).code == 2
    res = cli("bench", exported, "--backends", "onnxruntime", "--model", "student", "--batch", "2,2",
              "--precisions", "fp32", *FAST)
    assert res.code == 0 and len(_fresh(exported)) == 1
    res = cli("gate", exported, "--baseline", tmp_path / "nowhere")
    assert res.code == 2 and "baseline not found" in res.err
