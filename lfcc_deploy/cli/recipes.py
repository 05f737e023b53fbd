"""`recipes list | show | schema | check`."""
from __future__ import annotations

import json
from typing import Optional

import typer

from .. import training
from ..recipe import Recipe, list_recipes, read_toml, recipe_to_toml
from . import app
from .common import SET, out, recipe_arg

recipes_app = typer.Typer(help="List, show, validate and describe recipes.", no_args_is_help=True)
app.add_typer(recipes_app, name="recipes")


@recipes_app.command("list")
def list_() -> None:
    """Recipes shipped in ./recipes and beside the package."""
    for path in list_recipes():
        desc = read_toml(path).get("description", "")
        out.print(f"{path.stem:<36} {desc}", highlight=False)


@recipes_app.command()
def show(recipe: str, set_: Optional[list[str]] = SET) -> None:
    """The resolved recipe: every key with its default filled in, as TOML."""
    rec, _ = recipe_arg(recipe, set_)
    out.print(recipe_to_toml(rec), highlight=False, markup=False)


@recipes_app.command()
def schema() -> None:
    """JSON schema of recipes, generated from the pydantic models."""
    out.print_json(json.dumps(Recipe.model_json_schema()))


@recipes_app.command()
def check(recipe: str, resources: bool = typer.Option(False, "--resources",
          help="Also resolve data files, model names and checkpoints."),
          set_: Optional[list[str]] = SET) -> None:
    """Validate a recipe (schema only unless --resources)."""
    rec, file = recipe_arg(recipe, set_)
    if resources:
        training.check_resources(rec, file)
    out.print(f"{file}: ok ({'schema and resources' if resources else 'schema'})", highlight=False)
