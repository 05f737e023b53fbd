"""Export: ONNX for every family with parity on real test images, INT8 calibrated on real images,
fp16, static batch, failures that write nothing, TensorRT absent, and `predict` on image files."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tomli_w
import torch
from conftest import tiny_recipe_text
from families import FAMILIES
from PIL import Image

from lfcc_deploy.data import load_data
from lfcc_deploy.export.common import read_metadata
from lfcc_deploy.export import onnx_int8
from lfcc_deploy.export.onnx_int8 import CalibrationReader
from lfcc_deploy.models import load_net, save_net
from lfcc_deploy.training import distill, make_net
from lfcc_deploy.preprocess import Preprocess, read_images
from lfcc_deploy.recipe import load_recipe


def run_dir_with(tmp_path, model: str, kwargs: dict, img_size: int = 32):
    """A run directory holding an untrained student of `model`: export needs no training."""
    student = tomli_w.dumps({"student": {"model": model, "model_kwargs": kwargs}})
    text = tiny_recipe_text().replace("img_size = 16", f"img_size = {img_size}")
    text = text.replace('[student]\nmodel = "test_resnet"\n', student)
    run = tmp_path / model
    run.mkdir()
    (run / "recipe.toml").write_text(text)
    recipe = load_recipe(run / "recipe.toml")
    assert recipe.student.model == model
    net = make_net(recipe.student, load_data(recipe.data), 0, "student")
    with torch.no_grad():  # Mixer/ResMLP zero-init their heads: all-zero logits would prove nothing
        for p in net.parameters():
            p.normal_(0, 0.02) if not p.any() else None
    save_net(net, run / "student.safetensors")
    return run


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """The tiny recipe distilled for real (a few seconds): accuracies worth comparing."""
    tmp = tmp_path_factory.mktemp("trained")
    (tmp / "tiny.toml").write_text(tiny_recipe_text(epochs=3, teacher_epochs=2))
    distill(load_recipe(tmp / "tiny.toml"), out=tmp / "run")
    return tmp / "run"


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_family_exports_with_fp32_parity(tmp_path, cli, family):
    name, kwargs, size, _ = FAMILIES[family]
    run = run_dir_with(tmp_path, name, kwargs, size)
    res = cli("export", run, "--set", "export.parity_images=120")
    assert res.code == 0, res.err
    entry = json.loads((run / "export" / "parity.json").read_text())["student"]["precisions"]["fp32"]
    assert entry["passed"] and entry["images"] == 120
    assert entry["max_abs_logit"] <= 1e-4 and entry["top1_agreement"] == 1.0
    assert np.ptp(_logits(run), axis=0).max() > 1e-3  # logits depend on the image: parity checks something
    assert set(entry["probe_max_abs_logit"]) == {"1", "7"}
    assert read_metadata(run / "export" / "student.onnx")["exporter"] == entry["exporter"]


def test_quickstart_style_export_defaults(trained_run, cli):
    res = cli("export", trained_run)
    assert res.code == 0, res.err
    path = trained_run / "export" / "student.onnx"
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    meta = read_metadata(path)
    assert json.loads(meta["class_names"]) == [str(i) for i in range(10)]
    assert meta["precision"] == "fp32" and meta["recipe"] == "tiny" and int(meta["channels"]) == 1
    pre = Preprocess.from_json(meta["preprocess"])
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 7):  # dynamic batch axis
        out = sess.run(None, {"input": np.zeros((batch, 1, pre.img_size, pre.img_size), np.float32)})[0]
        assert out.shape == (batch, 10)
    parity = json.loads((trained_run / "export" / "parity.json").read_text())["student"]
    fp32 = parity["precisions"]["fp32"]
    assert parity["split"] == "test" and fp32["images"] == 359  # digits' fixed 20 % test split
    assert fp32["top1_agreement"] == 1.0 and fp32["max_abs_logit"] <= 1e-4 and fp32["accuracy"] > 0.5
    assert "onnx" in {a["format"] for a in json.loads((trained_run / "export" / "export.json").read_text())["artifacts"]}


def test_int8_is_calibrated_smaller_and_recorded(trained_run, cli):
    res = cli("export", trained_run, "--int8", "--set", 'export.int8_candidates=["qdq-u8s8","qoperator-u8s8"]',
              "--set", "export.speed_seconds=0.2")
    assert res.code == 0, res.err
    exp = trained_run / "export"
    meta = read_metadata(exp / "student.int8.onnx")
    entry = json.loads((exp / "parity.json").read_text())["student"]["precisions"]["int8"]
    assert {c["candidate"] for c in entry["candidates"]} == {"qdq-u8s8", "qoperator-u8s8"}
    assert meta["int8_config"] == entry["chosen"] and meta["precision"] == "int8"
    chosen = next(c for c in entry["candidates"] if c["candidate"] == entry["chosen"])
    assert chosen["check_speedup"] == max(c["check_speedup"] for c in entry["candidates"] if c["passed"])
    assert float(meta["int8_check_speedup"]) == pytest.approx(chosen["check_speedup"], rel=1e-2)
    assert (exp / "student.int8.onnx").stat().st_size < 0.5 * (exp / "student.onnx").stat().st_size
    assert entry["accuracy_drop"] <= 0.01 and f"{entry['chosen']} chosen" in res.out
    ops = {n.op_type for n in onnx.load(str(exp / "student.int8.onnx")).graph.node}
    assert ops & {"QuantizeLinear", "QLinearConv"}


@pytest.mark.parametrize("flags, expect_7_bit", [({"avx2"}, True), ({"avx2", "avx512_vnni"}, False)])
def test_int8_weights_are_7_bit_on_x86_without_vnni(trained_run, cli, monkeypatch, flags, expect_7_bit):
    """u8s8 saturates on x86 without VNNI (4.7 points lost here): `auto` must quantise weights to 7 bits."""
    monkeypatch.setattr(onnx_int8, "cpu_flags", lambda: flags)
    monkeypatch.setattr(onnx_int8.platform, "machine", lambda: "x86_64")
    res = cli("export", trained_run, "--no-onnx", "--int8", "--set", 'export.int8_candidates=["qdq-u8s8"]',
              "--set", "export.speed_seconds=0.1", "--set", "export.int8.max_accuracy_drop=1.0",
              "--set", "export.int8.min_agreement=0.0")
    assert res.code == 0, res.err
    path = trained_run / "export" / "student.int8.onnx"
    assert json.loads(read_metadata(path)["int8_reduce_range"]) is expect_7_bit
    weights = [onnx.numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer
               if t.data_type == onnx.TensorProto.INT8 and t.dims]
    largest = max(int(np.abs(w.astype(np.int32)).max()) for w in weights)
    assert largest <= 64 if expect_7_bit else largest > 64


def test_int8_exclude_keeps_op_types_in_float(trained_run, cli, tmp_path):
    res = cli("export", trained_run, "--no-onnx", "--int8", "--set", 'export.int8_candidates=["qoperator-u8s8"]',
              "--set", 'export.int8_exclude=["Conv"]', "--set", "export.speed_seconds=0.1",
              "--set", "export.int8.max_accuracy_drop=0.05", "--set", "export.int8.min_agreement=0.8")
    assert res.code == 0, res.err
    ops = {n.op_type for n in onnx.load(str(trained_run / "export" / "student.int8.onnx")).graph.node}
    assert "Conv" in ops and "QLinearConv" not in ops
    bad = cli("export", trained_run, "--no-onnx", "--int8", "--set", 'export.int8_exclude=["Conv2d"]')
    assert bad.code == 2 and "export.int8_exclude" in bad.err and "Conv" in bad.err


def test_calibration_reader_feeds_each_real_batch_once():
    batches = [np.full((2, 1, 4, 4), i, np.float32) for i in range(3)]
    reader = CalibrationReader(batches, "input")
    seen = [d["input"][0, 0, 0, 0] for d in reader]
    assert seen == [0, 1, 2] and reader.get_next() is None
    reader.rewind()
    assert reader.get_next()["input"] is batches[0]


def test_fp16_and_static_batch(trained_run, cli, tmp_path):
    res = cli("export", trained_run, "--fp16", "--static-batch", "--set", "export.static_batch=4")
    assert res.code == 0, res.err
    exp = trained_run / "export"
    fp16 = onnx.load(str(exp / "student.fp16.onnx"))
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in fp16.graph.initializer)
    dims = onnx.load(str(exp / "student.onnx")).graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_value == 4
    parity = json.loads((exp / "parity.json").read_text())["student"]["precisions"]
    assert parity["fp16"]["passed"] and parity["fp16"]["top1_agreement"] >= 0.99
    assert parity["fp32"]["images"] % 4 == 0
    cli("export", trained_run)  # back to the dynamic default for the tests below


def test_out_of_tolerance_exits_1_and_keeps_the_good_file(trained_run, cli):
    assert cli("export", trained_run).code == 0
    good = (trained_run / "export" / "student.onnx").read_bytes()
    res = cli("export", trained_run, "--set", "export.fp32.max_abs_logit=1e-15",
              "--set", "export.fp32.rtol=0", "--set", "export.opset=17")
    assert res.code == 1
    assert "outside tolerance" in res.err or "no exporter" in res.err
    assert "Traceback" not in res.err and sum(line.startswith("error:") for line in res.err.splitlines()) == 1
    assert (trained_run / "export" / "student.onnx").read_bytes() == good


def test_trt_without_tensorrt_is_one_clean_line(trained_run, cli, tmp_path):
    res = cli("export", trained_run, "--trt")
    assert res.code == 2
    assert res.err.startswith("error: TensorRT is not installed") and "Traceback" not in res.err
    assert not list((trained_run / "export").glob("*.engine*"))


def test_bad_run_directories(cli, tmp_path, trained_run):
    assert cli("export", tmp_path / "nope").code == 2
    res = cli("export", trained_run, "--model", "ce_reference")
    assert res.code == 2 and "--model" in res.err
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "recipe.toml").write_text((trained_run / "recipe.toml").read_text())
    res = cli("export", empty)
    assert res.code == 2 and "student.safetensors" in res.err and not (empty / "export").exists()


def test_predict_on_png_files_matches_the_model(trained_run, cli, tmp_path):
    recipe = load_recipe(trained_run / "recipe.toml")
    test = load_data(recipe.data).test
    paths = []
    for i in range(12):
        paths.append(tmp_path / f"img{i}_label{int(test.labels[i])}.png")
        Image.fromarray(test.images[i, 0].numpy()).save(paths[-1])
    model = trained_run / "export" / "student.onnx"
    res = cli("predict", model, *paths, "--json", "--top-k", "3")
    assert res.code == 0, res.err
    got = json.loads(res.out)
    pre = Preprocess.from_json(read_metadata(model)["preprocess"])
    x = read_images(paths, pre)
    # the same pixels through the dataset path give the same model input
    want_x = pre.normalize(next(test.batches(12, device="cpu", train=False))[0])
    assert torch.allclose(x, want_x, atol=1e-6)
    logits = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"input": x.numpy()})[0]
    for r, row, label in zip(got, logits, test.labels[:12].tolist()):
        assert len(r["top"]) == 3 and r["top"][0]["index"] == int(row.argmax())
        probs = [t["prob"] for t in r["top"]]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
        if row.argmax() == label:
            assert r["top"][0]["label"] == str(label)
    text = cli("predict", model, paths[0])
    assert text.code == 0 and paths[0].name in text.out and "%" in text.out
    (tmp_path / "broken.png").write_bytes(b"not an image")
    bad = cli("predict", model, tmp_path / "broken.png")
    assert bad.code == 2 and "broken.png" in bad.err


def _logits(run):
    """ONNX logits of the exported student on the first test images."""
    recipe = load_recipe(run / "recipe.toml")
    pre = Preprocess.from_json(read_metadata(run / "export" / "student.onnx")["preprocess"])
    x = pre.normalize(next(load_data(recipe.data).test.batches(64, device="cpu", train=False))[0])
    sess = ort.InferenceSession(str(run / "export" / "student.onnx"), providers=["CPUExecutionProvider"])
    return sess.run(None, {"input": x.numpy()})[0]


def test_hostile_and_broken_artifacts_are_one_line_errors(trained_run, cli, tmp_path):
    assert cli("export", trained_run).code == 0
    good = trained_run / "export" / "student.onnx"
    png = tmp_path / "x.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(png)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x08\x07garbage" * 10)
    res = cli("predict", garbage, png)
    assert res.code == 2 and "garbage.onnx" in res.err and "Traceback" not in res.err
    model = onnx.load(str(good))  # a real graph whose preprocessing metadata lies
    for p in model.metadata_props:
        if p.key == "preprocess":
            p.value = json.dumps(dict(img_size=16, channels=5, mean=[0.5], std=[0.5]))
    liar = tmp_path / "liar.onnx"
    onnx.save(model, str(liar))
    res = cli("predict", liar, png)
    assert res.code == 2 and "preprocess" in res.err and "Traceback" not in res.err
    saved = good.read_bytes()
    good.write_bytes(saved[: len(saved) // 3])  # truncated, as by a full disk elsewhere
    res = cli("export", trained_run, "--no-onnx", "--int8")
    assert res.code == 2 and "student.onnx" in res.err and "Traceback" not in res.err
    good.write_bytes(saved)


def test_fp32_re_export_removes_stale_derived_artifacts(trained_run, cli, tmp_path):
    assert cli("export", trained_run, "--int8", "--set", "export.speed_seconds=0.1").code == 0
    exp = trained_run / "export"
    res = cli("export", trained_run, "--opset", "17")
    assert res.code == 0 and "removed student.int8.onnx" in res.err
    assert not (exp / "student.int8.onnx").exists()
    parity = json.loads((exp / "parity.json").read_text())["student"]["precisions"]
    assert set(parity) == {"fp32"}
    names = [a["path"] for a in json.loads((exp / "export.json").read_text())["artifacts"]]
    assert len(names) == len({Path(n).name for n in names})  # one record per file


def test_predict_static_batch_model_and_directory(trained_run, cli, tmp_path):
    assert cli("export", trained_run, "--static-batch", "--set", "export.static_batch=2").code == 0
    test = load_data(load_recipe(trained_run / "recipe.toml").data).test
    paths = []
    for i in range(3):  # three images through a batch-2 graph: one padded chunk
        paths.append(tmp_path / f"s{i}.png")
        Image.fromarray(test.images[i, 0].numpy()).save(paths[-1])
    res = cli("predict", trained_run / "export" / "student.onnx", *paths, "--json")
    assert res.code == 0, res.err
    assert [r["image"] for r in json.loads(res.out)] == [str(p) for p in paths]
    res = cli("predict", trained_run / "export" / "student.onnx", tmp_path)
    assert res.code == 2 and "directory" in res.err
    assert cli("export", trained_run).code == 0


def test_int8_of_a_transformer_leaves_the_working_directory_clean(tmp_path, cli, monkeypatch):
    run = run_dir_with(tmp_path, "swin_tiny_patch4_window7_224", FAMILIES["swin"][1])
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    res = cli("export", run, "--int8", "--set", "export.parity_images=64", "--set", "export.speed_seconds=0.1",
              "--set", "export.int8.max_accuracy_drop=1", "--set", "export.int8.min_agreement=0")
    assert res.code == 0, res.err
    assert list(work.iterdir()) == []


def test_rep_students_export_in_their_fused_inference_form(tmp_path, cli):
    """RepGhost trains with parallel branches; the deployed graph is timm's re-parameterised form
    (fewer convolutions), and parity against the unfused trained model still passes."""
    run = run_dir_with(tmp_path, "repghostnet_050", {}, 32)
    res = cli("export", run, "--set", "export.parity_images=64", "--set", "export.precisions=['fp32']")
    assert res.code == 0, res.err
    assert "re-parameterised 32 multi-branch blocks" in res.out
    entry = json.loads((run / "export" / "parity.json").read_text())["student"]["precisions"]["fp32"]
    assert entry["passed"] and entry["max_abs_logit"] <= 1e-4
    ops = [node.op_type for node in onnx.load(str(run / "export" / "student.onnx")).graph.node]
    # unfused, each of the 32 blocks exports an identity branch as BatchNormalization + Add
    assert "BatchNormalization" not in ops and ops.count("Add") == 16
    assert len(list(load_net(run / "student.safetensors").model.modules())) == 540  # the weights stay unfused
