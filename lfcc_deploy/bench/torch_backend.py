"""PyTorch eager, and on CUDA a CUDA-graph variant (`torch.compile(mode="reduce-overhead")`)."""
from __future__ import annotations

from pathlib import Path

import torch

from ..models import load_net
from .backends import BACKENDS, Backend, Runner, cuda_only


class TorchEager(Backend):
    """The trained weights as they are: the reference every exported backend is compared with."""

    name = "torch"

    def available(self, device: str) -> tuple[bool, str]:
        return (True, "") if device == "cpu" else cuda_only(device)

    def artifact(self, run_dir: Path, model: str, precision: str, device: str) -> tuple[Path | None, str]:
        if precision == "int8":
            return None, "eager torch has no INT8 path here (use onnxruntime or tensorrt)"
        if precision == "fp16" and device != "cuda":
            return None, "fp16 in eager torch is a cuda path (CPU kernels are slow or missing)"
        path = run_dir / f"{model}.safetensors"
        return (path, "") if path.is_file() else (None, f"no {model}.safetensors in the run directory")

    def _module(self, path: Path, precision: str, device: str) -> torch.nn.Module:
        net = load_net(path).eval().place(torch.device(device))
        return net.model.half() if precision == "fp16" else net.model

    def load(self, path: Path, precision: str, device: str, threads: int, shared: bool = False) -> Runner:
        model = self._module(path, precision, device)
        dtype = torch.float16 if precision == "fp16" else torch.float32
        cl = device == "cuda" and any(isinstance(m, torch.nn.Conv2d) for m in model.modules())

        @torch.inference_mode()
        def run(x: torch.Tensor) -> torch.Tensor:
            x = x.to(dtype)
            return model(x.contiguous(memory_format=torch.channels_last) if cl else x)

        sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
        return Runner(run, torch.device(device), sync, cuda_events=device == "cuda")


class TorchCudaGraph(TorchEager):
    """CUDA graphs remove per-kernel launch overhead, which dominates small models at batch 1."""

    name = "torch-cudagraph"

    def available(self, device: str) -> tuple[bool, str]:
        return cuda_only(device)

    def load(self, path: Path, precision: str, device: str, threads: int, shared: bool = False) -> Runner:
        runner = super().load(path, precision, device, threads, shared)
        compiled = torch.compile(runner.run, mode="reduce-overhead", dynamic=False)

        def run(x: torch.Tensor) -> torch.Tensor:
            return compiled(x).clone()  # cudagraph outputs are overwritten by the next replay

        return Runner(run, runner.device, runner.sync, cuda_events=True)


BACKENDS.register("torch")(TorchEager())
BACKENDS.register("torch-cudagraph")(TorchCudaGraph())
