"""fp16 ONNX for GPU runtimes, converted from the fp32 graph; inputs and outputs stay float32
so callers feed the same tensors as to fp32 (the casts sit inside the graph)."""
from __future__ import annotations

from typing import Any

from .common import require, set_metadata


def to_fp16(proto: Any) -> Any:
    onnx = require("onnx")
    require("onnxruntime")
    from onnxruntime.transformers.float16 import convert_float_to_float16
    half = convert_float_to_float16(proto, keep_io_types=True)
    half = _sorted(half)  # the converter appends its input casts last; ONNX needs topological order
    set_metadata(half, {"precision": "fp16", "exporter": "onnxruntime.transformers.float16 of "
                         + {p.key: p.value for p in proto.metadata_props}.get("exporter", "?")})
    onnx.checker.check_model(half, full_check=True)
    return half


def _sorted(proto: Any) -> Any:
    ir = require("onnx_ir")
    model = ir.serde.deserialize_model(proto)
    model.graph.sort()
    return ir.serde.serialize_model(model)
