"""`students`: measure candidate students on the target, mark the budget, optionally distil the best."""
from __future__ import annotations

from typing import Optional

import typer
from rich.table import Table

from . import app
from .common import DEVICE, JSON, QUIET, SET, TEACHER, err, out, print_json, recipe_arg, say


@app.command()
def students(recipe: str = typer.Argument(..., help="Recipe path or name."),
             budget_ms: Optional[float] = typer.Option(None, "--budget-ms", help="Latency budget in ms."),
             percentile: str = typer.Option("p50", "--percentile", help="p50 | p99: what the budget limits."),
             backend: str = typer.Option("onnxruntime", "--backend", help="onnxruntime | tensorrt | torch | …"),
             precision: str = typer.Option("fp32", "--precision", help="fp32 | int8 | fp16"),
             device: Optional[str] = DEVICE,
             batch: int = typer.Option(1, "--batch", help="Batch size the budget is for."),
             candidates: Optional[str] = typer.Option(None, "--candidates", help="Extra timm names, comma-separated."),
             only: bool = typer.Option(False, "--only", help="Measure only the --candidates names."),
             families: Optional[str] = typer.Option(None, "--families", help="cnn,hybrid,vit,mlp (default: all)."),
             distill: int = typer.Option(0, "--distill", help="Distil the K most promising that fit."),
             teacher: Optional[str] = TEACHER,
             out_dir: Optional[str] = typer.Option(None, "--out", help="Default runs/<recipe name>-students."),
             duration_s: float = typer.Option(1.0, "--duration-s", min=0.01, help="Timed seconds per candidate."),
             rounds: int = typer.Option(5, "--rounds", help="Interleaved rounds the duration is split into."),
             threads: Optional[int] = typer.Option(None, "--threads", min=1, help="CPU threads (default: all)."),
             set_: Optional[list[str]] = SET, quiet: bool = QUIET,
             as_json: bool = JSON) -> None:
    """Build, export and time candidate students before training; write students.md/.json/.png and a recipe."""
    from ..bench.timing import TimingConfig
    from ..students import StudentsConfig, find_students
    from .bench import _csv
    from .progress import reporting
    rec, file = recipe_arg(recipe, set_)
    cfg = StudentsConfig(budget_ms=budget_ms, percentile=percentile, backend=backend, precision=precision,
                         device=device, batch=batch, candidates=_csv(candidates) or [], only=only,
                         families=_csv(families), distill=distill, rounds=rounds, threads=threads,
                         timing=TimingConfig(warmup_ms=100, duration_s=duration_s, min_iters=10))
    with reporting(err, quiet) as rep:
        result = find_students(rec, cfg, file=file, out=out_dir, teacher_dir=teacher, reporter=rep, say=say(quiet))
    if as_json:
        return print_json(result)
    out.print(students_table(result))
    if any("deployed" in r for r in result["rows"]):
        out.print(distilled_table(result))
    where = result["out"]
    chosen = f"chosen {result['chosen']}: {result['written_recipe']}" if result["chosen"] else "no student chosen"
    out.print(f"{chosen}; wrote {where}/students.md, students.json, students.png "
              f"({result['seconds']['total']:.0f} s)", highlight=False)


def students_table(result: dict) -> Table:
    from ..students.report import status_text
    cfg = result["config"]
    budget = f", budget {cfg['budget_ms']} ms" if cfg["budget_ms"] else ""
    t = Table(title=f"{result['recipe']}: {cfg['backend']} {cfg['precision']} {cfg['device']} batch {cfg['batch']}"
                    f"{budget}")
    for col in ("candidate", "family", "params M", "MACs M", f"{cfg['percentile']} ms", "band ms", "CoV", "verdict"):
        t.add_column(col, overflow="fold")
    for r in result["rows"]:
        ok = r["status"] == "ok"
        t.add_row(r["label"], r["family"], f"{r['params'] / 1e6:.2f}" if r.get("params") else "—",
                  f"{r['macs'] / 1e6:.1f}" if r.get("macs") else "—", f"{r['ms']:.3f}" if ok else "—",
                  f"{r['band'][0]:.3f}–{r['band'][1]:.3f}" if ok else "—",
                  f"{100 * r['latency']['cov']:.0f}%" if ok else "—", status_text(r))
    return t


def distilled_table(result: dict) -> Table:
    p = result["config"]["percentile"]
    t = Table(title="distilled students, exported and timed again")
    for col in ("student", "val acc", "test acc", f"deployed {p} ms", "verdict", "train s"):
        t.add_column(col, overflow="fold")
    for r in (r for r in result["rows"] if "deployed" in r):
        d = r["deployed"]
        ok = d["status"] == "ok"
        verdict = d["verdict"] + (" ★" if d.get("on_front") else "") if ok else f"{d['stage']} failed: {d['reason']}"
        t.add_row(r["label"], f"{100 * r['val_acc']:.2f} %",
                  f"{100 * r['test_acc']:.2f} %" if r.get("test_acc") is not None else "—",
                  f"{d['ms']:.3f}" if ok else "—",
                  verdict,
                  str(r["train_s"]))
    return t
