"""`fitnet`: FitNets hints (Romero et al., ICLR 2015) — regress the teacher's intermediate maps.

The classic feature-KD baseline LFCC claims to improve on between heterogeneous models: per paired
stage, a learned adapter maps the student's map onto the teacher's (bilinear resize to the
teacher's H×W, then a 1×1 conv to its channels) and the hint loss is the MSE to the raw teacher
map. It runs for any family pair because every `Net` taps B×C×H×W maps (ViT/MLP tokens arrive as
a grid), but nothing here bridges the representation gap — which is exactly what the comparison
is meant to show. (OFA-KD's FitNet is CNN↔CNN only; the resize is what makes it run across.)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from ..schema import Strict
from .base import Method
from .blocks import pair_stages, pairing_note, stage_channels
from .kd import kd_loss


class FitNetConfig(Strict):
    student_stages: list[int] | None = Field(None, description="default: the student's two deepest stages larger "
                                                               "than 1×1, paired by relative depth")
    teacher_stages: list[int] | None = None
    hint_weight: float = Field(1.0, ge=0, description="weight of the MSE hint term (summed over stage pairs)")
    ce_weight: float = Field(1.0, ge=0)
    kd_weight: float = Field(0.0, ge=0, description="optional logit KD on top of the hints")
    kd_temperature: float = Field(4.0, gt=0)


class Adapter(nn.Module):
    """Student map -> teacher map's shape: resize first (cheap at the student's width), then 1×1 conv.

    Antialiased bilinear: when the student map is larger (e.g. a 4×4 ViT grid onto a 1×1 CNN
    stage) every student position contributes, instead of the few nearest the sample point.
    """

    def __init__(self, in_channels: int, out_channels: int, size: tuple[int, int]):
        super().__init__()
        self.size = size
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        if tuple(x.shape[-2:]) != self.size:
            x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False, antialias=True)
        return self.conv(x).float()


class FitNet(Method):
    Config = FitNetConfig

    @classmethod
    def stages(cls, student, teacher, cfg: FitNetConfig) -> tuple[list[int], list[int]]:
        # the LFCC rule (maps larger than 1×1): a 1×1 map resized up is a constant, not a hint
        return pair_stages(student, teacher, cfg.student_stages, cfg.teacher_stages, "distill.fitnet")

    @classmethod
    def check(cls, student, teacher, cfg: FitNetConfig) -> str:
        return pairing_note("fitnet", student, teacher, *cls.stages(student, teacher, cfg))

    def __init__(self, student, teacher, cfg: FitNetConfig, ctx):
        super().__init__(student, teacher, cfg, ctx)
        self.s_idx, self.t_idx = self.stages(student, teacher, cfg)
        s_shapes, t_shapes = stage_channels(student, self.s_idx), stage_channels(teacher, self.t_idx)
        self.adapters = nn.ModuleList(Adapter(sc, tc, (th, tw))
                                      for (sc, _, _), (tc, th, tw) in zip(s_shapes, t_shapes))

    def forward(self, x, y):
        cfg = self.cfg
        with torch.no_grad():
            t_logits, t_maps = self.teacher.forward_stages(x, self.t_idx)
        logits, maps = self.student.forward_stages(x, self.s_idx)
        hint = sum(F.mse_loss(a(m), tm.float()) for a, m, tm in zip(self.adapters, maps, t_maps))
        losses = {"ce": cfg.ce_weight * self.ce(logits, y), "hint": cfg.hint_weight * hint}
        if cfg.kd_weight:
            losses["kd"] = cfg.kd_weight * kd_loss(logits, t_logits, cfg.kd_temperature)
        return logits, losses
