"""Step times that survive a noisy shared machine: methods interleaved on one batch, medians compared.

Wall time of separate runs drifts by tens of percent on shared runners, so ratios taken from runs
made minutes apart are unreliable. Timing every candidate in turn, round after round, on the same
batch exposes them all to the same drift; the median of each gives an honest ratio. A recipe with
`teacher_cache` on is timed the way it trains: a cached view and its stored targets, no teacher forward.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Callable

import torch

from .bench.timing import interleaved_ms
from .data import DataBundle, load_data
from .device import resolve_device
from .models import Net, load_weights
from .optim import make_optimizer, train_step
from .recipe import Recipe
from .training import make_method, make_net


def _cached_step(method, opt, rec: Recipe, data: DataBundle, dev: torch.device) -> Callable[[], object]:
    """A one-view teacher cache over the benchmark batch: the real lookup and augmentation path."""
    from .cache import prepare_cache
    cfg, aug = rec.distill, rec.data.augment
    x, y, idx = next(data.train.batches(cfg.batch_size, device=dev, train=True, seed=cfg.seed, with_index=True))
    cache = prepare_cache(method, data.train.subset(idx.cpu()), idx.cpu(), data.identity, aug, mode="memory",
                          views=1, seed=cfg.seed, dtype=cfg.cache_dtype, run_dir=Path("."), device=dev)
    views, positions = cache.pick_views(cfg.seed, 0), torch.arange(len(idx))

    def step():
        xv, targets = cache.batch(x, positions, views, aug)
        return train_step(method, opt, xv, y, dev, cfg.grad_clip, targets)
    return step


def method_steps(recipes: dict[str, Recipe], teacher_ckpt: Path | None, *, file: str | None = None,
                 device: str | None = None, rounds: int = 20, teacher: Net | None = None,
                 data: DataBundle | None = None) -> dict[str, float]:
    """Median training-step time of each labelled recipe's method on the same real batch and teacher."""
    first = next(iter(recipes.values()))
    dev = resolve_device(device or first.device)
    data = data or load_data(first.data, file=file)
    x, y = next(iter(data.train.batches(first.distill.batch_size, device=dev, train=True,
                                        augment=first.data.augment)))
    if teacher is None:
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
        opt = make_optimizer(method, rec.distill)
        cached = rec.distill.teacher_cache != "off" and method.teacher is not None
        steps[label] = _cached_step(method, opt, rec, data, dev) if cached else \
            partial(train_step, method, opt, x, y, dev, rec.distill.grad_clip)
    return interleaved_ms(steps, rounds=rounds, device=dev)
