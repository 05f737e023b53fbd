"""What produced a result: package versions, git commit, hardware and the recipe hash."""
from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

PACKAGES = ("lfcc-deploy", "torch", "torchvision", "timm", "numpy", "onnx", "onnxruntime", "tensorrt")


def _version(pkg: str) -> str | None:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _cpuinfo(field: str) -> str | None:
    """The first `field` line of /proc/cpuinfo (Linux), None elsewhere."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.split(":", 1)[0].strip() == field:
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_name() -> str:
    return _cpuinfo("model name") or platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    """The CPU's feature flags (avx2, avx512_vnni, ...); empty where /proc/cpuinfo is absent."""
    return set((_cpuinfo("flags") or "").split())


def manifest(recipe_hash: str, device: torch.device) -> dict[str, Any]:
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    return dict(versions={p: v for p in PACKAGES if (v := _version(p))}, python=platform.python_version(),
                git_commit=git_commit(), cpu=cpu_name(), cpu_threads=torch.get_num_threads(), gpu=gpu,
                recipe_hash=recipe_hash)
