"""What every export format shares: the result record, ONNX metadata, onnxruntime sessions, inputs.

One result shape for all formats (as Ultralytics' exporter does) keeps the CLI table,
the JSON summary and the bench's artifact discovery format-agnostic.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from ..errors import BadInput, MissingDependency
from ..preprocess import Preprocess, pad_batch

INPUT_NAME, OUTPUT_NAME = "input", "logits"
ONNX_HINT = 'pip install "lfcc-deploy" (onnx, onnxruntime and onnxscript are dependencies)'


@dataclass
class ExportResult:
    """One artifact: what was written, how, and what it keeps of the fp32 model."""

    format: str                 # a name from export/formats.py
    precision: str              # fp32 | fp16 | int8
    path: str
    seconds: float
    size_bytes: int
    exporter: str = ""
    notes: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def require(module: str):
    """Import an export dependency or say in one line what to install."""
    try:
        return __import__(module, fromlist=["_"])
    except ImportError:
        raise MissingDependency(f"python package {module!r} is not installed", hint=ONNX_HINT) from None


@contextlib.contextmanager
def quiet(*loggers: str):
    """Exporters and quantisers print progress, log tracebacks of internal fallbacks and warn per
    tensor; our CLI reports outcomes instead, so their output is held back while they run."""
    logs = [logging.getLogger(name) for name in loggers]
    levels = [log.level for log in logs]
    for log in logs:
        log.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for log, level in zip(logs, levels):
            log.setLevel(level)


def set_metadata(model, meta: dict[str, Any]) -> None:
    """ONNX metadata_props are strings: non-strings are stored as JSON."""
    props = {p.key: p.value for p in model.metadata_props}
    props.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()})
    del model.metadata_props[:]
    for k, v in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v


def read_metadata(path: Path) -> dict[str, str]:
    """metadata_props of an ONNX file, read without loading its weights."""
    onnx = require("onnx")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except FileNotFoundError:
        raise BadInput("ONNX file not found", file=str(path)) from None
    except Exception as err:  # protobuf raises DecodeError and friends
        raise BadInput(f"not a readable ONNX file ({type(err).__name__})", file=str(path)) from None
    return {p.key: p.value for p in model.metadata_props}


def preprocess_of(meta: dict[str, str], path: Path) -> Preprocess:
    if "preprocess" not in meta:
        raise BadInput("ONNX file carries no lfcc-deploy preprocessing metadata", file=str(path),
                       hint="export it with `lfcc-deploy export RUN_DIR`")
    return Preprocess.from_json(meta["preprocess"], file=str(path))


def cpu_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def ort_session(path: Path | bytes, *, threads: int | None = None, providers: list | None = None,
                shared: bool = False):
    """An onnxruntime session (from a file or serialized bytes), full graph optimisation, explicit threads.

    `shared`: other sessions are timed in turn in this process. Idle onnxruntime worker threads
    spin for a while after each run; with two sessions on few cores the idle one's spinning steals
    the other's CPU and turns an A/B comparison into noise, so spinning is switched off.
    """
    ort = require("onnxruntime")
    opts = ort.SessionOptions()
    if shared:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.intra_op_num_threads = threads or cpu_threads()
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(path if isinstance(path, bytes) else str(path), opts,
                                    providers=providers or ["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own Fail/InvalidGraph/... types
        detail = str(err).splitlines()[0][-160:]
        raise BadInput(f"onnxruntime cannot load the model ({type(err).__name__}: {detail})",
                       file=None if isinstance(path, bytes) else str(path),
                       hint="re-export it with `lfcc-deploy export RUN_DIR`") from None


def run_session(session, batches: list[np.ndarray]) -> np.ndarray:
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: b})[0] for b in batches]).astype(np.float32)


def batch_list(x: torch.Tensor, batch: int) -> list[np.ndarray]:
    return [np.ascontiguousarray(b.numpy(), dtype=np.float32) for b in x.split(batch)]


def model_inputs(source, pre: Preprocess, limit: int, batch: int = 256) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(normalised CPU inputs, labels) of the first `limit` images of a split, in order."""
    seen = 0
    for x, y in source.batches(batch, device="cpu", train=False):
        take = min(len(y), limit - seen)
        yield pre.normalize(x[:take]), y[:take]
        seen += take
        if seen >= limit:
            return


def stack_inputs(source, pre: Preprocess, limit: int) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*model_inputs(source, pre, limit))
    return torch.cat(xs), torch.cat(ys)


def calibration_batches(images: torch.Tensor, batch_size: int, exact: bool = False) -> list[np.ndarray]:
    """Fixed-size float32 batches, ragged tail dropped (onnxruntime's and TensorRT's calibrators take one
    batch shape). Fewer images than one batch: one batch of them, padded to `batch_size` when `exact`
    (a static-batch graph or engine accepts no other size)."""
    n = int(images.shape[0])
    if n == 0:
        raise BadInput("no calibration images to build an INT8 model from", key="export.calibration_images",
                       hint="set export.calibration_images to a positive number")
    images = images.detach().to("cpu", torch.float32)
    if n < batch_size:
        return [np.ascontiguousarray((pad_batch(images, batch_size) if exact else images).numpy()).copy()]
    arr = images.numpy()
    return [arr[i:i + batch_size].copy() for i in range(0, n - batch_size + 1, batch_size)]
