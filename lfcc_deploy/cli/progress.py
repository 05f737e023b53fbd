"""A reporter per command (Ctrl-C handled) and the tables people read; reporters live in ..progress."""
from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Any

import typer

from rich.console import Console
from rich.table import Table

from ..errors import EXIT_INTERRUPTED
from ..plots import PHASE_TITLES
from ..progress import LogReporter, QuietReporter, RichReporter, pct

__all__ = ["LogReporter", "QuietReporter", "RichReporter", "pct", "reporting", "results_table"]

INTERRUPTED = "error: interrupted; the checkpoint was saved, continue with --resume"



@contextmanager
def reporting(console: Console, quiet: bool):
    """A reporter for one command; Ctrl-C becomes the documented line and exit 130, the bar is closed."""
    rep = QuietReporter(console) if quiet else RichReporter(console) if console.is_terminal else LogReporter(console)
    try:
        yield rep
    except KeyboardInterrupt:  # typer would turn it into a silent 130; say what was kept
        rep.close()
        print(INTERRUPTED, file=sys.stderr)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    finally:
        rep.close()


def results_table(summary: dict[str, Any], title: str) -> Table:
    table = Table(title=title)
    for col in ("model", "role", "params", "train images", "val acc", "test acc", "time"):
        table.add_column(col, justify="left" if col in ("model", "role") else "right")
    for phase, role in PHASE_TITLES.items():
        r = summary.get(phase)
        if not r:
            continue
        if phase == "student":
            role = f"{role} ({r.get('method', '')})"
        table.add_row(r["model"], role, f"{r['params'] / 1e6:.2f} M", str(r.get("train_images", "—")),
                      pct(r.get("val_acc")), pct(r.get("test_acc")), f"{r.get('wall_s', 0):.1f} s")
    return table
