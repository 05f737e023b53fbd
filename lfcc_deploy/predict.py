"""Run any exported model on image files with exactly the preprocessing recorded in it.

ONNX files (fp32, fp16, INT8) carry their preprocessing in metadata_props; TensorRT engines in
the JSON written beside them. Each file is decoded by `preprocess.read_images` and then goes through
the same `Preprocess` call (resize, normalise) that bench's e2e mode times; e2e starts from uint8
images already in memory, so file decoding is not part of any benchmark.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from .errors import BadInput
from .export.common import ort_session, preprocess_of, read_metadata
from .export.formats import FORMATS, runtime_of
from .preprocess import Preprocess, pad_batch, read_images


def _fixed_batch(run: Callable[[torch.Tensor], np.ndarray], batch: int) -> Callable[[torch.Tensor], np.ndarray]:
    """A static-batch graph takes exactly `batch` images: feed chunks, padding the last by repetition."""
    def chunked(x: torch.Tensor) -> np.ndarray:
        out = []
        for part in x.split(batch):
            out.append(np.asarray(run(pad_batch(part, batch)))[: len(part)])
        return np.concatenate(out)
    return chunked


def _onnx_model(path: Path) -> tuple[Callable[[torch.Tensor], np.ndarray], Preprocess, list[str]]:
    meta = read_metadata(path)
    pre = preprocess_of(meta, path)
    session = ort_session(path)
    inp = session.get_inputs()[0]
    run = lambda x: session.run(None, {inp.name: x.numpy()})[0]  # noqa: E731
    if isinstance(inp.shape[0], int):
        run = _fixed_batch(run, inp.shape[0])
    return run, pre, json.loads(meta.get("class_names", "[]"))


def _engine_model(path: Path):
    from .export.trt_engine import TrtRunner, engine_metadata
    meta = engine_metadata(path)
    if "preprocess" not in meta:
        raise BadInput("engine metadata carries no preprocessing", file=str(path.with_suffix(".json")),
                       hint="rebuild the engine with `lfcc-deploy export RUN_DIR --trt`")
    run = TrtRunner(path).host
    lo, hi = meta["profile"]["min"][0], meta["profile"]["max"][0]
    if lo == hi:  # a static-batch engine, as a static-batch ONNX graph: fed in chunks of its batch
        run = _fixed_batch(run, lo)
    return run, Preprocess.from_json(meta["preprocess"]), meta.get("class_names", [])


def load_artifact(path: str | Path):
    """(callable on a normalised batch -> logits, preprocessing, class names) for an exported file."""
    path = Path(path)
    if not path.is_file():
        raise BadInput("model file not found", file=str(path), hint="export one with `lfcc-deploy export RUN_DIR`")
    loaders = {"onnx": _onnx_model, "tensorrt": _engine_model}
    runtime = runtime_of(path)
    if runtime is None:
        suffixes = sorted({f.suffix for f in FORMATS})
        raise BadInput(f"unsupported model file type {path.suffix!r}", file=str(path),
                       hint=f"give a file `lfcc-deploy export` wrote ({', '.join(suffixes)})")
    return loaders[runtime](path)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def predict_files(artifact: str | Path, images: Sequence[str | Path], top_k: int = 5,
            batch: int | None = None) -> list[dict[str, Any]]:
    """Top-k classes with probabilities for each image file, in the order given."""
    if not images:
        raise BadInput("no image files given")
    run, pre, names = load_artifact(artifact)
    x = read_images([Path(p) for p in images], pre)
    step = batch or len(x)
    probs = softmax(np.concatenate([np.asarray(run(b), dtype=np.float32) for b in x.split(step)]))
    k = max(1, min(top_k, probs.shape[1]))
    out = []
    for path, p in zip(images, probs):
        top = np.argsort(-p)[:k]
        out.append(dict(image=str(path), top=[dict(index=int(i), label=names[i] if i < len(names) else str(i),
                                                   prob=float(p[i])) for i in top]))
    return out
