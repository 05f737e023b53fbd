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
        if device == "cpu":
            session = ort_session(path, threads=threads, providers=[PROVIDERS[self.name][device]], shared=shared)
            inp = session.get_inputs()[0]

            def run(x: torch.Tensor) -> torch.Tensor:
                return torch.from_numpy(session.run(None, {inp.name: x.numpy()})[0])
            return Runner(run, torch.device("cpu"), static_batch=_static(session))
        dev = torch.device("cuda", torch.cuda.current_device())
        # onnxruntime enqueues on torch's stream, so CUDA events time its work as they time torch's and TensorRT's
        options = {"device_id": str(dev.index), "user_compute_stream": str(torch.cuda.current_stream(dev).cuda_stream)}
        provider = PROVIDERS[self.name][device]
        session = ort_session(path, threads=threads, shared=shared,
                              providers=[(provider, options) if provider == "CUDAExecutionProvider" else provider])
        return Runner(bound_cuda_run(session, dev.index), dev, torch.cuda.synchronize,
                      static_batch=_static(session), cuda_events=True)


def _static(session) -> int | None:
    batch = session.get_inputs()[0].shape[0]
    return batch if isinstance(batch, int) else None


def bound_cuda_run(session, device_id: int):
    """Inputs and logits bound to torch tensors on the device: the call only enqueues the model, as
    the torch and TensorRT runners do (no device-to-host copy, no host sync inside the timed call)."""
    import onnxruntime as ort
    inp, out = session.get_inputs()[0], session.get_outputs()[0]
    options = ort.RunOptions()
    options.add_run_config_entry("disable_synchronize_execution_providers", "1")

    def run(x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous()
        logits = torch.empty((x.shape[0], out.shape[1]), dtype=torch.float32, device=x.device)
        binding = session.io_binding()
        binding.bind_input(inp.name, "cuda", device_id, np.float32, tuple(x.shape), x.data_ptr())
        binding.bind_output(out.name, "cuda", device_id, np.float32, tuple(logits.shape), logits.data_ptr())
        session.run_with_iobinding(binding, options)
        return logits

    return run


class OnnxRuntimeTensorRT(OnnxRuntime):
    name = "onnxruntime-trt"


BACKENDS.register("onnxruntime")(OnnxRuntime())
BACKENDS.register("onnxruntime-trt")(OnnxRuntimeTensorRT())
