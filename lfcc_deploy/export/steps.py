"""One builder per export format, all behind one wrapper: time the step, build into a temp folder
beside the artifact, check parity, and only then rename into place.

A builder writes the artifact (and any sidecar) to the staged path it is given and returns the
parity verdict; it never touches the final file. So a failed check, a crash or a kill at any
moment leaves the previous good artifact exactly as it was (its sidecar too): the temp folder
is all that is lost.
"""
from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..registry import Registry
from ..rundir import publish
from .common import ExportResult, ort_session, require, run_session
from .formats import Format, export_format
from .job import Exporter


@dataclass
class Built:
    """What a builder left at its staged path, and how it compares with torch."""

    entry: dict[str, Any]  # the parity verdict, as parity.json stores it
    exporter: str = ""
    notes: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)


Builder = Callable[[Exporter, Format, Path], Built]
BUILDERS: Registry[Builder] = Registry("export format")


def builds(*names: str) -> Callable[[Builder], Builder]:
    def register(fn: Builder) -> Builder:
        for name in names:
            BUILDERS.register(name)(fn)
        return fn
    return register


def export_checked(job: Exporter, fmt: Format) -> tuple[ExportResult | None, dict[str, Any]]:
    """Build `fmt` for the job's model; the artifact is replaced only when parity passed."""
    final = job.path(fmt)
    final.parent.mkdir(parents=True, exist_ok=True)
    for left in final.parent.glob(f".{final.name}.*"):  # a killed export's temp folder (the run lock is ours)
        if left.is_dir():
            shutil.rmtree(left, ignore_errors=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=final.parent, prefix=f".{final.name}.") as tmp:
        staged = Path(tmp) / final.name
        built = BUILDERS.get(fmt.name)(job, fmt, staged)
        if not built.entry["passed"] or not staged.is_file():
            return None, built.entry
        publish(staged, final)  # the artifact first, its metadata last: metadata present means whole
        if fmt.sidecar and staged.with_suffix(fmt.sidecar).is_file():
            publish(staged.with_suffix(fmt.sidecar), final.with_suffix(fmt.sidecar))
    result = ExportResult(fmt.name, fmt.precision, str(final), time.perf_counter() - started,
                          final.stat().st_size, exporter=built.exporter, notes=built.notes, details=built.details)
    return result, built.entry


def _fp32_onnx(job: Exporter) -> Path:
    return job.path(export_format("onnx", "fp32"))


@builds("onnx")
def build_fp32(job: Exporter, fmt: Format, staged: Path) -> Built:
    """fp32 ONNX with the first exporter whose graph passes parity; every attempt is recorded."""
    from .onnx_fp32 import export_onnx, exporter_order
    onnx = require("onnx")
    attempts: list[dict[str, Any]] = []
    entry: dict[str, Any] = dict(images=int(len(job.labels)), passed=False, broken=[])
    example = job.x[: (2 if job.cfg.dynamic_batch else job.cfg.static_batch)]
    for exporter in exporter_order(job.cfg.exporter):
        job.say(f"exporting {job.net.spec.name} to ONNX with the {exporter} exporter")
        try:
            proto, notes = export_onnx(job.net.model, example, job.cfg, exporter, job.metadata())
        except Exception as err:  # exporters raise anything from torch.export to onnxscript
            attempts.append(dict(exporter=exporter, status="failed", error=str(err).splitlines()[0][:300]))
            continue
        session = ort_session(proto.SerializeToString())
        entry = job.judge(run_session(session, job.inputs()), "fp32")
        if job.cfg.dynamic_batch:
            entry["probe_max_abs_logit"] = job.probe(session)
        attempts.append(dict(exporter=exporter, status="passed" if entry["passed"] else "parity failed",
                             broken=entry["broken"]))
        if entry["passed"]:
            onnx.save(proto, str(staged))
            return Built(dict(entry, exporter=exporter, attempts=attempts), exporter, notes)
    why = [f"{a['exporter']}: {a.get('error') or ', '.join(a['broken'])}" for a in attempts]
    return Built(dict(entry, passed=False, broken=["no exporter passed (" + "; ".join(why) + ")"],
                      attempts=attempts))


@builds("onnx-fp16")
def build_fp16(job: Exporter, fmt: Format, staged: Path) -> Built:
    from .onnx_fp16 import to_fp16
    onnx = require("onnx")
    job.say("converting to fp16 ONNX")
    proto = to_fp16(onnx.load(str(_fp32_onnx(job))))
    entry = job.judge(run_session(ort_session(proto.SerializeToString()), job.inputs()), "fp16")
    if entry["passed"]:
        onnx.save(proto, str(staged))
    return Built(entry, "onnxruntime.transformers.float16")


@builds("onnx-int8")
def build_int8(job: Exporter, fmt: Format, staged: Path) -> Built:
    from .onnx_int8 import quantize_best
    calib = job.calibration()
    job.say(f"quantising to INT8: {', '.join(job.cfg.int8_candidates)} calibrated on "
            f"{len(job.calib_x)} training images, each timed against fp32")
    pick, rows = quantize_best(_fp32_onnx(job), staged, job.cfg, calib, job.inputs(), job.labels,
                               job.reference, job.cfg.int8)
    chosen = pick["details"]["int8_config"] if pick else None
    entry = next((r for r in rows if r["candidate"] == chosen), None) or min(rows, key=lambda r: r["accuracy_drop"])
    return Built(dict(entry, chosen=chosen, candidates=rows), "onnxruntime.quantization",
                 pick["notes"] if pick else [], pick["details"] if pick else {})


@builds("tensorrt-fp32", "tensorrt-fp16", "tensorrt-int8")
def build_trt(job: Exporter, fmt: Format, staged: Path) -> Built:
    """A TensorRT engine from the ONNX file, then the same parity check through the engine runner."""
    from . import trt_engine
    precision = fmt.precision
    job.say(f"building a TensorRT {precision} engine")
    spec, final, fp32 = job.net.spec, job.path(fmt), _fp32_onnx(job)
    calib = job.calibration() if precision == "int8" else None
    meta = trt_engine.build_engine(
        fp32, staged, precision=precision, shapes=trt_engine.profile_shapes(job.cfg, spec.in_chans, spec.img_size),
        calibration=calib, workspace_gb=job.cfg.trt_workspace_gb, timing_cache=job.out / "trt_timing.cache",
        log_path=final.with_suffix(".engine.log"), extra=dict(job.metadata(), precision=precision),
        calibration_cache=trt_engine.calibration_cache_path(final, fp32, calib) if calib else None)
    runner = trt_engine.TrtRunner(staged)
    logits = np.concatenate([runner.host(torch.from_numpy(b)) for b in job.inputs()])
    return Built(job.judge(logits, precision), "tensorrt", details=meta)
