"""`students`: candidates measured before training, the budget, the front, the written recipe, --distill."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import tiny_recipe_text
from lfcc_deploy.recipe import load_recipe
from lfcc_deploy.students import front
from lfcc_deploy.students.candidates import SHIPPED, family_of, select

FAST = ("--duration-s", "0.05", "--rounds", "2", "--quiet")


def _row(label, ms, band, macs, status="ok", verdict=None, **kw):
    return dict(label=label, ms=ms, band=band, macs=macs, status=status, verdict=verdict, **kw)


def test_noise_band_is_the_round_spread_with_a_floor():
    assert front.noise_band([1.0, 1.5, 0.8]) == (0.8, 1.5)  # wider than ±5 %: the measured spread
    low, high = front.noise_band([2.0, 2.01, 1.99])  # narrower: ±5 % of the median
    assert (low, high) == pytest.approx((1.9, 2.1))
    assert front.noise_band([2.0, 2.01, 1.99], floor=0.0) == (1.99, 2.01)


def test_budget_verdicts_with_the_borderline_band():
    assert front.verdict(1.0, (0.9, 1.1), 2.0) == "fit"
    assert front.verdict(3.0, (2.9, 3.2), 2.0) == "over"
    assert front.verdict(1.95, (1.85, 2.05), 2.0) == "borderline"   # below the budget, but inside the noise
    assert front.verdict(2.05, (1.95, 2.2), 2.0) == "borderline"    # above it, likewise
    assert front.verdict(2.0, (2.0, 2.1), 2.0) == "borderline"      # the band's edge counts as inside
    assert front.verdict(1.0, (0.9, 1.1), None) is None


def test_pareto_front_on_hand_made_points():
    # (latency, value): b is slower than a with less value (dominated); d ties c on latency with less value
    points = [(1.0, 10.0), (2.0, 5.0), (3.0, 30.0), (3.0, 20.0), (5.0, 40.0), (0.5, 1.0)]
    assert front.pareto(points) == [True, False, True, False, True, True]
    assert front.pareto([(1.0, 1.0), (1.0, 1.0)]) == [True, True]  # equal points do not dominate each other


def test_promising_and_choice():
    rows = [_row("small", 0.5, (0.4, 0.6), 5e6, verdict="fit"), _row("big", 1.5, (1.4, 1.6), 30e6, verdict="fit"),
            _row("edge", 1.95, (1.8, 2.1), 50e6, verdict="borderline"),
            _row("slow", 9.0, (8.0, 10.0), 90e6, verdict="over"), _row("broken", None, None, None, status="failed")]
    assert [r["label"] for r in front.promising(rows, 2)] == ["big", "small"]  # fits first, most MACs first
    assert [r["label"] for r in front.promising(rows, 5)] == ["big", "small", "edge"]  # then borderline
    assert front.choose(rows, distilled=False)["label"] == "big"
    rows[0].update(val_acc=0.9, deployed=dict(status="ok", ms=0.5, verdict="fit"))
    rows[1].update(val_acc=0.8, deployed=dict(status="ok", ms=1.5, verdict="fit"))
    rows[2].update(val_acc=0.99, deployed=dict(status="ok", ms=2.5, verdict="over"))
    assert front.choose(rows, distilled=True)["label"] == "small"  # best val acc among those that still fit
    rows[0]["deployed"]["verdict"] = rows[1]["deployed"]["verdict"] = "over"
    assert front.choose(rows, distilled=True) is None


def test_candidate_selection():
    assert len(SHIPPED) >= 12 and len({c.family for c in SHIPPED}) >= 3
    assert len({c.label for c in SHIPPED}) == len(SHIPPED)
    assert {c.family for c in select(["vit", "mlp"], [], False)} == {"vit", "mlp"}
    mine = select(None, ["resnet50", "test_vit"], True)
    assert [(c.label, c.family) for c in mine] == [("resnet50", "cnn"), ("test_vit", "vit")]
    assert family_of("mobilevit_xxs") == "hybrid" and family_of("mixer_b16_224") == "mlp"


@pytest.mark.parametrize("cand", SHIPPED, ids=lambda c: c.label)
def test_every_shipped_candidate_builds_at_32px_gray(cand, digits32, tmp_path):
    from lfcc_deploy.students.measure import build_candidate
    row = build_candidate(cand, load_recipe("quickstart"), "quickstart.toml", digits32, tmp_path)
    assert row["status"] == "ok" and row["macs"] > 0 and row["params"] > 0, row
    assert load_recipe(tmp_path / "recipe.toml").student.model == cand.model


@pytest.fixture(scope="module")
def digits32():
    from lfcc_deploy.data import load_data
    return load_data(load_recipe("quickstart").data)


def test_failed_candidates_are_rows_and_the_recipe_is_written(tmp_path, cli):
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(tiny_recipe_text(epochs=1))
    out = tmp_path / "s"
    res = cli("students", recipe, "--candidates", "test_resnet,not_a_model,ghostnetv2_100", "--only",
              "--budget-ms", "1000", "--out", out, *FAST)
    assert res.code == 0, res.err
    result = json.loads((out / "students.json").read_text())
    rows = {r["label"]: r for r in result["rows"]}
    assert rows["test_resnet"]["status"] == "ok" and rows["test_resnet"]["verdict"] == "fit"
    assert rows["test_resnet"]["latency"]["p50_ms"] == rows["test_resnet"]["ms"] > 0
    assert rows["not_a_model"]["status"] == "failed" and rows["not_a_model"]["stage"] == "build"
    assert "unknown timm model" in rows["not_a_model"]["reason"]
    assert rows["ghostnetv2_100"]["status"] == "failed"  # timm knows it, but not at 16 px
    assert "build failed" in res.out and "not_a_model" in res.out
    for name in ("students.md", "students.png"):
        assert (out / name).is_file()
    written = load_recipe(result["written_recipe"])  # through the project's own loader
    assert result["chosen"] == "test_resnet" and written.name == "tiny-test_resnet"
    assert written.student.model == "test_resnet" and written.device == "cpu"
    gate = written.gates.latency[0]
    assert (gate.backend, gate.precision, gate.batch, gate.max_p50_ms) == ("onnxruntime", "fp32", 1, 1000.0)
    assert gate.threads == result["config"]["threads"] >= 1  # the budget holds at the count it was timed with
    assert (out / "candidates" / "test_resnet" / "export" / "student.onnx").is_file()


def test_bad_options_are_one_line(tmp_path, cli):
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(tiny_recipe_text(epochs=1))
    for args, needle in [(("--percentile", "p90"), "--percentile"), (("--families", "cnn,rnn"), "unknown family"),
                         (("--distill", "2"), "--budget-ms"), (("--backend", "nope"), "backend"),
                         (("--only",), "--candidates")]:
        res = cli("students", recipe, "--out", tmp_path / "o", *args)
        assert res.code == 2 and needle in res.err, (args, res.err)
        assert len(res.err.strip().splitlines()) <= 2
    assert not (tmp_path / "o").exists()


def test_distill_reuses_one_teacher(tmp_path, cli, monkeypatch):
    import lfcc_deploy.compare as compare
    calls = []
    real = compare.train_teacher
    monkeypatch.setattr(compare, "train_teacher", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(tiny_recipe_text(epochs=1))
    out = tmp_path / "s"
    args = ("students", recipe, "--candidates", "test_resnet,test_efficientnet", "--only", "--distill", "2",
            "--budget-ms", "1000", "--out", out, *FAST)
    res = cli(*args)
    assert res.code == 0, res.err
    assert len(calls) == 1
    teacher = (out / "teacher" / "teacher.safetensors").resolve()
    result = json.loads((out / "students.json").read_text())
    distilled = [r for r in result["rows"] if "deployed" in r]
    assert {r["label"] for r in distilled} == {"test_resnet", "test_efficientnet"}
    for r in distilled:
        run = Path(r["distill_dir"])
        assert load_recipe(run / "recipe.toml").teacher.checkpoint == str(teacher)
        assert not (run / "teacher.safetensors").exists()
        assert 0 <= r["val_acc"] <= 1 and r["deployed"]["status"] == "ok" and r["deployed"]["ms"] > 0
    assert load_recipe(result["written_recipe"]).teacher.checkpoint == str(teacher)
    assert "distilled students" in res.out

    stamp = (out / "distill" / "test_resnet" / "student.safetensors").stat().st_mtime_ns
    again = cli(*args)
    assert again.code == 0 and len(calls) == 1  # the teacher and the students are reused, not retrained
    assert (out / "distill" / "test_resnet" / "student.safetensors").stat().st_mtime_ns == stamp


def test_interleaved_timing_pools_rounds_and_isolates_a_failing_runner():
    import torch

    from lfcc_deploy.bench.backends import Runner
    from lfcc_deploy.bench.timing import TimingConfig
    from lfcc_deploy.students.measure import time_interleaved
    calls: list[str] = []

    def ok(x):
        calls.append("ok")
        return x

    def flaky(x):
        calls.append("flaky")
        if calls.count("flaky") > 3:  # survives round 0 (one warm-up call + two timed), fails in round 1
            raise RuntimeError("device lost")
        return x

    cpu, x = torch.device("cpu"), torch.zeros(1)
    out = time_interleaved({"ok": (Runner(ok, cpu), x), "flaky": (Runner(flaky, cpu), x)},
                           TimingConfig(warmup_ms=0, duration_s=0, min_iters=6), rounds=3, percentile="p99")
    assert out["flaky"] == {"error": "RuntimeError: device lost"}
    assert out["ok"]["latency"]["iters"] == 6 and len(out["ok"]["rounds_ms"]) == 3  # 3 slices of 2 pooled
    assert out["ok"]["ms"] == out["ok"]["latency"]["p99_ms"]
    assert calls[:4] == ["ok"] * 3 + ["flaky"]  # round 0 in the given order, round 1 rotated
    assert calls[6] == "flaky"
