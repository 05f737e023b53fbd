"""The recipe's `[export]` table: exporter choice, parity tolerances, INT8 and TensorRT settings.

Kept apart from the exporters so recipes validate without onnx or tensorrt installed.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ..schema import Strict


class Tolerance(Strict):
    """What an exported precision must keep against torch fp32 on the test images."""

    max_abs_logit: float | None = Field(None, gt=0, description="atol: per logit |Δ| ≤ max_abs_logit + rtol·|torch "
                                                                "logit| (Polygraphy's form); fp32 only")
    rtol: float = Field(0.0, ge=0, description="relative part of the logit check: large logits carry larger "
                                               "float32 rounding")
    min_agreement: float = Field(1.0, ge=0, le=1, description="share of images with the same top-1 class")
    max_accuracy_drop: float | None = Field(None, ge=0, le=1, description="accuracy lost against torch, fraction")


class ExportConfig(Strict):
    opset: int = Field(18, ge=14, le=23)
    exporter: Literal["auto", "torchscript", "dynamo"] = Field(
        "auto", description="auto: TorchScript-based first (fast), the dynamo exporter when it fails parity")
    dynamic_batch: bool = True
    static_batch: int = Field(1, gt=0, description="batch size baked in when dynamic_batch = false")
    simplify: bool = Field(False, description="onnxslim (or onnxsim) after export")
    parity_images: int = Field(10000, gt=0, description="test images compared (the first N)")
    # rtol: an untrained MobileNetV2 with logits ×100 (|logit| ~1e3) exports with |Δ| 1.5e-3 from either
    # exporter, every element within 1e-3·|logit|; an absolute limit alone fails honest exports at that scale
    fp32: Tolerance = Tolerance(max_abs_logit=1e-4, rtol=1e-3, min_agreement=1.0)
    fp16: Tolerance = Tolerance(min_agreement=0.99, max_accuracy_drop=0.01)
    int8: Tolerance = Tolerance(min_agreement=0.90, max_accuracy_drop=0.01)  # a 70 % model flips
    # borderline images under INT8 noise while its accuracy holds: agreement alone is too strict
    calibration_images: int = Field(512, gt=0, description="stratified real training images")
    calibration_batch: int = Field(32, gt=0)
    calibration_seed: int = 0
    int8_calibration: Literal["minmax", "entropy", "percentile"] = "minmax"
    int8_candidates: list[Literal["qdq-u8s8", "qoperator-u8s8", "qdq-s8s8", "qoperator-s8s8"]] = Field(
        default_factory=lambda: ["qdq-u8s8", "qoperator-u8s8"], min_length=1,
        description="format-activations+weights tried; the fastest within tolerance is kept")
    int8_exclude: list[str] = Field(default_factory=list, description="op types or node names kept in fp32")
    int8_reduce_range: Literal["auto"] | bool = Field(
        "auto", description="7-bit weights for uint8-activation candidates; auto: on x86 CPUs without VNNI, "
                            "whose u8s8 kernels otherwise saturate (an accuracy drop of points)")
    speed_batch: int = Field(32, gt=0, description="batch of the INT8-vs-fp32 speed check")
    speed_seconds: float = Field(1.5, gt=0, description="timed seconds per candidate in the speed check")
    precisions: list[Literal["fp32", "fp16", "int8"]] = Field(
        default_factory=lambda: ["fp32", "int8"], description="what `lfcc-deploy pipeline` exports")
    trt: bool = Field(False, description="`pipeline` also builds a TensorRT engine (needs tensorrt and a GPU)")
    trt_min_batch: int = Field(1, gt=0)
    trt_opt_batch: int = Field(32, gt=0)
    trt_max_batch: int = Field(256, gt=0)
    trt_workspace_gb: float = Field(4.0, gt=0)

    @model_validator(mode="after")
    def _profile_order(self):
        if not self.trt_min_batch <= self.trt_opt_batch <= self.trt_max_batch:
            raise ValueError("need trt_min_batch <= trt_opt_batch <= trt_max_batch")
        return self
