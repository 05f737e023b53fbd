"""Progress reporters the training engine talks to (the `Reporter` protocol), for the CLI and the Python API.

A terminal gets a live bar; logs and CI get one line per epoch; a program that imports the library and
runs without a terminal gets `logging` records (logger "lfcc_deploy"), which it configures as it likes.
"""
from __future__ import annotations

import logging
import sys
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

log = logging.getLogger("lfcc_deploy")


def pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.2f} %"


def epoch_line(r: dict[str, Any]) -> str:
    return (f"{r['phase']:<9} epoch {r['epoch']:>3}  loss {r['train_loss']:.4f}  train {pct(r['train_acc'])}"
            f"  val {pct(r['val_acc'])}  {r['images_per_s']:.0f} img/s  {r['epoch_s']:.1f} s")


class LogReporter:
    """Logs and CI (stderr not a terminal): one line per epoch and per finished phase, nothing in between."""

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
        self.console.print(f"{result['phase']}: best val {pct(result['val_acc'])}, test {pct(result['test_acc'])}"
                           f" in {result['wall_s']:.1f} s", highlight=False)


class QuietReporter(LogReporter):
    """`--quiet`: notes and warnings only; the command still prints its results."""

    def start(self, phase: str, total: int, done: int) -> None:
        pass

    def epoch(self, record: dict[str, Any]) -> None:
        pass

    def finish(self, result: dict[str, Any]) -> None:
        pass


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


class _LogWriter:
    """A console-like sink for `logging`: the reporters' lines become INFO records."""

    is_terminal = False

    def print(self, text: str, **_: Any) -> None:
        log.info(text)


def default_say(text: str) -> None:
    """Progress lines of the Python API's export, bench and pipeline: stderr on a terminal, else `logging`."""
    if sys.stderr.isatty():
        print(text, file=sys.stderr)
    else:
        log.info(text)


def default_reporter() -> LogReporter:
    """What the Python API uses when given no reporter: a bar on a terminal, else `logging`."""
    console = Console(stderr=True)
    return RichReporter(console) if console.is_terminal and sys.stderr.isatty() else LogReporter(_LogWriter())
