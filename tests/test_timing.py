"""Timing bookkeeping checked with fake clocks and exact numbers, never against wall-clock speed."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lfcc_deploy.bench.timing import (LatencyStats, TimingConfig, environment, set_cpu_threads, summarize,
                                      time_cpu, time_cuda)

MS = 1_000_000  # ns


class FnClock:
    """A clock that only moves when the timed function runs, by `costs_ms` per call in turn (last repeats)."""

    def __init__(self, *costs_ms: float):
        self.costs, self.now, self.calls = list(costs_ms), 0, 0

    def __call__(self) -> int:
        return self.now

    def fn(self) -> None:
        self.now += int(self.costs[min(self.calls, len(self.costs) - 1)] * MS)
        self.calls += 1


def test_summarize_matches_numpy():
    data = list(range(1, 101))
    s = summarize(data)
    a = np.array(data, dtype=float)
    assert s.iters == 100
    assert s.mean_ms == pytest.approx(a.mean()) == pytest.approx(50.5)
    assert s.std_ms == pytest.approx(a.std(ddof=0))
    assert s.cov == pytest.approx(a.std() / a.mean())
    assert (s.min_ms, s.max_ms) == (1.0, 100.0)
    for q, v in zip((10, 50, 90, 95, 99), (s.p10_ms, s.p50_ms, s.p90_ms, s.p95_ms, s.p99_ms)):
        assert v == pytest.approx(np.percentile(a, q))
    assert s.p90_ms == pytest.approx(90.1)  # linear interpolation, not nearest rank
    assert s.throughput(32) == pytest.approx(32000 / 50.5)


def test_unstable_flips_at_limit():
    # samples 1±c have mean 1 and population std c, so cov == c
    assert not summarize([0.901, 1.099]).unstable()
    assert summarize([0.899, 1.101]).unstable()
    assert not summarize([0.85, 1.15]).unstable(limit=0.2)
    assert summarize([0.0, 0.0]).cov == 0.0


def test_summarize_empty_and_to_dict():
    with pytest.raises(ValueError):
        summarize([])
    d = summarize([1.123456789, 2.0]).to_dict()
    assert set(d) == {"iters", "mean_ms", "std_ms", "cov", "min_ms", "p10_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms",
                      "max_ms"}
    assert d["iters"] == 2 and type(d["iters"]) is int
    assert d["min_ms"] == 1.1235 and all(type(v) is float for k, v in d.items() if k != "iters")


def test_warmup_calls_excluded():
    clock = FnClock(6, 6, 1)  # two slow warm-up calls reach 12 >= 10 ms, then every call costs 1 ms
    s = time_cpu(clock.fn, TimingConfig(warmup_ms=10, duration_s=0.02, min_iters=1), clock=clock)
    assert s.iters == 20 and clock.calls == 22  # 20 ms of 1 ms calls after the two warm-up calls
    assert s.min_ms == s.max_ms == s.mean_ms == 1.0


def test_at_least_one_warmup_call():
    clock = FnClock(3)
    s = time_cpu(clock.fn, TimingConfig(warmup_ms=0, duration_s=0, min_iters=4), clock=clock)
    assert clock.calls == 5 and s.iters == 4


def test_min_iters_when_duration_already_passed():
    clock = FnClock(1000, 2.5)  # the warm-up call alone outlasts the whole duration
    s = time_cpu(clock.fn, TimingConfig(warmup_ms=1, duration_s=0.001, min_iters=7), clock=clock)
    assert s.iters == 7 and s.mean_ms == 2.5 and s.std_ms == 0.0


def test_stops_at_max_iters():
    clock = FnClock(0.5)
    s = time_cpu(clock.fn, TimingConfig(warmup_ms=0, duration_s=1e6, min_iters=1, max_iters=25), clock=clock)
    assert s.iters == 25 and clock.calls == 26


def test_clock_ticks_become_samples():
    ticks = iter(range(0, 10**12, 1500))  # every clock read advances 1.5 µs, independent of fn
    s = time_cpu(lambda: None, TimingConfig(warmup_ms=0.01, duration_s=0, min_iters=3),
                 clock=lambda: next(ticks))
    assert s.iters == 3 and s.min_ms == s.max_ms == pytest.approx(0.0015)


def test_real_callable_reaches_min_iters():
    s = time_cpu(lambda: sum(range(100)), TimingConfig(warmup_ms=5, duration_s=0.05, min_iters=5))
    assert isinstance(s, LatencyStats) and s.iters >= 5
    assert 0 <= s.min_ms <= s.p50_ms <= s.p99_ms <= s.max_ms


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_time_cuda_events():
    x = torch.randn(256, 256, device="cuda")
    s = time_cuda(lambda: x @ x, TimingConfig(warmup_ms=5, duration_s=0.05, min_iters=5))
    assert s.iters >= 5 and s.min_ms > 0
    env = environment("cuda", None)
    assert env["gpu"] and env["compute_capability"].count(".") == 1 and env["gpu_memory_gib"] > 0


def test_environment_cpu():
    env = environment("cpu", 2)
    assert {"cpu", "cores", "torch_threads", "threads", "python", "versions", "gpu", "compute_capability",
            "gpu_memory_gib", "cuda", "driver"} <= set(env)
    assert env["threads"] == 2 and env["cores"] >= 1 and env["torch_threads"] >= 1
    assert isinstance(env["cpu"], str) and env["cpu"]
    assert torch.__version__.startswith(env["versions"]["torch"])  # metadata drops the local "+cu..." tag
    assert set(env["versions"]) == {"torch", "onnxruntime", "onnx", "tensorrt", "timm"}
    assert all(env[k] is None for k in ("gpu", "compute_capability", "gpu_memory_gib", "cuda", "driver"))


def test_set_cpu_threads():
    before = torch.get_num_threads()
    try:
        assert set_cpu_threads(1) == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
