"""`compare`: methods side by side on one teacher, student, data, schedule and seed set."""
from __future__ import annotations

from typing import Optional

import typer

from . import app
from .common import DEVICE, JSON, QUIET, SET, TEACHER, err, out, print_json, recipe_arg
from .progress import reporting


@app.command()
def compare(recipe: str = typer.Argument(..., help="Recipe path or name."),
            methods: str = typer.Option("ce,kd,fitnet,ofa,lfcc", "--methods", help="Comma-separated methods."),
            seeds: int = typer.Option(3, "--seeds", help="Seeds per row (0, 1, …)."),
            variant: Optional[list[str]] = typer.Option(None, "--variant", metavar="'LABEL=METHOD key=value …'",
                                                        help="An extra ablation row with recipe overrides."),
            teacher: Optional[str] = TEACHER,
            out_dir: Optional[str] = typer.Option(None, "--out", help="Default runs/<recipe name>-compare."),
            set_: Optional[list[str]] = SET, device: Optional[str] = DEVICE, quiet: bool = QUIET,
            step_rounds: int = typer.Option(40, "--step-rounds", min=3,
                                            help="Interleaved rounds of the step-time benchmark (median)."),
            as_json: bool = JSON) -> None:
    """Train the teacher once, then every method × seed; write compare.md, compare.json, compare.png."""
    from .. import compare as cmp
    rec, file = recipe_arg(recipe, set_)
    with reporting(err, quiet) as rep:
        table = cmp.compare(rec, file=file, methods=[m.strip() for m in methods.split(",") if m.strip()],
                            seeds=seeds, variants=variant or [], teacher_dir=teacher, out=out_dir, device=device,
                            reporter=rep, step_rounds=step_rounds)
    if as_json:
        return print_json(table)
    out.print(cmp.compare_markdown(table), highlight=False, markup=False)
