"""lfcc_deploy.data: loaders on tiny files written here, splits, augmentation, exact resume."""
from __future__ import annotations

import gzip
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from lfcc_deploy.data import DEFAULT_ROOTS, FASHION_CLASSES, check_data, load_data
from lfcc_deploy.preprocess import convert_channels
from lfcc_deploy.sources import TensorSource, augment_batch, stratified_subset
from lfcc_deploy.errors import BadInput
from lfcc_deploy.data_config import Augment, DataConfig

CPU = torch.device("cpu")


def cfg(name, root=None, **kw):
    return DataConfig(name=name, root=None if root is None else str(root), **kw)


def all_batches(source, bs=64, **kw):
    xs, ys = zip(*source.batches(bs, device=CPU, **kw))
    return torch.cat(xs), torch.cat(ys)


# ---------------------------------------------------------------- fixtures: files on disk

def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    return struct.pack(f">{1 + array.ndim}I", magic, *array.shape) + array.tobytes()


def fashion_arrays(n):
    images = np.zeros((n, 28, 28), np.uint8)
    for i in range(n):
        images[i, i % 28, (3 * i) % 28] = 100 + i  # one known pixel per image
    return images, (np.arange(n) % 10).astype(np.uint8)


@pytest.fixture
def fashion_root(tmp_path):
    for prefix, n in (("train", 50), ("t10k", 20)):
        images, labels = fashion_arrays(n)
        (tmp_path / f"{prefix}-images-idx3-ubyte.gz").write_bytes(
            gzip.compress(idx_bytes(images, 0x803)))
        (tmp_path / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(
            gzip.compress(idx_bytes(labels, 0x801)))
    return tmp_path


def cifar_rows(n, seed):
    return np.random.default_rng(seed).integers(0, 256, (n, 3072), dtype=np.uint8)


def dump(path: Path, obj, protocol=2):
    path.write_bytes(pickle.dumps(obj, protocol=protocol))


@pytest.fixture
def cifar10_root(tmp_path):
    for i in range(1, 6):  # mixed protocols: py2-era files are protocol 2, re-pickled ones newer
        dump(tmp_path / f"data_batch_{i}", {b"data": cifar_rows(6, i),
                                            b"labels": [(j + i) % 3 for j in range(6)]},
             protocol=(2, 4, 5)[i % 3])
    dump(tmp_path / "test_batch", {b"data": cifar_rows(5, 0), b"labels": [0, 1, 2, 0, 1]})
    dump(tmp_path / "batches.meta", {b"label_names": [b"cat", b"dog", b"eel"]})
    return tmp_path


@pytest.fixture
def cifar100_root(tmp_path):
    dump(tmp_path / "train", {b"data": cifar_rows(12, 1), b"fine_labels": [0, 1, 2, 3] * 3,
                              b"coarse_labels": [0] * 12})
    dump(tmp_path / "test", {b"data": cifar_rows(4, 2), b"fine_labels": [3, 2, 1, 0]})
    dump(tmp_path / "meta", {b"fine_label_names": [b"apple", b"bee", b"cup", b"dog"]})
    return tmp_path


@pytest.fixture
def folder_root(tmp_path):
    rng = np.random.default_rng(0)
    for split, per_class in (("train", 5), ("val", 2)):
        for cls in ("ant", "bee", "cow"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(per_class):
                rgb = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
                Image.fromarray(rgb).save(tmp_path / split / cls / f"{i}.png")
    return tmp_path


class Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


# ---------------------------------------------------------------- pure functions

def test_convert_channels_follows_bt601_and_repeats_gray():
    rgb = torch.rand(4, 3, 5, 6)
    expected = 0.299 * rgb[:, 0] + 0.587 * rgb[:, 1] + 0.114 * rgb[:, 2]
    gray = convert_channels(rgb, 1)
    assert gray.shape == (4, 1, 5, 6)
    torch.testing.assert_close(gray[:, 0], expected, rtol=0, atol=1e-6)
    rgb8 = torch.randint(0, 256, (4, 3, 5, 6), dtype=torch.uint8)
    want8 = (0.299 * rgb8[:, 0].double() + 0.587 * rgb8[:, 1] + 0.114 * rgb8[:, 2]).round()
    gray8 = convert_channels(rgb8, 1)
    assert gray8.dtype == torch.uint8
    assert (gray8[:, 0].double() - want8).abs().max() <= 1  # float32 vs float64 rounding edge
    assert (gray8[:, 0].double() == want8).float().mean() > 0.99
    wide = convert_channels(gray, 3)
    assert wide.shape == (4, 3, 5, 6) and all(torch.equal(wide[:, c], gray[:, 0]) for c in range(3))
    assert convert_channels(rgb, 3) is rgb


def test_stratified_subset_is_seeded_sorted_and_covers_every_class():
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 3)
    a, b = stratified_subset(labels, 0.2, seed=1), stratified_subset(labels, 0.2, seed=1)
    assert torch.equal(a, b) and torch.equal(a, a.sort().values)
    assert not torch.equal(a, stratified_subset(labels, 0.2, seed=2))
    assert torch.bincount(labels[a]).tolist() == [10, 6, 1]
    tiny = stratified_subset(labels, 0.001, seed=0)
    assert torch.bincount(labels[tiny]).tolist() == [1, 1, 1]
    assert torch.equal(stratified_subset(labels, 1.0, seed=5), torch.arange(len(labels)))


# ---------------------------------------------------------------- augmentation

def shifted(img, dy, dx, p):
    """Slow reference: crop at (dy, dx) of the image zero-padded by p."""
    c, h, w = img.shape
    out = torch.zeros_like(img)
    for i in range(h):
        for j in range(w):
            si, sj = i + dy - p, j + dx - p
            if 0 <= si < h and 0 <= sj < w:
                out[:, i, j] = img[:, si, sj]
    return out


def test_augment_identity_without_padding_or_flip():
    x = torch.rand(5, 3, 8, 8)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(augment_batch(x, Augment(crop_padding=0), g), x)
    assert torch.equal(augment_batch(x, Augment(random_crop=False, crop_padding=3), g), x)


def test_augment_flip_flips_some_samples_exactly():
    x = torch.rand(64, 1, 4, 6)
    out = augment_batch(x, Augment(random_crop=False, horizontal_flip=True),
                        torch.Generator().manual_seed(0))
    flipped = [torch.equal(o, xi.flip(2)) for o, xi in zip(out, x)]
    kept = [torch.equal(o, xi) for o, xi in zip(out, x)]
    assert all(f != k for f, k in zip(flipped, kept))
    assert 10 < sum(flipped) < 54


def test_augment_crop_matches_reference_shift():
    p, x = 2, torch.rand(16, 2, 6, 7) + 0.1  # no zeros, so a shift is identifiable
    out = augment_batch(x, Augment(crop_padding=p), torch.Generator().manual_seed(3))
    assert out.shape == x.shape
    offsets = set()
    for o, xi in zip(out, x):
        match = [(dy, dx) for dy in range(2 * p + 1) for dx in range(2 * p + 1)
                 if torch.equal(o, shifted(xi, dy, dx, p))]
        assert len(match) == 1
        offsets.add(match[0])
    assert len(offsets) > 3  # per-sample offsets, not one shift for the batch


# ---------------------------------------------------------------- batching and resume

def synthetic(n=23, size=8, channels=3, img_size=8, native_channels=3):
    images = torch.randint(0, 256, (n, native_channels, size, size), dtype=torch.uint8)
    return TensorSource(images, torch.arange(n) % 4, channels, img_size)


def test_train_epoch_is_a_permutation_dropping_only_a_final_batch_of_one():
    src = synthetic(n=15)
    assert src.steps_per_epoch(7, train=True) == 2 and src.steps_per_epoch(7, train=False) == 3
    assert [len(y) for _, y in src.batches(7, device=CPU, train=True)] == [7, 7]
    assert [len(y) for _, y in src.batches(7, device=CPU, train=False)] == [7, 7, 1]
    assert synthetic(n=16).steps_per_epoch(7, train=True) == 3
    x, _ = all_batches(src, bs=7, train=True)
    seen = {bytes((r * 255).round().to(torch.uint8).numpy()) for r in x.flatten(1)}
    assert len(seen) == 14 and seen <= {bytes(r.numpy()) for r in src.images.flatten(1)}


def test_eval_batches_are_ordered_float_and_resized():
    src = synthetic(n=10)
    x, y = all_batches(src, bs=4, train=False)
    assert x.dtype == torch.float32 and torch.equal(x, src.images.float() / 255)
    assert torch.equal(y, src.labels)
    up, _ = all_batches(TensorSource(src.images, src.labels, 3, 16), bs=4, train=False)
    assert up.shape == (10, 3, 16, 16) and 0 <= up.min() and up.max() <= 1
    torch.testing.assert_close(up, F.interpolate(x, size=16, mode="bilinear"))
    gray = synthetic(n=6, native_channels=1)  # held as one channel, widened per batch
    assert gray.images.shape[1] == 1
    g, _ = all_batches(gray, train=False)
    assert g.shape == (6, 3, 8, 8) and torch.equal(g[:, 0], g[:, 2])
    assert synthetic(n=6, channels=1).images.shape[1] == 1  # RGB reduced once, at load


def test_resume_at_any_step_reproduces_the_epoch_tail():
    src, aug = synthetic(n=41), Augment(crop_padding=2, horizontal_flip=True)
    kw = dict(device=CPU, train=True, seed=7, epoch=3, augment=aug)
    full = list(src.batches(5, **kw))
    assert len(full) == src.steps_per_epoch(5, train=True) == 8
    for k in (1, 5):
        tail = list(src.batches(5, start_step=k, **kw))
        assert len(tail) == len(full) - k
        for (xa, ya), (xb, yb) in zip(full[k:], tail):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)
    ys = torch.cat([y for _, y in full])
    other = torch.cat([y for _, y in src.batches(5, **{**kw, "epoch": 4})])
    assert not torch.equal(ys, other)  # the order changes every epoch
    assert not torch.equal(full[0][0], next(src.batches(5, **{**kw, "seed": 8}))[0])


# ---------------------------------------------------------------- digits

def test_digits_fixed_test_split_and_seeded_val_split():
    a = load_data(cfg("digits", channels=1, img_size=8, val_fraction=0.1))
    assert len(a.train) + len(a.val) + len(a.test) == 1797
    assert abs(len(a.test) - 0.2 * 1797) < 10
    assert abs(len(a.val) - 0.1 * (1797 - len(a.test))) < 10
    assert a.class_names == [str(i) for i in range(10)] and a.channels == 1
    assert (torch.bincount(a.val.labels, minlength=10) > 0).all()
    b = load_data(cfg("digits", channels=1, img_size=8, val_fraction=0.1))
    assert a.identity == b.identity and torch.equal(a.val.labels, b.val.labels)
    c = load_data(cfg("digits", channels=3, img_size=16, val_fraction=0.1, split_seed=1))
    assert torch.equal(c.test.labels, a.test.labels)  # test split ignores the recipe seed
    assert c.identity != a.identity
    x, _ = next(c.train.batches(32, device=CPU, train=True, augment=Augment()))
    assert x.shape == (32, 3, 16, 16)
    train, f64 = a.train.images.double() / 255, torch.float64
    torch.testing.assert_close(torch.tensor(a.mean, dtype=f64), train.mean((0, 2, 3)))
    torch.testing.assert_close(torch.tensor(a.std, dtype=f64), train.std((0, 2, 3), correction=0))
    assert len(c.mean) == len(c.std) == 3 and c.mean[0] == c.mean[2]


# ---------------------------------------------------------------- fashion-mnist (IDX)

def test_fashion_idx_round_trip(fashion_root):
    check_data(cfg("fashion_mnist", fashion_root))
    data = load_data(cfg("fashion_mnist", fashion_root, channels=1, img_size=28,
                         val_fraction=0.2))
    assert data.class_names == FASHION_CLASSES and len(data.test) == 20
    assert len(data.train) == 40 and len(data.val) == 10
    x, y = all_batches(data.test, bs=8, train=False)
    images, labels = fashion_arrays(20)
    assert torch.equal(y, torch.from_numpy(labels).long())
    assert round(x[13, 0, 13, 39 % 28].item() * 255) == 113 and x[13].sum() * 255 == 113
    assert torch.bincount(data.train.labels).tolist() == [4] * 10
    rows = torch.cat([data.train.images, data.val.images]).flatten(1)
    assert len({bytes(r) for r in rows.numpy()}) == 50  # val is carved from train, disjoint


def test_fashion_accepts_plain_idx_names(fashion_root):
    for p in fashion_root.glob("*.gz"):
        p.with_suffix("").write_bytes(gzip.decompress(p.read_bytes()))
        p.unlink()
    data = load_data(cfg("fashion_mnist", fashion_root, channels=3, img_size=32))
    assert next(data.test.batches(4, device=CPU, train=False))[0].shape == (4, 3, 32, 32)


@pytest.mark.parametrize("damage, message", [
    (lambda b: b[: len(b) // 2], "corrupt or truncated"),
    (lambda b: gzip.compress(gzip.decompress(b)[:-5]), "expected 39200 data bytes"),
    (lambda b: gzip.compress(b"\0\0\x08\x01" + gzip.decompress(b)[4:]), "bad IDX magic"),
])
def test_fashion_damaged_file_names_file_and_fault(fashion_root, damage, message):
    path = fashion_root / "train-images-idx3-ubyte.gz"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(BadInput, match=message) as err:
        load_data(cfg("fashion_mnist", fashion_root))
    assert err.value.file == str(path)


def test_fashion_count_mismatch_and_missing_files(fashion_root):
    labels = fashion_root / "t10k-labels-idx1-ubyte.gz"
    labels.write_bytes(gzip.compress(idx_bytes(np.zeros(19, np.uint8), 0x801)))
    with pytest.raises(BadInput, match="20 images but 19 labels"):
        check_data(cfg("fashion_mnist", fashion_root))
    labels.unlink()
    with pytest.raises(BadInput, match="missing t10k-labels") as err:
        load_data(cfg("fashion_mnist", fashion_root))
    assert err.value.key == "data.root"
    with pytest.raises(BadInput, match="data folder not found") as err:
        check_data(cfg("fashion_mnist", fashion_root / "nope"), file="r.toml")
    assert (err.value.file, err.value.key) == ("r.toml", "data.root")
    assert "apt-get install dataset-fashion-mnist" in err.value.hint


@pytest.mark.skipif(not Path(DEFAULT_ROOTS["fashion_mnist"]).is_dir(), reason="not installed")
def test_fashion_installed_headers_parse():
    check_data(cfg("fashion_mnist"))


# ---------------------------------------------------------------- CIFAR (restricted pickles)

def test_cifar10_layout_and_gray(cifar10_root):
    check_data(cfg("cifar10", cifar10_root))
    data = load_data(cfg("cifar10", cifar10_root, img_size=32, val_fraction=0.2))
    assert data.class_names == ["cat", "dog", "eel"] and len(data.test) == 5
    assert len(data.train) + len(data.val) == 30
    x, y = all_batches(data.test, train=False)
    rows = cifar_rows(5, 0)
    assert y.tolist() == [0, 1, 2, 0, 1]
    assert torch.equal((x * 255).round().to(torch.uint8).flatten(1), torch.from_numpy(rows))
    gray = load_data(cfg("cifar10", cifar10_root, channels=1, img_size=32))
    g, _ = all_batches(gray.test, train=False)
    want = convert_channels(torch.from_numpy(rows).view(5, 3, 32, 32), 1).float() / 255
    assert g.shape == (5, 1, 32, 32) and torch.equal(g, want)


def test_cifar100_fine_labels(cifar100_root):
    data = load_data(cfg("cifar100", cifar100_root, val_fraction=0.25))
    assert data.class_names == ["apple", "bee", "cup", "dog"]
    assert data.test.labels.tolist() == [3, 2, 1, 0]
    assert torch.bincount(data.val.labels).tolist() == [1, 1, 1, 1]


def test_cifar_missing_file_and_root(cifar10_root):
    (cifar10_root / "data_batch_3").unlink()
    with pytest.raises(BadInput, match="missing data_batch_3") as err:
        check_data(cfg("cifar10", cifar10_root))
    assert err.value.key == "data.root"
    with pytest.raises(BadInput, match="data folder not found"):
        load_data(cfg("cifar100", cifar10_root / "absent"))


@pytest.mark.parametrize("victim", ["test_batch", "batches.meta"])
def test_hostile_pickle_is_refused_without_running(cifar10_root, tmp_path, victim):
    marker = tmp_path / "pwned"
    dump(cifar10_root / victim, {b"data": Evil(marker), b"label_names": Evil(marker)})
    with pytest.raises(BadInput, match="refusing pickle that asks for posix.system") as err:
        load_data(cfg("cifar10", cifar10_root))
    assert err.value.file == str(cifar10_root / victim)
    assert not marker.exists()


# ---------------------------------------------------------------- image folders

@pytest.mark.parametrize("channels", [1, 3])
def test_image_folder(folder_root, channels):
    c = cfg("imagefolder", folder_root, channels=channels, img_size=16, workers=0,
            val_fraction=0.2)
    check_data(c)
    data = load_data(c)
    assert data.class_names == ["ant", "bee", "cow"]
    assert (len(data.train), len(data.val), len(data.test)) == (12, 3, 6)
    assert torch.bincount(data.test.labels).tolist() == [2, 2, 2]
    x, y = next(data.train.batches(4, device=CPU, train=True, augment=Augment()))
    assert x.shape == (4, channels, 16, 16) and x.dtype == torch.float32 and y.shape == (4,)
    assert len(data.mean) == channels and all(0.3 < m < 0.7 for m in data.mean)
    kw = dict(device=CPU, train=True, seed=1, augment=Augment(horizontal_flip=True))
    full = list(data.train.batches(5, **kw))
    tail = list(data.train.batches(5, start_step=1, **kw))
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
               for a, b in zip(full[1:], tail, strict=True))


def test_image_folder_with_workers_matches_inline_decoding(folder_root):
    data = load_data(cfg("imagefolder", folder_root, img_size=12, workers=0))
    x0, y0 = all_batches(data.test, bs=4, train=False)
    data.test.workers = 2
    x2, y2 = all_batches(data.test, bs=4, train=False)
    assert torch.equal(x0, x2) and torch.equal(y0, y2)


def test_image_folder_val_classes_must_match_train(folder_root):
    (folder_root / "val" / "cow").rename(folder_root / "val" / "cat")
    with pytest.raises(BadInput, match="classes differ from train/: cat, cow") as err:
        load_data(cfg("imagefolder", folder_root))
    assert err.value.file == str(folder_root / "val")


def test_image_folder_needs_root_and_readable_images(folder_root):
    with pytest.raises(BadInput, match="imagefolder needs a data folder"):
        check_data(cfg("imagefolder"))
    (folder_root / "train" / "bee" / "bad.png").write_bytes(b"not a png")
    with pytest.raises(BadInput, match="not a readable image") as err:
        check_data(cfg("imagefolder", folder_root))
    assert err.value.file.endswith("bad.png")
