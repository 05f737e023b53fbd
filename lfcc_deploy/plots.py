"""Training curves from metrics.jsonl, one line per phase (teacher, CE reference, student)."""
from __future__ import annotations

import json
from pathlib import Path

from .rundir import atomic_write


def plot_curves(run_dir: Path) -> Path | None:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for phase in dict.fromkeys(r["phase"] for r in rows):
        pr = [r for r in rows if r["phase"] == phase]
        epochs = [r["epoch"] for r in pr]
        ax_loss.plot(epochs, [r["train_loss"] for r in pr], marker=".", label=phase)
        ax_acc.plot(epochs, [100 * r["val_acc"] for r in pr], marker=".", label=phase)
    ax_loss.set(xlabel="epoch", ylabel="training loss", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="validation accuracy (%)", title="validation accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    out = Path(run_dir) / "curves.png"
    atomic_write(out, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
    return out
