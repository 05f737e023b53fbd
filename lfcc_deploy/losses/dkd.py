"""`dkd`: Decoupled Knowledge Distillation (Zhao et al., CVPR 2022) — a stronger logit baseline.

Classic KD mixes two things: how confident the teacher is on the target class (TCKD, a binary
target-vs-rest KL) and how it ranks the other classes (NCKD, a KL over the non-target classes
only, renormalised). In KD the NCKD term is scaled down by (1 − p_t,target), so it fades exactly
when the teacher is confident; DKD weights the two independently: α·TCKD + β·NCKD, both at
temperature T and scaled by T².

Defaults α = 1, β = 8, T = 4 are the DKD paper's CIFAR-100 setting (mdistiller's
configs/cifar100/dkd). OFA-KD's code uses β = 2, T = 1 for its timm students; set those in
`[distill.dkd]` to match it. The paper also ramps the DKD term in over 20 of 240 epochs:
`ramp_epochs` does that here (0 by default, as the short schedules here leave no room for it).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from .base import Method, RampConfig, hard_labels
from .blocks import MASKED_LOGIT



def dkd_parts(student_logits: torch.Tensor, teacher_logits: torch.Tensor, y: torch.Tensor,
              temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(TCKD, NCKD), each a batch-mean KL(teacher || student) × T², computed in log space (float32)."""
    gt = F.one_hot(y, student_logits.shape[1]).bool()

    def binary_and_rest(logits):
        z = logits.float() / temperature
        lse_all = torch.logsumexp(z, dim=1)
        rest = z.masked_fill(gt, MASKED_LOGIT)
        log_target = z.gather(1, y[:, None]).squeeze(1) - lse_all
        log_other = torch.logsumexp(rest, dim=1) - lse_all
        return torch.stack([log_target, log_other], dim=1), F.log_softmax(rest, dim=1)

    bin_s, rest_s = binary_and_rest(student_logits)
    bin_t, rest_t = binary_and_rest(teacher_logits)
    scale = temperature ** 2
    tckd = F.kl_div(bin_s, bin_t, reduction="batchmean", log_target=True) * scale
    nckd = F.kl_div(rest_s, rest_t, reduction="batchmean", log_target=True) * scale
    return tckd, nckd


def dkd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, y: torch.Tensor, alpha: float,
             beta: float, temperature: float) -> torch.Tensor:
    """α·TCKD + β·NCKD (mdistiller's `dkd_loss`, without its warmup factor)."""
    tckd, nckd = dkd_parts(student_logits, teacher_logits, y, temperature)
    return alpha * tckd + beta * nckd


class DKDConfig(RampConfig):
    alpha: float = Field(1.0, ge=0, description="weight of TCKD (target vs rest)")
    beta: float = Field(8.0, ge=0, description="weight of NCKD (among non-target classes); OFA-KD code: 2")
    temperature: float = Field(4.0, gt=0, description="OFA-KD code: 1")
    ce_weight: float = Field(1.0, ge=0)


class DKD(Method):
    Config = DKDConfig

    def forward(self, x, y):
        cfg = self.cfg
        with torch.no_grad():
            t_logits = self.teacher(x)
        logits = self.student(x)
        tckd, nckd = dkd_parts(logits, t_logits, hard_labels(y), cfg.temperature)  # mixup: the dominant class
        ramp = self.ramp()
        return logits, {"ce": cfg.ce_weight * self.ce(logits, y), "tckd": ramp * cfg.alpha * tckd,
                        "nckd": ramp * cfg.beta * nckd}
