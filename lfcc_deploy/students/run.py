"""`lfcc-deploy students`: which student, for this latency budget, on this device?

Candidates are built at the recipe's size, exported and timed on the target before any training
(interleaved, so a shared machine's drift hits them alike); the budget marks them fit, borderline
or over; `--distill K` trains the K most promising that fit against one shared teacher and times
them again as deployed. The outputs are students.md / .json / .png and a recipe for the chosen
student with a latency gate for the budget, ready for `pipeline`.
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from ..bench.backends import BACKENDS  # importing the package registers every backend
from ..bench.timing import TimingConfig, environment, set_cpu_threads
from ..data import load_data
from ..device import resolve_device
from ..errors import BadInput
from ..export.formats import PRECISIONS
from ..recipe import Recipe, recipe_dict, recipe_to_toml, validate_recipe
from ..rundir import RunLock, write_text
from .front import choose, pareto, promising
from .candidates import select
from .distil import candidate_of, distil_rows
from .measure import apply_timing, build_candidate, candidate_recipe, export_artifact, load_runner, \
    probe_export_config, time_interleaved
from .report import write_outputs

PERCENTILES = ("p50", "p99")  # the two limits a [[gates.latency]] entry can carry


@dataclass
class StudentsConfig:
    budget_ms: float | None = None
    percentile: str = "p50"
    backend: str = "onnxruntime"
    precision: str = "fp32"
    device: str | None = None           # None: the recipe's
    batch: int = 1
    candidates: list[str] = field(default_factory=list)
    only: bool = False                  # measure only `candidates`, not the shipped list
    families: list[str] | None = None
    distill: int = 0
    timing: TimingConfig = field(default_factory=lambda: TimingConfig(warmup_ms=100, duration_s=1.0, min_iters=10))
    rounds: int = 5
    threads: int | None = None

    def check(self, recipe: Recipe) -> str:
        """Every option checked before anything is built; returns the resolved device."""
        backend = BACKENDS.get(self.backend, key="--backend")
        if self.precision not in PRECISIONS:
            raise BadInput(f"unknown precision {self.precision!r}; allowed: {', '.join(PRECISIONS)}", key="--precision")
        if self.percentile not in PERCENTILES:
            raise BadInput(f"--percentile must be {' or '.join(PERCENTILES)} (got {self.percentile!r})")
        for name, value, low in (("--batch", self.batch, 1), ("--distill", self.distill, 0),
                                 ("--rounds", self.rounds, 2)):
            if value < low:
                raise BadInput(f"{name} must be >= {low} (got {value})", key=name)
        if self.budget_ms is not None and self.budget_ms <= 0:
            raise BadInput("--budget-ms must be positive", key="--budget-ms")
        if self.distill and self.budget_ms is None:
            raise BadInput("--distill picks candidates that fit a budget", key="--distill", hint="add --budget-ms")
        device = resolve_device(self.device or recipe.device).type
        ok, why = backend.available(device)
        if not ok:
            raise BadInput(f"backend {self.backend} cannot run here: {why}", key="--backend")
        return device


def chosen_recipe(base: Recipe, row: dict[str, Any], cfg: StudentsConfig, device: str, threads: int, file: str,
                  teacher_ckpt: str | None) -> tuple[str, Recipe]:
    """The base recipe with the chosen student, the measured device and a latency gate for the budget;
    the teacher trained by --distill becomes its checkpoint, so `pipeline` does not train it again."""
    data = recipe_dict(candidate_recipe(base, candidate_of(row), file))
    data["device"] = device
    if teacher_ckpt:
        data["teacher"].update(checkpoint=teacher_ckpt, pretrained=False)
    export = data.setdefault("export", {})
    if cfg.backend == "tensorrt":
        export["trt"] = True
    elif cfg.backend != "torch" and cfg.precision not in export.get("precisions", ["fp32"]):
        export["precisions"] = [*export.get("precisions", ["fp32"]), cfg.precision]
    gate = dict(backend=cfg.backend, precision=cfg.precision, model="student", device=device, batch=cfg.batch,
                **{f"max_{cfg.percentile}_ms": cfg.budget_ms}, **({"threads": threads} if device == "cpu" else {}))
    data.setdefault("gates", {}).setdefault("latency", []).append(gate)
    recipe = validate_recipe(data, f"{file} (written for {row['label']})")
    return recipe_to_toml(recipe), recipe


def find_students(base: Recipe, cfg: StudentsConfig, *, file: str, out: str | Path | None = None,
                  teacher_dir: str | None = None, reporter=None,
                  say: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Measure, mark, optionally distil; writes OUT/students.* and the chosen recipe, returns students.json."""
    started = time.perf_counter()
    device = cfg.check(base)
    cands = select(cfg.families, cfg.candidates, cfg.only)
    out = Path(out) if out else Path("runs") / f"{base.name}-students"
    data = load_data(base.data, file=file)
    threads = cfg.threads or ((os.cpu_count() or 1) if device == "cpu" else torch.get_num_threads())
    export_cfg = probe_export_config(base.export)
    # building and exporting are not timed and run small tensors, where intra-op threads only add
    # barriers (on a loaded machine a descheduled thread stalls every op): one thread until timing
    torch.set_num_threads(1)
    with RunLock(out):
        rows, loaded = [], {}
        for cand in cands:
            say(f"students: {cand.label} ({cand.family}): build, export, load")
            t0 = time.perf_counter()
            row = build_candidate(cand, base, file, data, out / "candidates" / cand.label)
            t1 = time.perf_counter()
            path = export_artifact(row, cfg.backend, cfg.precision, device, export_cfg, data,
                                   say=lambda _: None) \
                if row["status"] == "ok" else None
            t2 = time.perf_counter()
            runner = load_runner(row, path, cfg.backend, cfg.precision, device, cfg.batch, threads, data) \
                if path else None
            if runner:
                loaded[row["label"]] = runner
            row["seconds"] = dict(build=round(t1 - t0, 2), export=round(t2 - t1, 2),
                                  load=round(time.perf_counter() - t2, 2))
            rows.append(row)
        measured_s = time.perf_counter() - started
        if device == "cpu":
            set_cpu_threads(threads)
        say(f"students: timing {len(loaded)} candidates interleaved, {cfg.rounds} rounds of "
            f"{cfg.timing.duration_s / cfg.rounds:.2f} s each")
        apply_timing({r["label"]: r for r in rows}, time_interleaved(loaded, cfg.timing, cfg.rounds, cfg.percentile),
                     cfg.budget_ms)
        del loaded
        ok = [r for r in rows if r["status"] == "ok"]
        for r, on in zip(ok, pareto([(r["ms"], r["macs"]) for r in ok])):
            r["on_front"] = on
        timed_s = time.perf_counter() - started
        teacher = None
        if cfg.distill:
            picks = promising(rows, cfg.distill)
            if not picks:
                raise BadInput(f"no candidate fits {cfg.budget_ms} ms", key="--budget-ms",
                               hint="raise the budget; students.json lists every candidate's latency")
            teacher = distil_rows(base, file, picks, cfg, out, teacher_dir, device, data, threads, reporter, say)
            trained = [r for r in picks if r["deployed"]["status"] == "ok"]
            for r, on in zip(trained, pareto([(r["deployed"]["ms"], r["val_acc"]) for r in trained])):
                r["deployed"]["on_front"] = on
        chosen = choose(rows, bool(cfg.distill)) if cfg.budget_ms is not None else None
        recipe_path = None
        if chosen is not None:
            text, written = chosen_recipe(base, chosen, cfg, device, threads, file, teacher and teacher["checkpoint"])
            recipe_path = out / f"{written.name}.toml"
            write_text(recipe_path, text)
        result = dict(schema="lfcc-deploy/students", version=1, recipe=base.name, data=base.data.name,
                      img_size=base.data.img_size, channels=base.data.channels,
                      config=dict(asdict(cfg), device=device, threads=threads),
                      environment=environment(device, threads), teacher=teacher, rows=rows,
                      chosen=chosen["label"] if chosen else None,
                      written_recipe=str(recipe_path) if recipe_path else None,
                      seconds=dict(measure=round(measured_s, 1), measure_and_time=round(timed_s, 1),
                                   total=round(time.perf_counter() - started, 1)))
        write_outputs(out, result)
    return dict(result, out=str(out))
