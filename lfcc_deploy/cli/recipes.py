"""`recipes list | show | schema | check`."""
from __future__ import annotations

import json
from typing import Optional

import typer

from . import HELP_SETTINGS, app
from .common import SET, err, out, recipe_arg

recipes_app = typer.Typer(help="List, show, validate and describe recipes.", no_args_is_help=True,
                          **HELP_SETTINGS)
app.add_typer(recipes_app, name="recipes")


@recipes_app.command("list")
def list_() -> None:
    """Recipes shipped in ./recipes and beside the package."""
    from ..recipe import list_recipes, read_toml
    for path in list_recipes():
        desc = read_toml(path).get("description", "")
        out.print(f"{path.stem:<36} {desc}", highlight=False)


@recipes_app.command()
def show(recipe: str, set_: Optional[list[str]] = SET) -> None:
    """The resolved recipe: every key with its default filled in, as TOML."""
    from ..recipe import recipe_to_toml
    rec, _ = recipe_arg(recipe, set_)
    out.print(recipe_to_toml(rec), highlight=False, markup=False)


@recipes_app.command()
def schema() -> None:
    """JSON schema of recipes, generated from the pydantic models."""
    from ..recipe import Recipe
    out.print_json(json.dumps(Recipe.model_json_schema()))


@recipes_app.command()
def check(recipe: str, resources: bool = typer.Option(False, "--resources",
          help="Also resolve data files, model names and checkpoints."),
          set_: Optional[list[str]] = SET) -> None:
    """Validate a recipe (schema only unless --resources); every schema error is listed, one per line."""
    from ..errors import BadInput
    from ..recipe import recipe_errors
    errors = recipe_errors(recipe, set_)
    for e in errors:
        err.print(f"error: {e.line()}", highlight=False, markup=False)
    if errors:
        raise BadInput(f"{len(errors)} error(s) in the recipe", file=errors[0].file, hint="fix them and run again")
    rec, file = recipe_arg(recipe, set_)
    if resources:
        from ..training import check_resources
        check_resources(rec, file)
    out.print(f"{file}: ok ({'schema and resources' if resources else 'schema'})", highlight=False)
