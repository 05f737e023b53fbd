"""The field's augmentation (data.augment.style = "timm") on a generated 64 px image folder: views, eval
crop, soft targets through the real pipeline, bad keys; and the pad-crop path left as it was."""
from __future__ import annotations

import json
import math
import random
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file
from test_engine import InterruptAt

from lfcc_deploy import training
from lfcc_deploy.data import load_data
from lfcc_deploy.sources import _Decode, _generator, augment_batch
from lfcc_deploy.losses import Method, MethodContext, hard_labels
from lfcc_deploy.losses.ofa import ofa_loss
from lfcc_deploy.preprocess import Preprocess, read_images, to_unit_float
from lfcc_deploy.data_config import DataConfig
from lfcc_deploy.recipe import list_recipes, load_recipe

CPU = torch.device("cpu")
CLASSES = ("ant", "bee", "cow")
SIZE = (120, 96)  # w × h: at crop_pct 0.8 the short side goes 96 -> 80 and the long side 120 -> 100, exactly
HEAVY = {"randaugment": "rand-m9-mstd0.5", "random_erasing": 0.25}


@pytest.fixture
def folder64(tmp_path) -> Path:
    """train/ 3 classes × 12 and val/ 3 × 2 RGB images, larger than 64 px and not square."""
    rng = np.random.default_rng(0)
    for split, per_class in (("train", 12), ("val", 2)):
        for c, cls in enumerate(CLASSES):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(per_class):
                rgb = rng.integers(0, 256, (SIZE[1], SIZE[0], 3), dtype=np.uint8)
                rgb[:, :, c] //= 2  # a little class signal
                Image.fromarray(rgb).save(tmp_path / split / cls / f"{i}.png")
    return tmp_path


def folder_cfg(root: Path, **timm) -> DataConfig:
    return DataConfig(name="imagefolder", root=str(root), img_size=64, workers=0, val_fraction=0.2,
                      augment={"timm": timm} if timm else {})


def folder_recipe(tmp_path: Path, root: Path) -> Path:
    """One epoch of tiny models on the folder at 64 px; the augmentation keys come from --set."""
    path = tmp_path / "r.toml"
    path.write_text(f'name = "folder64"\ndevice = "cpu"\n[data]\nname = "imagefolder"\nroot = "{root}"\n'
                    'img_size = 64\nworkers = 0\n[teacher]\nmodel = "test_resnet"\n[teacher.train]\nepochs = 1\n'
                    'batch_size = 16\n[student]\nmodel = "test_resnet"\n[distill]\nepochs = 1\nbatch_size = 16\n')
    return path


def train_batches(data, aug, **kw):
    return list(data.train.batches(8, device=CPU, train=True, augment=aug, **kw))


def test_auto_style_is_timm_for_folders_at_64_px_and_the_224_presets_only(folder64):
    assert folder_cfg(folder64).augment_style() == "timm"
    small = DataConfig(name="imagefolder", root=str(folder64), img_size=32)
    assert small.augment_style() == "pad_crop" and load_data(small).train.views is None
    for name in ("digits", "fashion_mnist", "cifar10", "cifar100"):
        assert DataConfig(name=name, img_size=224).augment_style() == "pad_crop"
    styles = {p.stem: load_recipe(p).data.augment_style() for p in list_recipes()}
    assert {k for k, v in styles.items() if v == "timm"} == {"imagenet_swin_t_to_resnet18",
                                                             "cifar100_swin_t_to_resnet18"}


def test_timm_views_vary_replay_exactly_and_differ_from_eval(folder64):
    cfg = folder_cfg(folder64, **HEAVY)
    data, aug = load_data(cfg), cfg.augment
    assert data.train.views is not None
    rng_before, py_before = torch.get_rng_state(), random.getstate()
    first = train_batches(data, aug, seed=3, epoch=0, with_index=True)
    assert torch.equal(torch.get_rng_state(), rng_before) and random.getstate() == py_before  # untouched
    x, y, idx = first[0]
    assert x.shape == (8, 3, 64, 64) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert torch.equal(y, data.train.labels[idx])
    x_eval, _ = next(data.train.subset(idx).batches(8, device=CPU, train=False))
    assert (x - x_eval).abs().mean() > 0.05  # random-resized crops, not the eval crop
    again = train_batches(data, aug, seed=3, epoch=0, with_index=True)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, again, strict=True))
    other_epoch = train_batches(data, aug, seed=3, epoch=1)
    assert not torch.equal(torch.cat([b[0] for b in first]).sum(0), torch.cat([b[0] for b in other_epoch]).sum(0))
    tail = train_batches(data, aug, seed=3, epoch=0, start_step=2)  # --resume at step 2
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first[2:], tail, strict=True))
    data.train.views = replace(data.train.views, workers=2)  # a view depends on the image, not the worker
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, train_batches(data, aug, seed=3, epoch=0), strict=True))


@pytest.mark.parametrize("crop_pct", [0.8, 1.0])
def test_eval_is_the_centre_crop_at_crop_pct(folder64, crop_pct):
    data = load_data(folder_cfg(folder64, crop_pct=crop_pct))
    x, _ = next(data.test.batches(6, device=CPU, train=False))
    short = math.floor(64 / crop_pct)
    w, h = short * SIZE[0] // SIZE[1], short  # 100 × 80 at 0.8; 80 × 64 at 1.0
    path = data.test.dataset.samples[0][0]
    img = np.asarray(Image.open(path).convert("RGB").resize((w, h), Image.BILINEAR))
    top, left = (h - 64) // 2, (w - 64) // 2
    hand = torch.from_numpy(img[top:top + 64, left:left + 64].copy()).permute(2, 0, 1)
    assert torch.equal((x[0] * 255).round().to(torch.uint8), hand)


def test_mixup_cutmix_give_soft_targets_also_on_an_odd_last_batch(folder64):
    cfg = folder_cfg(folder64, mixup=0.8, cutmix=1.0)
    data = load_data(cfg)
    n = len(data.train)
    bs = next(b for b in range(5, 16) if n % b > 1 and n % b % 2)  # a last batch of odd size
    batches = list(data.train.batches(bs, device=CPU, train=True, seed=0, augment=cfg.augment))
    assert len(batches[-1][1]) % 2 == 1
    for x, y in batches:
        assert y.shape == (len(x), len(CLASSES)) and y.dtype == torch.float32
        assert torch.allclose(y.sum(1), torch.ones(len(x)))
    ys = torch.cat([y for _, y in batches])
    assert (ys.max(1).values < 0.999).any()  # mixed rows, not one-hot
    assert torch.equal(ys[-1], F.one_hot(ys[-1].argmax(), len(CLASSES)).float())  # odd one out: unmixed


def test_ce_smooths_soft_targets_and_ofa_takes_them_as_its_target():
    torch.manual_seed(0)
    s, t = torch.randn(6, 5), torch.randn(6, 5)
    soft = F.softmax(torch.randn(6, 5) * 3, 1)
    hard = soft.argmax(1)
    run = SimpleNamespace(ctx=MethodContext(num_classes=5, label_smoothing=0.1))
    smoothed = soft * 0.9 + 0.1 / 5  # what timm's mixup_target would have made with smoothing 0.1
    assert torch.allclose(Method.ce(run, s, soft), -(smoothed * F.log_softmax(s, 1)).sum(1).mean())
    assert torch.equal(hard_labels(soft), hard) and torch.equal(hard_labels(hard), hard)
    assert torch.allclose(ofa_loss(s, t, F.one_hot(hard, 5).float(), eps=1.5), ofa_loss(s, t, hard, eps=1.5))
    assert not torch.allclose(ofa_loss(s, t, soft, eps=1.5), ofa_loss(s, t, hard, eps=1.5))


@pytest.mark.parametrize("method", ["kd", "dkd", "ofa"])
def test_distill_on_a_64_px_folder_with_the_field_augmentation(folder64, tmp_path, cli, monkeypatch, method):
    recipe = folder_recipe(tmp_path, folder64)
    seen = []
    real_ce = F.cross_entropy

    def spy(logits, target, *a, **kw):
        seen.append(target.is_floating_point() and target.ndim == 2 and bool((target.max(1).values < 0.999).any()))
        return real_ce(logits, target, *a, **kw)
    monkeypatch.setattr(F, "cross_entropy", spy)
    res = cli("distill", recipe, "--out", tmp_path / "run", "--quiet", "--set", f"distill.method={method}",
              "--set", 'data.augment.timm.randaugment="rand-m9-mstd0.5"', "--set", "data.augment.timm.mixup=0.8",
              "--set", "data.augment.timm.cutmix=1.0", "--set", "data.augment.timm.random_erasing=0.25",
              "--set", "distill.label_smoothing=0.1")
    assert res.code == 0, res.err
    assert any(seen)  # mixed (soft) targets reached the CE term
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert 0 <= summary["student"]["test_acc"] <= 1 and summary["student"]["train_images"] == 33


@pytest.mark.parametrize("override, key", [
    ('data.augment.timm.randaugment="rand-x9"', "data.augment.timm.randaugment"),
    ("data.augment.timm.scale=[0.9, 0.2]", "data.augment.timm.scale"),
    ("data.augment.timm.crop_pct=1.5", "data.augment.timm.crop_pct"),
    ("data.augment.crop_padding=4", "data.augment.style"),
    ('data.augment.style="patch"', "data.augment.style"),
    ("distill.teacher_cache=memory", "distill.teacher_cache"),
])
def test_bad_augment_keys_are_one_line_errors(folder64, tmp_path, cli, override, key):
    recipe = folder_recipe(tmp_path, folder64)
    res = cli("distill", recipe, "--out", tmp_path / "run", "--set", override)
    lines = res.err.strip().splitlines()  # the error, and at most a hint
    assert res.code == 2 and key in lines[0] and len(lines) <= 2 and lines[-1].startswith(("error", "hint")), res.err
    assert not (tmp_path / "run").exists()


def test_timm_keys_on_a_pad_crop_dataset_name_the_style(tiny_recipe, cli):
    res = cli("distill", tiny_recipe, "--set", "data.augment.timm.mixup=0.2")
    assert res.code == 2 and 'data.augment.style = "timm"' in res.err and "digits at 16 px" in res.err


def test_in_memory_data_can_ask_for_timm_views():
    cfg = DataConfig(name="digits", img_size=32, channels=1, augment={"style": "timm", "timm": {"mixup": 0.5}})
    data = load_data(cfg)
    x, y = next(data.train.batches(16, device=CPU, train=True, augment=cfg.augment))
    assert x.shape == (16, 1, 32, 32) and y.shape == (16, 10)
    x_eval, _ = next(data.train.batches(16, device=CPU, train=False))
    assert torch.equal(x_eval, to_unit_float(data.train.images[:16], 32, 1))  # evaluation: the whole image


def test_pad_crop_path_is_unchanged_for_the_shipped_small_recipes():
    """Every shipped recipe below 224 px keeps the on-device pad-crop: batches are exactly the uint8 rows,
    converted and cropped/flipped by the per-step generator, as before the timm style existed."""
    for path in list_recipes():
        rec = load_recipe(path)
        if rec.data.img_size < 224:
            assert rec.data.augment_style() == "pad_crop", path.name
    rec = load_recipe("quickstart")
    data, aug = load_data(rec.data), rec.data.augment
    assert data.train.views is None
    got = list(data.train.batches(64, device=CPU, train=True, seed=5, epoch=2, augment=aug, with_index=True))[:3]
    for step, (x, _, idx) in enumerate(got):
        ref = to_unit_float(data.train.images[idx], rec.data.img_size, rec.data.channels)
        assert torch.equal(x, augment_batch(ref, aug, _generator("augment", 5, 2, step)))



def test_ctrl_c_then_resume_replays_the_timm_views_and_mixes(folder64, tmp_path):
    rec = load_recipe(folder_recipe(tmp_path, folder64), [
        'data.augment.timm.randaugment="rand-m9-mstd0.5"', "data.augment.timm.mixup=0.8",
        "data.augment.timm.cutmix=1.0", "data.augment.timm.random_erasing=0.25", "distill.epochs=2",
        "distill.log_every=1"])
    training.distill(rec, out=tmp_path / "straight")
    with pytest.raises(KeyboardInterrupt):
        training.distill(rec, out=tmp_path / "cut", reporter=InterruptAt("student", 3))  # mid-epoch 2
    training.distill(rec, out=tmp_path / "cut", resume=True)
    a, b = load_file(tmp_path / "straight/student_last.safetensors"), load_file(tmp_path / "cut/student_last.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_profile_leaves_out_the_cached_row_for_timm_views(folder64, tmp_path, cli):
    res = cli("profile", folder_recipe(tmp_path, folder64), "--steps", "3", "--json")
    assert res.code == 0, res.err
    assert set(json.loads(res.out)["methods"]) == {"ce", "kd", "lfcc"}
    assert "cannot replay" in res.err


def test_an_image_file_reaches_the_model_with_the_crop_evaluation_used(folder64, tmp_path):
    """`predict` (read_images) crops an image file as timm's evaluation does, from the spec's crop_pct;
    without it a 120×96 photo would be cut to its whole 96×96 centre square, a quarter more field of view
    than evaluation showed the model."""
    data = load_data(folder_cfg(folder64, crop_pct=0.8))
    net = training.make_net(load_recipe(folder_recipe(tmp_path, folder64)).student, data, 0, "student")
    assert data.crop_pct == net.spec.crop_pct == Preprocess.of(net.spec).crop_pct == 0.8
    yy, xx = np.mgrid[0:SIZE[1], 0:SIZE[0]]  # smooth, off-centre content: a misplaced crop shows
    blob = 255 * np.exp(-((xx - 80) ** 2 + (yy - 40) ** 2) / 300.0)
    path = tmp_path / "photo.png"
    Image.fromarray(np.stack([blob, xx * 2.0, yy * 2.5], -1).astype(np.uint8)).save(path)
    evaluated = _Decode(3, 64, 0.8)(Image.open(path)).float() / 255  # what evaluation fed the model
    unit = Preprocess(64, 3, (0.0,) * 3, (1.0,) * 3, crop_pct=0.8)  # identity normalisation: pixels
    assert Preprocess.from_json(unit.to_json()) == unit  # travels in the ONNX metadata
    cropped = (read_images([path], unit)[0] - evaluated).abs().mean()
    whole = (read_images([path], replace(unit, crop_pct=1.0))[0] - evaluated).abs().mean()
    assert cropped < 0.01 and whole > 4 * cropped
