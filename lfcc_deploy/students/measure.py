"""Measure candidate students before any training: build, count, export, time on the target.

Each candidate gets a run directory (recipe.toml + student.safetensors) so the toolkit's own
exporter, parity checks and bench backends run on it unchanged; the trained students of
`--distill` go through the same `export_artifact` and `time_interleaved`. Anything that fails
becomes the row's status and reason, never an exception out of this module.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..bench.backends import BACKENDS  # importing the package registers every backend
from ..bench.timing import TimingConfig, compute_samples, summarize
from ..export.config import ExportConfig, Tolerance
from ..export.run import export_run
from ..models import check_model_name, read_state, save_net
from ..preprocess import Preprocess
from ..recipe import Recipe, recipe_dict, recipe_to_toml, validate_recipe
from ..rundir import RECIPE_FILE, write_text
from ..training import make_net
from .candidates import Candidate
from .front import noise_band, verdict

REPEATED_WARMUP_MS = 20.0  # later slices of an interleaved candidate: caches only, clocks are warm


def reason_of(err: BaseException) -> str:
    text = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def candidate_recipe(base: Recipe, cand: Candidate, file: str) -> Recipe:
    """The base recipe with this student (and its label in the name): what `pipeline` would train."""
    data = recipe_dict(base)
    data["name"] = f"{base.name}-{cand.label}"
    data["student"] = dict(model=cand.model, model_kwargs=dict(cand.kwargs))
    return validate_recipe(data, f"{file} (candidate {cand.label})")


def probe_export_config(cfg: ExportConfig) -> ExportConfig:
    """The recipe's [export] for untrained weights, with no top-1 checks: random weights have no stable
    top-1 (fp16/INT8 flip it freely), so fp32 keeps only its |Δlogit| limit. 64 parity images catch a
    wrong graph, and the reference forward over them is most of a candidate's measuring time."""
    loose = Tolerance(min_agreement=0.0)
    return cfg.model_copy(update=dict(
        parity_images=min(cfg.parity_images, 64), calibration_images=min(cfg.calibration_images, 256),
        speed_seconds=min(cfg.speed_seconds, 0.3), fp16=loose, int8=loose,
        fp32=Tolerance(max_abs_logit=cfg.fp32.max_abs_logit or 1e-4, min_agreement=0.0)))


def macs_per_image(net, spec) -> int:
    """Multiply-accumulates of one image (torch's FLOP counter: convolutions and matrix products)."""
    from torch.utils.flop_counter import FlopCounterMode
    x = torch.zeros(1, spec.in_chans, spec.img_size, spec.img_size)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        net.eval()(x)
    return int(counter.get_total_flops()) // 2


def build_candidate(cand: Candidate, base: Recipe, file: str, data, run_dir: Path) -> dict[str, Any]:
    """A row for one candidate: built with `distill`'s factory and small-image rules, saved as a run."""
    row: dict[str, Any] = dict(label=cand.label, model=cand.model, family=cand.family, kwargs=dict(cand.kwargs),
                               note=cand.note, status="ok", stage="", reason="", run_dir=str(run_dir))
    try:
        check_model_name(cand.model, key="--candidates")  # a one-line reason with a suggestion
        recipe = candidate_recipe(base, cand, file)
        net = make_net(recipe.student, data, recipe.distill.seed, "student")
        row.update(params=sum(p.numel() for p in net.parameters()), macs=macs_per_image(net, net.spec),
                   kwargs=dict(net.spec.kwargs))
        write_text(run_dir / RECIPE_FILE, recipe_to_toml(recipe))
        save_net(net, run_dir / "student.safetensors")
    except Exception as err:  # timm raises anything for a model that cannot take this input
        row.update(status="failed", stage="build", reason=reason_of(err))
    return row


def export_artifact(row: dict[str, Any], backend: str, precision: str, device: str, config: ExportConfig,
                    data, say: Callable[[str], None]) -> Path | None:
    """Export the row's run directory as the backend needs and return the file it runs, else None with
    the row marked failed. fp32 ONNX is always exported and checked: deployable means exportable."""
    run_dir = Path(row["run_dir"])
    trt = backend == "tensorrt"
    try:
        summary = export_run(run_dir, int8=precision == "int8", fp16=precision == "fp16", trt=trt, check=False,
                             config=config, data=data, say=say)
    except Exception as err:  # export raises anything from torch.export to onnxruntime
        summary, failure = None, reason_of(err)
    else:
        broken = {k: v["broken"] for k, v in summary["this"].items() if not v["passed"]}
        failure = "; ".join(f"{k}: {', '.join(v)}" for k, v in broken.items())
        row["export"] = dict(exporter=summary["this"]["fp32"].get("exporter"), passed=not broken,
                             broken=failure, seconds=round(sum(w["seconds"] for w in summary["written"]), 2))
    if summary is None:
        row["export"] = dict(exporter=None, passed=False, broken=failure, seconds=None)
    path, why = BACKENDS.get(backend).artifact(run_dir, "student", precision, device)
    if path is None:
        row.update(status="failed", stage="export", reason=failure or why)
    return path


def _input(data, spec, batch: int, device: torch.device) -> torch.Tensor:
    split = data.test if data.test is not None else data.val
    u8 = split.uint8_images(batch)
    u8 = u8.repeat(-(-batch // len(u8)), 1, 1, 1)[:batch].contiguous()
    return Preprocess.of(spec)(u8.to(device))


def load_runner(row: dict[str, Any], path: Path, backend: str, precision: str, device: str, batch: int,
                threads: int, data):
    """(runner, input) for the row, or None with the row marked failed."""
    try:
        runner = BACKENDS.get(backend).load(path, precision, device, threads, shared=True)
        if runner.static_batch and runner.static_batch != batch:
            raise ValueError(f"exported with a static batch of {runner.static_batch}, not --batch {batch}")
        spec = read_state(Path(row["run_dir"]) / "student.safetensors")[1]
        x = _input(data, spec, batch, runner.device)
        runner.run(x)
        return runner, x
    except Exception as err:  # a backend that cannot run this graph is the row's result
        row.update(status="failed", stage="run", reason=reason_of(err))
        return None


def _slice(cfg: TimingConfig, rounds: int, first: bool) -> TimingConfig:
    return TimingConfig(warmup_ms=cfg.warmup_ms if first else min(cfg.warmup_ms, REPEATED_WARMUP_MS),
                        duration_s=cfg.duration_s / rounds, min_iters=max(2, math.ceil(cfg.min_iters / rounds)),
                        max_iters=cfg.max_iters)


def time_interleaved(loaded: dict[str, tuple[Any, torch.Tensor]], cfg: TimingConfig, rounds: int,
                     percentile: str) -> dict[str, dict[str, Any]]:
    """Every runner timed in `rounds` slices, the order rotating each round, so a slow spell of a
    shared machine hits all candidates alike; the pooled samples give the statistics, the per-round
    values of `percentile` give the noise band. A runner that raises gets `error` instead."""
    q = float(percentile.removeprefix("p"))
    samples: dict[str, list[float]] = {k: [] for k in loaded}
    per_round: dict[str, list[float]] = {k: [] for k in loaded}
    errors: dict[str, str] = {}
    names = list(loaded)
    for r in range(rounds):
        start = r % len(names) if names else 0
        for name in names[start:] + names[:start]:
            if name in errors:
                continue
            runner, x = loaded[name]
            try:
                got = compute_samples(runner, x, _slice(cfg, rounds, r == 0))
            except Exception as err:  # noqa: BLE001  a failure mid-timing is this candidate's row
                errors[name] = reason_of(err)
                continue
            samples[name] += got
            per_round[name].append(float(np.percentile(got, q)))
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        if name in errors:
            out[name] = dict(error=errors[name])
            continue
        stats = summarize(samples[name]).to_dict()
        out[name] = dict(latency=stats, ms=stats[f"{percentile}_ms"], rounds_ms=[round(v, 4) for v in per_round[name]],
                         band=[round(v, 4) for v in noise_band(per_round[name])])
    return out


def apply_timing(targets: dict[str, dict[str, Any]], timed: dict[str, dict[str, Any]], budget_ms: float | None) -> None:
    """Each target row gains its latency, band and budget verdict, or fails at the run stage."""
    for label, result in timed.items():
        if "error" in result:
            targets[label].update(status="failed", stage="run", reason=result["error"])
        else:
            targets[label].update(result, verdict=verdict(result["ms"], result["band"], budget_ms))
