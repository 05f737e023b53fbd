"""`lfcc`: Low-Frequency Components-based Contrastive distillation, reconstructed from the paper's
description (Wu et al., arXiv 2405.18524; no public code — every choice below is a recipe key).

Per paired stage: teacher and student maps -> a multi-scale low-pass bank (average pooling to
fixed grids, each smaller than the map, so a CNN's 4×4 map and a ViT's 8×8 token grid both become
a few low-frequency cells) -> a projector per side into a `dim`-d compact space -> InfoNCE (same
image = positive; the other images of the batch, plus a queue of teacher embeddings from earlier
batches, are the negatives). Beside it, cross-entropy and logit KD. The teacher backbone is frozen;
its projectors train.

Stages pair by relative depth (blocks.py `default_pairs`): the deepest stages carry what the
student must learn and put most of its parameters upstream of the contrastive gradient.

Optionally (`branch_stages`), chosen student stages also get OFA's small classifier branches, taught by
the teacher's softmax: deep supervision for a student that underfits its steps (a DeiT student from a
CNN teacher), where the contrast on its deepest blocks alone left it below OFA.
"""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, field_validator, model_validator
from torch import nn

from .. import distributed
from .base import Method, RampConfig, hard_labels
from .blocks import LowPassBank, Projector, bank_grids, info_nce, pair_stages, pairing_note, stage_channels
from .kd import kd_loss
from .ofa import StageBranches, branch_stages


class LFCCConfig(RampConfig):
    grids: list[int] = Field(default_factory=lambda: [1, 2, 4],
                             description="pooling grids of the low-pass bank; per map, those smaller than it")
    filter: Literal["avgpool", "gaussian", "fft"] = "avgpool"
    dim: int = Field(128, gt=0, description="size of the compact space")
    projector: Literal["linear", "mlp"] = Field("linear", description="linear, or Linear-BN-ReLU-Linear")
    fold: bool = Field(False, description="avgpool: feed projectors the finest grid where the coarser grids are "
                                          "exact averages of its cells (same function class, less work)")
    temperature: float = Field(0.1, gt=0, description="InfoNCE temperature")
    symmetric: bool = Field(True, description="average student->teacher and teacher->student InfoNCE")
    student_stages: list[int] | None = Field(None, description="default: the student's two deepest stages "
                                                               "larger than 1×1, paired by relative depth")
    teacher_stages: list[int] | None = Field(None, description="default: matched to the student's by relative depth")
    queue: int = Field(4096, ge=0, description="teacher embeddings of earlier batches kept as extra negatives "
                                               "(0: the batch's own only)")
    queue_reproject: bool = Field(False, description="queue the teacher's low-pass vectors and project them with "
                                                     "the current projector every step (no stale negatives)")
    negatives: Literal["all", "other_classes"] = Field(
        "all", description="other_classes: never push apart two images of the same class")
    soft_targets: float = Field(0.0, ge=0, le=1, description="share of the student->teacher target taken from "
                                                             "the teacher's similarities to the negatives "
                                                             "(0: InfoNCE's one-hot positive)")
    weight: float = Field(1.0, ge=0, description="weight of the contrastive term (summed over stage pairs)")
    ce_weight: float = Field(1.0, ge=0)
    kd_weight: float = Field(1.0, ge=0)
    kd_temperature: float = Field(4.0, gt=0)
    branch_stages: list[int] = Field(default_factory=list,
                                     description="student stages that also get a small classifier branch taught "
                                                 "by the teacher's logits (OFA's), deep supervision for a student "
                                                 "that underfits ([]: none)")
    branch_width: int = Field(64, ge=1, description="channels inside each branch (OFA: 256; 64 keeps the step "
                                                    "within 1.15× KD's)")
    branch_weight: float = Field(1.0, ge=0, description="weight of the branch losses (summed over branches)")
    branch_temperature: float = Field(1.0, gt=0, description="temperature of the branch losses (OFA's: 1)")

    @field_validator("grids")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if not v or any(g < 1 for g in v):
            raise ValueError("grids must be a non-empty list of integers >= 1")
        return sorted(set(v))

    @model_validator(mode="after")
    def _reprojectable(self) -> "LFCCConfig":
        if self.queue_reproject and self.projector != "linear":
            raise ValueError("queue_reproject needs projector = \"linear\": an MLP projector's BatchNorm would "
                             "normalise the queue as one batch and fold it into its running statistics")
        return self


class LFCC(Method):
    Config = LFCCConfig
    cacheable = True

    @classmethod
    def stages(cls, student, teacher, cfg: LFCCConfig) -> tuple[list[int], list[int]]:
        return pair_stages(student, teacher, cfg.student_stages, cfg.teacher_stages, "distill.lfcc")

    @classmethod
    def branch_idx(cls, student, cfg: LFCCConfig) -> list[int]:
        return branch_stages(student, cfg.branch_stages, "distill.lfcc.branch_stages")

    @classmethod
    def check(cls, student, teacher, cfg: LFCCConfig) -> str:
        pairs = pairing_note("lfcc", student, teacher, *cls.stages(student, teacher, cfg), grids=cfg.grids)
        branches = cls.branch_idx(student, cfg)
        return (f"{pairs}; filter {cfg.filter}, dim {cfg.dim}, queue {cfg.queue}, "
                f"negatives {cfg.negatives}; branches on student stages {branches or 'none'}")

    def __init__(self, student, teacher, cfg: LFCCConfig, ctx):
        super().__init__(student, teacher, cfg, ctx)
        self.s_idx, self.t_idx = self.stages(student, teacher, cfg)
        self.branches = StageBranches(student, self.branch_idx(student, cfg), cfg.branch_width, ctx.num_classes)
        s_shapes, t_shapes = stage_channels(student, self.s_idx), stage_channels(teacher, self.t_idx)
        self.s_banks = [self._bank(h, w) for _, h, w in s_shapes]  # parameter-free: plain lists
        self.t_banks = [self._bank(h, w) for _, h, w in t_shapes]
        self.s_proj = nn.ModuleList(Projector(b.out_features(c), cfg.dim, cfg.projector)
                                    for (c, _, _), b in zip(s_shapes, self.s_banks))
        self.t_proj = nn.ModuleList(Projector(b.out_features(c), cfg.dim, cfg.projector)
                                    for (c, _, _), b in zip(t_shapes, self.t_banks))
        if cfg.queue:  # buffers: saved in checkpoints, so a resumed run contrasts against the same queue
            for j, proj in enumerate(self.t_proj):
                width = proj.in_features if cfg.queue_reproject else cfg.dim
                self.register_buffer(f"queue_{j}", torch.zeros(cfg.queue, width))
            self.register_buffer("queue_labels", torch.full((cfg.queue,), -1, dtype=torch.long))  # -1: empty
            self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    def _bank(self, h: int, w: int) -> LowPassBank:
        """The map's bank (`bank_grids`), or with `fold` its finest grid alone: average-pooled coarser
        grids that divide it are fixed averages of its cells, so a projector starting with a Linear
        layer reaches the same functions from those cells (Linear([v; A·v]) = Linear'(v))."""
        cfg, grids = self.cfg, bank_grids(h, w, self.cfg.grids)
        g = max(grids)
        exact = cfg.filter == "avgpool" and h % g == 0 and w % g == 0 and all(g % x == 0 for x in grids)
        return LowPassBank([g], "avgpool") if cfg.fold and exact else LowPassBank(grids, cfg.filter)

    def queues(self) -> list[torch.Tensor | None]:
        return [getattr(self, f"queue_{j}") if self.cfg.queue else None for j in range(len(self.t_idx))]

    def queue_keys(self) -> list[torch.Tensor | None]:
        """The queue's negatives in today's compact space. Stored embeddings were projected when they
        were queued, up to queue / batch steps ago, by a projector that has moved since (MoCo keeps a
        slow momentum encoder for this); with `queue_reproject` the queue holds the teacher's low-pass
        vectors instead and the current projector maps them, detached, at every step."""
        if not self.cfg.queue_reproject:
            return self.queues()
        with torch.no_grad():
            return [tp(q) for tp, q in zip(self.t_proj, self.queues())]

    @torch.no_grad()
    def enqueue(self, teacher_rows: list[torch.Tensor], labels: torch.Tensor) -> None:
        """First in, first out: the global batch's teacher rows (embeddings, or with `queue_reproject`
        low-pass vectors) replace the oldest entries. Every data-parallel rank gathers the same rows,
        so the queues stay identical without a broadcast."""
        keep = slice(-self.cfg.queue, None)  # a global batch larger than the queue: its last rows
        labels = distributed.gather_with_grad(labels)[keep]
        rows = (self.queue_ptr + torch.arange(len(labels), device=labels.device)) % self.cfg.queue
        for q, t in zip(self.queues(), teacher_rows):
            q[rows] = distributed.gather_with_grad(t.detach().float())[keep]
        self.queue_labels[rows] = labels
        self.queue_ptr.copy_((self.queue_ptr + len(labels)) % self.cfg.queue)

    def teacher_targets(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Frozen teacher: logits and low-pass vectors before the trainable projectors (cacheable)."""
        with torch.no_grad():
            logits, maps = self.teacher.forward_stages(x, self.t_idx)
            return logits, [bank(m) for bank, m in zip(self.t_banks, maps)]

    def cache_fingerprint(self) -> dict:
        return dict(teacher_stages=self.t_idx, teacher_blocks=[self.teacher.describe_stages()[i]["module"]
                                                               for i in self.t_idx],
                    grids=[b.grids for b in self.t_banks], filter=self.cfg.filter, fold=self.cfg.fold)

    def forward(self, x, y, targets=None):
        cfg = self.cfg
        t_logits, t_vecs = targets or self.teacher_targets(x)
        logits, maps, branch_maps = self.student_maps(x)
        hard = hard_labels(y)
        labels = hard if cfg.negatives == "other_classes" else None
        t_embs = [tp(tv) for tp, tv in zip(self.t_proj, t_vecs)]
        queue_labels = self.queue_labels if cfg.queue else None
        contrast = sum(info_nce(sp(bank(m)), te, cfg.temperature, cfg.symmetric, labels=labels, queue=q,
                                queue_labels=queue_labels, soft=cfg.soft_targets)
                       for m, te, q, bank, sp in zip(maps, t_embs, self.queue_keys(), self.s_banks, self.s_proj))
        if cfg.queue and self.training:  # after the loss: this batch's rows are positives, not negatives
            self.enqueue(t_vecs if cfg.queue_reproject else t_embs, hard)
        ramp = self.ramp()
        losses = {"ce": cfg.ce_weight * self.ce(logits, y), "lfcc": ramp * cfg.weight * contrast}
        if cfg.kd_weight:
            losses["kd"] = ramp * cfg.kd_weight * kd_loss(logits, t_logits, cfg.kd_temperature)
        if len(self.branches):
            losses["branch"] = ramp * cfg.branch_weight * self.branches.loss(
                branch_maps, t_logits, y, eps=1.0, temperature=cfg.branch_temperature)
        return logits, losses

    def student_maps(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """Logits, the paired stages' maps and the branch stages' maps, from one forward pass (a stage
        in both lists is computed once)."""
        idx = sorted(set(self.s_idx + self.branches.stages))
        logits, maps = self.student.forward_stages(x, idx)
        by_stage = dict(zip(idx, maps))
        return logits, [by_stage[i] for i in self.s_idx], [by_stage[i] for i in self.branches.stages]
