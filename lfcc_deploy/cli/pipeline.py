"""`pipeline`: distill -> export -> bench -> gate."""
from __future__ import annotations

from typing import Optional

import typer

from . import app
from .bench import JUNIT, bench_table, print_gate
from .common import DEVICE, FORCE, OUT, QUIET, SET, err, out, recipe_arg, say
from .export import export_notes, parity_table
from .progress import reporting, results_table
from .train import warn_weak_teacher


@app.command()
def pipeline(recipe: str = typer.Argument(..., help="Recipe path or name."),
             set_: Optional[list[str]] = SET, out_dir: Optional[str] = OUT, force: bool = FORCE,
             device: Optional[str] = DEVICE, quiet: bool = QUIET,
             duration_s: float = typer.Option(3.0, "--duration-s", min=0, help="Timed seconds per bench row."),
             baseline: Optional[str] = typer.Option(None, "--baseline", help="OLD_RUN_DIR or report for max_regression."),
             threads: Optional[int] = typer.Option(
                 None, "--threads", min=1,
                 help="CPU threads for the bench (default: the latency gates' `threads`, else all)."),
             junit: Optional[str] = JUNIT) -> None:
    """Distil, export, benchmark and gate in one command, reusing what the run directory holds."""
    from ..bench.run import BenchConfig
    from ..bench.timing import TimingConfig
    from ..pipeline import run_pipeline
    rec, file = recipe_arg(recipe, set_)
    with reporting(err, quiet) as rep:
        results = run_pipeline(rec, file=file, out=out_dir, force=force, device=device, reporter=rep, say=say(quiet),
                               bench=BenchConfig(timing=TimingConfig(duration_s=duration_s), threads=threads),
                               baseline=baseline)
    if "distill" in results:
        s = results["distill"]
        out.print(results_table(s, f"{rec.name} — {s['data']['name']} on {s['device']}"))
        warn_weak_teacher(s)
    for model in ("student", "teacher"):
        if f"export_{model}" in results:
            e = results[f"export_{model}"]
            out.print(parity_table(e["this"], e["written"], model))
            for line in export_notes(e):
                out.print(line, highlight=False)
    out.print(bench_table(results["bench"]))
    print_gate(results["gate"], results["bench"]["run_dir"], junit=junit)
