"""Options shared by commands, and loading a recipe with its `--set` overrides."""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import typer
from rich.console import Console

if TYPE_CHECKING:
    from ..recipe import Recipe

out = Console()                 # results and tables
err = Console(stderr=True)      # progress and logs, so stdout stays clean for piping
if not out.is_terminal:         # logs and CI: rich's 80-column default would truncate the tables
    out = Console(width=160)
if not err.is_terminal:
    err = Console(stderr=True, width=160)

SET = typer.Option(None, "--set", metavar="KEY=VALUE",
                   help="Override a recipe key, value as a TOML literal, e.g. --set distill.epochs=3")
OUT = typer.Option(None, "--out", help="Run directory (default runs/<recipe name>).")
RESUME = typer.Option(False, "--resume", help="Continue the run in the run directory from its checkpoint.")
FORCE = typer.Option(False, "--force", help="Delete the run directory's previous run and start over.")
DEVICE = typer.Option(None, "--device", help="auto | cpu | cuda (default: the recipe's `device`).")
QUIET = typer.Option(False, "--quiet", "-q", help="Plain log lines instead of a progress bar.")


def recipe_arg(recipe: str, overrides: Optional[list[str]]) -> tuple["Recipe", str]:
    from ..recipe import find_recipe, load_recipe  # pydantic models of every method: torch
    path = find_recipe(recipe)
    return load_recipe(path, overrides or []), str(path)
