"""The `lfcc-deploy` command line: thin commands over the library, one error boundary in `main()`."""
from __future__ import annotations

import os
import sys

import typer

from .. import __version__
from ..errors import EXIT_BAD_INPUT, EXIT_INTERRUPTED, LfccError

# Help text is plain (rich markup off), so `[gates]` or `[export] opset` read as written; -h works too.
# Command modules import torch, timm and onnx inside the commands only: `--help` and `--version` stay fast.
HELP_SETTINGS = dict(rich_markup_mode=None, context_settings={"help_option_names": ["-h", "--help"]})
app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False, **HELP_SETTINGS,
                  help="Distil a large vision model into a small one of another family, export it, prove it.")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"lfcc-deploy {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """Distil, export, benchmark and gate compact vision models."""


from . import (bench as _bench, compare as _compare, export as _export, models as _models,  # noqa: E402,F401
               pipeline as _pipeline, profile as _profile, recipes as _recipes, train as _train)


def _fail(line: str, hint: str | None, code: int) -> int:
    print(f"error: {line}", file=sys.stderr)
    if hint:
        print(f"hint: {hint}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    """Known errors become one line (plus a hint) and an exit code; set LFCC_DEBUG=1 for tracebacks."""
    debug = os.environ.get("LFCC_DEBUG") == "1"
    try:
        result = app(args=argv, prog_name="lfcc-deploy", standalone_mode=False)
        return result if isinstance(result, int) else 0
    except LfccError as err:
        if debug:
            raise
        return _fail(err.line(), err.hint, err.exit_code)
    except typer.Exit as err:
        return getattr(err, "exit_code", 0)
    except (KeyboardInterrupt, typer.Abort):  # training commands report their checkpoint themselves
        print("error: interrupted; files are written by atomic rename, so none is left half-written",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as err:
        if not (hasattr(err, "format_message") and hasattr(err, "exit_code")):
            raise  # a bug: keep the traceback
        return _usage_error(err)


def _usage_error(err) -> int:
    """Typer/click usage errors (unknown option, missing argument): one line plus a pointer to --help."""
    if type(err).__name__ == "NoArgsIsHelpError":  # bare `lfcc-deploy GROUP`: show the help, not an error
        print(err.format_message(), file=sys.stderr)
        return 0
    ctx = getattr(err, "ctx", None)
    cmd = ctx.command_path if ctx is not None else "lfcc-deploy"
    return _fail(err.format_message(), f"see `{cmd} --help`", err.exit_code or EXIT_BAD_INPUT)


def run() -> None:
    sys.exit(main())
