"""`lfcc-deploy export`: every requested format from one run directory, each checked against torch.

Order of work: validate everything (run directory, recipe, weights, TensorRT presence) before
writing; export fp32 ONNX (exporters tried in turn until one passes parity); derive fp16 / INT8 /
TensorRT artifacts from it; write parity.json and export.json. Artifacts are written only once
they pass, by atomic rename, so a failed or killed export never replaces a good file.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .. import __version__
from ..data import DataBundle, load_data, stratified_subset
from ..errors import BadInput, CheckFailed
from ..models import Net, load_net
from ..preprocess import Preprocess, pad_batch
from ..recipe import Recipe, apply_overrides, read_toml, validate_recipe
from ..rundir import RECIPE_FILE, RunLock, atomic_write, read_json, write_json
from .common import ONNX_SUFFIX, ExportResult, batch_list, ort_session, require, run_session, stack_inputs
from .config import ExportConfig
from .parity import measure, verdict

EXPORT_DIR, PARITY_FILE, EXPORT_FILE = "export", "parity.json", "export.json"
MODELS = ("student", "teacher")
PROBE_BATCHES = (1, 7)


def run_recipe(run_dir: Path, overrides: list[str]) -> tuple[Recipe, str]:
    path = run_dir / RECIPE_FILE
    if not path.is_file():
        raise BadInput("not a run directory (no recipe.toml)", file=str(run_dir),
                       hint="pass the directory `lfcc-deploy distill` wrote, e.g. runs/quickstart")
    label = f"{path} with command-line overrides" if overrides else str(path)
    return validate_recipe(apply_overrides(read_toml(path), overrides), label), str(path)


class Exporter:
    """One export job: the model, its reference logits on the test images, calibration images."""

    def __init__(self, run_dir: Path, recipe: Recipe, file: str, model: str, say: Callable[[str], None],
                 data: DataBundle | None = None):
        if model not in MODELS:
            raise BadInput(f"--model must be one of {', '.join(MODELS)} (got {model!r})")
        weights = run_dir / f"{model}.safetensors"
        if not weights.is_file():
            raise BadInput(f"no {model}.safetensors in the run directory", file=str(run_dir),
                           hint="run `lfcc-deploy distill` (or train-teacher) into it first")
        self.run_dir, self.recipe, self.cfg, self.model, self.say = run_dir, recipe, recipe.export, model, say
        self.out = run_dir / EXPORT_DIR
        self.net: Net = load_net(weights).eval()
        self.pre = Preprocess.of(self.net.spec)
        data = data or load_data(recipe.data, file=file)
        self.split = "test" if data.test is not None else "val"
        x, y = stack_inputs(data.test if data.test is not None else data.val, self.pre, self.cfg.parity_images)
        if not self.cfg.dynamic_batch:  # a static graph takes whole batches only
            b = self.cfg.static_batch
            keep = len(y) // b * b
            x, y = (x[:keep], y[:keep]) if keep else (pad_batch(x, b), pad_batch(y, b))
        self.x, self.labels = x, y.numpy()
        with torch.no_grad():
            self.reference = torch.cat([self.net.model(b) for b in x.split(256)]).numpy()
        calib = data.train.subset(stratified_subset(
            data.train.labels, min(1.0, self.cfg.calibration_images / len(data.train)), self.cfg.calibration_seed))
        self.calib_x = stack_inputs(calib, self.pre, self.cfg.calibration_images)[0]

    @property
    def batch(self) -> int:
        return 256 if self.cfg.dynamic_batch else self.cfg.static_batch

    def inputs(self) -> list[np.ndarray]:
        return batch_list(self.x, self.batch)

    def path(self, suffix: str) -> Path:
        return self.out / f"{self.model}{suffix}"

    def metadata(self) -> dict[str, Any]:
        s = self.net.spec
        return dict(producer="lfcc-deploy", lfcc_deploy_version=__version__, recipe=self.recipe.name,
                    role=self.model, model=s.name, class_names=s.class_names, img_size=s.img_size,
                    channels=s.in_chans, mean=s.mean, std=s.std, preprocess=self.pre.to_json(),
                    input_layout="NCHW float32 = (pixel / 255 - mean) / std after bilinear resize to img_size",
                    precision="fp32")

    def judge(self, logits: np.ndarray, precision: str) -> dict[str, Any]:
        return verdict(measure(self.reference, logits, self.labels), getattr(self.cfg, precision))

    def probe(self, session) -> dict[str, float]:
        """Max |Δlogit| at batch 1 and 7: proves the batch axis really is dynamic."""
        name = session.get_inputs()[0].name
        return {str(b): float(np.abs(session.run(None, {name: self.x[:b].numpy()})[0] - self.reference[:b]).max())
                for b in PROBE_BATCHES if b <= len(self.x)}


def _write_onnx(proto, path: Path) -> None:
    onnx = require("onnx")
    atomic_write(path, lambda t: onnx.save(proto, str(t)))


def export_fp32(job: Exporter) -> tuple[ExportResult | None, dict[str, Any]]:
    """fp32 ONNX with the first exporter whose graph passes parity; every attempt is recorded.

    Nothing is written when no exporter passes; the entry then holds the last measured numbers.
    """
    from .onnx_fp32 import export_onnx, exporter_order
    attempts: list[dict[str, Any]] = []
    entry: dict[str, Any] = dict(images=int(len(job.labels)), passed=False, broken=[])
    example = job.x[: (2 if job.cfg.dynamic_batch else job.cfg.static_batch)]
    for exporter in exporter_order(job.cfg.exporter):
        started = time.perf_counter()
        job.say(f"exporting {job.net.spec.name} to ONNX with the {exporter} exporter")
        try:
            proto, notes = export_onnx(job.net.model, example, job.cfg, exporter, job.metadata())
        except Exception as err:  # exporters raise anything from torch.export to onnxscript
            attempts.append(dict(exporter=exporter, status="failed", error=str(err).splitlines()[0][:300]))
            continue
        session = ort_session(proto.SerializeToString())
        entry = job.judge(run_session(session, job.inputs()), "fp32")
        if job.cfg.dynamic_batch:
            entry["probe_max_abs_logit"] = job.probe(session)
        attempts.append(dict(exporter=exporter, status="passed" if entry["passed"] else "parity failed",
                             broken=entry["broken"]))
        if entry["passed"]:
            path = job.path(".onnx")
            _write_onnx(proto, path)
            result = ExportResult("onnx", "fp32", str(path), time.perf_counter() - started, path.stat().st_size,
                                  exporter=exporter, notes=notes)
            return result, dict(entry, exporter=exporter, attempts=attempts)
    why = [f"{a['exporter']}: {a.get('error') or ', '.join(a['broken'])}" for a in attempts]
    return None, dict(entry, passed=False, broken=["no exporter passed (" + "; ".join(why) + ")"],
                      attempts=attempts)


def export_fp16(job: Exporter, fp32: Path) -> tuple[ExportResult | None, dict[str, Any]]:
    from .onnx_fp16 import to_fp16
    onnx = require("onnx")
    started = time.perf_counter()
    job.say("converting to fp16 ONNX")
    proto = to_fp16(onnx.load(str(fp32)))
    entry = job.judge(run_session(ort_session(proto.SerializeToString()), job.inputs()), "fp16")
    if not entry["passed"]:
        return None, entry
    path = job.path(ONNX_SUFFIX["fp16"])
    _write_onnx(proto, path)
    return ExportResult("onnx-fp16", "fp16", str(path), time.perf_counter() - started, path.stat().st_size,
                        exporter="onnxruntime.transformers.float16"), entry


def export_int8(job: Exporter, fp32: Path) -> tuple[ExportResult | None, dict[str, Any]]:
    from .onnx_int8 import export_int8 as quantize_best
    job.say(f"quantising to INT8: {', '.join(job.cfg.int8_candidates)} calibrated on "
            f"{len(job.calib_x)} training images, each timed against fp32")
    calib = batch_list(job.calib_x, job.cfg.calibration_batch if job.cfg.dynamic_batch else job.cfg.static_batch)
    if not job.cfg.dynamic_batch:
        calib = [b for b in calib if len(b) == job.cfg.static_batch] or calib[:1]
    result, rows = quantize_best(fp32, job.path(ONNX_SUFFIX["int8"]), job.cfg, calib, job.inputs(), job.labels,
                                 job.reference, job.cfg.int8)
    chosen = result.details["int8_config"] if result else None
    entry = next((r for r in rows if r["candidate"] == chosen), None) or min(rows, key=lambda r: r["accuracy_drop"])
    return result, dict(entry, chosen=chosen, candidates=rows)


def export_trt(job: Exporter, fp32: Path, precision: str) -> tuple[ExportResult | None, dict[str, Any]]:
    """A TensorRT engine from the ONNX file, then the same parity check through the engine runner."""
    from .trt_engine import TrtRunner, build_engine, calibration_batches, profile_shapes
    job.say(f"building a TensorRT {precision} engine")
    started = time.perf_counter()
    spec = job.net.spec
    engine = job.path(".engine")
    calib = calibration_batches(job.calib_x, job.cfg.calibration_batch) if precision == "int8" else None
    meta = build_engine(fp32, engine, precision=precision, shapes=profile_shapes(job.cfg, spec.in_chans, spec.img_size),
                        calibration=calib, workspace_gb=job.cfg.trt_workspace_gb,
                        timing_cache=job.out / "trt_timing.cache", log_path=job.path(".engine.log"),
                        extra=dict(job.metadata(), precision=precision))
    runner = TrtRunner(engine)
    with torch.no_grad():
        logits = np.concatenate([runner(torch.from_numpy(b).cuda()).float().cpu().numpy() for b in job.inputs()])
    entry = job.judge(logits, precision)
    if not entry["passed"]:  # never leave an engine outside tolerance where the bench would find it
        engine.unlink()
        engine.with_suffix(".json").unlink(missing_ok=True)
        return None, entry
    return ExportResult("tensorrt", precision, str(engine), time.perf_counter() - started, engine.stat().st_size,
                        exporter="tensorrt", details=meta), entry


def _preflight_trt() -> None:
    """With --trt, fail before anything is written when TensorRT or a GPU is missing."""
    from .trt_engine import import_tensorrt
    import_tensorrt()
    if not torch.cuda.is_available():
        raise BadInput("TensorRT needs a CUDA GPU and none is visible", hint="run the export on the target GPU")


def export_run(run_dir: str | Path, *, model: str = "student", onnx: bool = True, int8: bool = False,
               fp16: bool = False, trt: bool = False, overrides: list[str] | None = None,
               say: Callable[[str], None] = lambda _: None, check: bool = True,
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
    if trt:
        _preflight_trt()
    fp32 = run_dir / EXPORT_DIR / f"{model}.onnx"
    if not onnx and not fp32.is_file():
        raise BadInput(f"--no-onnx needs an existing {fp32}", hint="drop --no-onnx to export it now")
    for package in ("onnx", "onnxruntime"):
        require(package)
    job = Exporter(run_dir, recipe, file, model, say, data)
    results: list[ExportResult] = []
    parity: dict[str, Any] = {}
    with RunLock(run_dir, hint="wait for it to finish"):
        if onnx:
            result, parity["fp32"] = export_fp32(job)
            results += [result] if result else []
            stale = _derived(job) if result else []
        else:
            parity["fp32"] = job.judge(run_session(ort_session(fp32), job.inputs()), "fp32")
        precision = _trt_precision(int8, fp16)
        steps = [(trt, f"tensorrt-{precision}", lambda j, f: export_trt(j, f, precision)),
                 (fp16 and not trt, "fp16", export_fp16), (int8 and not trt, "int8", export_int8)]
        for wanted, name, step in steps if parity["fp32"]["passed"] else []:
            if wanted:
                result, parity[name] = step(job, fp32)
                results += [result] if result else []
        if onnx:  # artifacts derived from the replaced fp32 graph, not rebuilt now, are stale: remove them
            fresh = {Path(r.path) for r in results}
            for path in (p for p in stale if p not in fresh and p.exists()):
                path.unlink()
                path.with_suffix(".json").unlink(missing_ok=True) if path.suffix == ".engine" else None
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


def _derived(job: Exporter) -> list[Path]:
    return [job.path(s) for s in (ONNX_SUFFIX["fp16"], ONNX_SUFFIX["int8"], ".engine")]


def _trt_precision(int8: bool, fp16: bool) -> str:
    return "int8" if int8 else "fp16" if fp16 else "fp32"


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
