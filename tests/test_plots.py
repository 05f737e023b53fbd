"""Plots a person would rather look at: every batch size, an honest accuracy floor, one panel per phase."""
from __future__ import annotations

import json

import pytest

from lfcc_deploy.plots import accuracy_floor, plot_curves, plot_report


@pytest.mark.parametrize("values, floor", [([99.16, 98.8], 90.0), ([68.9, 70.1], 60.0), ([3.0], 0.0),
                                           ([95.0], 90.0)])
def test_accuracy_floor_is_round_and_at_least_five_points_below(values, floor):
    assert accuracy_floor(values) == floor


def _axes_of(monkeypatch):
    """Capture the figure each plot saves (its panels) instead of inspecting pixels."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.figure
    seen = []
    original = matplotlib.figure.Figure.savefig
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig",
                        lambda fig, *a, **k: (seen.append(fig), original(fig, *a, **k))[1])
    return seen


def test_report_plot_has_a_panel_per_batch_with_p10_p90_bars(tmp_path, monkeypatch):
    seen = _axes_of(monkeypatch)
    rows = [dict(model="student", backend="onnxruntime", precision=p, device="cpu", batch=b, status="ok",
                 accuracy=0.99, latency=dict(p10_ms=b * 0.9, p50_ms=b * 1.0, p90_ms=b * 1.4, min_ms=b * 0.8))
            for p in ("fp32", "int8") for b in (1, 8, 32)]
    plot_report(dict(recipe="r", split="test", config=dict(device="cpu", mode="compute"), rows=rows),
                tmp_path / "report.png")
    assert (tmp_path / "report.png").stat().st_size > 0
    panels = [ax for ax in seen[0].axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == ["batch 1", "batch 8", "batch 32"]
    assert panels[0].get_ylim()[0] == 90.0  # not a zoom onto 0.3 points


def test_curves_have_a_loss_panel_per_phase(tmp_path, monkeypatch):
    seen = _axes_of(monkeypatch)
    recs = [dict(phase="teacher", epoch=1, step=1, train_loss=2.0, val_acc=0.5),
            dict(phase="student", epoch=1, step=1, train_loss=3.0, loss_ce=1.0, loss_kd=2.0, val_acc=0.4)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    plot_curves(tmp_path)
    titles = [ax.get_title() for ax in seen[0].axes]
    assert titles == ["teacher loss", "distilled student loss", "validation accuracy"]
    student = seen[0].axes[1]
    assert [line.get_label() for line in student.get_lines()] == ["total", "ce", "kd"]
