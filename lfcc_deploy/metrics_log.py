"""Per-epoch training logs in the forms users' tools read, derived from the records in metrics.jsonl.

metrics.jsonl stays the source of truth (it survives resume); metrics.csv is rewritten from it after
every epoch (spreadsheets, pandas, timm's summary.csv habit), and with `[logging] tensorboard = true`
each epoch also becomes TensorBoard scalars under RUN_DIR/tensorboard/<phase>/.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from .errors import MissingDependency
from .rundir import write_text

CSV_FILE, TENSORBOARD_DIR = "metrics.csv", "tensorboard"
FIRST_COLUMNS = ("phase", "epoch", "step", "lr", "train_loss", "train_acc", "val_acc", "epoch_s", "images_per_s")


def write_csv(run_dir: Path, records: list[dict[str, Any]]) -> None:
    """One row per epoch of every phase; loss parts a phase lacks are left empty."""
    extra = sorted({k for r in records for k in r} - set(FIRST_COLUMNS))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=[*FIRST_COLUMNS, *extra], restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    write_text(Path(run_dir) / CSV_FILE, buf.getvalue())


def require_tensorboard():
    """torch's SummaryWriter, or MissingDependency before any training starts."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise MissingDependency("[logging] tensorboard = true needs the tensorboard package",
                                key="logging.tensorboard",
                                hint='pip install "lfcc-deploy[tensorboard]", or set tensorboard = false') from None
    return SummaryWriter


def _tag(key: str) -> str:
    if key == "train_loss" or key.startswith("loss_"):
        return f"loss/{key}"
    return f"accuracy/{key}" if key.endswith("_acc") else f"train/{key}"


class TensorBoardLog:
    """Scalars per epoch at the global step: loss parts, accuracies, lr, images/s; one folder per phase."""

    def __init__(self, run_dir: Path, phase: str):
        self.writer = require_tensorboard()(log_dir=str(Path(run_dir) / TENSORBOARD_DIR / phase))

    def epoch(self, record: dict[str, Any]) -> None:
        for key, value in record.items():
            if isinstance(value, (int, float)) and key not in ("epoch", "step"):
                self.writer.add_scalar(_tag(key), value, record["step"])
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
