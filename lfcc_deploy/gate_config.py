"""The recipe's `[gates]` table: thresholds a bench report must meet.

Kept apart from the checks in gate.py, as export/config.py is from the exporters, so a recipe
validates without importing the bench or export code the checks reach.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from .schema import Strict


class LatencyGate(Strict):
    backend: str
    precision: Literal["fp32", "fp16", "int8"] = "fp32"
    model: Literal["student", "teacher"] = "student"
    device: Literal["cpu", "cuda"]
    batch: int = Field(gt=0)
    max_p50_ms: float | None = Field(None, gt=0)
    max_p99_ms: float | None = Field(None, gt=0)
    # a CPU budget holds for the thread count it was measured with (`students --threads`); a bench
    # at another count is another deployment, so the check fails instead of comparing the two
    threads: int | None = Field(None, gt=0)

    @property
    def cpu_threads(self) -> int | None:
        """The thread count this budget binds a bench to: only CPU budgets have one."""
        return self.threads if self.device == "cpu" else None

    @model_validator(mode="after")
    def _one_limit(self):
        if self.max_p50_ms is None and self.max_p99_ms is None:
            raise ValueError("a [[gates.latency]] entry needs max_p50_ms or max_p99_ms")
        return self


class GatesConfig(Strict):
    min_accuracy: float | None = Field(None, ge=0, le=1, description="every benchmarked student row")
    max_accuracy_drop: float | None = Field(None, ge=0, le=1, description="each row vs torch fp32 of its model")
    min_speedup_vs_teacher: float | None = Field(None, gt=0, description="same run, largest batch benchmarked")
    max_regression: float | None = Field(None, ge=0, description="p50 vs --baseline, per student row")
    quantized_must_be_faster: bool = Field(False, description="each int8/fp16 row vs its fp32 row")
    max_model_mb: float | None = Field(None, gt=0, description="deployed student artifact size (1 MB = 1e6 bytes)")
    latency: list[LatencyGate] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_thread_count(self):
        if len({g.cpu_threads for g in self.latency} - {None}) > 1:
            raise ValueError("[[gates.latency]] entries give different CPU `threads`; one bench runs at one count")
        return self

    @property
    def cpu_threads(self) -> int | None:
        """The CPU thread count the latency budgets were measured with: what `pipeline` benches at."""
        return next((g.cpu_threads for g in self.latency if g.cpu_threads), None)
