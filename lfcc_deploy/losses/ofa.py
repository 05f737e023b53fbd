"""`ofa`: One-for-All KD (Hao et al., NeurIPS 2023, arXiv 2310.19444) — the heterogeneous baseline.

OFA sidesteps mismatched features by distilling in logit space only: each chosen student stage
gets a small branch ending in a classifier, and the branch logits — like the student's own —
are pulled towards the teacher's predictions with a target-enhanced loss

    w = (p_t + y)^eps − y,    loss = −Σ_c w_c · log p_s,c

where p_t = softmax(t / T), y is one-hot and p_s = softmax(s / T) (the temperature divides both,
as in the public OFAKD code; T = 1 by default). With eps = 1, w = p_t: plain soft-target cross-
entropy. With eps > 1 the target class's weight (p_t,y + 1)^eps − 1 grows faster than p_t,y, so
the more confident the teacher is on the right class the more the label is pushed — the teacher's
dark knowledge is kept while a mismatched (heterogeneous) teacher cannot pull the student off it.

Simplification (documented, deliberate): OFA builds architecture-specific branches (depthwise-
separable conv stacks for CNN students, a few transformer blocks for token students). Here every
family gets the same small conv branch, because every `Net` taps its stages as B×C×H×W maps:
1×1 conv to `branch_width` -> depthwise 3×3 + pointwise 1×1 -> BatchNorm -> GELU -> global
average pool -> Linear to the classes.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from ..errors import BadInput
from ..schema import Strict
from .base import Method
from .blocks import stage_channels


def ofa_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, y: torch.Tensor, eps: float,
             temperature: float = 1.0) -> torch.Tensor:
    """−Σ_c ((p_t + y)^eps − y)_c · log softmax(s / T)_c, averaged over the batch (float32). `y`: labels
    (one-hot), or mixup/cutmix's B×classes probabilities, which the formula takes as the target as is."""
    onehot = y.float() if y.is_floating_point() else F.one_hot(y, student_logits.shape[1]).float()
    p_t = F.softmax(teacher_logits.float() / temperature, dim=1)
    w = (p_t + onehot).pow(eps) - onehot
    log_s = F.log_softmax(student_logits.float() / temperature, dim=1)
    return -(w * log_s).sum(dim=1).mean()


class OFAConfig(Strict):
    stages: list[int] | None = Field(None, description="student stages with a branch; default: all but the "
                                                       "last, at most the last three of those")
    eps: float = Field(1.0, gt=0, description="target enhancement exponent (OFA: 1.0 CIFAR, 1.5 ImageNet)")
    temperature: float = Field(1.0, gt=0)
    ofa_weight: float = Field(1.0, ge=0, description="weight of the OFA loss on the student's own logits")
    branch_weight: float = Field(1.0, ge=0, description="weight of the OFA loss on branch logits (summed)")
    ce_weight: float = Field(1.0, ge=0)
    branch_width: int = Field(256, ge=1, description="channels inside each branch")


class Branch(nn.Sequential):
    """Stage map -> class logits; small on purpose, so the branch cannot carry the stage's features far."""

    def __init__(self, in_channels: int, width: int, num_classes: int):
        super().__init__(
            nn.Conv2d(in_channels, width, 1, bias=False),
            nn.Conv2d(width, width, 3, padding=1, groups=width, bias=False),  # depthwise
            nn.Conv2d(width, width, 1, bias=False),  # pointwise
            nn.BatchNorm2d(width),
            nn.GELU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(width, num_classes),
        )


class StageBranches(nn.ModuleList):
    """One `Branch` per student stage, each taught by the teacher's logits through `ofa_loss`: deep
    supervision that reaches intermediate blocks. `ofa` is built on it, and `lfcc` adds it with
    `distill.lfcc.branch_stages` (a ModuleList, so state-dict keys stay `branches.<i>.…`)."""

    def __init__(self, student, stages: list[int], width: int, num_classes: int):
        super().__init__(Branch(c, width, num_classes) for c, _, _ in stage_channels(student, stages))
        self.stages = stages

    def loss(self, maps: list[torch.Tensor], teacher_logits: torch.Tensor, y: torch.Tensor, eps: float,
             temperature: float) -> torch.Tensor:
        """Summed over branches; `maps` are the student's maps at `self.stages`, in that order."""
        return sum(ofa_loss(b(m), teacher_logits, y, eps, temperature) for b, m in zip(self, maps))


def branch_stages(student, stages: list[int], key: str) -> list[int]:
    """`stages` as non-negative indexes, or a one-line BadInput naming `key` when one is out of range."""
    n = len(student.stages)
    bad = [i for i in stages if not -n <= i < n]
    if bad:
        raise BadInput(f"stage index {bad} out of range for {student.spec.name} ({n} stages)", key=key,
                       hint=f"see `lfcc-deploy models show {student.spec.name} --img-size {student.spec.img_size}`")
    return [i % n for i in stages]


class OFA(Method):
    Config = OFAConfig

    @classmethod
    def stages(cls, student, cfg: OFAConfig) -> list[int]:
        if cfg.stages is None:  # the last stage's branch would duplicate the student's own head
            return list(range(len(student.stages) - 1))[-3:]
        return branch_stages(student, cfg.stages, "distill.ofa.stages")

    @classmethod
    def check(cls, student, teacher, cfg: OFAConfig) -> str:
        idx = cls.stages(student, cfg)
        where = ", ".join(f"{i} ({c}×{h}×{w})" for i, (c, h, w) in zip(idx, stage_channels(student, idx)))
        return (f"ofa branches on student stages: {where or 'none'}; eps {cfg.eps}, "
                f"temperature {cfg.temperature}")

    def __init__(self, student, teacher, cfg: OFAConfig, ctx):
        super().__init__(student, teacher, cfg, ctx)
        self.s_idx = self.stages(student, cfg)
        self.branches = StageBranches(student, self.s_idx, cfg.branch_width, ctx.num_classes)

    def forward(self, x, y):
        cfg = self.cfg
        with torch.no_grad():
            t_logits = self.teacher(x)
        if self.s_idx:
            logits, maps = self.student.forward_stages(x, self.s_idx)
        else:
            logits, maps = self.student(x), []
        losses = {"ce": cfg.ce_weight * self.ce(logits, y),
                  "ofa": cfg.ofa_weight * ofa_loss(logits, t_logits, y, cfg.eps, cfg.temperature)}
        if maps:
            losses["ofa_branch"] = cfg.branch_weight * self.branches.loss(maps, t_logits, y, cfg.eps,
                                                                          cfg.temperature)
        return logits, losses
