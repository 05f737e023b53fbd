"""Budget, noise band, Pareto front and the choice of students: pure functions over measured rows.

A row is a dict; the functions here read `status`, `ms` (the chosen percentile), `band`,
`verdict`, `macs` and, once distilled, `val_acc`, and never measure anything themselves.
"""
from __future__ import annotations

import statistics
from typing import Any, Sequence

# Drift between two runs on a shared machine that one run's rounds cannot show: no band is
# narrower than ±5 % of the median, so a candidate this close to the budget is called borderline.
BAND_FLOOR = 0.05
VERDICTS = ("fit", "borderline", "over")


def noise_band(round_ms: Sequence[float], floor: float = BAND_FLOOR) -> tuple[float, float]:
    """(low, high) ms: the spread of one percentile across interleaved rounds, at least ±floor of its median."""
    if not round_ms:
        raise ValueError("noise_band() needs at least one round")
    mid = statistics.median(round_ms)
    return min(min(round_ms), mid * (1 - floor)), max(max(round_ms), mid * (1 + floor))


def verdict(ms: float, band: Sequence[float], budget_ms: float | None) -> str | None:
    """fit / borderline / over; borderline when the budget lies inside the measured band."""
    if budget_ms is None:
        return None
    low, high = band
    if low <= budget_ms <= high:
        return "borderline"
    return "fit" if ms <= budget_ms else "over"


def pareto(points: Sequence[tuple[float, float]]) -> list[bool]:
    """Which (latency, value) points no other point beats: as fast or faster *and* as high or higher,
    better in one. Latency is minimised, value (accuracy, or MACs as capacity) maximised."""
    def dominated(i: int) -> bool:
        x, y = points[i]
        return any(a <= x and b >= y and (a < x or b > y) for j, (a, b) in enumerate(points) if j != i)
    return [not dominated(i) for i in range(len(points))]


def promising(rows: Sequence[dict[str, Any]], k: int) -> list[dict[str, Any]]:
    """The K candidates to distil: those that fit, most MACs first (capacity the budget can afford),
    then borderline ones when fewer than K fit."""
    ranked: list[dict[str, Any]] = []
    for wanted in ("fit", "borderline"):
        ranked += sorted((r for r in rows if r["status"] == "ok" and r["verdict"] == wanted),
                         key=lambda r: -r["macs"])
    return ranked[:k]


def choose(rows: Sequence[dict[str, Any]], distilled: bool) -> dict[str, Any] | None:
    """The student for the written recipe.

    Distilled: the best validation accuracy among those whose deployed latency fits (ties: faster),
    borderline ones only when none fits; test accuracy is reported, never used to choose.
    Not distilled: the first of `promising`.
    """
    if not distilled:
        first = promising(rows, 1)
        return first[0] if first else None
    trained = [r for r in rows if r.get("deployed", {}).get("status") == "ok"]
    for wanted in ("fit", "borderline"):
        pool = [r for r in trained if r["deployed"]["verdict"] == wanted]
        if pool:
            return max(pool, key=lambda r: (r["val_acc"], -r["deployed"]["ms"]))
    return None
