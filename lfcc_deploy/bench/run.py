"""`lfcc-deploy bench`: latency, throughput and accuracy of every (model, backend, precision, batch).

Each row is measured through the very backend and precision it describes — accuracy included —
so a user sees at once whether export or quantisation cost accuracy and whether it paid off.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

import torch

from ..data import load_data
from ..device import resolve_device
from ..errors import BadInput
from ..export.formats import PRECISIONS
from ..export.job import run_recipe
from ..models import read_state
from ..preprocess import Preprocess, pad_batch
from ..progress import default_say
from .backends import BACKENDS, Runner
from .report import REPORT_JSON, derive, merge_rows, write_report
from .timing import (LatencyStats, TimingConfig, compute_samples, environment, interleaved_ms, set_cpu_threads,
                     summarize, time_cpu)

MODELS = ("student", "teacher")
MODES = ("compute", "e2e")


def default_batches(device: str) -> list[int]:
    """Latency (1), a serving batch (32) and, on a GPU, throughput (256)."""
    return [1, 32] if device == "cpu" else [1, 32, 256]


@dataclass
class BenchConfig:
    backends: list[str] | None = None       # None: every registered backend
    precisions: list[str] | None = None     # None: whatever the run directory has artifacts for
    device: str | None = None               # None: the run's recipe's `device` (auto: cuda when there is one)
    batches: list[int] | None = None        # None: 1, 32 on cpu; 1, 32, 256 on cuda
    models: list[str] = field(default_factory=lambda: list(MODELS))
    timing: TimingConfig = field(default_factory=TimingConfig)
    mode: str = "compute"
    threads: int | None = None
    accuracy_images: int = 10000

    def check(self) -> None:
        for name in ("backends", "precisions", "batches"):  # a repeated value would time a row twice
            if getattr(self, name) is not None:
                setattr(self, name, list(dict.fromkeys(getattr(self, name))))
        for b in self.backends or []:
            BACKENDS.get(b, key="--backends")
        bad = [p for p in self.precisions or [] if p not in PRECISIONS]
        if bad:
            raise BadInput(f"unknown precision {bad[0]!r}; allowed: {', '.join(PRECISIONS)}", key="--precisions")
        if any(m not in MODELS for m in self.models):
            raise BadInput(f"--model must be student, teacher or both (got {', '.join(self.models)})")
        if self.mode not in MODES:
            raise BadInput(f"--mode must be compute or e2e (got {self.mode!r})")
        if any(b <= 0 for b in self.batches or []):
            raise BadInput("batch sizes must be positive", key="--batch")
        resolve_device(self.device)
        if self.device not in ("cpu", "cuda"):
            raise BadInput(f"--device must be cpu or cuda (got {self.device!r})")


class Images:
    """The evaluation split as stored (uint8) with labels, and its preprocessing per model."""

    def __init__(self, run_dir: Path, limit: int):
        recipe, file = run_recipe(run_dir, [])
        data = load_data(recipe.data, file=file)
        split = data.test if data.test is not None else data.val
        self.split = "test" if data.test is not None else "val"
        self.u8 = split.uint8_images(limit)
        self.labels = split.labels[: len(self.u8)]
        self.recipe = recipe.name

    def batch(self, n: int) -> torch.Tensor:
        reps = -(-n // len(self.u8))
        return self.u8.repeat(reps, 1, 1, 1)[:n].contiguous()


def deployed_accuracy(runner: Runner, pre: Preprocess, images: Images) -> float:
    """Top-1 on the split through this runner, preprocessing as deployed (static graphs get padded batches)."""
    step = runner.static_batch or 256
    correct = 0
    for i in range(0, len(images.u8), step):
        u8 = images.u8[i: i + step]
        n = len(u8)
        if runner.static_batch:
            u8 = pad_batch(u8, step)
        logits = runner.run(pre(u8.to(runner.device)))[:n]
        correct += int((logits.float().argmax(1).cpu() == images.labels[i: i + n]).sum())
    return correct / len(images.u8)


def what_is_timed(runner: Runner, mode: str) -> str:
    """The words a row records beside its latency: every backend of a mode times the same span."""
    if mode == "e2e":
        return "host wall clock: uint8 images on the host -> preprocessing, copies, model -> logits on the host"
    if runner.cuda_events:
        return "CUDA events on the compute stream around the model call; inputs and logits stay on the device"
    return "host wall clock of the model call on inputs already in memory"


def _call(runner: Runner, pre: Preprocess, u8: torch.Tensor, mode: str) -> Callable[[], Any]:
    """compute: the model call with inputs already on the device; e2e: uint8 on the host -> logits on the host."""
    if mode == "compute":
        x = pre(u8.to(runner.device))
        return lambda: runner.run(x)
    if runner.device.type == "cuda":
        u8 = u8.pin_memory()
    return lambda: runner.run(pre(u8.to(runner.device, non_blocking=True))).cpu()


def time_batch(runner: Runner, pre: Preprocess, images: Images, batch: int, cfg: BenchConfig) -> LatencyStats:
    u8 = images.batch(batch)
    if cfg.mode == "e2e":
        return time_cpu(_call(runner, pre, u8, cfg.mode), cfg.timing)
    return summarize(compute_samples(runner, pre(u8.to(runner.device)), cfg.timing))


def versus_fp32(rows: list[dict], runners: dict[str, Runner], pre: Preprocess, images: Images, cfg: BenchConfig,
                say: Callable[[str], None]) -> None:
    """Each quantised row against fp32 of its backend and batch, the two timed in turn round after round for
    about --duration-s: drift between two separately timed rows can neither fake nor hide a speedup, so this
    ratio is the INT8/fp16 speedup the report gives (`speedup_vs_fp32`)."""
    fp32 = {r["batch"]: r for r in rows if r["precision"] == "fp32" and r["status"] == "ok"}
    for r in (r for r in rows if r["precision"] != "fp32" and r["status"] == "ok" and r["batch"] in fp32):
        ref, u8 = fp32[r["batch"]], images.batch(r["batch"])
        steps = {name: (lambda f=_call(m, pre, u8, cfg.mode), m=m: (f(), m.sync()))
                 for name, m in (("fp32", runners["fp32"]), ("this", runners[r["precision"]]))}
        per_round = ref["latency"]["p50_ms"] + r["latency"]["p50_ms"]
        rounds = int(min(10_000, max(cfg.timing.min_iters, 1000 * cfg.timing.duration_s / max(per_round, 1e-3))))
        say(f"timing {r['model']} {r['backend']} {r['precision']} batch {r['batch']} against fp32, interleaved")
        ms = interleaved_ms(steps, rounds=rounds, device=runners["fp32"].device)
        r["vs_fp32_interleaved"] = dict(rounds=rounds, fp32_ms=round(ms["fp32"], 4), ms=round(ms["this"], 4))


def _row(**kw) -> dict[str, Any]:
    base = dict(status="ok", reason="", latency=None, throughput_ips=None, unstable=None, file=None,
                size_bytes=None, params=None, accuracy=None)
    return {**base, **kw}


def bench_run(run_dir: str | Path, cfg: BenchConfig, say: Callable[[str], None] = default_say) -> dict[str, Any]:
    """Measure every requested row, write report.json / report.md / report.png, return the report."""
    run_dir = Path(run_dir)
    cfg.device = resolve_device(cfg.device or run_recipe(run_dir, [])[0].device).type
    cfg.check()
    images = Images(run_dir, cfg.accuracy_images)
    threads = set_cpu_threads(cfg.threads) if cfg.device == "cpu" else (cfg.threads or torch.get_num_threads())
    batches = cfg.batches or default_batches(cfg.device)
    rows: list[dict[str, Any]] = []
    for model in cfg.models:
        weights = run_dir / f"{model}.safetensors"
        if not weights.is_file():
            say(f"{model}: no {weights.name} in the run directory, skipped")
            continue
        state, spec = read_state(weights)
        pre, params = Preprocess.of(spec), sum(t.numel() for t in state.values())
        for backend in cfg.backends or BACKENDS.names():
            rows += _backend_rows(BACKENDS.get(backend), run_dir, model, pre, params, images, batches,
                                  cfg, threads, say)
    if not any(r["status"] == "ok" for r in rows):  # keep the previous report rather than an empty one
        why = next((f"{r['backend']} {r['precision']}: {r['reason']}" for r in rows), "no model weights found")
        raise BadInput(f"nothing could be measured ({len(rows)} rows skipped or failed; e.g. {why})",
                       file=str(run_dir), hint="check --backends/--precisions/--device, or export first")
    started = datetime.now().astimezone().isoformat(timespec="milliseconds")  # also marks this run's rows
    rows = merge_rows(run_dir / REPORT_JSON, [dict(r, measured_at=started) for r in rows], say)
    report = dict(schema="lfcc-deploy/bench-report", version=1, created=started, run_dir=str(run_dir),
                  recipe=images.recipe, split=images.split, images=len(images.u8),
                  config=dict(asdict(cfg), batches=batches, threads=threads),
                  environment=environment(cfg.device, threads), rows=derive(rows))
    write_report(run_dir, report)
    return report


def _failure(err: Exception) -> str:
    return f"{type(err).__name__}: {str(err).splitlines()[0][:200]}" if str(err) else type(err).__name__


def _artifact(backend, run_dir, model, precision, device) -> tuple[Path | None, str, str]:
    """(path, why it is missing, why finding it failed): a broken artifact (an engine without its
    metadata) is a failed row of its own, never an error that stops the other rows."""
    try:
        return (*backend.artifact(run_dir, model, precision, device), "")
    except Exception as err:
        return None, "", _failure(err)


def _backend_rows(backend, run_dir, model, pre, params, images, batches, cfg, threads, say) -> list[dict]:
    key = dict(model=model, backend=backend.name, device=cfg.device, mode=cfg.mode)
    ok, why = backend.available(cfg.device)
    # default: fp32 always (a missing fp32 artifact is a skipped row, not an absent one), plus what exists
    precisions = cfg.precisions or ["fp32"] + [p for p in PRECISIONS[1:]
                                               if ok and _artifact(backend, run_dir, model, p, cfg.device)[0]]
    if not ok:
        return [_row(**key, precision=p, batch=b, status="skipped", reason=why)
                for p in (cfg.precisions or ["fp32"]) for b in batches]
    rows, runners = [], {}
    for precision in precisions:
        path, why, failed = _artifact(backend, run_dir, model, precision, cfg.device)
        if path is None:
            rows += [_row(**key, precision=precision, batch=b, status="failed" if failed else "skipped",
                          reason=failed or why) for b in batches]
            continue
        info = dict(file=str(path), size_bytes=path.stat().st_size, params=params)
        try:
            runner = runners[precision] = backend.load(path, precision, cfg.device, threads)
            acc = deployed_accuracy(runner, pre, images)
        except Exception as err:  # a failing backend is a row, not a crash
            rows += [_row(**key, precision=precision, batch=b, status="failed", reason=_failure(err), **info)
                     for b in batches]
            continue
        for b in batches:
            if runner.static_batch and b != runner.static_batch:
                rows.append(_row(**key, precision=precision, batch=b, status="skipped", **info,
                                 reason=f"exported with a static batch of {runner.static_batch}"))
                continue
            say(f"timing {model} {backend.name} {precision} batch {b} ({cfg.mode})")
            stats = time_batch(runner, pre, images, b, cfg)
            rows.append(_row(**key, precision=precision, batch=b, latency=stats.to_dict(),
                             timed=what_is_timed(runner, cfg.mode),
                             throughput_ips=round(stats.throughput(b), 2), unstable=stats.unstable(),
                             accuracy=acc, **info))
    if "fp32" in runners:
        versus_fp32(rows, runners, pre, images, cfg, say)
    return rows
