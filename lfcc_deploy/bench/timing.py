"""Latency measurement for `lfcc-deploy bench`, following trtexec/Polygraphy conventions.

Warm-up and measurement are bounded by time rather than by a fixed count: a count that is right
for a 50 ms model is far too small to settle clocks, caches and allocators for a 50 µs one. Every
iteration is timed on its own so the report can show the spread (percentiles, coefficient of
variation), not just a mean that hides stalls.
"""
from __future__ import annotations

import os
import platform
import statistics
import subprocess
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

import numpy as np

VERSIONED = ("torch", "onnxruntime", "onnx", "tensorrt", "timm")


@dataclass
class TimingConfig:
    warmup_ms: float = 200.0
    duration_s: float = 3.0
    min_iters: int = 10
    max_iters: int = 100_000  # bounds memory and run time for calls of a few microseconds


@dataclass
class LatencyStats:
    iters: int
    mean_ms: float
    std_ms: float
    cov: float
    min_ms: float
    p10_ms: float
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float

    def throughput(self, batch: int) -> float:
        """Images per second implied by the mean latency of one batch."""
        return batch * 1000.0 / self.mean_ms

    def unstable(self, limit: float = 0.10) -> bool:
        """True when the spread is too large for the mean to be trusted (a noisy or throttled machine)."""
        return self.cov > limit

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready numbers; sub-0.1 µs digits are noise, so ms keep 4 decimals."""
        return {k: v if k == "iters" else round(float(v), 6 if k == "cov" else 4) for k, v in asdict(self).items()}


def summarize(samples_ms: Sequence[float]) -> LatencyStats:
    """Statistics of per-iteration latencies: population std, linearly interpolated percentiles."""
    a = np.asarray(samples_ms, dtype=np.float64)
    if a.size == 0:
        raise ValueError("summarize() needs at least one sample")
    mean, std = float(a.mean()), float(a.std())
    p10, p50, p90, p95, p99 = (float(p) for p in np.percentile(a, [10, 50, 90, 95, 99]))
    return LatencyStats(iters=int(a.size), mean_ms=mean, std_ms=std, cov=std / mean if mean else 0.0,
                        min_ms=float(a.min()), p10_ms=p10, p50_ms=p50, p90_ms=p90, p95_ms=p95, p99_ms=p99,
                        max_ms=float(a.max()))


def _done(n: int, elapsed_s: float, cfg: TimingConfig) -> bool:
    return n >= cfg.max_iters or (n >= cfg.min_iters and elapsed_s >= cfg.duration_s)


def time_cpu(fn: Callable[[], object], cfg: TimingConfig,
             clock: Callable[[], int] = time.perf_counter_ns) -> LatencyStats:
    """Latency of a synchronous call; `clock` (integer ns) is injectable so the loop can be tested."""
    start = clock()
    fn()  # at least one warm-up call, even with warmup_ms == 0
    while clock() - start < cfg.warmup_ms * 1e6:
        fn()
    samples: list[float] = []
    begin = clock()
    while True:
        t0 = clock()
        fn()
        t1 = clock()
        samples.append((t1 - t0) / 1e6)
        if _done(len(samples), (t1 - begin) / 1e9, cfg):
            return summarize(samples)


def time_cuda(fn: Callable[[], object], cfg: TimingConfig) -> LatencyStats:
    """Latency of GPU work measured by CUDA events on the current stream.

    A host sync per iteration would drain the launch queue and add its own latency to every
    sample; events time the work on the device, so they are only synchronised once at the end.
    """
    import torch

    start = time.perf_counter()
    fn()
    while time.perf_counter() - start < cfg.warmup_ms / 1000:
        fn()
    torch.cuda.synchronize()  # keep queued warm-up work out of the first timed events
    events: list[tuple[Any, Any]] = []
    begin = time.perf_counter()
    while True:
        t0, t1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        t0.record()
        fn()
        t1.record()
        events.append((t0, t1))
        if _done(len(events), time.perf_counter() - begin, cfg):
            break
    events[-1][1].synchronize()
    return summarize([a.elapsed_time(b) for a, b in events])


def _driver_version() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = out.stdout.strip().splitlines()
    return lines[0].strip() if out.returncode == 0 and lines else None


def environment(device: str, threads: int | None) -> dict[str, Any]:
    """The hardware and software a latency was measured on; numbers are meaningless without it."""
    import torch

    from ..manifest import _version, cpu_name

    env: dict[str, Any] = dict(device=device, cpu=cpu_name(), cores=os.cpu_count(),
                               torch_threads=torch.get_num_threads(), threads=threads,
                               python=platform.python_version(), versions={p: _version(p) for p in VERSIONED},
                               gpu=None, compute_capability=None, gpu_memory_gib=None, cuda=None, driver=None)
    if device == "cuda" and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(torch.cuda.current_device())
        env.update(gpu=props.name, compute_capability=f"{props.major}.{props.minor}",
                   gpu_memory_gib=round(props.total_memory / 2**30, 2), cuda=torch.version.cuda,
                   driver=_driver_version())
    return env


def set_cpu_threads(threads: int | None) -> int:
    """Pin torch's intra-op pool so CPU latencies are reproducible; None means every logical core."""
    import torch

    n = threads if threads is not None else os.cpu_count() or 1
    torch.set_num_threads(n)
    return n


def _cuda_sync() -> None:
    import torch
    torch.cuda.synchronize()


def interleaved_ms(steps: dict[str, Callable[[], object]], rounds: int = 20, warmup: int = 3,
                   device: Any = None) -> dict[str, float]:
    """Median milliseconds per call of each step, the steps run in turn `rounds` times.

    Wall time of separate runs drifts by tens of percent on shared machines; timing every
    candidate in turn, round after round, exposes all of them to the same drift, so the ratio
    of medians is honest where the ratio of two separate runs is not. The order rotates each
    round, since a fixed order gives each step a fixed position bias (warm caches, clocks).
    """
    sync = _cuda_sync if device is not None and getattr(device, "type", device) == "cuda" else (lambda: None)
    for _ in range(warmup):
        for step in steps.values():
            step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    names = list(steps)
    for r in range(rounds):  # rotate the order: no step always runs first (or right after the same one)
        for name in names[r % len(names):] + names[: r % len(names)]:
            step = steps[name]
            sync()
            t0 = time.perf_counter()
            step()
            sync()
            times[name].append(1000 * (time.perf_counter() - t0))
    return {name: statistics.median(v) for name, v in times.items()}
