"""Which torch device a run uses: one rule for training, profiling and the bench."""
from __future__ import annotations

import torch

from .errors import BadInput


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise BadInput("device 'cuda' requested but CUDA is not available", key="device",
                       hint="use --device cpu or auto")
    return torch.device("cuda" if name == "cuda" or (name == "auto" and torch.cuda.is_available()) else "cpu")
