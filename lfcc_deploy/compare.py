"""`compare`: every method on the same teacher, student, data, schedule and seeds, side by side.

The teacher is trained once (or given) and reused by every row; each row × seed is its own,
resumable run directory, so an interrupted comparison picks up where it stopped.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import BadInput
from .losses import METHODS
from .plots import plot_compare
from .recipe import Recipe, apply_overrides, recipe_dict, validate_recipe
from .rundir import RECIPE_FILE, SUMMARY_FILE, file_sha256, read_json, write_json, write_text
from .steptime import method_steps
from .training import IGNORED_ON_RESUME, distill, refuse_changes, teacher_of_run, train_teacher

WEAK_TEACHER_MARGIN = 0.02


@dataclass
class Row:
    label: str
    method: str
    overrides: list[str] = field(default_factory=list)


def parse_variant(text: str) -> Row:
    """'LABEL=METHOD key=value …' -> Row; values are TOML literals like --set."""
    head, *overrides = text.split()
    label, sep, method = head.partition("=")
    if not sep or not label or not method:
        raise BadInput(f"--variant {text!r}: expected 'LABEL=METHOD key=value …'",
                       hint="e.g. --variant 'lfcc-g1=lfcc distill.lfcc.grids=[1]'")
    METHODS.get(method, key="--variant")
    if any("=" not in o for o in overrides):
        raise BadInput(f"--variant {text!r}: every override needs KEY=VALUE")
    return Row(label, method, overrides)


def row_recipe(base: Recipe, row: Row, seed: int, teacher: Path, file: str) -> Recipe:
    data = apply_overrides(recipe_dict(base), [f"distill.method='{row.method}'", f"distill.seed={seed}",
                                               "distill.ce_reference=false", f"teacher.checkpoint='{teacher}'",
                                               *row.overrides])
    return validate_recipe(data, f"{file} ({row.label})")


def _stats(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def shared_teacher(base: Recipe, file: str, out: Path, teacher_dir: str | None, device,
                   reporter) -> tuple[Path, dict[str, Any] | None, str]:
    """Train the teacher once into OUT/teacher, or take --teacher RUN_DIR.

    Returns (checkpoint, its summary entry or None, sha256 of its weights): without a summary, each
    row measures the teacher itself and `adopt_teacher` takes the first such record.
    """
    if teacher_dir:
        ckpt, known = teacher_of_run(teacher_dir)
    else:
        run_dir = out / "teacher"
        ckpt = (run_dir / "teacher.safetensors").resolve()
        summary = run_dir / SUMMARY_FILE
        if not summary.is_file():
            train_teacher(base, file=file, out=run_dir, resume=(run_dir / RECIPE_FILE).exists(), device=device,
                          reporter=reporter)
        known = read_json(summary).get("teacher") if summary.is_file() else None
    return ckpt, known, file_sha256(ckpt)


def adopt_teacher(teacher: dict[str, Any] | None, summary: dict[str, Any], teacher_sha256: str
                  ) -> dict[str, Any] | None:
    """The teacher record so far, else this row's measurement of it — never one of other weights."""
    if teacher is None and summary["teacher"].get("sha256") in (None, teacher_sha256):
        return summary["teacher"]
    return teacher


def check_same_teacher(summary: dict[str, Any], path: Path, teacher_sha256: str) -> None:
    """A finished row distilled from other weights than today's teacher must not join its table.

    Rows of methods that never read the teacher (CE) are valid under any teacher; rows written
    before digests were recorded cannot be checked and are taken as they are.
    """
    recorded = (summary.get("teacher") or {}).get("sha256")
    if METHODS.get(summary.get("method", "ce")).uses_teacher and recorded and recorded != teacher_sha256:
        raise BadInput(f"this row was distilled from another teacher (sha256 {recorded[:12]}…, "
                       f"the teacher now is {teacher_sha256[:12]}…)", file=str(path), key="--teacher",
                       hint="pass the teacher it was compared against, or another --out to start over")


def reuse_ignores(method: str) -> set[str]:
    """Keys whose change leaves a finished row valid: the teacher's path and training schedule (the
    sha256 of its weights is checked instead, so a teacher retrained longer keeps the finished CE rows)
    and the sections of methods the row does not run, so tuning LFCC keeps the finished KD rows."""
    return (IGNORED_ON_RESUME | {"teacher.checkpoint", "teacher.train"}
            | {f"distill.{m}" for m in METHODS.names() if m != method})


def finished_seed(recipe: Recipe, run_dir: Path, teacher_sha256: str) -> dict[str, Any] | None:
    """The summary of a finished seed that still belongs to this row (same teacher, same recipe), else None."""
    if not (run_dir / SUMMARY_FILE).is_file():
        return None
    summary = read_json(run_dir / SUMMARY_FILE)
    check_same_teacher(summary, run_dir / SUMMARY_FILE, teacher_sha256)
    refuse_changes(run_dir, recipe, reuse_ignores(recipe.distill.method),
                   hint=f"delete {run_dir} to train this seed again, or use another --out")
    return summary


def distil_row(recipe: Recipe, run_dir: Path, *, file: str, device, reporter, teacher: dict[str, Any] | None,
               teacher_sha256: str, note: str) -> dict[str, Any]:
    """One row's run directory: its summary when finished, else distilled now (resumed when started)."""
    summary = finished_seed(recipe, run_dir, teacher_sha256)
    if summary is not None:
        return summary
    if reporter:
        reporter.note(f"{note} -> {run_dir}")
    return distill(recipe, file=file, out=run_dir, resume=(run_dir / RECIPE_FILE).exists(), device=device,
                   reporter=reporter, teacher_result=teacher)


def compare(base: Recipe, *, file: str, methods: list[str], seeds: int, variants: list[str],
            teacher_dir: str | None = None, out: str | Path | None = None, device: str | None = None,
            reporter=None, step_rounds: int = 40) -> dict[str, Any]:
    for m in methods:
        METHODS.get(m, key="--methods")
    rows = [Row(m, m) for m in methods] + [parse_variant(v) for v in variants]
    if not rows:
        raise BadInput("nothing to compare", key="--methods", hint="e.g. --methods ce,kd,lfcc")
    if len({r.label for r in rows}) != len(rows):
        raise BadInput("two rows share a label", key="--variant", hint="give each variant its own LABEL")
    if seeds < 1:
        raise BadInput("--seeds must be >= 1", key="--seeds")
    out = Path(out) if out else Path("runs") / f"{base.name}-compare"
    for row in rows:  # validate every row's recipe before training anything
        row_recipe(base, row, 0, out / "teacher.safetensors", file)
    ckpt, teacher, teacher_sha256 = shared_teacher(base, file, out, teacher_dir, device, reporter)
    plan = {(row.label, seed): (row_recipe(base, row, seed, ckpt, file), out / row.label / f"seed{seed}")
            for row in rows for seed in range(seeds)}
    # every finished seed is checked first: a stale one anywhere stops the table before any student trains
    done = {key: finished_seed(recipe, run_dir, teacher_sha256) for key, (recipe, run_dir) in plan.items()}
    results = []
    for row in rows:
        runs = []
        for seed in range(seeds):
            recipe, run_dir = plan[row.label, seed]
            summary = done[row.label, seed] or distil_row(
                recipe, run_dir, file=file, device=device, reporter=reporter, teacher=teacher,
                teacher_sha256=teacher_sha256, note=f"compare: {row.label} seed {seed}")
            runs.append(summary["student"])
            teacher = adopt_teacher(teacher, summary, teacher_sha256)
        results.append(_row_result(row, runs))
    if reporter:
        reporter.note("compare: timing one training step of every row, interleaved on one batch")
    bench = method_steps({r.label: row_recipe(base, r, 0, ckpt, file) for r in rows}, ckpt, file=file,
                         device=device, rounds=step_rounds)
    for r in results:
        r["step_ms_bench"] = bench[r["label"]]
    table = _finish_table(base, dict(teacher or {}, sha256=teacher_sha256), results)
    write_outputs(out, table)
    return table


def _row_result(row: Row, runs: list[dict[str, Any]]) -> dict[str, Any]:
    key = "test_acc" if runs[0].get("test_acc") is not None else "val_acc"
    acc_mean, acc_std = _stats([r[key] for r in runs])
    return dict(label=row.label, method=row.method, overrides=row.overrides, seeds=len(runs), metric=key,
                acc_mean=acc_mean, acc_std=acc_std, accs=[r[key] for r in runs],
                val_mean=statistics.fmean(r["val_acc"] for r in runs),
                s_per_epoch=statistics.fmean(r["s_per_epoch"] for r in runs),
                step_ms=statistics.fmean(1000 * r["wall_s"] / r["steps"] for r in runs),
                params=runs[0]["params"], model=runs[0]["model"])


def _finish_table(base: Recipe, teacher: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
    ref = next((r for r in rows if r["method"] == "kd" and not r["overrides"]), rows[0])
    for r in rows:  # from the interleaved benchmark: immune to the machine's drift between runs
        r["step_rel"] = r["step_ms_bench"] / ref["step_ms_bench"]
    key = rows[0]["metric"]
    ce = next((r for r in rows if r["method"] == "ce" and not r["overrides"]), None)
    weak = ce is not None and teacher.get(key) is not None and teacher[key] - ce["acc_mean"] < WEAK_TEACHER_MARGIN
    return dict(recipe=base.name, data=base.data.name, student=base.student.model, teacher=teacher,
                step_reference=ref["label"], metric=key, weak_teacher=weak, rows=rows)


def compare_markdown(table: dict[str, Any]) -> str:
    t, key = table["teacher"], table["metric"]
    split = "test" if key == "test_acc" else "validation"
    measured = (f"{split} accuracy {100 * t[key]:.2f} %, trained in {t.get('wall_s', 0):.0f} s (not included below)"
                if t.get(key) is not None else "not measured (its run directory holds no summary)")
    lines = [f"# {table['recipe']}: methods compared on {table['data']}", "",
             f"Teacher {t.get('model', '')} (sha256 {t['sha256'][:12]}): {measured}. Student {table['student']}.",
             ""]
    if table["weak_teacher"]:
        lines += [f"> **Warning:** the teacher is less than {100 * WEAK_TEACHER_MARGIN:.0f} points above the CE "
                  "student: distillation has little to transfer. Train the teacher longer or pick a stronger one.",
                  ""]
    lines += [f"| row | method | {split} acc (mean ± std) | val acc | seeds | s/epoch | step ms | step time vs "
              f"{table['step_reference']} |", "|---|---|---|---|---|---|---|---|"]
    for r in table["rows"]:
        lines.append(f"| {r['label']} | {r['method']} {' '.join(r['overrides'])} | {100 * r['acc_mean']:.2f} ± "
                     f"{100 * r['acc_std']:.2f} % | {100 * r['val_mean']:.2f} % | {r['seeds']} | "
                     f"{r['s_per_epoch']:.1f} | {r['step_ms_bench']:.1f} | {r['step_rel']:.2f}× |")
    lines += ["", "s/epoch: mean training time per epoch of the runs above. Step ms: median of one training "
              "step per row, all rows interleaved on the same batch (robust to the machine's drift)."]
    return "\n".join(lines) + "\n"


def write_outputs(out: Path, table: dict[str, Any]) -> None:
    write_json(out / "compare.json", table)
    write_text(out / "compare.md", compare_markdown(table))
    plot_compare(table, out / "compare.png")
