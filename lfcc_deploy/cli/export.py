"""`export` and `predict`."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from . import app
from .common import QUIET, RUN_RECIPE, find_run, out, run_arg, say
from .progress import pct


@app.command()
def export(run_dir: Optional[str] = run_arg(" with student.safetensors"), recipe: Optional[str] = RUN_RECIPE,
           onnx: bool = typer.Option(True, "--onnx/--no-onnx", help="Export fp32 ONNX (else reuse export/*.onnx)."),
           int8: bool = typer.Option(False, "--int8", help="INT8: TensorRT with --trt, else onnxruntime static."),
           fp16: bool = typer.Option(False, "--fp16", help="FP16: TensorRT with --trt, else an fp16 ONNX."),
           trt: bool = typer.Option(False, "--trt", help="Build a TensorRT engine (needs tensorrt and a GPU)."),
           opset: Optional[int] = typer.Option(None, "--opset", help="ONNX opset (default [export] opset)."),
           dynamic: Optional[bool] = typer.Option(None, "--dynamic-batch/--static-batch",
                                                  help="Batch axis dynamic (default) or export.static_batch."),
           simplify: Optional[bool] = typer.Option(None, "--simplify/--no-simplify", help="onnxslim the graph."),
           model: str = typer.Option("student", "--model", help="student | teacher"),
           set_: Optional[list[str]] = typer.Option(None, "--set", metavar="KEY=VALUE",
                                                    help="Override an [export] key, value as a TOML literal, "
                                                         "e.g. --set export.calibration_images=1024"),
           quiet: bool = QUIET) -> None:
    """Export to ONNX / INT8 / fp16 / TensorRT into RUN_DIR/export/, checked against torch on the test split."""
    from ..export.run import export_run, raise_if_failed
    run_dir = find_run(run_dir, recipe)
    overrides = list(set_ or [])
    overrides += [f"export.opset={opset}"] if opset is not None else []
    overrides += [f"export.dynamic_batch={str(dynamic).lower()}"] if dynamic is not None else []
    overrides += [f"export.simplify={str(simplify).lower()}"] if simplify is not None else []
    summary = export_run(run_dir, model=model, onnx=onnx, int8=int8, fp16=fp16, trt=trt, overrides=overrides,
                         say=say(quiet), check=False)
    out.print(parity_table(summary["this"], summary["written"], model))
    for line in export_notes(summary):
        out.print(line, highlight=False)
    out.print(f"wrote {Path(run_dir) / 'export'}/ (parity.json, export.json)", highlight=False)
    raise_if_failed(summary)


def parity_table(parity: dict, written: list[dict], model: str) -> Table:
    from ..export.formats import by_name
    files = {by_name(r["format"]).key: r for r in written}
    table = Table(title=f"{model} vs torch fp32 on {next(iter(parity.values()))['images']} test images")
    for col in ("precision", "file", "MB", "max|Δ|", "agree", "acc", "Δacc", "status"):
        table.add_column(col)
    for name, e in parity.items():
        r = files.get(name, {})
        measured = "accuracy" in e  # an fp32 entry where every exporter crashed has no numbers
        table.add_row(name, Path(r["path"]).name if r else "—", f"{r['size_bytes'] / 1e6:.2f}" if r else "—",
                      f"{e['max_abs_logit']:.1e}" if measured else "—", pct(e.get("top1_agreement")),
                      pct(e.get("accuracy")), f"{0.0 - 100 * e['accuracy_drop']:+.2f}" if measured else "—",
                      "ok" if e["passed"] else "FAIL")
    return table


def export_notes(summary: dict) -> list[str]:
    lines = [f"{Path(r['path']).name}: exporter {r['exporter']}" + "".join(f"; {n}" for n in r["notes"])
             for r in summary["written"]]
    return lines + [f"{name}: {', '.join(e['broken'])}" for name, e in summary["this"].items() if e["broken"]]


@app.command()
def predict(artifact: str = typer.Argument(..., help="An exported .onnx or .engine file."),
            images: list[str] = typer.Argument(..., help="Image files."),
            top_k: int = typer.Option(5, "--top-k", min=1, help="Classes shown per image."),
            as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text.")) -> None:
    """Classify image files with an exported model, preprocessing exactly as recorded in it."""
    from ..predict import predict_files as run
    results = run(artifact, images, top_k=top_k)
    if as_json:
        print(json.dumps(results, indent=2))
        return
    for r in results:
        best = ", ".join(f"{t['label']} {100 * t['prob']:.1f} %" for t in r["top"])
        out.print(f"{r['image']}: {best}", highlight=False)
