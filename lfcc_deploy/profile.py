"""`lfcc-deploy profile`: what one distillation step costs for the recipe's pair, method by method.

Times `ce`, `kd`, `lfcc` and `lfcc` with the teacher cache on one real batch, interleaved round by
round (a noisy machine drifts by tens of percent between separate runs), and the data pipeline
(batch gather, float conversion, augmentation) apart from the step.
"""
from __future__ import annotations

import statistics
import time
from functools import partial
from pathlib import Path
from typing import Any

import torch

from .bench.timing import interleaved_ms
from .cache import prepare_cache
from .data import load_data
from .engine import make_optimizer, train_step
from .models import load_weights
from .pipeline import check_resources, make_method, make_net, resolve_device
from .recipe import Recipe
from .rundir import write_json

METHODS = ("ce", "kd", "lfcc", "lfcc_cached")


def _data_ms(source, recipe: Recipe, device: torch.device, steps: int) -> float:
    cfg = recipe.distill
    times, batches = [], source.batches(cfg.batch_size, device=device, train=True, seed=cfg.seed,
                                        augment=recipe.data.augment)
    for _ in range(min(steps, source.steps_per_epoch(cfg.batch_size, True))):
        t0 = time.perf_counter()
        x, _ = next(batches)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(1000 * (time.perf_counter() - t0))
    return statistics.median(times)


def profile_recipe(recipe: Recipe, *, file: str | None = None, device: str | None = None, steps: int = 20,
                   json_path: str | Path | None = None, say=lambda _: None) -> dict[str, Any]:
    """Median step milliseconds and images/s per method; written to `json_path` when given."""
    teacher_state = check_resources(recipe, file)
    dev = resolve_device(device or recipe.device)
    data = load_data(recipe.data, file=file)
    cfg, aug = recipe.distill, recipe.data.augment
    teacher = make_net(recipe.teacher, data, 0, "teacher", spec_hint=teacher_state[1] if teacher_state else None)
    if teacher_state:
        load_weights(teacher, Path(recipe.teacher.checkpoint), state=teacher_state[0])
    teacher.place(dev)
    source = data.train
    x, y, idx = next(source.batches(cfg.batch_size, device=dev, train=True, seed=cfg.seed, with_index=True))
    x_aug = next(source.batches(cfg.batch_size, device=dev, train=True, seed=cfg.seed, augment=aug))[0]
    step_fns = {}
    for name in METHODS:
        method_name = "lfcc" if name == "lfcc_cached" else name
        student = make_net(recipe.student, data, cfg.seed, "student")
        method = make_method(method_name, student, teacher, cfg, cfg.lfcc if method_name == "lfcc" else
                             getattr(cfg, method_name), data).to(dev)
        student.place(dev)
        method.train()
        opt = make_optimizer(method, cfg)
        if name != "lfcc_cached":
            step_fns[name] = partial(train_step, method, opt, x_aug, y, dev, cfg.grad_clip)
            continue
        batch_src = source.subset(idx.cpu())  # a one-view cache over this batch: the real lookup path
        cache = prepare_cache(method, batch_src, idx.cpu(), data.identity, aug, mode="memory", views=1,
                              seed=cfg.seed, dtype=cfg.cache_dtype, run_dir=Path("."), device=dev, say=say)
        views, positions = cache.pick_views(cfg.seed, 0), torch.arange(len(idx))

        def cached_step(method=method, opt=opt, cache=cache, views=views, positions=positions):
            xv, targets = cache.batch(x, positions, views, aug)
            return train_step(method, opt, xv, y, dev, cfg.grad_clip, targets)
        step_fns[name] = cached_step
    say(f"timing {', '.join(step_fns)} on {dev}, batch {cfg.batch_size}, {steps} interleaved rounds")
    ms = interleaved_ms(step_fns, rounds=steps, warmup=3, device=dev)
    data_ms = _data_ms(source, recipe, dev, steps)
    result = dict(recipe=recipe.name, device=str(dev), batch_size=cfg.batch_size, steps=steps,
                  teacher=recipe.teacher.model, student=recipe.student.model, data_ms=round(data_ms, 3),
                  methods={k: dict(step_ms=round(v, 3), images_per_s=round(cfg.batch_size * 1000 / (v + data_ms), 1))
                           for k, v in ms.items()},
                  ratios=dict(lfcc_vs_kd=round(ms["lfcc"] / ms["kd"], 3),
                              lfcc_cached_vs_ce=round(ms["lfcc_cached"] / ms["ce"], 3)))
    if json_path:
        write_json(Path(json_path), result)
    return result
