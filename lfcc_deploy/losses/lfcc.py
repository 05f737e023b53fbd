"""`lfcc`: Low-Frequency Components-based Contrastive distillation, reconstructed from the paper's
description (Wu et al., arXiv 2405.18524; no public code — every choice below is a recipe key).

Per paired stage: teacher and student maps -> the same multi-scale low-pass bank (so a CNN's
16×16 map and a ViT's 8×8 token grid become vectors of one shape) -> a projector per side into a
`dim`-d compact space -> InfoNCE over the batch (same image = positive, other images = negatives).
Beside it, cross-entropy and logit KD. The teacher backbone is frozen; its projectors train.
"""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, field_validator
from torch import nn

from ..schema import Strict
from .base import Method
from .blocks import LowPassBank, Projector, info_nce, pair_stages, pairing_note, stage_channels
from .kd import kd_loss


class LFCCConfig(Strict):
    grids: list[int] = Field(default_factory=lambda: [1, 2, 4], description="pooling grids of the low-pass bank")
    filter: Literal["avgpool", "gaussian", "fft"] = "avgpool"
    dim: int = Field(128, gt=0, description="size of the compact space")
    projector: Literal["linear", "mlp"] = Field("linear", description="linear, or Linear-BN-ReLU-Linear")
    fold: bool = Field(False, description="avgpool: feed projectors the finest grid where the coarser grids are "
                                          "exact averages of its cells (same function class, less work)")
    temperature: float = Field(0.1, gt=0, description="InfoNCE temperature")
    symmetric: bool = Field(True, description="average student->teacher and teacher->student InfoNCE")
    student_stages: list[int] | None = Field(None, description="default: last two stages with maps >= max grid")
    teacher_stages: list[int] | None = None
    weight: float = Field(1.0, ge=0, description="weight of the contrastive term (summed over stage pairs)")
    ce_weight: float = Field(1.0, ge=0)
    kd_weight: float = Field(1.0, ge=0)
    kd_temperature: float = Field(4.0, gt=0)

    @field_validator("grids")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if not v or any(g < 1 for g in v):
            raise ValueError("grids must be a non-empty list of integers >= 1")
        return sorted(set(v))


class LFCC(Method):
    Config = LFCCConfig
    cacheable = True

    @classmethod
    def stages(cls, student, teacher, cfg: LFCCConfig) -> tuple[list[int], list[int]]:
        return pair_stages(student, teacher, cfg.student_stages, cfg.teacher_stages, max(cfg.grids),
                           "distill.lfcc")

    @classmethod
    def check(cls, student, teacher, cfg: LFCCConfig) -> str:
        pairs = pairing_note("lfcc", student, teacher, *cls.stages(student, teacher, cfg))
        return f"{pairs}; grids {cfg.grids}, filter {cfg.filter}, dim {cfg.dim}"

    def __init__(self, student, teacher, cfg: LFCCConfig, ctx):
        super().__init__(student, teacher, cfg, ctx)
        self.s_idx, self.t_idx = self.stages(student, teacher, cfg)
        s_shapes, t_shapes = stage_channels(student, self.s_idx), stage_channels(teacher, self.t_idx)
        self.s_banks = [self._bank(h, w) for _, h, w in s_shapes]  # parameter-free: plain lists
        self.t_banks = [self._bank(h, w) for _, h, w in t_shapes]
        self.s_proj = nn.ModuleList(Projector(b.out_features(c), cfg.dim, cfg.projector)
                                    for (c, _, _), b in zip(s_shapes, self.s_banks))
        self.t_proj = nn.ModuleList(Projector(b.out_features(c), cfg.dim, cfg.projector)
                                    for (c, _, _), b in zip(t_shapes, self.t_banks))

    def _bank(self, h: int, w: int) -> LowPassBank:
        """The full bank, or with `fold` its finest grid alone: average-pooled coarser grids that divide
        it are fixed averages of its cells, so a projector starting with a Linear layer reaches the same
        functions from those cells (Linear([v; A·v]) = Linear'(v)) with 24 % fewer inputs for [1, 2, 4]."""
        cfg, g = self.cfg, max(self.cfg.grids)
        exact = cfg.filter == "avgpool" and h % g == 0 and w % g == 0 and all(g % x == 0 for x in cfg.grids)
        return LowPassBank([g], "avgpool") if cfg.fold and exact else LowPassBank(cfg.grids, cfg.filter)

    def teacher_targets(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Frozen teacher: logits and low-pass vectors before the trainable projectors (cacheable)."""
        with torch.no_grad():
            logits, maps = self.teacher.forward_stages(x, self.t_idx)
            return logits, [bank(m) for bank, m in zip(self.t_banks, maps)]

    def cache_fingerprint(self) -> dict:
        return dict(teacher_stages=self.t_idx, grids=self.cfg.grids, filter=self.cfg.filter, fold=self.cfg.fold)

    def forward(self, x, y, targets=None):
        cfg = self.cfg
        t_logits, t_vecs = targets or self.teacher_targets(x)
        logits, maps = self.student.forward_stages(x, self.s_idx)
        contrast = sum(info_nce(sp(bank(m)), tp(tv), cfg.temperature, cfg.symmetric)
                       for m, tv, bank, sp, tp in zip(maps, t_vecs, self.s_banks, self.s_proj, self.t_proj))
        losses = {"ce": cfg.ce_weight * self.ce(logits, y), "lfcc": cfg.weight * contrast}
        if cfg.kd_weight:
            losses["kd"] = cfg.kd_weight * kd_loss(logits, t_logits, cfg.kd_temperature)
        return logits, losses
