"""The one contract every distillation method follows (after mdistiller's `_base`).

A method owns the student, the frozen teacher and any extra trainable parts
(projectors, adapters). `forward(x, y)` returns the student's logits and a dict
of already-weighted losses; the engine sums and logs that dict and never needs
to know which method it is running.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from pydantic import Field

from ..models import Net
from ..schema import Strict


@dataclass
class MethodContext:
    """What a method may need to know about the run, so the engine never branches on a method."""

    num_classes: int
    label_smoothing: float = 0.0


@dataclass
class Progress:
    """Where training stands, set by the engine before every step (also after a resume)."""

    step: int = 0
    steps_per_epoch: int = 1
    total_steps: int = 1

    @property
    def epoch(self) -> float:
        """Epochs completed so far, counting this step as done (so a ramp never starts at exactly 0)."""
        return (self.step + 1) / max(1, self.steps_per_epoch)


class RampConfig(Strict):
    """Shared by methods whose teacher terms can be ramped in: an early student cannot match a teacher
    yet, and DKD's paper warms its loss up linearly (20 of 240 epochs) for stability."""

    ramp_epochs: float = Field(0.0, ge=0, description="teacher terms rise linearly from 0 over this many "
                                                      "epochs (0: full weight from the first step)")


def hard_labels(y: torch.Tensor) -> torch.Tensor:
    """Class indices from labels or from B×classes soft targets (mixup/cutmix): the dominant class."""
    return y.argmax(1) if y.is_floating_point() else y


class Method(nn.Module):
    Config: ClassVar[type[Strict]] = Strict
    uses_teacher: ClassVar[bool] = True

    def __init__(self, student: Net, teacher: Net | None, cfg: Strict, ctx: MethodContext):
        super().__init__()
        if self.uses_teacher and teacher is None:
            raise ValueError(f"{type(self).__name__} needs a teacher")
        self.student, self.cfg, self.ctx = student, cfg, ctx
        self.progress = Progress()
        self.teacher = teacher if self.uses_teacher else None
        if self.teacher is not None:
            self.teacher.requires_grad_(False).eval()

    @classmethod
    def check(cls, student: Net, teacher: Net | None, cfg: Strict) -> str | None:
        """Validate `cfg` against the actual models before anything is written; return a line to print.

        Feature methods resolve their stage pairing here (raising BadInput on a bad index), so a
        mistake surfaces before the run directory is touched.
        """
        return None

    def set_progress(self, step: int, steps_per_epoch: int, total_steps: int) -> None:
        self.progress = Progress(step, steps_per_epoch, total_steps)

    def ramp(self) -> float:
        """The factor on teacher terms now: min(1, epochs done / `ramp_epochs`); 1 without a ramp."""
        epochs = getattr(self.cfg, "ramp_epochs", 0.0)
        return 1.0 if epochs <= 0 else min(1.0, self.progress.epoch / epochs)

    def train(self, mode: bool = True) -> "Method":
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()  # BatchNorm statistics and dropout of the teacher stay frozen
        return self

    def ce(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """`y`: labels, or B×classes probabilities (mixup/cutmix), which torch's cross-entropy takes as is."""
        return F.cross_entropy(logits, y, label_smoothing=self.ctx.label_smoothing)

    def forward(self, x: torch.Tensor, y: torch.Tensor,
                targets: tuple[torch.Tensor, list[torch.Tensor]] | None = None
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """`targets`: the teacher's outputs for exactly this `x`, from a teacher cache (cacheable methods)."""
        raise NotImplementedError

    cacheable: ClassVar[bool] = False

    def teacher_targets(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """What a teacher cache stores for `x`: the frozen teacher's logits and per-stage vectors that
        no trainable part has touched yet. Only cacheable methods implement it."""
        raise NotImplementedError(f"{type(self).__name__} cannot use a teacher cache")

    def cache_fingerprint(self) -> dict:
        """Everything besides teacher weights and data that changes `teacher_targets` (stages, filters)."""
        return {}

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """Everything the optimiser changes (student + method parts); the frozen teacher is left out."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("teacher.")}

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        missing, unexpected = self.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith("teacher.")]
        if missing or unexpected:
            raise ValueError(f"checkpoint does not match the method: missing {missing[:3]}, "
                             f"unexpected {unexpected[:3]}")
