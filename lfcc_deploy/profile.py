"""`lfcc-deploy profile`: what one distillation step costs for the recipe's pair, method by method.

Times `ce`, `kd`, `lfcc` and `lfcc` with the teacher cache on one real batch, interleaved round by
round (a noisy machine drifts by tens of percent between separate runs), and the data pipeline
(batch gather, float conversion, augmentation) apart from the step.
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import torch

from .data import load_data
from .device import resolve_device
from .models import load_weights
from .recipe import Recipe, apply_overrides, recipe_dict, validate_recipe
from .steptime import method_steps
from .progress import default_say
from .training import check_resources, make_net

VARIANTS = {"ce": ["distill.method=ce"], "kd": ["distill.method=kd"], "lfcc": ["distill.method=lfcc"],
            "lfcc_cached": ["distill.method=lfcc", "distill.teacher_cache=memory"]}


def _data_ms(source, recipe: Recipe, device: torch.device, steps: int) -> float:
    cfg = recipe.distill
    times, batches = [], source.batches(cfg.batch_size, device=device, train=True, seed=cfg.seed,
                                        augment=recipe.data.augment)
    for _ in range(min(steps, source.steps_per_epoch(cfg.batch_size, True))):
        t0 = time.perf_counter()
        next(batches)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(1000 * (time.perf_counter() - t0))
    return statistics.median(times)


def profile_recipe(recipe: Recipe, *, file: str | None = None, device: str | None = None, steps: int = 20,
                   say=default_say) -> dict[str, Any]:
    """Median step milliseconds and images/s per method (`profile --json` prints this dict)."""
    teacher_state = check_resources(recipe, file)
    dev = resolve_device(device or recipe.device)
    data = load_data(recipe.data, file=file)
    teacher = make_net(recipe.teacher, data, 0, "teacher", spec_hint=teacher_state[1] if teacher_state else None)
    if teacher_state:
        load_weights(teacher, Path(recipe.teacher.checkpoint), state=teacher_state[0])
    cacheable = recipe.data.augment_style() != "timm"  # the cache cannot replay timm's views
    if not cacheable:
        say("lfcc_cached not timed: the teacher cache cannot replay data.augment.style = \"timm\" views")
    variants = {k: validate_recipe(apply_overrides(recipe_dict(recipe), v), file or recipe.name)
                for k, v in VARIANTS.items() if cacheable or k != "lfcc_cached"}
    say(f"timing {', '.join(variants)} on {dev}, batch {recipe.distill.batch_size}, {steps} interleaved rounds")
    # rounded once, before the ratios: the report's ratios are exactly those of the step times it shows
    ms = {k: round(v, 3) for k, v in method_steps(variants, None, device=str(dev), rounds=steps,
                                                   teacher=teacher, data=data).items()}
    data_ms = _data_ms(data.train, recipe, dev, steps)
    bs = recipe.distill.batch_size
    result = dict(recipe=recipe.name, device=str(dev), batch_size=bs, steps=steps,
                  teacher=recipe.teacher.model, student=recipe.student.model, data_ms=round(data_ms, 3),
                  methods={k: dict(step_ms=v, images_per_s=round(bs * 1000 / (v + data_ms), 1))
                           for k, v in ms.items()},
                  ratios=dict(lfcc_vs_kd=round(ms["lfcc"] / ms["kd"], 3),
                              **({"lfcc_cached_vs_ce": round(ms["lfcc_cached"] / ms["ce"], 3)} if cacheable else {})))
    return result
