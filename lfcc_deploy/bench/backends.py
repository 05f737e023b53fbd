"""Benchmark backends behind one small contract, registered by name.

A backend says whether it can run here (`available`), where a (model, precision) artifact
lives in a run directory (`artifact`), and loads a `Runner`: a callable from a normalised
input batch on `runner.device` to logits. A backend that cannot run becomes a skipped row
with its reason, never a crash (Ultralytics' benchmark lesson). Adding a backend is one file.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from ..export.formats import export_format
from ..registry import Registry

@dataclass
class Runner:
    """A loaded model: `run(x)` -> logits; `sync()` waits for queued device work; `static_batch` or None."""

    run: Callable[[torch.Tensor], torch.Tensor]
    device: torch.device
    sync: Callable[[], None] = lambda: None
    static_batch: int | None = None
    cuda_events: bool = False  # True: time with CUDA events (work is enqueued on torch's stream)


class Backend:
    name = ""

    def available(self, device: str) -> tuple[bool, str]:
        """(True, "") or (False, why) for this machine and device."""
        raise NotImplementedError

    def artifact(self, run_dir: Path, model: str, precision: str, device: str) -> tuple[Path | None, str]:
        """The file this backend runs for (model, precision) on `device`, or (None, why not)."""
        raise NotImplementedError

    def load(self, path: Path, precision: str, device: str, threads: int, shared: bool = False) -> Runner:
        """`shared`: another model is timed in turn in this process (A/B), so no busy-waiting threads."""
        raise NotImplementedError


BACKENDS: Registry[Backend] = Registry("backend")


def onnx_file(run_dir: Path, model: str, precision: str) -> tuple[Path | None, str]:
    """export/<model>.onnx, .fp16.onnx or .int8.onnx, with the command that makes a missing one."""
    fmt = export_format("onnx", precision)
    path = fmt.file(run_dir, model)
    return (path, "") if path.is_file() else (None, f"no export/{path.name}: {fmt.hint(model)}")


def cuda_only(device: str) -> tuple[bool, str]:
    if device != "cuda":
        return False, "runs on cuda only"
    return (True, "") if torch.cuda.is_available() else (False, "no CUDA device visible")
