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
TEACHER = typer.Option(None, "--teacher", metavar="RUN_DIR",
                       help="Use RUN_DIR/teacher.safetensors as the teacher instead of training one.")
QUIET = typer.Option(False, "--quiet", "-q", help="No progress on stderr (bar, epoch or row lines): results only.")


def say(quiet: bool = False):
    """Where a command's progress lines go: stderr (stdout stays clean for piping), or nowhere with -q."""
    return (lambda _: None) if quiet else (lambda s: err.print(s, highlight=False, markup=False))


JSON = typer.Option(False, "--json", help="Print the result as JSON on stdout, and nothing else there.")


def print_json(obj) -> None:
    """The `--json` convention of every command: one JSON document on stdout; progress stays on stderr."""
    import json
    print(json.dumps(obj, indent=2, default=str))


def run_arg(what: str):
    """The optional RUN_DIR argument of commands that read a run (Ultralytics-style discovery without it)."""
    return typer.Argument(None, metavar="RUN_DIR", show_default=False,
                          help=f"A run directory{what} (default: --recipe's run, else the most recently "
                               "finished run under runs/).")


RUN_RECIPE = typer.Option(None, "--recipe", metavar="NAME", help="Without RUN_DIR: the run of this recipe, "
                                                                 "runs/<name> (a recipe name or path).")


def find_run(run_dir: Optional[str], recipe: Optional[str]) -> str:
    """RUN_DIR as given, else runs/<recipe name> for --recipe, else the newest finished run; says which."""
    from ..rundir import RUNS_DIR, latest_finished_run
    if run_dir:
        return run_dir
    if recipe:
        path, why = RUNS_DIR / recipe_name(recipe), f"the run of --recipe {recipe}"
    else:
        path, why = latest_finished_run(), f"the most recently finished run under {RUNS_DIR}/"
    err.print(f"run directory: {path} ({why}; pass RUN_DIR for another)", highlight=False, markup=False)
    return str(path)


def recipe_file(recipe: str) -> Optional[str]:
    """The recipe file NAME resolves to (a path, or a name in ./recipes), or None when there is none."""
    from ..errors import BadInput
    from ..recipe import find_recipe
    try:
        return str(find_recipe(recipe))
    except BadInput:
        return None


def recipe_name(recipe: str) -> str:
    """The `name` a recipe file declares (its run is runs/<name>), or NAME itself when no such file exists."""
    from pathlib import Path

    from ..recipe import read_toml
    path = recipe_file(recipe)
    return str(read_toml(Path(path)).get("name") or Path(path).stem) if path else recipe


def recipe_arg(recipe: str, overrides: Optional[list[str]]) -> tuple["Recipe", str]:
    from ..recipe import find_recipe, load_recipe  # pydantic models of every method: torch
    path = find_recipe(recipe)
    return load_recipe(path, overrides or []), str(path)
