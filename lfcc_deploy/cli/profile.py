"""`profile`."""
from __future__ import annotations

from typing import Optional

import typer
from rich.table import Table

from . import app
from .common import DEVICE, JSON, QUIET, out, print_json, recipe_arg, say


@app.command()
def profile(recipe: str = typer.Argument(..., help="Recipe path or name."),
            set_: Optional[list[str]] = typer.Option(None, "--set", metavar="KEY=VALUE",
                                                     help="Override a recipe key, value as a TOML literal, "
                                                          "e.g. --set distill.batch_size=64"),
            device: Optional[str] = DEVICE,
            steps: int = typer.Option(20, "--steps", min=3, help="Timed rounds (median reported)."),
            as_json: bool = JSON, quiet: bool = QUIET) -> None:
    """Step time and images/s of ce, kd, lfcc and lfcc with the teacher cache, data time apart."""
    from ..profile import profile_recipe
    rec, file = recipe_arg(recipe, set_)
    res = profile_recipe(rec, file=file, device=device, steps=steps, say=say(quiet))
    if as_json:
        return print_json(res)
    t = Table(title=f"{res['recipe']}: {res['teacher']} → {res['student']} on {res['device']}, batch {res['batch_size']}")
    for col in ("method", "step ms", "vs kd", "vs ce", "img/s (with data)"):
        t.add_column(col)
    m = res["methods"]
    for name, r in m.items():
        t.add_row(name, f"{r['step_ms']:.1f}", f"{r['step_ms'] / m['kd']['step_ms']:.3f}×",
                  f"{r['step_ms'] / m['ce']['step_ms']:.3f}×", f"{r['images_per_s']:.0f}")
    out.print(t)
    out.print(f"data pipeline: {res['data_ms']:.2f} ms per batch (gather, float conversion, augmentation); "
              + ", ".join(f"{k.replace('_vs_', ' / ')} = {v:.3f}" for k, v in res["ratios"].items()),
              highlight=False)
