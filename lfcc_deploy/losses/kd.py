"""`kd`: Hinton et al. 2015 logit distillation with a temperature."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from .base import Method, RampConfig


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher || student) on softened distributions, scaled by T² so gradients keep their size."""
    log_s = F.log_softmax(student_logits.float() / temperature, dim=1)
    log_t = F.log_softmax(teacher_logits.float() / temperature, dim=1)
    return F.kl_div(log_s, log_t, reduction="batchmean", log_target=True) * temperature ** 2


class KDConfig(RampConfig):
    temperature: float = Field(4.0, gt=0)
    kd_weight: float = Field(1.0, ge=0)
    ce_weight: float = Field(1.0, ge=0)


class KD(Method):
    Config = KDConfig
    cacheable = True

    def teacher_targets(self, x):
        with torch.no_grad():
            return self.teacher(x), []

    def forward(self, x, y, targets=None):
        t_logits = (targets or self.teacher_targets(x))[0]
        logits = self.student(x)
        return logits, {"ce": self.cfg.ce_weight * self.ce(logits, y),
                        "kd": self.ramp() * self.cfg.kd_weight * kd_loss(logits, t_logits, self.cfg.temperature)}
