"""TensorRT engines: the plain-Python parts everywhere, a real build only with TensorRT and a GPU."""
from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from lfcc_deploy.errors import BadInput, MissingDependency
from lfcc_deploy.export.config import ExportConfig
from lfcc_deploy.export.common import calibration_batches
from lfcc_deploy.export.trt_calibration import BatchFeeder, calibration_cache_path, make_calibrator
from lfcc_deploy.export.trt_engine import (
    TRT_INSTALL_HINT, TrtRunner, build_engine, builder_flags, engine_metadata, import_tensorrt, profile_shapes,
    tensorrt_available,
)
from lfcc_deploy.rundir import write_json


needs_trt = pytest.mark.skipif(not tensorrt_available()[0],
                               reason="needs TensorRT and a CUDA GPU (not installable here)")
SHAPES = {"min": (1, 3, 16, 16), "opt": (4, 3, 16, 16), "max": (8, 3, 16, 16)}


@pytest.fixture
def no_tensorrt(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # `import tensorrt` now fails


def _fake_tensorrt(monkeypatch, version: str) -> None:
    """An importable `tensorrt` that is not the real one: code must refuse before using any of it."""
    fake = types.ModuleType("tensorrt")
    fake.__version__ = version
    monkeypatch.setitem(sys.modules, "tensorrt", fake)


@pytest.fixture
def fake_tensorrt(monkeypatch):
    _fake_tensorrt(monkeypatch, "10.0.1")


def _build(tmp_path: Path, onnx: Path, **kw) -> dict:
    args = dict(precision="fp16", shapes=SHAPES, calibration=None, workspace_gb=1.0,
                timing_cache=tmp_path / "timing.cache", log_path=tmp_path / "build.log")
    args.update(kw)
    return build_engine(onnx, tmp_path / "model.engine", **args)


def test_profile_shapes_dynamic_and_static():
    dyn = ExportConfig(dynamic_batch=True, trt_min_batch=2, trt_opt_batch=16, trt_max_batch=64)
    assert profile_shapes(dyn, 3, 32) == {"min": (2, 3, 32, 32), "opt": (16, 3, 32, 32), "max": (64, 3, 32, 32)}
    static = ExportConfig(dynamic_batch=False, static_batch=5)
    assert profile_shapes(static, 1, 28) == {k: (5, 1, 28, 28) for k in ("min", "opt", "max")}


def test_config_rejects_a_disordered_profile():
    with pytest.raises(ValidationError, match="trt_min_batch <= trt_opt_batch"):
        ExportConfig(trt_min_batch=8, trt_opt_batch=4, trt_max_batch=16)


def test_builder_flags():
    assert builder_flags("fp32") == []
    assert builder_flags("fp16") == ["FP16"]
    assert builder_flags("int8") == ["INT8", "FP16"]
    with pytest.raises(BadInput, match="allowed: fp32, fp16, int8"):
        builder_flags("bf16")


def test_calibration_batches_are_fixed_size_copies_of_the_rows():
    images = torch.randn(70, 3, 8, 8, dtype=torch.float32)
    batches = calibration_batches(images, 32)
    assert [b.shape for b in batches] == [(32, 3, 8, 8)] * 2  # ragged tail of 6 dropped
    for i, b in enumerate(batches):
        assert b.dtype == np.float32 and b.flags["C_CONTIGUOUS"]
        np.testing.assert_array_equal(b, images[32 * i:32 * (i + 1)].numpy())
    images.zero_()  # batches own their memory
    assert np.abs(batches[0]).sum() > 0


def test_calibration_batches_small_n_and_empty():
    images = torch.randn(5, 1, 4, 4).permute(0, 1, 3, 2)  # not contiguous
    (only,) = calibration_batches(images, 32)
    assert only.shape == (5, 1, 4, 4) and only.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(only, images.numpy())
    with pytest.raises(BadInput) as err:
        calibration_batches(torch.empty(0, 3, 8, 8), 32)
    assert err.value.key == "export.calibration_images"


def test_batch_feeder_yields_each_batch_once_then_rewinds():
    batches = [np.full((2, 1, 2, 2), i, dtype=np.float32) for i in range(3)]
    feeder = BatchFeeder(batches)
    assert feeder.batch_size == 2 and feeder.shape == (2, 1, 2, 2)
    seen = [feeder.next() for _ in range(3)]
    assert [int(b[0, 0, 0, 0]) for b in seen] == [0, 1, 2]
    assert feeder.next() is None and feeder.next() is None
    feeder.rewind()
    assert int(feeder.next()[0, 0, 0, 0]) == 0
    with pytest.raises(BadInput):
        BatchFeeder([])
    with pytest.raises(BadInput, match="differ in shape"):
        BatchFeeder([np.zeros((2, 1, 2, 2), np.float32), np.zeros((1, 1, 2, 2), np.float32)])


def test_calibrator_cache_round_trip(tmp_path):
    """The cache half of the calibrator (no CUDA): absent -> None, written atomically, read back."""
    class Base:
        def __init__(self):
            self.base_initialised = True

    cache = tmp_path / "sub" / "calib.cache"
    cal = make_calibrator(types.SimpleNamespace(IInt8EntropyCalibrator2=Base),
                          [np.zeros((4, 3, 2, 2), np.float32)] * 2, cache)
    assert isinstance(cal, Base) and cal.base_initialised and cal.get_batch_size() == 4
    assert cal.read_calibration_cache() is None
    cal.write_calibration_cache(memoryview(b"TRT-scales"))
    assert cache.read_bytes() == b"TRT-scales" and cal.read_calibration_cache() == b"TRT-scales"
    assert [p.name for p in cache.parent.iterdir()] == ["calib.cache"]  # no temp file left


def test_calibration_cache_path_changes_with_model_or_data(tmp_path):
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"model-1")
    data = [np.ones((2, 3, 4, 4), np.float32)]
    path = calibration_cache_path(tmp_path / "m.engine", onnx, data)
    assert path.parent == tmp_path and path.name.startswith("m.int8-calib-")
    assert calibration_cache_path(tmp_path / "m.engine", onnx, [d.copy() for d in data]) == path
    assert calibration_cache_path(tmp_path / "m.engine", onnx, [data[0] * 2]) != path
    onnx.write_bytes(b"model-2")
    assert calibration_cache_path(tmp_path / "m.engine", onnx, data) != path


def test_missing_tensorrt_is_a_hinted_error_and_writes_nothing(tmp_path, no_tensorrt):
    with pytest.raises(MissingDependency) as err:
        import_tensorrt()
    assert err.value.message == "TensorRT is not installed (python package 'tensorrt')"
    assert err.value.hint == TRT_INSTALL_HINT and "pypi.nvidia.com" in TRT_INSTALL_HINT
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"not read")
    with pytest.raises(MissingDependency):
        _build(tmp_path, onnx)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]  # no engine, log or timing cache
    ok, reason = tensorrt_available()
    assert not ok and reason == "TensorRT is not installed (python package 'tensorrt')"
    with pytest.raises(MissingDependency):
        TrtRunner(tmp_path / "model.engine")


def test_tensorrt_without_a_gpu_is_not_available(fake_tensorrt, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    ok, reason = tensorrt_available()
    assert not ok and "no CUDA GPU" in reason


def test_tensorrt_11_is_refused_with_the_pin(tmp_path, monkeypatch):
    _fake_tensorrt(monkeypatch, "11.0.0")
    ok, reason = tensorrt_available()
    assert not ok and "11.x removed" in reason
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"not read")
    with pytest.raises(MissingDependency, match="not supported") as err:
        _build(tmp_path, onnx)
    assert "<11" in err.value.hint
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


@pytest.mark.parametrize("kw, match", [
    (dict(precision="int4"), "allowed: fp32, fp16, int8"),
    (dict(precision="int8"), "needs calibration batches"),
    (dict(precision="int8", calibration=[np.zeros((4, 1, 16, 16), np.float32)]), "do not match the model input"),
])
def test_bad_requests_are_refused_before_building(tmp_path, fake_tensorrt, kw, match):
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"not read")
    with pytest.raises(BadInput, match=match):
        _build(tmp_path, onnx, **kw)
    with pytest.raises(BadInput, match="ONNX file not found"):
        _build(tmp_path, tmp_path / "absent.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_engine_metadata_reads_the_json_beside_the_engine(tmp_path):
    with pytest.raises(BadInput, match="no engine metadata"):
        engine_metadata(tmp_path / "model.engine")
    write_json(tmp_path / "model.json", {"precision": "fp16"})
    assert engine_metadata(tmp_path / "model.engine") == {"precision": "fp16"}


@needs_trt
def test_real_fp16_engine_builds_and_matches_torch(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(), torch.nn.Linear(8, 10)).eval()
    x = torch.randn(2, 3, 16, 16)
    onnx = tmp_path / "tiny.onnx"
    torch.onnx.export(model, x, onnx, dynamo=False, opset_version=17, input_names=["input"],
                      output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    meta = _build(tmp_path, onnx)
    engine = tmp_path / "model.engine"
    assert engine.stat().st_size == meta["engine_bytes"] > 0
    assert meta["precision"] == "fp16" and meta["profile"]["max"] == [8, 3, 16, 16] and meta["onnx"] == "tiny.onnx"
    assert engine_metadata(engine) == meta
    assert (tmp_path / "timing.cache").stat().st_size > 0 and (tmp_path / "build.log").is_file()

    runner = TrtRunner(engine)
    batch = torch.randn(5, 3, 16, 16)
    out = runner(batch.cuda())
    torch.cuda.synchronize()
    assert out.shape == (5, 10) and out.dtype == torch.float32
    with torch.no_grad():
        torch.testing.assert_close(out.cpu(), model(batch), atol=2e-2, rtol=2e-2)
    with pytest.raises(BadInput, match="outside the engine profile"):
        runner(torch.randn(9, 3, 16, 16, device="cuda"))
