"""Latency regression against a baseline run, measured so that shared-runner noise cancels.

Absolute milliseconds swing by ±50 % between runs and machines on shared CI runners, so a gate on
them flakes. Here both runs' models are loaded side by side in one process and timed in alternating
blocks (A B, B A, A B …); the regression is the median of the per-round new/old ratios, with their
quartiles reported beside it. Noise that hits both sides in the same moment cancels within a round.
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any, Callable

from ..errors import BadInput
from ..models import read_state
from ..preprocess import Preprocess
from .backends import BACKENDS
from .report import load_report, row_name
from .run import Images


def _block(fn: Callable[[], Any], sync: Callable[[], None], calls: int) -> float:
    """Mean ms per call over `calls` back-to-back calls (one sync at the end)."""
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    sync()
    return 1000 * (time.perf_counter() - t0) / calls


def interleaved_ratio(new: Callable[[], Any], old: Callable[[], Any], sync: Callable[[], None],
                      seconds: float = 2.0, min_rounds: int = 15) -> dict[str, float]:
    """new/old latency ratio from alternating blocks of ~25 ms (median and quartiles of the per-round ratios)."""
    for fn in (new, old):
        _block(fn, sync, 3)
    per_call = max(_block(new, sync, 3), _block(old, sync, 3)) / 1000
    calls = max(1, int(0.025 / max(per_call, 1e-7)))
    a, b = [], []
    start = time.perf_counter()
    while len(a) < min_rounds or time.perf_counter() - start < seconds:
        first, second = ((new, b), (old, a)) if len(a) % 2 else ((old, a), (new, b))
        first[1].append(_block(first[0], sync, calls))
        second[1].append(_block(second[0], sync, calls))
        if len(a) >= 2000:
            break
    ratios = sorted(x / y for x, y in zip(b, a))
    q = statistics.quantiles(ratios, n=4)
    # the median of paired ratios: each pair ran back to back, so slow drift cancels within the pair
    return dict(ratio=statistics.median(ratios), ratio_p25=q[0], ratio_p75=q[2],
                new_ms=statistics.median(b), old_ms=statistics.median(a), rounds=len(a))


def _runner(run_dir: Path, row: dict, threads: int):
    """(runner, preprocessing, "") for the row's artifact in `run_dir`, or (None, None, why not)."""
    backend = BACKENDS.get(row["backend"])
    try:
        path, why = backend.artifact(run_dir, row["model"], row["precision"], row["device"])
        if path is None:
            return None, None, why
        spec = read_state(run_dir / f"{row['model']}.safetensors")[1]
    except BadInput as err:  # weights or engine metadata missing or unreadable
        return None, None, err.line()
    return backend.load(path, row["precision"], row["device"], threads, shared=True), Preprocess.of(spec), ""


def measure_regressions(report: dict[str, Any], baseline: Path, seconds: float = 2.0,
                        say: Callable[[str], None] = lambda _: None) -> tuple[dict[str, dict], str]:
    """Per student row of `report`: new/old p50 ratio. A run directory is re-measured interleaved;
    a report file only offers its stored numbers (noisier, and the output says so)."""
    baseline = Path(baseline)
    rows = [r for r in report["rows"] if r["status"] == "ok" and r["model"] == "student"]
    if baseline.is_file() or not (baseline / "recipe.toml").is_file():
        old = {row_name(r): r for r in load_report(baseline)["rows"] if r["status"] == "ok"}
        note = "from stored reports, not re-measured: machine noise does not cancel"
        return {row_name(r): dict(ratio=r["latency"]["p50_ms"] / old[row_name(r)]["latency"]["p50_ms"], note=note)
                for r in rows if row_name(r) in old}, "stored"
    new_dir, threads = Path(report["run_dir"]), report["config"]["threads"]
    images = Images(new_dir, 512)
    out = {}
    for r in rows:
        new, pre_new, why = _runner(new_dir, r, threads)
        old, pre_old, old_why = _runner(baseline, r, threads) if new is not None else (None, None, "")
        if new is None or old is None:
            missing = f"not compared, this run: {why}" if new is None else f"not compared, the baseline: {old_why}"
            say(f"{row_name(r)}: {missing}")
            out[row_name(r)] = dict(ratio=None, missing=missing)
            continue
        u8 = images.batch(r["batch"])
        x_new, x_old = pre_new(u8.to(new.device)), pre_old(u8.to(old.device))
        say(f"timing {row_name(r)} against the baseline, interleaved")
        m = interleaved_ratio(lambda: new.run(x_new), lambda: old.run(x_old), new.sync, seconds)
        out[row_name(r)] = dict(m, note=f"interleaved ×{m['rounds']}, ratio IQR "
                                        f"{m['ratio_p25']:.3f}–{m['ratio_p75']:.3f}")
    return out, "interleaved"  # no student rows: the gate fails that as a missing row
