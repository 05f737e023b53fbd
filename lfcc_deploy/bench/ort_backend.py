"""onnxruntime: the CPU provider on cpu, the CUDA provider on cuda, and TensorRT's provider on cuda
(a second route to TensorRT many users prefer: no engine files to manage)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..export.common import ort_session
from .backends import BACKENDS, Backend, Runner, onnx_file

PROVIDERS = {"onnxruntime": {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"},
             "onnxruntime-trt": {"cuda": "TensorrtExecutionProvider"}}
GPU_HINT = 'pip install "lfcc-deploy[gpu]" (onnxruntime-gpu; uninstall the CPU onnxruntime first)'


def _providers() -> list[str]:
    try:
        import onnxruntime
    except ImportError:
        return []
    return onnxruntime.get_available_providers()


class OnnxRuntime(Backend):
    name = "onnxruntime"

    def available(self, device: str) -> tuple[bool, str]:
        provider = PROVIDERS[self.name].get(device)
        if provider is None:
            return False, f"{self.name} runs on {' or '.join(PROVIDERS[self.name])} only"
        if device == "cuda" and not torch.cuda.is_available():
            return False, "no CUDA device visible"
        if provider not in _providers():
            return False, f"{provider} is not in this onnxruntime build; {GPU_HINT}"
        return True, ""

    def artifact(self, run_dir: Path, model: str, precision: str, device: str) -> tuple[Path | None, str]:
        return onnx_file(run_dir, model, precision)

    def load(self, path: Path, precision: str, device: str, threads: int, shared: bool = False) -> Runner:
        session = ort_session(path, threads=threads, providers=[PROVIDERS[self.name][device]], shared=shared)
        inp = session.get_inputs()[0]
        static = inp.shape[0] if isinstance(inp.shape[0], int) else None
        if device == "cpu":
            def run(x: torch.Tensor) -> torch.Tensor:
                return torch.from_numpy(session.run(None, {inp.name: x.numpy()})[0])
            return Runner(run, torch.device("cpu"), static_batch=static)
        return Runner(_bound_cuda_run(session, inp.name), torch.device("cuda"), torch.cuda.synchronize,
                      static_batch=static)


def _bound_cuda_run(session, name: str):
    """I/O binding to torch CUDA tensors: no host round trip inside the timed call."""
    out_name = session.get_outputs()[0].name

    def run(x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous()
        binding = session.io_binding()
        binding.bind_input(name, "cuda", 0, np.float32, tuple(x.shape), x.data_ptr())
        binding.bind_output(out_name, "cuda", 0)
        session.run_with_iobinding(binding)
        return torch.from_numpy(binding.copy_outputs_to_cpu()[0])

    return run


class OnnxRuntimeTensorRT(OnnxRuntime):
    name = "onnxruntime-trt"


BACKENDS.register("onnxruntime")(OnnxRuntime())
BACKENDS.register("onnxruntime-trt")(OnnxRuntimeTensorRT())
