"""Benchmark backends, registered by name: importing the package registers each one below."""
from . import ort_backend, torch_backend, trt_backend  # noqa: F401
