"""Run any exported model on image files with exactly the preprocessing recorded in it.

ONNX files (fp32, fp16, INT8) carry their preprocessing in metadata_props; TensorRT engines in
the JSON written beside them. Both go through `preprocess.read_images`, the same code path the
bench's end-to-end mode times.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from .errors import BadInput
from .export.common import ort_session, preprocess_of, read_metadata
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
    runner = TrtRunner(path)
    return (lambda x: runner(x.cuda()).float().cpu().numpy()), Preprocess.from_json(meta["preprocess"]), \
        meta.get("class_names", [])


def load_artifact(path: str | Path):
    """(callable on a normalised batch -> logits, preprocessing, class names) for an exported file."""
    path = Path(path)
    if not path.is_file():
        raise BadInput("model file not found", file=str(path), hint="export one with `lfcc-deploy export RUN_DIR`")
    if path.suffix == ".onnx":
        return _onnx_model(path)
    if path.suffix == ".engine":
        return _engine_model(path)
    raise BadInput(f"unsupported model file type {path.suffix!r}", file=str(path), hint="give a .onnx or .engine file")


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
