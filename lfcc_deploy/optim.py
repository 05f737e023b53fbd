"""One optimisation step and what drives it: the optimiser, the learning-rate schedule, autocast.

Shared by the training loop and `steptime` (which times exactly the step training takes).
"""
from __future__ import annotations

import math
from contextlib import nullcontext

import torch

from .losses import Method
from .recipe import TrainConfig


def lr_lambda(cfg: TrainConfig, steps_per_epoch: int):
    total = cfg.epochs * steps_per_epoch
    warm = min(int(cfg.warmup * steps_per_epoch), total - 1)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        t = (step - warm) / max(1, total - warm)
        return {"cosine": 0.5 * (1 + math.cos(math.pi * t)), "linear": 1 - t, "constant": 1.0}[cfg.schedule]
    return factor


def make_optimizer(method: Method, cfg: TrainConfig) -> torch.optim.Optimizer:
    """No weight decay on biases and norm scales (1-d tensors): standard practice for both families."""
    params = [p for p in method.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.ndim > 1], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        # Nesterov needs momentum; the schema allows momentum = 0 (plain SGD)
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)
    cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    try:  # one fused kernel instead of a loop over parameters: the step stays cheap for small students
        return cls(groups, lr=cfg.lr, fused=True)
    except (RuntimeError, TypeError):
        return cls(groups, lr=cfg.lr)


def autocast(device: torch.device):
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()


def train_step(method: Method, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
               device: torch.device, grad_clip: float | None = None, targets=None):
    """One optimisation step; returns (logits, losses, total loss) without syncing with the device.
    `targets`: cached teacher outputs for this very batch (the teacher forward is skipped)."""
    with autocast(device):
        logits, losses = method(x, y) if targets is None else method(x, y, targets)
    loss = sum(losses.values())
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(method.parameters(), grad_clip)
    opt.step()
    return logits, losses, loss
