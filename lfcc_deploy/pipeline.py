"""`lfcc-deploy pipeline`: distill -> export -> bench -> gate in one command.

Each stage reuses what the run directory already holds when it is still valid (and says so):
a finished distillation of the same recipe, exports newer than the weights with passing
parity. The exit code is that of the first stage that fails, else the gate's.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from .bench.run import BenchConfig, bench_run, default_batches
from .device import resolve_device
from .export.formats import EXPORT_DIR, export_format
from .export.run import PARITY_FILE, export_run
from .gate import run_gate
from .progress import default_say
from .recipe import Recipe
from .rundir import RECIPE_FILE, SUMMARY_FILE, read_json
from .training import IGNORED_ON_RESUME, distill, refuse_changes, run_dir_for


def _distilled(run_dir: Path) -> bool:
    summary = run_dir / SUMMARY_FILE
    return summary.is_file() and read_json(summary).get("job") == "distill" and \
        (run_dir / "student.safetensors").is_file()


def _exported(run_dir: Path, model: str, precisions: list[str]) -> bool:
    """Every wanted precision exported after the weights were last written, and within tolerance."""
    parity_path = run_dir / EXPORT_DIR / PARITY_FILE
    weights = run_dir / f"{model}.safetensors"
    if not parity_path.is_file():
        return False
    entries = read_json(parity_path).get(model, {}).get("precisions", {})
    for p in precisions:
        path = export_format("onnx", p).file(run_dir, model)
        if not (entries.get(p, {}).get("passed") and path.is_file()
                and path.stat().st_mtime >= weights.stat().st_mtime):
            return False
    return True


def run_pipeline(recipe: Recipe, *, file: str, out: str | None = None, force: bool = False,
                 device: str | None = None, bench: BenchConfig | None = None, baseline: str | None = None,
                 reporter=None, say: Callable[[str], None] = default_say) -> dict[str, Any]:
    """Run every stage; raises the failing stage's error (its exit code) or returns all results."""
    run_dir = run_dir_for(recipe, out)
    results: dict[str, Any] = {}
    if _distilled(run_dir) and not force:
        say(f"distill: reusing {run_dir} (finished earlier; --force retrains)")
        refuse_changes(run_dir, recipe, IGNORED_ON_RESUME)
    else:
        resume = (run_dir / RECIPE_FILE).is_file() and not force
        results["distill"] = distill(recipe, file=file, out=run_dir, resume=resume, force=force,
                                     device=device, reporter=reporter)
    cfg = recipe.export
    int8, fp16 = "int8" in cfg.precisions, "fp16" in cfg.precisions
    for model in ("student", "teacher"):
        if not (run_dir / f"{model}.safetensors").is_file():
            continue
        if _exported(run_dir, model, cfg.precisions) and not cfg.trt:
            say(f"export: reusing {run_dir / EXPORT_DIR} for the {model} (newer than its weights, parity passed)")
            continue
        results[f"export_{model}"] = export_run(run_dir, model=model, int8=int8, fp16=fp16, trt=cfg.trt, say=say,
                                               config=cfg)
    bench = bench or BenchConfig()
    bench.device = resolve_device(device or recipe.device).type
    if bench.threads is None and bench.device == "cpu":
        bench.threads = recipe.gates.cpu_threads
    if bench.batches is None:  # every batch a latency budget names, so no gate fails for a missing row
        bench.batches = sorted({*default_batches(bench.device),
                                *(g.batch for g in recipe.gates.latency if g.device == bench.device)})
    results["bench"] = bench_run(run_dir, bench, say=say)
    results["gate"] = run_gate(run_dir, thresholds=recipe.gates, baseline=baseline, say=say)
    return results

