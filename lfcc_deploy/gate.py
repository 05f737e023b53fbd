"""Gates: recipe thresholds turned into PASS/FAIL checks over a bench report (a pure function).

Every check names the row it looked at, the measured value and the limit. A threshold whose row the
report lacks is a FAIL, never a silent pass. Limits are inclusive: a value equal to its limit passes,
except `quantized_must_be_faster`, which needs a speedup strictly above 1.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from .bench.report import row_name
from .errors import BadInput
from .gate_config import GatesConfig, LatencyGate


def _check(gate: str, row: str, measured: float | None, limit: Any, passed: bool, note: str = "") -> dict[str, Any]:
    return dict(gate=gate, row=row, measured=measured, limit=limit, passed=bool(passed),
                status="PASS" if passed else "FAIL", note=note)


def _missing(gate: str, what: str, limit: Any) -> dict[str, Any]:
    return _check(gate, what, None, limit, False, "row missing from the report")


def gate_checks(report: dict[str, Any], gates: GatesConfig,
             regression: dict[str, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """All checks the thresholds ask for; `regression` maps row names to measured new/old p50 ratios."""
    ok = [r for r in report["rows"] if r["status"] == "ok"]
    students = [r for r in ok if r["model"] == "student"]
    # a backend that broke is a failure of the build, whatever the thresholds say; skipped rows
    # (a backend this machine lacks) are not, and gates that need them fail as missing rows
    checks: list[dict[str, Any]] = [_check("bench row failed", row_name(r), None, "status ok", False, r["reason"])
                                    for r in report["rows"] if r["status"] == "failed"]
    if gates.min_accuracy is not None:
        checks += [_check("min_accuracy", row_name(r), r["accuracy"], gates.min_accuracy,
                          r["accuracy"] >= gates.min_accuracy) for r in students] \
            or [_missing("min_accuracy", "any student row", gates.min_accuracy)]
    if gates.max_accuracy_drop is not None:
        checks += _accuracy_drops(ok, gates.max_accuracy_drop)
    if gates.min_speedup_vs_teacher is not None:
        checks += _teacher_speedups(ok, gates.min_speedup_vs_teacher)
    if gates.quantized_must_be_faster:
        checks += [_check("quantized_must_be_faster", row_name(r), r["speedup_vs_fp32"], "> 1",
                          r["speedup_vs_fp32"] is not None and r["speedup_vs_fp32"] > 1,
                          "" if r["speedup_vs_fp32"] is not None else "no fp32 row to compare with")
                   for r in ok if r["precision"] != "fp32"] \
            or [_missing("quantized_must_be_faster", "any int8 or fp16 row", "> 1")]
    if gates.max_model_mb is not None:
        checks += [_check("max_model_mb", row_name(r), round(r["size_bytes"] / 1e6, 3), gates.max_model_mb,
                          r["size_bytes"] / 1e6 <= gates.max_model_mb) for r in students] \
            or [_missing("max_model_mb", "any student row", gates.max_model_mb)]
    for g in gates.latency:
        checks += _latency(ok, g, report.get("config", {}).get("threads"))
    if gates.max_regression is not None:
        checks += _regressions(students, gates.max_regression, regression)
    return checks


def _accuracy_drops(ok: list[dict], limit: float) -> list[dict]:
    out = []
    for r in ok:
        ref = next((t for t in ok if t["model"] == r["model"] and t["backend"] == "torch"
                    and t["precision"] == "fp32"), None)
        if ref is None:
            out.append(_missing("max_accuracy_drop", f"{r['model']} torch fp32 (reference for {row_name(r)})", limit))
        else:
            drop = round(ref["accuracy"] - r["accuracy"], 6)
            out.append(_check("max_accuracy_drop", row_name(r), drop, limit, drop <= limit))
    return out


def _teacher_speedups(ok: list[dict], limit: float) -> list[dict]:
    """Every (backend, precision) measured at the largest batch must have both models and the speedup."""
    if not ok:
        return [_missing("min_speedup_vs_teacher", "student and teacher rows of one backend", limit)]
    largest = max(r["batch"] for r in ok)
    at = {(r["model"], r["backend"], r["precision"], r["device"]): r for r in ok if r["batch"] == largest}
    out = []
    for backend, precision, device in sorted({k[1:] for k in at}):
        s, t = at.get(("student", backend, precision, device)), at.get(("teacher", backend, precision, device))
        if s is None or t is None:
            missing = "student" if s is None else "teacher"
            out.append(_missing("min_speedup_vs_teacher", f"{missing} {backend} {precision} {device} b{largest}", limit))
        else:
            out.append(_check("min_speedup_vs_teacher", row_name(s), s["speedup_vs_teacher"], limit,
                              s["speedup_vs_teacher"] >= limit))
    return out


def _latency(ok: list[dict], g: LatencyGate, bench_threads: int | None) -> list[dict]:
    want = (g.model, g.backend, g.precision, g.device, g.batch)
    row = next((r for r in ok if (r["model"], r["backend"], r["precision"], r["device"], r["batch"]) == want), None)
    label = f"{g.model} {g.backend} {g.precision} {g.device} b{g.batch}"
    other_threads = g.cpu_threads is not None and bench_threads != g.cpu_threads
    out = []
    for key, limit in (("p50_ms", g.max_p50_ms), ("p99_ms", g.max_p99_ms)):
        if limit is None:
            continue
        if row is None:
            out.append(_missing(f"latency max_{key}", label, limit))
        elif other_threads:
            out.append(_check(f"latency max_{key}", label, row["latency"][key], limit, False,
                              f"benchmarked at threads {bench_threads}, the budget is for threads {g.threads} "
                              f"(bench --threads {g.threads})"))
        else:
            out.append(_check(f"latency max_{key}", label, row["latency"][key], limit, row["latency"][key] <= limit))
    return out


def _regressions(students: list[dict], limit: float, measured: dict[str, dict] | None) -> list[dict]:
    if measured is None:
        return [dict(_check("max_regression", "all student rows", None, limit, True,
                            "no --baseline given: nothing was compared"), status="SKIP")]
    if not students:
        return [_missing("max_regression", "any student row", limit)]
    out = []
    for r in students:
        m = measured.get(row_name(r))
        if m is None:
            out.append(_missing("max_regression", row_name(r) + " in the baseline", limit))
        elif m.get("missing"):  # an artifact of this run or of the baseline could not be loaded
            out.append(_check("max_regression", row_name(r), None, limit, False, m["missing"]))
        else:
            reg = round(m["ratio"] - 1, 4)
            out.append(_check("max_regression", row_name(r), reg, limit, reg <= limit, m.get("note", "")))
    return out


def run_gate(run_dir: str | Path, *, recipe: str | Path | None = None, baseline: str | Path | None = None,
         overrides: list[str] | None = None, seconds: float = 3.0, thresholds: GatesConfig | None = None,
         say: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Checks for RUN_DIR/report.json against `thresholds`, else `[gates]` of `recipe`, else of the
    run's own recipe; writes RUN_DIR/gate.json before returning. `passed` is False when any failed."""
    from .bench.regression import measure_regressions
    from .bench.report import load_report
    from .recipe import load_recipe
    from .rundir import RECIPE_FILE, write_json
    run_dir = Path(run_dir)
    (run_dir / "gate.json").unlink(missing_ok=True)  # never leave an earlier verdict behind a failed gate
    if baseline is not None and not Path(baseline).exists():
        raise BadInput("baseline not found", file=str(baseline), hint="give a run directory or a report.json")
    report = load_report(run_dir)
    if thresholds is None:
        thresholds = load_recipe(recipe or run_dir / RECIPE_FILE, overrides or []).gates
    regression, how = None, None
    if baseline is not None and thresholds.max_regression is not None:
        regression, how = measure_regressions(report, Path(baseline), seconds, say)
    checks = gate_checks(report, thresholds, regression)
    if baseline is not None and thresholds.max_regression is None:
        checks.append(dict(_check("max_regression", "all student rows", None, None, True,
                                  "--baseline given but [gates] max_regression is not set: not compared"),
                           status="SKIP"))
    result = dict(version=1, run_dir=str(run_dir), passed=all(c["passed"] for c in checks), checks=checks,
                  gates=thresholds.model_dump(), baseline=str(baseline) if baseline else None, regression_mode=how)
    write_json(run_dir / "gate.json", result)
    return result
