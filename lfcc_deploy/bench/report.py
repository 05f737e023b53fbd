"""The bench report: derived ratios, report.json (versioned), report.md and report.png (drawn in ..plots).

report.json, version 1: {schema, version, created, run_dir, recipe, split, images, config,
environment, rows[]}; a row is keyed by (model, backend, precision, device, batch) and holds status,
reason, latency {iters, mean_ms, std_ms, cov, min_ms, p10_ms, p50_ms, p90_ms, p95_ms, p99_ms, max_ms},
throughput_ips, unstable, file, size_bytes, params, accuracy, for quantised rows vs_fp32_interleaved
{rounds, fp32_ms, ms}, and the derived speedup_vs_teacher, speedup_vs_fp32 (from the interleaved timing
when there is one: the INT8/fp16 speedup to quote), accuracy_change_vs_fp32 (None where nothing compares).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ValidationError, model_validator

from ..errors import BadInput
from ..plots import plot_report
from ..rundir import read_json, write_json, write_text

REPORT_JSON, REPORT_MD, REPORT_PNG = "report.json", "report.md", "report.png"
SCHEMA = "lfcc-deploy/bench-report"


def row_key(r: dict[str, Any]) -> tuple:
    return (r["model"], r["backend"], r["precision"], r["device"], r["batch"])


def row_name(r: dict[str, Any]) -> str:
    """A row as people read it (gate checks and regression notes name rows this way)."""
    return f"{r['model']} {r['backend']} {r['precision']} {r['device']} b{r['batch']}"


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
        fp32 = index.get((r["model"], r["backend"], "fp32", r["device"], r["batch"]))
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


def _fmt(x: float | None, spec: str, suffix: str = "") -> str:
    return "—" if x is None else f"{x:{spec}}{suffix}"


def report_markdown(report: dict[str, Any]) -> str:
    env = report["environment"]
    lines = [f"# Bench: {report['recipe']} ({report['run_dir']})", "",
             f"{report['config']['mode']} mode — "
             + ("model call with inputs already on the device" if report["config"]["mode"] == "compute"
                else "uint8 images on the host → preprocessing, copies, model → logits on the host")
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
        lines.append(
            f"| {r['model']} | {r['backend']} | {r['precision']} | {r['batch']} | {lat['p50_ms']:.3f} | "
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
