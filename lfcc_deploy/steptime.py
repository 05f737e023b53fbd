"""Step times that survive a noisy shared machine: methods interleaved on one batch, medians compared.

Wall time of separate runs drifts by tens of percent on shared runners, so ratios taken from runs
made minutes apart are unreliable. Timing every candidate in turn, round after round, on the same
batch exposes them all to the same drift; the median of each gives an honest ratio.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Callable

import torch

from .bench.timing import interleaved_ms
from .data import load_data
from .engine import make_optimizer, train_step
from .models import load_weights
from .pipeline import make_method, make_net, resolve_device
from .recipe import Recipe


def method_steps(recipes: dict[str, Recipe], teacher_ckpt: Path | None, *, file: str | None = None,
                 device: str | None = None, rounds: int = 20) -> dict[str, float]:
    """Median training-step time of each labelled recipe's method on the same real batch and teacher."""
    first = next(iter(recipes.values()))
    dev = resolve_device(device or first.device)
    data = load_data(first.data, file=file)
    x, y = next(iter(data.train.batches(first.distill.batch_size, device=dev, train=True,
                                        augment=first.data.augment)))
    teacher = make_net(first.teacher, data, 0, "teacher")
    if teacher_ckpt is not None:
        load_weights(teacher, teacher_ckpt, key="teacher.checkpoint")
    teacher.place(dev)
    steps = {}
    for label, rec in recipes.items():
        student = make_net(rec.student, data, rec.distill.seed, "student")
        method = make_method(rec.distill.method, student, teacher, rec.distill, rec.method_config(), data).to(dev)
        student.place(dev)
        method.train()
        steps[label] = partial(train_step, method, make_optimizer(method, rec.distill), x, y, dev,
                               rec.distill.grad_clip)
    return interleaved_ms(steps, rounds=rounds, device=dev)
