"""The Python API as the README shows it (progress on a terminal, `logging` otherwise, typed keywords),
and the per-epoch logs users' tools read: metrics.csv and TensorBoard events."""
from __future__ import annotations

import csv
import importlib.util
import json
import logging
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import tiny_recipe_text

from lfcc_deploy import distill, load_recipe

ROOT = Path(__file__).resolve().parent.parent
HAS_TB = importlib.util.find_spec("tensorboard") is not None


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory):
    """A tiny distillation through the API with no reporter, TensorBoard on when the package is there."""
    tmp = tmp_path_factory.mktemp("api")
    recipe = tmp / "tiny.toml"
    recipe.write_text(tiny_recipe_text(epochs=2, ce_reference=True)
                      + ("\n[logging]\ntensorboard = true\n" if HAS_TB else ""))
    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda r: records.append(r.getMessage())
    log = logging.getLogger("lfcc_deploy")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        summary = distill(load_recipe(recipe), out=tmp / "run")
    finally:
        log.removeHandler(handler)
    return recipe, tmp / "run", summary, records


def test_api_without_terminal_logs_through_logging(logged_run):
    _, _, summary, records = logged_run
    assert summary["student"]["test_acc"] is not None
    epochs = [r for r in records if " epoch " in r]
    assert len(epochs) == 1 + 2 + 2  # teacher 1, CE reference 2, student 2
    assert any(r.startswith("student: best val") for r in records)


def test_metrics_csv_has_a_row_per_epoch_of_every_phase(logged_run):
    _, run, _, _ = logged_run
    jsonl = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    with open(run / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(jsonl) == 5
    assert [r["phase"] for r in rows] == [r["phase"] for r in jsonl]
    for row, rec in zip(rows, jsonl):
        for key, value in rec.items():
            assert row[key] == str(value), key
    student = next(r for r in rows if r["phase"] == "student")
    teacher = next(r for r in rows if r["phase"] == "teacher")
    assert student["loss_kd"] and not teacher["loss_kd"]  # loss parts a phase lacks stay empty


@pytest.mark.skipif(not HAS_TB, reason="the tensorboard package is not installed (pip install '.[dev]')")
def test_tensorboard_events_per_phase(logged_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    _, run, _, _ = logged_run
    jsonl = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    for phase in ("teacher", "reference", "student"):
        acc = EventAccumulator(str(run / "tensorboard" / phase))
        acc.Reload()
        mine = [r for r in jsonl if r["phase"] == phase]
        val = acc.Scalars("accuracy/val_acc")
        assert [e.step for e in val] == [r["step"] for r in mine]
        assert [round(e.value, 5) for e in val] == [round(r["val_acc"], 5) for r in mine]
        assert "loss/train_loss" in acc.Tags()["scalars"]
    assert "loss/loss_kd" in EventAccumulator(str(run / "tensorboard" / "student")).Reload().Tags()["scalars"]


def test_distill_teacher_run_dir_reuses_its_teacher(logged_run, cli, tmp_path):
    recipe, run, summary, _ = logged_run
    res = cli("distill", recipe, "--teacher", run, "--out", tmp_path / "again", "-q",
              "--set", "distill.ce_reference=false", "--set", "distill.epochs=1")
    assert res.code == 0, res.err
    again = json.loads((tmp_path / "again" / "summary.json").read_text())
    assert again["teacher"]["test_acc"] == summary["teacher"]["test_acc"]  # measured once, carried over
    phases = {json.loads(ln)["phase"] for ln in (tmp_path / "again" / "metrics.jsonl").read_text().splitlines()}
    assert phases == {"student"}  # no teacher was trained
    assert cli("distill", recipe, "--teacher", tmp_path / "nowhere", "--out", tmp_path / "x").code == 2


def test_api_on_a_terminal_shows_progress(tmp_path):
    """The README example, run with a terminal on stderr: the live bar and the phase lines appear."""
    (tmp_path / "tiny.toml").write_text(tiny_recipe_text(epochs=1))
    code = ("from lfcc_deploy import distill, load_recipe\n"
            "distill(load_recipe('tiny.toml'), out='run')\n")
    master, slave = pty.openpty()
    env = dict(os.environ, PYTHONPATH=str(ROOT), COLUMNS="120", TERM="xterm")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=slave, stderr=slave, cwd=tmp_path, env=env)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    assert proc.wait(timeout=300) == 0
    os.close(master)
    shown = b"".join(chunks).decode(errors="replace")
    assert "student: best val" in shown and "teacher: best val" in shown
    assert "img/s" in shown  # the bar's live columns
