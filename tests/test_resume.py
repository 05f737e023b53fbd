"""Ctrl-C at any position of a run, then --resume: the same records and weights as a run never
interrupted (the epoch boundary and the run's last step included), and honest images/s."""
from __future__ import annotations

import json

import pytest
import torch
from conftest import tiny_recipe_text
from safetensors.torch import load_file
from test_engine import InterruptAt

from lfcc_deploy import training
from lfcc_deploy.recipe import load_recipe

TIMING = ("epoch_s", "images_per_s")


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("straight")
    (tmp / "r.toml").write_text(tiny_recipe_text(epochs=2))
    recipe = load_recipe(tmp / "r.toml")
    summary = training.distill(recipe, out=tmp / "run")
    return recipe, tmp / "run", summary["student"]


def _records(run):
    lines = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines() if ln.strip()]
    return [r for r in lines if r["phase"] == "student"]


@pytest.mark.parametrize("where", ["mid-epoch", "last step of an epoch", "last step of the run"])
def test_interrupt_anywhere_then_resume_equals_an_uninterrupted_run(straight, tmp_path, where):
    recipe, ref_run, ref = straight
    spe = ref["steps"] // ref["epochs"]
    step = {"mid-epoch": spe // 2, "last step of an epoch": spe, "last step of the run": 2 * spe}[where]
    with pytest.raises(KeyboardInterrupt):
        training.distill(recipe, out=tmp_path / "cut", reporter=InterruptAt("student", step))
    assert torch.load(tmp_path / "cut/checkpoint/student.pt", weights_only=True)["step"] == step
    got = training.distill(recipe, out=tmp_path / "cut", resume=True)["student"]
    for k in ("steps", "best_epoch", "val_acc", "test_acc", "epochs"):
        assert got[k] == ref[k], k
    strip = lambda recs: [{k: v for k, v in r.items() if k not in TIMING} for r in recs]  # noqa: E731
    assert strip(_records(tmp_path / "cut")) == strip(_records(ref_run))
    for name in ("student.safetensors", "student_last.safetensors"):
        a, b = load_file(ref_run / name), load_file(tmp_path / "cut" / name)
        assert all(torch.equal(a[k], b[k]) for k in a), name


def test_resumed_epoch_counts_only_the_images_it_timed(straight, tmp_path):
    recipe, ref_run, ref = straight
    spe = ref["steps"] // ref["epochs"]
    with pytest.raises(KeyboardInterrupt):
        training.distill(recipe, out=tmp_path / "cut", reporter=InterruptAt("student", spe + 2))
    training.distill(recipe, out=tmp_path / "cut", resume=True)
    whole = _records(ref_run)[1]
    resumed = _records(tmp_path / "cut")[1]
    epoch_images = whole["images_per_s"] * whole["epoch_s"]
    timed = resumed["images_per_s"] * resumed["epoch_s"]
    assert timed == pytest.approx(epoch_images - 2 * recipe.distill.batch_size, rel=1e-6)
