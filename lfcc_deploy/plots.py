"""The run's pictures: training curves, the bench's accuracy-vs-latency trade-off, the methods compared.

Each is drawn from the JSON the run already wrote, so a plot can always be redrawn and never holds a number
the files lack. Axes start from a floor a reader can trust (whole points of accuracy, not a 0.3-point zoom),
and labels sit in legends or beside bars, never on top of each other.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from .rundir import atomic_write

PHASE_TITLES = {"teacher": "teacher", "reference": "CE-only student", "student": "distilled student"}


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path: Path, dpi: int = 110) -> Path:
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight"))
    _pyplot().close(fig)
    return path


def accuracy_floor(percentages: list[float], step: float = 5.0) -> float:
    """A round floor at least `step` points under the lowest value: differences keep their true size."""
    return max(0.0, step * math.floor((min(percentages) - step) / step))


def plot_curves(run_dir: Path) -> Path | None:
    """One loss panel per phase (total and its parts, which differ per method), then validation accuracy."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return None
    rows = [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]
    phases = list(dict.fromkeys(r["phase"] for r in rows))
    if not phases:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(phases) + 1, figsize=(4.2 * (len(phases) + 1), 3.8))
    for ax, phase in zip(axes, phases):
        pr = [r for r in rows if r["phase"] == phase]
        epochs = [r["epoch"] for r in pr]
        ax.plot(epochs, [r["train_loss"] for r in pr], marker=".", color="black", label="total")
        parts = sorted({k for r in pr for k in r if k.startswith("loss_")})
        for part in parts if len(parts) > 1 else []:  # a single part is the total itself
            ax.plot(epochs, [r.get(part) for r in pr], marker=".", linestyle="--", label=part.removeprefix("loss_"))
        ax.set(xlabel="epoch", ylabel="training loss", title=f"{PHASE_TITLES.get(phase, phase)} loss")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    acc = axes[-1]
    for phase in phases:
        pr = [r for r in rows if r["phase"] == phase]
        acc.plot([r["epoch"] for r in pr], [100 * r["val_acc"] for r in pr], marker=".",
                 label=PHASE_TITLES.get(phase, phase))
    acc.set(xlabel="epoch", ylabel="validation accuracy (%)", title="validation accuracy")
    acc.grid(alpha=0.3)
    acc.legend(fontsize=8)
    from matplotlib.ticker import MaxNLocator
    last = max(r["epoch"] for r in rows)
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole
        ax.set_xlim(0.5, last + 0.5)
    return _save(fig, Path(run_dir) / "curves.png")


def plot_report(report: dict[str, Any], path: Path) -> Path | None:
    """Accuracy against latency, one panel per batch size: a dot at p50, a bar from p10 to p90."""
    ok = [r for r in report["rows"] if r["status"] == "ok"]
    if not ok:
        return None
    plt = _pyplot()
    from matplotlib import ticker
    batches = sorted({r["batch"] for r in ok})
    series = sorted({(r["model"], r["backend"], r["precision"]) for r in ok})
    colors = {s: plt.get_cmap("tab10")(i % 10) for i, s in enumerate(series)}
    fig, axes = plt.subplots(1, len(batches), figsize=(4.6 * len(batches), 4.4), sharey=True, squeeze=False)
    for ax, batch in zip(axes[0], batches):
        for r in (r for r in ok if r["batch"] == batch):
            lat, key = r["latency"], (r["model"], r["backend"], r["precision"])
            p10 = lat.get("p10_ms", lat["min_ms"])  # reports from before p10 was recorded: the minimum
            ax.errorbar(lat["p50_ms"], 100 * r["accuracy"], xerr=[[lat["p50_ms"] - p10], [lat["p90_ms"] - lat["p50_ms"]]],
                        fmt="o" if r["model"] == "student" else "s", color=colors[key], capsize=3, markersize=6,
                        label=" ".join(key))
        ax.set_xscale("log")
        lo, hi = ax.get_xlim()
        ax.xaxis.set_major_locator(ticker.LogLocator(subs=(1, 2, 5) if hi / lo < 300 else (1,)))  # labels apart
        ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())  # minor labels of a log axis run into each other
        ax.set(xlabel="latency, ms (dot p50, bar p10–p90; log scale)", title=f"batch {batch}")
        ax.grid(alpha=0.3, which="both")
    accs = [100 * r["accuracy"] for r in ok]
    axes[0][0].set_ylim(accuracy_floor(accs), min(100.0, max(accs) + 2.0) + 0.5)  # top points clear of the frame
    axes[0][0].set_ylabel(f"top-1 accuracy (%), {report.get('split', 'test')} split")
    handles = {h.get_label(): h for ax in axes[0] for h in ax.get_legend_handles_labels()[0]}
    fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=min(4, len(handles)), fontsize=8,
               bbox_to_anchor=(0.5, -0.02 - 0.045 * math.ceil(len(handles) / 4)))
    fig.suptitle(f"{report['recipe']}: accuracy vs latency on {report['config']['device']} ({report['config']['mode']})")
    return _save(fig, Path(path), dpi=120)


def plot_compare(table: dict[str, Any], path: Path) -> Path:
    """Accuracy per method (mean ± std over seeds, value on each bar) beside its training step time."""
    rows = table["rows"]
    plt = _pyplot()
    labels = [r["label"] for r in rows]
    fig, (ax, cost) = plt.subplots(1, 2, figsize=(2.2 * len(rows) + 4, 4.2),
                                   gridspec_kw=dict(width_ratios=[3, 2]))
    means, stds = [100 * r["acc_mean"] for r in rows], [100 * r["acc_std"] for r in rows]
    bars = ax.bar(labels, means, yerr=stds, capsize=4, color="#4c72b0")
    ax.bar_label(bars, labels=[f"{m:.2f}\n±{s:.2f}" for m, s in zip(means, stds)], label_type="center",
                 color="white", fontsize=8)  # inside the bar: clear of the error bars above it
    teacher_acc = table["teacher"].get(table["metric"])
    if teacher_acc is not None:
        ax.axhline(100 * teacher_acc, color="#c44e52", linestyle="--", label=f"teacher {100 * teacher_acc:.2f}")
        ax.legend(fontsize=8, loc="lower right")
    tops = means + ([100 * teacher_acc] if teacher_acc is not None else [])
    ax.set_ylim(accuracy_floor([m - s for m, s in zip(means, stds)]), min(100.0, max(tops) + 2.0))
    ax.set(ylabel=f"{table['metric'].replace('_', ' ')} (%)", title="student accuracy (mean ± std over seeds)")
    steps = [r["step_ms_bench"] for r in rows]
    cbars = cost.bar(labels, steps, color="#8c8c8c")
    cost.bar_label(cbars, labels=[f"{s:.1f} ms\n{r['step_rel']:.2f}×" for s, r in zip(steps, rows)], padding=2,
                   fontsize=8)
    cost.set_ylim(0, 1.25 * max(steps))
    cost.set(ylabel="training step (ms, median, interleaved)", title=f"cost: step time vs {table['step_reference']}")
    for a in (ax, cost):
        a.tick_params(axis="x", labelrotation=20 if len(rows) > 4 else 0)
        a.grid(alpha=0.3, axis="y")
    fig.suptitle(f"{table['recipe']}: methods compared on {table['data']}")
    return _save(fig, Path(path))
