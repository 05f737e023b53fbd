"""TensorRT engines built by `lfcc-deploy export --trt`, run with torch CUDA tensors bound to I/O."""
from __future__ import annotations

from pathlib import Path

import torch

from ..export.formats import export_format
from .backends import BACKENDS, Backend, Runner


class TensorRT(Backend):
    name = "tensorrt"

    def available(self, device: str) -> tuple[bool, str]:
        if device != "cuda":
            return False, "TensorRT runs on cuda only"
        from ..export.trt_engine import tensorrt_available
        return tensorrt_available()

    def artifact(self, run_dir: Path, model: str, precision: str, device: str) -> tuple[Path | None, str]:
        from ..export.trt_engine import engine_metadata
        fmt = export_format("tensorrt", precision)
        path = fmt.file(run_dir, model)
        if not path.is_file():
            return None, f"no export/{path.name}: {fmt.hint(model)}"
        built = engine_metadata(path).get("precision")
        return (path, "") if built == precision else \
            (None, f"export/{path.name} was built for {built}; {fmt.hint(model)}")

    def load(self, path: Path, precision: str, device: str, threads: int, shared: bool = False) -> Runner:
        from ..export.trt_engine import TrtRunner
        runner = TrtRunner(path)
        return Runner(runner, torch.device("cuda"), torch.cuda.synchronize, cuda_events=True)


BACKENDS.register("tensorrt")(TensorRT())
