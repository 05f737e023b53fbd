"""`train-teacher`, `distill` and `eval`."""
from __future__ import annotations

import time
from typing import Optional

import typer

from .. import distributed, training
from . import app
from .common import DEVICE, FORCE, OUT, QUIET, RESUME, SET, err, out, recipe_arg
from .progress import _pct, reporting, results_table


def _train(job, recipe: str, overrides, out_dir, resume, force, device, quiet) -> dict:
    started = time.perf_counter()
    rec, file = recipe_arg(recipe, overrides)
    with reporting(err, quiet) as rep:
        summary = job(rec, file=file, out=out_dir, resume=resume, force=force, device=device, reporter=rep)
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
        err.print(f"warning: the teacher ({_pct(t[key])}) is less than 2 points above the CE-only student "
                  f"({_pct(ref[key])}); train it longer or pick a stronger one", highlight=False)
    if ref and s:
        out.print(f"distillation vs CE-only student: {100 * (s[key] - ref[key]):+.2f} points ({key})",
                  highlight=False)


@app.command("train-teacher")
def train_teacher(recipe: str = typer.Argument(..., help="Recipe path or name."),
                  set_: Optional[list[str]] = SET, out_dir: Optional[str] = OUT, resume: bool = RESUME,
                  force: bool = FORCE, device: Optional[str] = DEVICE, quiet: bool = QUIET) -> None:
    """Train the recipe's teacher into the run directory (teacher.safetensors)."""
    _train(training.train_teacher, recipe, set_, out_dir, resume, force, device, quiet)


@app.command()
def distill(recipe: str = typer.Argument(..., help="Recipe path or name."),
            set_: Optional[list[str]] = SET, out_dir: Optional[str] = OUT, resume: bool = RESUME,
            force: bool = FORCE, device: Optional[str] = DEVICE, quiet: bool = QUIET) -> None:
    """Distil the recipe's student from its teacher (training the teacher first if needed)."""
    _train(training.distill, recipe, set_, out_dir, resume, force, device, quiet)


@app.command("eval")
def evaluate(run_dir: str = typer.Argument(..., help="A run directory."),
             device: str = typer.Option("auto", "--device", help="auto | cpu | cuda")) -> None:
    """Accuracy of every model in a run directory on its validation and test splits."""
    res = training.evaluate_run(run_dir, device=device)
    from rich.table import Table
    table = Table(title=f"evaluation of {run_dir}")
    for col in ("artifact", "model", "params", "val acc", "test acc"):
        table.add_column(col)
    for name, r in res.items():
        table.add_row(name, r["model"], f"{r['params'] / 1e6:.2f} M", _pct(r["val_acc"]), _pct(r["test_acc"]))
    out.print(table)
