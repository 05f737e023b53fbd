"""The bench report: derived ratios, report.json (versioned), report.md and report.png (drawn in ..plots).

report.json, version 1: {schema, version, created, run_dir, recipe, split, images, config,
environment, rows[]}; a row is keyed by (model, backend, precision, device, batch, mode) and holds
status, measured_at (a bench adds to the report: rows it did not measure stay), timed (what the latency
covers), reason, latency {iters, mean_ms, std_ms, cov, min_ms, p10_ms, p50_ms, p90_ms, p95_ms, p99_ms,
max_ms}, throughput_ips, unstable, file, size_bytes, params, accuracy, for quantised rows
vs_fp32_interleaved {rounds, fp32_ms, ms}, and the derived speedup_vs_teacher, speedup_vs_fp32 (from the
interleaved timing when there is one: the INT8/fp16 speedup to quote), accuracy_change_vs_fp32 (None
where nothing compares).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Literal

from pydantic import BaseModel, ValidationError, model_validator

from ..errors import BadInput
from ..plots import plot_report
from ..rundir import read_json, write_json, write_text

REPORT_JSON, REPORT_MD, REPORT_PNG = "report.json", "report.md", "report.png"
SCHEMA = "lfcc-deploy/bench-report"
MODE_TIMES = {"compute": "model call with inputs already on the device",
              "e2e": "uint8 images on the host → preprocessing, copies, model → logits on the host"}


def row_key(r: dict[str, Any]) -> tuple:
    """What a row measured: one row per key in a report (reports before `mode` was recorded: compute)."""
    return (r["model"], r["backend"], r["precision"], r["device"], r["batch"], r.get("mode", "compute"))


def row_name(r: dict[str, Any]) -> str:
    """A row as people read it (gate checks and regression notes name rows this way)."""
    mode = r.get("mode", "compute")
    return f"{r['model']} {r['backend']} {r['precision']} {r['device']} b{r['batch']}" + \
        ("" if mode == "compute" else f" {mode}")


def _p50(r: dict[str, Any] | None) -> float | None:
    return r["latency"]["p50_ms"] if r and r["status"] == "ok" else None


def derive(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Teacher/student speedup (same backend, precision, batch) and quantised vs fp32 of the same backend."""
    index = {row_key(r): r for r in rows}
    for r in rows:
        r.update(speedup_vs_teacher=None, speedup_vs_fp32=None, accuracy_change_vs_fp32=None)
        if r["status"] != "ok":
            continue
        teacher = index.get(("teacher", *row_key(r)[1:]))
        if r["model"] == "student" and _p50(teacher):
            r["speedup_vs_teacher"] = round(_p50(teacher) / _p50(r), 3)
        fp32 = index.get((r["model"], r["backend"], "fp32", *row_key(r)[3:]))
        if r["precision"] != "fp32" and _p50(fp32):
            both = r.get("vs_fp32_interleaved")  # timed in turn with its fp32 row: immune to drift between rows
            r["speedup_vs_fp32"] = round(both["fp32_ms"] / both["ms"] if both else _p50(fp32) / _p50(r), 3)
            r["accuracy_change_vs_fp32"] = round(r["accuracy"] - fp32["accuracy"], 5)
    return rows


class _Latency(BaseModel):
    p50_ms: float
    p99_ms: float


class _Row(BaseModel):
    """The fields gates read; a hand-edited or damaged report is refused naming the field."""

    model: str
    backend: str
    precision: str
    device: str
    batch: int
    status: Literal["ok", "skipped", "failed"]
    reason: str = ""
    latency: _Latency | None = None
    accuracy: float | None = None
    size_bytes: int | None = None
    speedup_vs_teacher: float | None = None
    speedup_vs_fp32: float | None = None

    @model_validator(mode="after")
    def _measured(self):
        if self.status == "ok" and None in (self.latency, self.accuracy, self.size_bytes):
            raise ValueError("an ok row needs latency, accuracy and size_bytes")
        return self


class _Report(BaseModel):
    run_dir: str
    rows: list[_Row]


def load_report(path: Path) -> dict[str, Any]:
    """A report from a file or a run directory, refusing foreign, newer or damaged ones."""
    path = Path(path)
    path = path / REPORT_JSON if path.is_dir() else path
    if not path.is_file():
        raise BadInput("no bench report here", file=str(path), hint="run `lfcc-deploy bench RUN_DIR` first")
    report = read_json(path)
    if not isinstance(report, dict) or report.get("schema") != SCHEMA or report.get("version") != 1:
        raise BadInput("not an lfcc-deploy bench report (schema version 1)", file=str(path))
    try:
        checked = _Report.model_validate(report)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise BadInput(f"{where}: {first['msg']}", file=str(path), hint="re-run `lfcc-deploy bench`") from None
    rows = [dict(raw, **row.model_dump(exclude={"latency"}), latency=dict(raw["latency"], **row.latency.model_dump())
                 if row.latency else None) for raw, row in zip(report["rows"], checked.rows)]
    return dict(report, rows=rows)


def merge_rows(path: Path, rows: list[dict[str, Any]], say: Callable[[str], None]) -> list[dict[str, Any]]:
    """`rows` measured now, in place of the earlier report's rows with the same key; the earlier
    report's other rows are kept, so a partial bench (fewer models, backends or batches) adds to
    the report instead of replacing it. Each row keeps the time it was measured."""
    if not path.is_file():
        return rows
    try:
        old = load_report(path)
    except BadInput as err:
        say(f"{path.name}: the earlier report is unreadable ({err.message}); replaced whole")
        return rows
    new = {row_key(r): r for r in rows}
    merged = [new.pop(row_key(r), None) or dict(r, measured_at=r.get("measured_at", old.get("created")))
              for r in old["rows"]]
    merged += list(new.values())
    fresh = {row_key(r) for r in rows}
    replaced = [row_name(r) for r in old["rows"] if row_key(r) in fresh]
    kept = [row_name(r) for r in old["rows"] if row_key(r) not in fresh]
    say(f"{path.name}: {len(rows)} rows measured now, {len(replaced)} of them replacing earlier rows; "
        f"{len(kept)} earlier rows kept")
    for label, names in (("replaced", replaced), ("kept", kept)):
        if names:
            say(f"  {label}: " + ", ".join(names))
    return merged


def _fmt(x: float | None, spec: str, suffix: str = "") -> str:
    return "—" if x is None else f"{x:{spec}}{suffix}"


def report_markdown(report: dict[str, Any]) -> str:
    env = report["environment"]
    modes = sorted({r.get("mode", "compute") for r in report["rows"]})
    lines = [f"# Bench: {report['recipe']} ({report['run_dir']})", "",
             "; ".join(f"{m} mode — {MODE_TIMES[m]}" for m in modes)
             + f"; accuracy on {report['images']} {report['split']} images through each backend.", "",
             f"Device {report['config']['device']}: {env.get('gpu') or env.get('cpu')}, threads {env.get('threads')}, "
             f"torch {env['versions'].get('torch')}, onnxruntime {env['versions'].get('onnxruntime')}, "
             f"tensorrt {env['versions'].get('tensorrt')}", "",
             "| model | backend | precision | batch | p50 ms | p90 ms | p99 ms | CoV | img/s | accuracy | "
             "vs teacher | vs fp32 | Δacc vs fp32 | MB |",
             "|" + "---|" * 14]
    for r in report["rows"]:
        if r["status"] != "ok":
            continue
        lat = r["latency"]
        change = r["accuracy_change_vs_fp32"]
        mode = "" if r.get("mode", "compute") == "compute" else f" ({r['mode']})"
        lines.append(
            f"| {r['model']}{mode} | {r['backend']} | {r['precision']} | {r['batch']} | {lat['p50_ms']:.3f} | "
            f"{lat['p90_ms']:.3f} | {lat['p99_ms']:.3f} | {100 * lat['cov']:.1f} %{' ⚠' if r['unstable'] else ''} | "
            f"{r['throughput_ips']:.0f} | {100 * r['accuracy']:.2f} % | {_fmt(r['speedup_vs_teacher'], '.2f', '×')} | "
            f"{_fmt(r['speedup_vs_fp32'], '.2f', '×')} | {_fmt(None if change is None else 100 * change, '+.2f')} | "
            f"{r['size_bytes'] / 1e6:.2f} |")
    skipped = [r for r in report["rows"] if r["status"] != "ok"]
    if skipped:
        lines += ["", "Not measured:", ""]
        seen = set()
        for r in skipped:
            line = f"- {r['model']} {r['backend']} {r['precision']}: {r['status']} — {r['reason']}"
            if line not in seen:
                seen.add(line)
                lines.append(line)
    inter = [r["vs_fp32_interleaved"]["rounds"] for r in report["rows"] if r.get("vs_fp32_interleaved")]
    if inter:
        lines += ["", f"vs fp32: each quantised row timed in turn with its fp32 row ({min(inter)}–{max(inter)} "
                      "rounds, medians): the speedup to quote. The p50 columns come from separate timings."]
    if any(r["unstable"] for r in report["rows"] if r["status"] == "ok"):
        lines += ["", "⚠ CoV above 10 %: the machine was noisy during that row; re-run or use more --duration-s."]
    return "\n".join(lines) + "\n"


def write_report(run_dir: Path, report: dict[str, Any]) -> None:
    write_json(run_dir / REPORT_JSON, report)
    write_text(run_dir / REPORT_MD, report_markdown(report))
    plot_report(report, run_dir / REPORT_PNG)
