"""TensorRT INT8 calibration: the batches fed to the calibrator and the cache of its scales.

Kept apart from building so the bookkeeping (which batch next, which cache file) is plain
Python and tested anywhere; only `make_calibrator` touches the `tensorrt` module it is given.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from ..errors import BadInput
from ..rundir import atomic_write, file_sha256


def calibration_cache_path(engine_path: Path, onnx_path: Path, batches: list[np.ndarray]) -> Path:
    """Cache named by a digest of model and data, so a changed model or data set never reuses stale scales."""
    digest = hashlib.sha256(file_sha256(Path(onnx_path)).encode())
    for batch in batches:
        digest.update(str(batch.shape).encode())
        digest.update(batch.tobytes())
    engine_path = Path(engine_path)
    return engine_path.with_name(f"{engine_path.stem}.int8-calib-{digest.hexdigest()[:16]}.cache")


class BatchFeeder:
    """Which calibration batch comes next, and when there are none left (kept apart from TensorRT to test it)."""

    def __init__(self, batches: list[np.ndarray]):
        if not batches:
            raise BadInput("no calibration batches", key="export.calibration_images")
        if len({b.shape for b in batches}) != 1:
            raise BadInput("calibration batches differ in shape; TensorRT needs one fixed batch shape")
        self.batches, self.shape, self._next = batches, tuple(batches[0].shape), 0
        self.batch_size = self.shape[0]

    def next(self) -> np.ndarray | None:
        if self._next >= len(self.batches):
            return None
        self._next += 1
        return self.batches[self._next - 1]

    def rewind(self) -> None:
        self._next = 0


def make_calibrator(trt, batches: list[np.ndarray], cache_path: Path):
    """An IInt8EntropyCalibrator2 feeding `batches` through one CUDA buffer (torch-owned, no pycuda)."""
    feeder, cache_path = BatchFeeder(batches), Path(cache_path)

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            trt.IInt8EntropyCalibrator2.__init__(self)  # pybind trampolines segfault without this
            self._buffer: torch.Tensor | None = None

        def get_batch_size(self) -> int:
            return feeder.batch_size

        def get_batch(self, names: list[str]) -> list[int] | None:
            batch = feeder.next()
            if batch is None:
                return None
            if self._buffer is None:
                self._buffer = torch.empty(feeder.shape, dtype=torch.float32, device="cuda")
            self._buffer.copy_(torch.from_numpy(batch))
            torch.cuda.synchronize()  # TensorRT reads the buffer on its own stream
            return [int(self._buffer.data_ptr())]

        def read_calibration_cache(self) -> bytes | None:
            return cache_path.read_bytes() if cache_path.is_file() else None

        def write_calibration_cache(self, cache) -> None:
            atomic_write(cache_path, lambda tmp: tmp.write_bytes(bytes(cache)))

    return EntropyCalibrator()
