"""`lfcc-deploy export`: every requested format from one run directory, each checked against torch.

Order of work: validate everything (run directory, recipe, weights, TensorRT presence) before
writing; export fp32 ONNX (exporters tried in turn until one passes parity); derive fp16 / INT8 /
TensorRT artifacts from it; write parity.json and export.json. Artifacts are written only once
they pass, by atomic rename, so a failed or killed export never replaces a good file.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch

from ..data import DataBundle
from ..errors import BadInput, CheckFailed
from ..progress import default_say
from ..rundir import RunLock, read_json, write_json
from .common import ExportResult, ort_session, require, run_session
from .config import ExportConfig
from .formats import EXPORT_DIR, by_name, derived, export_format
from .job import Exporter, run_recipe
from .steps import export_checked

PARITY_FILE, EXPORT_FILE = "parity.json", "export.json"


def _preflight_trt() -> None:
    """With --trt, fail before anything is written when TensorRT or a GPU is missing."""
    from .trt_engine import import_tensorrt
    import_tensorrt()
    if not torch.cuda.is_available():
        raise BadInput("TensorRT needs a CUDA GPU and none is visible", hint="run the export on the target GPU")


def export_run(run_dir: str | Path, *, model: str = "student", onnx: bool = True, int8: bool = False,
               fp16: bool = False, trt: bool = False, overrides: list[str] | None = None,
               say: Callable[[str], None] = default_say, check: bool = True,
               config: ExportConfig | None = None, data: DataBundle | None = None) -> dict[str, Any]:
    """Export one model of a run directory; returns the summary also written to export/export.json.

    With `check`, raises CheckFailed (exit 1) after writing parity.json when a precision is outside
    its tolerance; artifacts outside tolerance are never written. `config` replaces the run's own
    [export] table (the pipeline passes the one from the recipe it was given); `data`, the run's dataset
    already loaded (`students` exports dozens of runs of one dataset).
    """
    run_dir = Path(run_dir)
    recipe, file = run_recipe(run_dir, overrides or [])
    if config is not None:
        recipe = recipe.model_copy(update={"export": config})
    wanted = [export_format("tensorrt", "int8" if int8 else "fp16" if fp16 else "fp32")] if trt else \
        [export_format("onnx", p) for p, on in (("fp16", fp16), ("int8", int8)) if on]
    if any(f.gpu for f in wanted):
        _preflight_trt()
    fp32_format = export_format("onnx", "fp32")
    fp32 = fp32_format.file(run_dir, model)
    if not onnx and not fp32.is_file():
        raise BadInput(f"--no-onnx needs an existing {fp32}", hint="drop --no-onnx to export it now")
    for package in ("onnx", "onnxruntime"):
        require(package)
    job = Exporter(run_dir, recipe, file, model, say, data)
    results: list[ExportResult] = []
    parity: dict[str, Any] = {}
    with RunLock(run_dir, hint="wait for it to finish"):
        if onnx:
            result, parity["fp32"] = export_checked(job, fp32_format)
            results += [result] if result else []
            stale = derived(run_dir, model) if result else []
        else:
            parity["fp32"] = job.judge(run_session(ort_session(fp32), job.inputs()), "fp32")
        for fmt in wanted if parity["fp32"]["passed"] else []:
            result, parity[fmt.key] = export_checked(job, fmt)
            results += [result] if result else []
        if onnx:  # artifacts derived from the replaced fp32 graph, not rebuilt now, are stale: remove them
            fresh = {p for r in results for p in by_name(r.format).files(run_dir, model)}
            for path in (p for p in stale if p not in fresh and p.exists()):
                path.unlink()
                say(f"removed {path.name}: it was built from the previous {job.model}.onnx")
        summary = _write_reports(job, results, parity)
    if check:
        raise_if_failed(summary)
    return summary


def raise_if_failed(summary: dict[str, Any]) -> None:
    """CheckFailed (exit 1) naming every precision outside its tolerance."""
    failed = {k: v["broken"] for k, v in summary["this"].items() if not v["passed"]}
    if failed:
        raise CheckFailed("outside tolerance: " + "; ".join(f"{k}: {', '.join(v)}" for k, v in failed.items()),
                          file=str(Path(summary["run_dir"]) / EXPORT_DIR / PARITY_FILE),
                          hint="loosen [export.<precision>] tolerances only if the accuracy change is acceptable")


def _write_reports(job: Exporter, results: list[ExportResult], parity: dict[str, Any]) -> dict[str, Any]:
    """parity.json and export.json, merged with earlier exports of the other model or formats."""
    common = dict(model=job.model, recipe=job.recipe.name, split=job.split, images=int(len(job.labels)))
    parity_path, export_path = job.out / PARITY_FILE, job.out / EXPORT_FILE
    old_parity = read_json(parity_path) if parity_path.is_file() else {}
    old_export = read_json(export_path) if export_path.is_file() else {}
    kept = {} if "fp32" in {r.precision for r in results if r.format == "onnx"} else \
        old_parity.get(job.model, {}).get("precisions", {})  # a new fp32 graph invalidates derived entries
    old_parity[job.model] = {**common, "precisions": {**kept, **parity}}
    name = lambda p: Path(p).name  # noqa: E731  (keys independent of how RUN_DIR was spelled)
    artifacts = {name(a["path"]): a for a in old_export.get("artifacts", []) if (job.out / name(a["path"])).exists()}
    artifacts.update({name(r.path): dict(r.to_dict(), model=job.model) for r in results})
    summary = dict(version=1, artifacts=list(artifacts.values()), parity=old_parity)
    write_json(parity_path, old_parity)
    write_json(export_path, summary)
    return dict(summary, written=[r.to_dict() for r in results], this=parity, run_dir=str(job.run_dir))
