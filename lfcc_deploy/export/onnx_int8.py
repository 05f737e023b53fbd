"""onnxruntime static INT8 that pays off: calibrated on real images, candidates measured, fastest kept.

Whether INT8 is faster depends on the CPU and on the quantised format: on x86 (AVX-512 VNNI here)
uint8 activations with int8 weights ran 1.3–2× faster than fp32 while int8 activations ran 3–36×
*slower* (measured on one AVX-512 VNNI machine). So every configured candidate is quantised, checked
against torch on the test images and timed side by side with fp32 on this machine; the fastest
one within tolerance ships, and its choice and that selection check's ratio are written into its metadata
as `int8_check_speedup`. It is a quick check to pick a candidate, not the figure to quote: the INT8
speedup to quote is `lfcc-deploy bench`'s `speedup_vs_fp32`, timed interleaved over --duration-s per row.
"""
from __future__ import annotations

import contextlib
import difflib
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..bench.timing import interleaved_ms
from ..errors import BadInput
from ..manifest import cpu_flags
from .common import ort_session, quiet, require, run_session, set_metadata
from .config import ExportConfig, Tolerance
from .parity import compare


class CalibrationReader:
    """Feeds real, normalised images to onnxruntime's calibrator, one fixed batch at a time."""

    def __init__(self, batches: list[np.ndarray], input_name: str):
        self.batches, self.input_name, self._next = batches, input_name, 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._next >= len(self.batches):
            return None
        self._next += 1
        return {self.input_name: self.batches[self._next - 1]}

    def rewind(self) -> None:
        self._next = 0

    def __iter__(self):  # onnxruntime's reader contract (duck-typed by its __subclasshook__)
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        item = self.get_next()
        if item is None:
            raise StopIteration
        return item


def split_exclusions(proto, exclude: list[str]) -> tuple[set[str], list[str]]:
    """`int8_exclude` entries as (op types, node names); an entry that is neither is an error."""
    ops = {n.op_type for n in proto.graph.node}
    names = {n.name for n in proto.graph.node if n.name}
    op_types, nodes = set(), []
    for item in exclude:
        if item in ops:
            op_types.add(item)
        elif item in names:
            nodes.append(item)
        else:
            close = difflib.get_close_matches(item, sorted(ops | names), n=3)
            raise BadInput(f"{item!r} is neither an op type nor a node name of the exported graph",
                           key="export.int8_exclude",
                           hint=f"did you mean {' or '.join(close)}?" if close else
                           f"op types here: {', '.join(sorted(ops))}")
    return op_types, nodes


def _settings(candidate: str):
    from onnxruntime.quantization import QuantFormat, QuantType
    fmt, types = candidate.split("-")
    act = QuantType.QUInt8 if types.startswith("u8") else QuantType.QInt8
    return (QuantFormat.QDQ if fmt == "qdq" else QuantFormat.QOperator), act


def reduce_range(cfg: ExportConfig, candidate: str) -> bool:
    """7-bit weights where u8s8 would saturate (onnxruntime's guide names u8s8 on x86 without VNNI).

    There the kernels add pairs of uint8×int8 products into int16 (vpmaddubsw), which saturates on
    large activations: the tests' tiny ResNet lost 4.7 points on an AVX2-only EPYC with 8-bit weights
    and stayed within the 1-point tolerance with 7-bit ones. VNNI accumulates in int32. Recorded as
    `int8_reduce_range`.
    """
    if cfg.int8_reduce_range != "auto":
        return cfg.int8_reduce_range
    from onnxruntime.quantization import QuantType
    x86 = platform.machine().lower() in ("x86_64", "amd64")
    no_vnni = not {"avx512_vnni", "avx_vnni"} & cpu_flags()
    return _settings(candidate)[1] == QuantType.QUInt8 and x86 and no_vnni


def _prepared(fp32_path: Path, tmp: Path) -> Path:
    """onnxruntime's recommended pre-pass (shape inference, fusions); the raw graph when it cannot run."""
    from onnxruntime.quantization.shape_inference import quant_pre_process
    source, out = Path(fp32_path).resolve(), tmp / "pre.onnx"
    # when symbolic inference fails onnxruntime dumps sym_shape_infer_temp.onnx and its weights into
    # the working directory: run it inside the temp folder so nothing lands in the user's tree
    with contextlib.chdir(tmp):
        for symbolic in (True, False):
            try:
                quant_pre_process(str(source), str(out), skip_symbolic_shape=not symbolic)
                return out
            except Exception:  # symbolic shape inference fails on some transformer graphs
                continue
    return fp32_path


def quantize(source: Path, out: Path, candidate: str, batches: list[np.ndarray], cfg: ExportConfig,
             op_types_out: set[str], nodes_out: list[str], input_name: str) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantType, quantize_static
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry
    fmt, act = _settings(candidate)
    registry = QDQRegistry if candidate.startswith("qdq") else QLinearOpsRegistry
    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[cfg.int8_calibration]
    quantize_static(str(source), str(out), CalibrationReader(batches, input_name), quant_format=fmt,
                    op_types_to_quantize=[op for op in registry if op not in op_types_out] or None,
                    nodes_to_exclude=nodes_out or None, per_channel=True, activation_type=act,
                    weight_type=QuantType.QInt8, calibrate_method=method,
                    reduce_range=reduce_range(cfg, candidate),
                    extra_options={"ActivationSymmetric": act == QuantType.QInt8})


def _speed(sessions: dict[str, Any], x: np.ndarray, seconds: float) -> dict[str, float]:
    """Median ms per batch of each session, interleaved so drift hits all of them alike."""
    steps = {k: (lambda s=s: s.run(None, {s.get_inputs()[0].name: x})) for k, s in sessions.items()}
    t0 = time.perf_counter()
    for step in steps.values():
        step()
    per_round = time.perf_counter() - t0
    rounds = int(min(200, max(7, seconds * len(steps) / max(per_round, 1e-6))))
    return interleaved_ms(steps, rounds=rounds, warmup=2)


def quantize_best(fp32_path: Path, path: Path, cfg: ExportConfig, calibration: list[np.ndarray],
                  inputs: list[np.ndarray], labels: np.ndarray, reference: np.ndarray,
                  tolerance: Tolerance) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """Quantise every candidate, judge and time each; write the fastest that passes to `path`.

    Returns (the chosen candidate's details and notes, or None when none passes; every candidate's row).
    """
    onnx = require("onnx")
    require("onnxruntime")
    op_types_out, nodes_out = split_exclusions(onnx.load(str(fp32_path), load_external_data=False),
                                               cfg.int8_exclude)
    fp32 = ort_session(fp32_path, shared=True)
    input_name = fp32.get_inputs()[0].name
    speed_x = np.concatenate(calibration)[: cfg.speed_batch] if cfg.dynamic_batch else calibration[0]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        with quiet("", "onnxruntime"):
            source = _prepared(fp32_path, tmp)
        sessions = {"fp32": fp32}
        for cand in cfg.int8_candidates:
            out = tmp / f"{cand}.onnx"
            with quiet("", "onnxruntime"):  # the quantiser warns on the root logger per skipped tensor
                quantize(source, out, cand, calibration, cfg, op_types_out, nodes_out, input_name)
            sessions[cand] = ort_session(out, shared=True)
            entry = compare(reference, run_session(sessions[cand], inputs), labels, tolerance)
            rows.append(dict(candidate=cand, size_bytes=out.stat().st_size, **entry))
        ms = _speed(sessions, speed_x, cfg.speed_seconds)
        for row in rows:
            row.update(ms=ms[row["candidate"]], fp32_ms=ms["fp32"], check_speedup=ms["fp32"] / ms[row["candidate"]])
        passing = [r for r in rows if r["passed"]]
        if not passing:
            return None, rows
        best = max(passing, key=lambda r: r["check_speedup"])
        proto = onnx.load(str(tmp / f"{best['candidate']}.onnx"))
    info = dict(int8_config=best["candidate"], int8_calibration=cfg.int8_calibration,
                int8_calibration_images=int(sum(len(b) for b in calibration)), int8_exclude=cfg.int8_exclude,
                int8_reduce_range=reduce_range(cfg, best["candidate"]),
                int8_check_speedup=round(best["check_speedup"], 3), int8_check_batch=int(len(speed_x)))
    set_metadata(proto, {"precision": "int8", **info})
    onnx.save(proto, str(path))
    notes = [f"{best['candidate']} chosen by the selection check ({best['check_speedup']:.2f}× fp32 at batch "
             f"{len(speed_x)}, {cfg.speed_seconds:g} s); the speedup to quote is bench's vs fp32"]
    if best["check_speedup"] < 1:
        notes.append("INT8 is slower than fp32 on this machine: deploy fp32 here")
    return dict(details=info, notes=notes), rows
