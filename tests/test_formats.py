"""One export-format table read by export, bench, predict and the pipeline; the checked-export
wrapper (temp file, parity, rename) and the TensorRT paths through it, with TensorRT faked."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_export import run_dir_with

from lfcc_deploy.bench.backends import BACKENDS
from lfcc_deploy.bench.run import BenchConfig, bench_run
from lfcc_deploy.bench.timing import TimingConfig
from lfcc_deploy.export import trt_engine
from lfcc_deploy.export.formats import FORMATS, by_name, derived, export_format, runtime_of
from lfcc_deploy.export.job import Exporter, run_recipe
from lfcc_deploy.export.steps import BUILDERS, export_checked


def test_every_format_has_a_builder_and_one_file_name():
    assert sorted(BUILDERS.names()) == sorted(f.name for f in FORMATS)
    assert len({(f.runtime, f.precision) for f in FORMATS}) == len(FORMATS)
    assert runtime_of("x/student.int8.onnx") == "onnx" and runtime_of("student.engine") == "tensorrt"
    assert runtime_of("student.pt") is None
    assert by_name("onnx-int8").key == "int8" and by_name("tensorrt-fp16").key == "tensorrt-fp16"


def test_readers_take_file_names_and_hints_from_the_table(tmp_path):
    fmt = export_format("onnx", "fp16")
    path, why = BACKENDS.get("onnxruntime").artifact(tmp_path, "teacher", "fp16", "cpu")
    assert path is None and fmt.suffix in why and fmt.hint("teacher") in why
    engine = export_format("tensorrt", "int8")
    path, why = BACKENDS.get("tensorrt").artifact(tmp_path, "student", "int8", "cuda")
    assert path is None and "--trt --int8" in why
    assert engine.file(tmp_path, "student").with_suffix(".json") in derived(tmp_path, "student")
    assert export_format("onnx", "fp32").file(tmp_path, "student") not in derived(tmp_path, "student")


@pytest.fixture
def job(tmp_path):
    run = run_dir_with(tmp_path, "test_resnet", {}, img_size=16)
    recipe, file = run_recipe(run, ["export.parity_images=64", "export.calibration_images=40"])
    return Exporter(run, recipe, file, "student", lambda _: None)


class FakeRunner:
    """Stands in for TrtRunner: logits for each batch from `logits_of`, batch sizes recorded."""

    seen: list[int] = []

    def __init__(self, path):
        self.path = path

    def host(self, x: torch.Tensor) -> np.ndarray:
        FakeRunner.seen.append(len(x))
        return FakeRunner.logits_of(x)


def _fake_build(calls: list, crash: bool = False):
    def build(onnx_path, engine_path, **kw):
        calls.append(kw)
        engine_path.write_bytes(b"new engine")
        if crash:
            raise KeyboardInterrupt  # a kill between writing the engine and checking it
        meta = dict(kw["extra"], precision=kw["precision"], profile={k: list(v) for k, v in kw["shapes"].items()})
        engine_path.with_suffix(".json").write_text(json.dumps(meta))
        return meta
    return build


def _old_engine(job):
    fmt = export_format("tensorrt", "fp16")
    job.out.mkdir(exist_ok=True)
    fmt.file(job.run_dir, "student").write_bytes(b"old good engine")
    fmt.file(job.run_dir, "student").with_suffix(".json").write_text('{"precision": "fp16"}')
    return fmt


@pytest.mark.parametrize("failure", ["parity", "crash"])
def test_failed_trt_export_keeps_the_previous_engine(job, monkeypatch, failure):
    fmt = _old_engine(job)
    (job.out / "student.onnx").write_bytes(b"unused by the fake build")
    (job.out / ".student.engine.left-by-kill-9").mkdir()  # removed by the next export
    calls: list = []
    monkeypatch.setattr(trt_engine, "build_engine", _fake_build(calls, crash=failure == "crash"))
    monkeypatch.setattr(trt_engine, "TrtRunner", FakeRunner)
    FakeRunner.logits_of = staticmethod(lambda x: np.full((len(x), 10), np.nan, np.float32))
    if failure == "crash":
        with pytest.raises(KeyboardInterrupt):
            export_checked(job, fmt)
    else:
        result, entry = export_checked(job, fmt)
        assert result is None and not entry["passed"] and "non-finite logits" in entry["broken"]
    engine = fmt.file(job.run_dir, "student")
    assert engine.read_bytes() == b"old good engine"
    assert json.loads(engine.with_suffix(".json").read_text()) == {"precision": "fp16"}
    assert sorted(p.name for p in job.out.iterdir()) == ["student.engine", "student.json", "student.onnx"]


def test_passing_trt_export_replaces_engine_and_metadata(job, monkeypatch):
    fmt = _old_engine(job)
    calls: list = []
    monkeypatch.setattr(trt_engine, "build_engine", _fake_build(calls))
    monkeypatch.setattr(trt_engine, "TrtRunner", FakeRunner)
    FakeRunner.logits_of = staticmethod(lambda x: job.net.model(x).detach().numpy())
    result, entry = export_checked(job, fmt)
    assert entry["passed"] and result.format == "tensorrt-fp16"
    engine = fmt.file(job.run_dir, "student")
    assert engine.read_bytes() == b"new engine"
    assert json.loads(engine.with_suffix(".json").read_text())["recipe"] == "tiny"
    assert calls[0]["log_path"] == engine.with_suffix(".engine.log")


def test_trt_int8_calibrates_at_the_static_batch(tmp_path, monkeypatch):
    run = run_dir_with(tmp_path, "test_resnet", {}, img_size=16)
    recipe, file = run_recipe(run, ["export.dynamic_batch=false", "export.static_batch=4",
                                    "export.parity_images=16", "export.calibration_images=40"])
    job = Exporter(run, recipe, file, "student", lambda _: None)
    job.out.mkdir()
    (job.out / "student.onnx").write_bytes(b"the calibration cache is named by its digest")
    calls: list = []
    monkeypatch.setattr(trt_engine, "build_engine", _fake_build(calls))
    monkeypatch.setattr(trt_engine, "TrtRunner", FakeRunner)
    FakeRunner.logits_of = staticmethod(lambda x: job.net.model(x).detach().numpy())
    export_checked(job, export_format("tensorrt", "int8"))
    shapes = {b.shape[0] for b in calls[0]["calibration"]}
    assert shapes == {4} == {calls[0]["shapes"]["opt"][0]}
    few = Exporter(run, run_recipe(run, ["export.dynamic_batch=false", "export.static_batch=8",
                                         "export.parity_images=16", "export.calibration_images=5"])[0],
                   file, "student", lambda _: None)
    assert [b.shape[0] for b in few.calibration()] == [8]  # fewer images than one batch: padded


def test_predict_feeds_a_static_engine_whole_batches(tmp_path, monkeypatch):
    from PIL import Image

    from lfcc_deploy.predict import predict_files
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"engine")
    pre = dict(img_size=8, channels=1, mean=[0.5], std=[0.5])
    engine.with_suffix(".json").write_text(json.dumps(dict(
        preprocess=json.dumps(pre), class_names=["a", "b"], profile={k: [2, 1, 8, 8] for k in ("min", "opt", "max")})))
    FakeRunner.seen = []
    FakeRunner.logits_of = staticmethod(
        lambda x: torch.stack([x.flatten(1).mean(1), -x.flatten(1).mean(1)], 1).numpy() if len(x) == 2
        else pytest.fail(f"a static engine of batch 2 was fed {len(x)} images"))
    monkeypatch.setattr(trt_engine, "TrtRunner", FakeRunner)
    files = []
    for i, v in enumerate((0, 255, 0)):
        files.append(tmp_path / f"{i}.png")
        Image.fromarray(np.full((8, 8), v, np.uint8)).save(files[-1])
    out = predict_files(engine, files, top_k=1)
    assert [r["top"][0]["label"] for r in out] == ["b", "a", "b"] and FakeRunner.seen == [2, 2]


def test_engine_without_metadata_is_a_failed_row_and_other_rows_run(tmp_path, monkeypatch):
    run = run_dir_with(tmp_path, "test_resnet", {}, img_size=16)
    (run / "export").mkdir()
    (run / "export" / "student.engine").write_bytes(b"engine without its json")
    monkeypatch.setattr(type(BACKENDS.get("tensorrt")), "available", lambda self, device: (True, ""))
    cfg = BenchConfig(backends=["torch", "tensorrt"], device="cpu", batches=[1], accuracy_images=32,
                      timing=TimingConfig(warmup_ms=1, duration_s=0.01, min_iters=2))
    rows = {r["backend"]: r for r in bench_run(run, cfg)["rows"]}
    assert rows["torch"]["status"] == "ok"
    assert rows["tensorrt"]["status"] == "failed" and "no engine metadata" in rows["tensorrt"]["reason"]
