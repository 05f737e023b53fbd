"""The engine end to end on real data (digits, tiny models): files, resume, faults and exit codes."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import tiny_recipe_text
from lfcc_deploy import training
from lfcc_deploy.recipe import load_recipe
from lfcc_deploy.rundir import RunLock, atomic_write

ROOT = Path(__file__).resolve().parent.parent


def test_short_distill_writes_a_complete_run(tmp_path, cli):
    recipe = tmp_path / "r.toml"
    recipe.write_text(tiny_recipe_text(ce_reference=True))
    out = tmp_path / "run"
    res = cli("distill", recipe, "--out", out, "--quiet")
    assert res.code == 0, res.err
    for name in ("recipe.toml", "teacher.safetensors", "student.safetensors", "student_last.safetensors",
                 "ce_reference.safetensors", "checkpoint/student.pt", "metrics.jsonl", "summary.json",
                 "curves.png"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    assert {"teacher", "reference", "student", "manifest"} <= summary.keys()
    assert summary["student"]["method"] == "kd" and summary["reference"]["method"] == "ce"
    assert summary["student"]["train_images"] < summary["teacher"]["train_images"]  # train_fraction 0.3
    d = summary["data"]
    assert d["train"] + d["val"] + d["test"] == 1797 and abs(d["test"] - 0.2 * 1797) < 10  # fixed 20 % test
    rows = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["phase"] for r in rows] == ["teacher", "reference", "reference", "student", "student"]
    assert all(0 <= r["val_acc"] <= 1 and "loss_kd" in r for r in rows if r["phase"] == "student")
    # `eval` recomputes the same accuracies from the saved files
    ev = training.evaluate_run(out, device="cpu")
    assert ev["student"]["test_acc"] == pytest.approx(summary["student"]["test_acc"])
    assert ev["teacher"]["val_acc"] == pytest.approx(summary["teacher"]["val_acc"])
    assert "distilled" in res.out and "CE-only" in res.out

    again = cli("distill", recipe, "--out", out, "--quiet")
    assert again.code == 2 and "--resume" in again.err and "finished" in again.err
    changed = cli("distill", recipe, "--out", out, "--resume", "--set", "distill.kd.temperature=2.0")
    assert changed.code == 2 and "distill.kd.temperature" in changed.err
    resumed = cli("distill", recipe, "--out", out, "--resume", "--quiet")
    assert resumed.code == 0, resumed.err
    assert json.loads((out / "summary.json").read_text())["student"] == summary["student"]


class InterruptAt:
    """A reporter that presses Ctrl-C once training reaches `step` of `phase`."""

    def __init__(self, phase: str, step: int):
        self.phase, self.step, self.current = phase, step, None

    def start(self, phase, total, done):
        self.current = phase

    def progress(self, step, stats):
        if self.current == self.phase and step == self.step:
            os.kill(os.getpid(), signal.SIGINT)

    def epoch(self, record): ...
    def finish(self, result): ...


def test_ctrl_c_then_resume_gives_identical_weights(tmp_path, cli):
    path = tmp_path / "r.toml"
    path.write_text(tiny_recipe_text(epochs=2))
    recipe = load_recipe(path)
    training.distill(recipe, out=tmp_path / "straight")
    with pytest.raises(KeyboardInterrupt):
        training.distill(recipe, out=tmp_path / "cut", reporter=InterruptAt("student", 5))
    blob = torch.load(tmp_path / "cut/checkpoint/student.pt", weights_only=True)
    assert blob["step"] == 5 and not blob["done"]
    assert not (tmp_path / "cut/summary.json").exists()
    training.distill(recipe, out=tmp_path / "cut", resume=True)
    for name in ("student.safetensors", "student_last.safetensors", "teacher.safetensors"):
        a, b = load_file(tmp_path / "straight" / name), load_file(tmp_path / "cut" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    s1 = json.loads((tmp_path / "straight/summary.json").read_text())["student"]
    s2 = json.loads((tmp_path / "cut/summary.json").read_text())["student"]
    assert s1["steps"] == s2["steps"] and s1["test_acc"] == s2["test_acc"]


def test_cli_ctrl_c_exits_130(tmp_path, cli, monkeypatch):
    path = tmp_path / "r.toml"
    path.write_text(tiny_recipe_text())
    monkeypatch.setattr("lfcc_deploy.cli.progress.LogReporter.progress",
                        lambda self, step, stats: step == 3 and os.kill(os.getpid(), signal.SIGINT))
    res = cli("train-teacher", path, "--out", tmp_path / "run", "--quiet")
    assert res.code == 130 and "--resume" in res.err
    assert torch.load(tmp_path / "run/checkpoint/teacher.pt", weights_only=True)["step"] == 3


def test_non_finite_loss_stops_with_exit_3_and_keeps_checkpoint(tmp_path, cli):
    path = tmp_path / "r.toml"
    path.write_text(tiny_recipe_text(epochs=3))
    out = tmp_path / "run"
    assert cli("train-teacher", path, "--out", out, "--quiet").code == 0
    teacher = out / "teacher.safetensors"
    before = teacher.read_bytes()
    res = cli("distill", path, "--out", tmp_path / "run2", "--set", f"teacher.checkpoint='{teacher}'",
              "--set", "distill.lr=1e30", "--set", "distill.optimizer='sgd'")
    assert res.code == 3, res.err
    errors = [ln for ln in res.err.splitlines() if ln.startswith(("error:", "hint:"))]
    assert len(errors) <= 2 and "non-finite loss at step" in errors[0] and "Traceback" not in res.err
    assert teacher.read_bytes() == before  # the teacher given by checkpoint is untouched
    assert not (tmp_path / "run2/student.safetensors").exists()  # nothing poisoned was saved as "best"


def test_second_run_on_a_locked_directory_is_refused(tmp_path, cli):
    path = tmp_path / "r.toml"
    path.write_text(tiny_recipe_text())
    out = tmp_path / "run"
    with RunLock(out):
        res = cli("distill", path, "--out", out, "--quiet")
    assert res.code == 2 and "in use" in res.err
    assert not (out / "recipe.toml").exists()


def test_interrupted_write_keeps_the_previous_file(tmp_path):
    target = tmp_path / "f.bin"
    target.write_bytes(b"old")

    def half_write(tmp):
        tmp.write_bytes(b"new-but-incompl")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        atomic_write(target, half_write)
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["f.bin"]


def test_kill_9_then_resume_completes(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text(tiny_recipe_text(epochs=6))
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "lfcc_deploy", "distill", str(path), "--out", str(out), "--quiet"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = out / "checkpoint" / "student.pt"
    deadline = time.time() + 120
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    assert ckpt.exists(), "the run never reached its first student checkpoint"
    res = subprocess.run(cmd + ["--resume"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    summary = json.loads((out / "summary.json").read_text())
    steps_per_epoch = summary["student"]["steps"] // 6
    assert summary["student"]["steps"] == 6 * steps_per_epoch and summary["student"]["epochs"] == 6
    assert all(load_file(out / f) for f in ("student.safetensors", "teacher.safetensors"))


def test_train_teacher_then_distill_continues_the_directory(tmp_path, cli):
    path = tmp_path / "r.toml"
    path.write_text(tiny_recipe_text())
    out = tmp_path / "run"
    assert cli("train-teacher", path, "--out", out, "--quiet").code == 0
    teacher = (out / "teacher.safetensors").read_bytes()
    # the student's keys may still change; the teacher's may not
    res = cli("distill", path, "--out", out, "--quiet", "--set", "distill.epochs=1")
    assert res.code == 0, res.err
    assert (out / "teacher.safetensors").read_bytes() == teacher
    summary = json.loads((out / "summary.json").read_text())
    assert summary["job"] == "distill" and summary["student"]["epochs"] == 1
    assert "epochs = 1" in (out / "recipe.toml").read_text()
    res = cli("train-teacher", path, "--out", tmp_path / "run2", "--quiet")
    assert res.code == 0
    res = cli("distill", path, "--out", tmp_path / "run2", "--quiet", "--set", "teacher.train.lr=0.1")
    assert res.code == 2 and "teacher.train.lr" in res.err


def test_model_that_cannot_run_at_the_input_size_is_bad_input(tmp_path, cli):
    path = tmp_path / "r.toml"
    path.write_text(tiny_recipe_text().replace("model_kwargs = { patch_size = 4 }", "model_kwargs = { patch_size = 5 }"))
    res = cli("distill", path, "--out", tmp_path / "run", "--quiet")
    assert res.code == 2 and "teacher.model_kwargs" in res.err, res.err
    assert "Traceback" not in res.err and not (tmp_path / "run").exists()
    path.write_text(tiny_recipe_text())
    res = cli("distill", path, "--out", tmp_path / "run", "--set", "student.model_kwargs={no_such_arg=1}")
    assert res.code == 2 and "student.model_kwargs" in res.err
    (tmp_path / "file").write_text("x")
    res = cli("distill", tmp_path / "r.toml", "--out", tmp_path / "file")
    assert res.code == 2 and "not a directory" in res.err


def test_compile_option_compiles_the_trained_model_in_place(tmp_path, cli, monkeypatch):
    calls = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kw: calls.append((type(self).__name__, kw)))
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(tiny_recipe_text(epochs=1))
    res = cli("distill", recipe, "--out", tmp_path / "run", "--quiet", "--set", "distill.compile=true")
    assert res.code == 0, res.err
    assert calls == [("ResNet", {"dynamic": False})] and "torch.compile on" in res.err


def test_resume_accepts_a_recipe_written_before_new_keys_existed(tmp_path, cli):
    """A run directory from an older version lacks keys added since; at their defaults they are no change."""
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(tiny_recipe_text(epochs=1))
    assert cli("distill", recipe, "--out", tmp_path / "run", "--quiet").code == 0
    saved = tmp_path / "run" / "recipe.toml"
    text = saved.read_text()
    import tomllib
    import tomli_w
    old = tomllib.loads(text)
    for key in ("teacher_cache", "cache_views", "cache_dtype", "compile", "lr_scaling", "sync_batchnorm"):
        old["distill"].pop(key, None)
    old.pop("gates", None)
    saved.write_text(tomli_w.dumps(old))
    res = cli("distill", recipe, "--out", tmp_path / "run", "--resume", "--quiet")
    assert res.code == 0, res.err
    changed = cli("distill", recipe, "--out", tmp_path / "run", "--resume", "--quiet", "--set", "distill.lr=0.1")
    assert changed.code == 2 and "distill.lr" in changed.err
