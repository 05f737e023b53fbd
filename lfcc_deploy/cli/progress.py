"""Progress reporting and the tables people read; the engine only sees the `Reporter` protocol."""
from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Any

import typer

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from ..errors import EXIT_INTERRUPTED

INTERRUPTED = "error: interrupted; the checkpoint was saved, continue with --resume"

PHASE_TITLES = {"teacher": "teacher", "reference": "CE-only student", "student": "distilled student"}


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.2f} %"


def epoch_line(r: dict[str, Any]) -> str:
    return (f"{r['phase']:<9} epoch {r['epoch']:>3}  loss {r['train_loss']:.4f}  train {_pct(r['train_acc'])}"
            f"  val {_pct(r['val_acc'])}  {r['images_per_s']:.0f} img/s  {r['epoch_s']:.1f} s")


class LogReporter:
    """`--quiet`: one line per epoch and per finished phase, nothing in between."""

    def __init__(self, console: Console):
        self.console = console

    def note(self, text: str) -> None:
        self.console.print(text, highlight=False)

    def start(self, phase: str, total: int, done: int) -> None:
        what = f"resuming at step {done}" if done else "starting"
        self.console.print(f"{phase}: {what} ({total} steps)")

    def progress(self, step: int, stats: dict[str, float]) -> None:
        pass

    def epoch(self, record: dict[str, Any]) -> None:
        self.console.print(epoch_line(record), highlight=False)

    def close(self) -> None:
        pass

    def finish(self, result: dict[str, Any]) -> None:
        self.console.print(f"{result['phase']}: best val {_pct(result['val_acc'])}, test {_pct(result['test_acc'])}"
                           f" in {result['wall_s']:.1f} s", highlight=False)


class RichReporter(LogReporter):
    """A live bar with loss, accuracy and images/s, updated at log points only (no extra syncs)."""

    def start(self, phase: str, total: int, done: int) -> None:
        self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("loss {task.fields[loss]:.4f}  acc {task.fields[acc]:.3f}  "
                                       "{task.fields[ips]:.0f} img/s"),
                            TimeElapsedColumn(), TimeRemainingColumn(), console=self.console, transient=True)
        self.bar.start()
        self.task = self.bar.add_task(phase, total=total, completed=done, loss=0.0, acc=0.0, ips=0.0)

    def progress(self, step: int, stats: dict[str, float]) -> None:
        self.bar.update(self.task, completed=step, **stats)

    def finish(self, result: dict[str, Any]) -> None:
        self.close()
        super().finish(result)

    def close(self) -> None:
        """Also called when training stops early (Ctrl-C, divergence) so the terminal is left clean."""
        if getattr(self, "bar", None) is not None:
            self.bar.stop()
            self.bar = None


@contextmanager
def reporting(console: Console, quiet: bool):
    """A reporter for one command; Ctrl-C becomes the documented line and exit 130, the bar is closed."""
    rep = LogReporter(console) if quiet or not console.is_terminal else RichReporter(console)
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
                      _pct(r.get("val_acc")), _pct(r.get("test_acc")), f"{r.get('wall_s', 0):.1f} s")
    return table
