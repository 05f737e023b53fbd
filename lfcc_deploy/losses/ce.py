"""`ce`: the student alone on labels — the reference every distillation method must beat."""
from __future__ import annotations

from pydantic import Field

from ..schema import Strict
from .base import Method


class CEConfig(Strict):
    ce_weight: float = Field(1.0, gt=0)


class CE(Method):
    Config = CEConfig
    uses_teacher = False

    def forward(self, x, y):
        logits = self.student(x)
        return logits, {"ce": self.cfg.ce_weight * self.ce(logits, y)}
