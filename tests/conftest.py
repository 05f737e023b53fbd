"""Shared fixtures: a tiny recipe on real data (digits) and an in-process CLI runner."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from lfcc_deploy.cli import main

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.pop("GITHUB_STEP_SUMMARY", None)  # CI: the gates tests run must not land on the job's summary page

TINY = """
name = "tiny"
device = "cpu"

[data]
name = "digits"
img_size = 16
channels = 1

[teacher]
model = "test_vit"
model_kwargs = {{ patch_size = 4 }}

[teacher.train]
epochs = {teacher_epochs}
batch_size = 64
lr = 3e-3
log_every = 1

[student]
model = "test_resnet"

[distill]
method = "kd"
epochs = {epochs}
batch_size = 32
lr = 3e-3
train_fraction = 0.3
log_every = 1
ce_reference = {ce_reference}
"""


def tiny_recipe_text(epochs: int = 2, teacher_epochs: int = 1, ce_reference: bool = False) -> str:
    return TINY.format(epochs=epochs, teacher_epochs=teacher_epochs, ce_reference=str(ce_reference).lower())


@pytest.fixture
def tiny_recipe(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(tiny_recipe_text())
    return path


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys):
    """Run `lfcc-deploy ARGS` in-process through the real error boundary."""
    def run(*args: str) -> Result:
        capsys.readouterr()
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)
    return run
