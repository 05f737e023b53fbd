"""`train-teacher`, `distill` and `eval`."""
from __future__ import annotations

import time
from typing import Optional

import typer

from . import app
from .common import (DEVICE, FORCE, JSON, OUT, QUIET, RESUME, RUN_RECIPE, SET, TEACHER, err, find_run, out, print_json,
                     recipe_arg, run_arg)
from .progress import pct, reporting, results_table


def _train(job: str, recipe: str, overrides, out_dir, resume, force, device, quiet, **extra) -> dict:
    from .. import distributed, training
    started = time.perf_counter()
    rec, file = recipe_arg(recipe, overrides)
    with reporting(err, quiet) as rep:
        summary = getattr(training, job)(rec, file=file, out=out_dir, resume=resume, force=force, device=device,
                                         reporter=rep, **extra)
    if not distributed.is_main():  # torchrun: rank 0 prints the results
        return summary
    out.print(results_table(summary, f"{rec.name} — {summary['data']['name']} on {summary['device']}"))
    warn_weak_teacher(summary)
    out.print(f"run directory: {summary['run_dir']}   total time: {time.perf_counter() - started:.1f} s",
              highlight=False)
    return summary


def warn_weak_teacher(summary: dict) -> None:
    """Distillation only pays when the teacher is clearly better than the student alone."""
    t, ref, s = summary.get("teacher"), summary.get("reference"), summary.get("student")
    key = "test_acc" if t and t.get("test_acc") is not None else "val_acc"
    if t and ref and t[key] - ref[key] < 0.02:
        err.print(f"warning: the teacher ({pct(t[key])}) is less than 2 points above the CE-only student "
                  f"({pct(ref[key])}); train it longer or pick a stronger one", highlight=False)
    if ref and s:
        out.print(f"distillation vs CE-only student: {100 * (s[key] - ref[key]):+.2f} points ({key})",
                  highlight=False)


@app.command("train-teacher")
def train_teacher(recipe: str = typer.Argument(..., help="Recipe path or name."),
                  set_: Optional[list[str]] = SET, out_dir: Optional[str] = OUT, resume: bool = RESUME,
                  force: bool = FORCE, device: Optional[str] = DEVICE, quiet: bool = QUIET) -> None:
    """Train the recipe's teacher into the run directory (teacher.safetensors)."""
    _train("train_teacher", recipe, set_, out_dir, resume, force, device, quiet)


@app.command()
def distill(recipe: str = typer.Argument(..., help="Recipe path or name."),
            set_: Optional[list[str]] = SET, out_dir: Optional[str] = OUT, resume: bool = RESUME,
            force: bool = FORCE, device: Optional[str] = DEVICE, quiet: bool = QUIET,
            teacher: Optional[str] = TEACHER) -> None:
    """Distil the recipe's student from its teacher (training the teacher first if needed)."""
    _train("distill", recipe, set_, out_dir, resume, force, device, quiet, teacher=teacher)


@app.command("eval")
def evaluate(run_dir: Optional[str] = run_arg(""), recipe: Optional[str] = RUN_RECIPE,
             device: Optional[str] = DEVICE, as_json: bool = JSON) -> None:
    """Accuracy of every model in a run directory on its validation and test splits."""
    from ..training import evaluate_run
    run_dir = find_run(run_dir, recipe)
    res = evaluate_run(run_dir, device=device)
    if as_json:
        return print_json(res)
    from rich.table import Table
    table = Table(title=f"evaluation of {run_dir}")
    for col in ("artifact", "model", "params", "val acc", "test acc"):
        table.add_column(col)
    for name, r in res.items():
        table.add_row(name, r["model"], f"{r['params'] / 1e6:.2f} M", pct(r["val_acc"]), pct(r["test_acc"]))
    out.print(table)
