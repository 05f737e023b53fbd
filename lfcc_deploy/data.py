"""Datasets: each one's files read into `sources` (seeded, resumable streams of batches on the
training device), the seeded validation split, and a fingerprint of the result.

Small datasets are held whole as uint8 at native resolution and moved to the device
once; image folders are decoded by DataLoader workers. Either way float conversion,
resizing and the pad-crop augmentation run on the device; with `data.augment.style = "timm"`
the training views come from timm's transforms in DataLoader workers instead (`augment`).
"""
from __future__ import annotations

import codecs
import gzip
import hashlib
import json
import pickle
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .augment import TimmViews
from .data_config import DataConfig
from .errors import BadInput
from .sources import FolderSource, Source, TensorSource, _Decode, _split

DEFAULT_ROOTS = {"fashion_mnist": "/usr/share/datasets/fashion-mnist",
                 "cifar10": "data/cifar-10-batches-py", "cifar100": "data/cifar-100-python"}
ROOT_HINTS = {
    "fashion_mnist": "run `apt-get install dataset-fashion-mnist` or set data.root to a folder "
                     "with the IDX files",
    "cifar10": "unpack cifar-10-python.tar.gz there, or set data.root",
    "cifar100": "unpack cifar-100-python.tar.gz there, or set data.root",
    "imagefolder": "set data.root to a folder with train/<class>/ images (val/<class>/ optional)",
}
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot"]
FASHION_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                 "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
# name -> (training pickles, test pickles, meta pickle, class-names key, labels key)
CIFAR_FILES = {
    "cifar10": ([f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "batches.meta",
                "label_names", "labels"),
    "cifar100": (["train"], ["test"], "meta", "fine_label_names", "fine_labels"),
}
DIGITS_TEST_FRACTION = 0.2  # sklearn's digits ship no test split: a fixed one, seed 0, any recipe


@dataclass
class DataBundle:
    """Everything training needs from one dataset: splits, class names and a fingerprint."""

    name: str
    class_names: list[str]
    channels: int
    img_size: int
    resize: str
    train: Source
    val: Source
    test: Source | None
    mean: tuple[float, ...]  # train-split statistics: default normalisation when from scratch
    std: tuple[float, ...]
    identity: str  # changes whenever the data or the split would
    crop_pct: float = 1.0  # the centre share of a larger image that evaluation keeps (timm's crop_pct)


# a loader's result: (train, test or None, class names, resolved root or None)
Splits = tuple[Source, Source | None, list[str], str | None]


def _root(cfg: DataConfig, file: str | None) -> Path:
    raw = cfg.root or DEFAULT_ROOTS.get(cfg.name)
    if raw is None:
        raise BadInput(f"{cfg.name} needs a data folder", file=file, key="data.root",
                       hint=ROOT_HINTS[cfg.name])
    root = Path(raw).expanduser().resolve()
    if not root.is_dir():
        raise BadInput(f"data folder not found: {root}", file=file, key="data.root",
                       hint=ROOT_HINTS[cfg.name])
    return root


def _need(root: Path, names: list[str], dataset: str, file: str | None) -> Path:
    for name in names:
        if (root / name).is_file():
            return root / name
    raise BadInput(f"missing {' or '.join(names)} in {root}", file=file, key="data.root",
                   hint=ROOT_HINTS[dataset])


def _load_digits(cfg: DataConfig, file: str | None) -> Splits:
    from sklearn.datasets import load_digits
    d = load_digits()
    images = torch.from_numpy(np.rint(d.images * (255 / 16)).astype(np.uint8)).unsqueeze(1)
    full = TensorSource(images, torch.from_numpy(d.target).long(), cfg.channels, cfg.img_size)
    train, test = _split(full.labels, DIGITS_TEST_FRACTION, 0)
    return full.subset(train), full.subset(test), [str(i) for i in range(10)], None


def _read_idx(path: Path, ndim: int, header_only: bool) -> tuple[list[int], np.ndarray | None]:
    """Dims and data of an IDX file: big-endian magic 0x0000080N, N uint32 dims, uint8 data."""
    try:
        with gzip.open(path) if path.suffix == ".gz" else open(path, "rb") as f:
            head, body = f.read(4 + 4 * ndim), (b"" if header_only else f.read())
    except (OSError, EOFError, zlib.error) as err:
        raise BadInput(f"corrupt or truncated file: {err}", file=str(path)) from None
    if len(head) < 4 + 4 * ndim:
        raise BadInput(f"truncated IDX header ({len(head)} bytes)", file=str(path))
    magic, *dims = struct.unpack(f">{1 + ndim}I", head)
    if magic != 0x800 + ndim:
        raise BadInput(f"bad IDX magic {magic:#010x}, expected {0x800 + ndim:#010x}",
                       file=str(path))
    if header_only:
        return dims, None
    if len(body) != int(np.prod(dims)):
        raise BadInput(f"expected {int(np.prod(dims))} data bytes for dims {dims}, found "
                       f"{len(body)}", file=str(path))
    return dims, np.frombuffer(bytearray(body), np.uint8).reshape(dims)


def _fashion_split(root: Path, split: str, file: str | None, header_only: bool):
    img_p, lab_p = (_need(root, [f"{n}.gz", n], "fashion_mnist", file)
                    for n in FASHION_FILES[split])
    (n_img, *_), images = _read_idx(img_p, 3, header_only)
    (n_lab,), labels = _read_idx(lab_p, 1, header_only)
    if n_img != n_lab:
        raise BadInput(f"{n_img} images but {n_lab} labels in {lab_p.name}", file=str(img_p))
    if labels is not None and labels.max(initial=0) >= len(FASHION_CLASSES):
        raise BadInput(f"label {labels.max()} out of range 0-9", file=str(lab_p))
    return images, labels


def _load_fashion(cfg: DataConfig, file: str | None) -> Splits:
    root = _root(cfg, file)

    def source(split: str) -> TensorSource:
        images, labels = _fashion_split(root, split, file, header_only=False)
        return TensorSource(torch.from_numpy(images).unsqueeze(1),
                            torch.from_numpy(labels.astype(np.int64)), cfg.channels, cfg.img_size)
    return source("train"), source("test"), list(FASHION_CLASSES), str(root)


_NP_CORE = getattr(np, "_core", None) or np.core  # numpy 2 renamed numpy.core
_PICKLE_GLOBALS = {  # all that pickled numpy arrays need; anything else could run code
    **{(m, "_reconstruct"): _NP_CORE.multiarray._reconstruct
       for m in ("numpy.core.multiarray", "numpy._core.multiarray")},
    **{(m, "_frombuffer"): _NP_CORE.numeric._frombuffer
       for m in ("numpy.core.numeric", "numpy._core.numeric")},
    ("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,  # bytes in protocol-2 pickles written by Python 3
}


class _SafeUnpickler(pickle.Unpickler):
    """Resolves only numpy's array-rebuilding globals, so a hostile pickle cannot run code."""

    def __init__(self, f, path: Path):
        super().__init__(f, encoding="bytes")
        self.path = path

    def find_class(self, module: str, name: str):
        if (module, name) not in _PICKLE_GLOBALS:
            raise BadInput(f"refusing pickle that asks for {module}.{name}", file=str(self.path))
        return _PICKLE_GLOBALS[module, name]


def _read_pickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            d = _SafeUnpickler(f, path).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            IndexError, KeyError, OSError) as err:
        raise BadInput(f"not a readable CIFAR pickle: {err}", file=str(path)) from None
    if not isinstance(d, dict):
        raise BadInput(f"expected a dict, found {type(d).__name__}", file=str(path))
    return d


def _field(d: dict, key: str, path: Path):
    for k in (key.encode(), key):
        if k in d:
            return d[k]
    raise BadInput(f"no {key!r} entry", file=str(path))


def _cifar_source(paths: list[Path], labels_key: str, n_classes: int, cfg: DataConfig):
    data, labels = [], []
    for p in paths:
        d = _read_pickle(p)
        x, y = np.asarray(_field(d, "data", p)), np.asarray(_field(d, labels_key, p))
        if x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3072 or y.shape != (len(x),):
            raise BadInput(f"expected uint8 data N×3072 and N labels, found {x.dtype} "
                           f"{x.shape} and {y.shape} labels", file=str(p))
        if len(y) and (y.min() < 0 or y.max() >= n_classes):
            raise BadInput(f"labels outside 0-{n_classes - 1}", file=str(p))
        data.append(x)
        labels.append(y.astype(np.int64))
    images = torch.from_numpy(np.concatenate(data)).view(-1, 3, 32, 32)
    return TensorSource(images, torch.from_numpy(np.concatenate(labels)), cfg.channels,
                        cfg.img_size)


def _cifar_names(cfg: DataConfig, file: str | None) -> tuple[Path, list[str]]:
    root = _root(cfg, file)
    train, test, meta, names_key, _ = CIFAR_FILES[cfg.name]
    for name in train + test:
        _need(root, [name], cfg.name, file)
    meta_p = _need(root, [meta], cfg.name, file)
    names = _field(_read_pickle(meta_p), names_key, meta_p)
    return root, [n.decode() if isinstance(n, bytes) else str(n) for n in names]


def _load_cifar(cfg: DataConfig, file: str | None) -> Splits:
    root, names = _cifar_names(cfg, file)
    train, test, _, _, labels_key = CIFAR_FILES[cfg.name]
    train_s, test_s = (_cifar_source([root / f for f in files], labels_key, len(names), cfg)
                       for files in (train, test))
    return train_s, test_s, names, str(root)


def _image_folders(cfg: DataConfig, file: str | None):
    """(root, train, val or None) ImageFolders; val/ must hold exactly train/'s classes."""
    from torchvision.datasets import ImageFolder
    root = _root(cfg, file)
    crop_pct = cfg.eval_crop_pct()

    def folder(split: str):
        try:
            return ImageFolder(str(root / split), transform=_Decode(cfg.channels, cfg.img_size, crop_pct))
        except FileNotFoundError as err:  # no folder, no class folders, or no images
            raise BadInput(str(err), file=str(root / split), key="data.root",
                           hint=ROOT_HINTS["imagefolder"]) from None
    train = folder("train")
    val = folder("val") if (root / "val").is_dir() else None
    if val is not None and val.classes != train.classes:
        diff = sorted(set(val.classes) ^ set(train.classes))
        raise BadInput(f"classes differ from train/: {', '.join(diff)}", file=str(root / "val"),
                       key="data.root")
    return root, train, val


def _load_folder(cfg: DataConfig, file: str | None) -> Splits:
    root, train, val = _image_folders(cfg, file)
    train_s, val_s = (None if ds is None else FolderSource(
        ds, torch.arange(len(ds)), cfg.channels, cfg.img_size, cfg.workers) for ds in (train, val))
    return train_s, val_s, list(train.classes), str(root)


def _check_fashion(cfg: DataConfig, file: str | None) -> None:
    root = _root(cfg, file)
    for split in FASHION_FILES:
        _fashion_split(root, split, file, header_only=True)


def _check_folder(cfg: DataConfig, file: str | None) -> None:
    from PIL import Image
    _, train, val = _image_folders(cfg, file)
    for path, _ in train.samples + (val.samples if val is not None else []):
        try:
            Image.open(path).close()  # reads the header only
        except OSError as err:
            raise BadInput(f"not a readable image: {err}", file=path) from None


# name -> (load, fast check)
_DATASETS: dict[str, tuple[Callable[..., Splits], Callable[..., object]]] = {
    "digits": (_load_digits, lambda cfg, file: None),  # bundled with scikit-learn
    "fashion_mnist": (_load_fashion, _check_fashion),
    "cifar10": (_load_cifar, _cifar_names),
    "cifar100": (_load_cifar, _cifar_names),
    "imagefolder": (_load_folder, _check_folder),
}


def _identity(cfg: DataConfig, root: str | None, *sources: Source | None) -> str:
    labels = hashlib.sha256()
    for s in sources:
        labels.update(b"none|" if s is None else s.labels.numpy().tobytes() + b"|")
    blob = json.dumps({"name": cfg.name, "root": root, "split_seed": cfg.split_seed,
                       "val_fraction": cfg.val_fraction, "labels": labels.hexdigest(),
                       "sizes": [None if s is None else len(s) for s in sources],
                       **({"resize": cfg.resize} if cfg.resize != "interpolate" else {})},  # older hashes stay valid
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def load_data(cfg: DataConfig, *, file: str | None = None) -> DataBundle:
    """Load `cfg.name`, carve the seeded stratified validation split from train, and
    fingerprint the result. `file` is the recipe, named in errors."""
    full, test, class_names, root = _DATASETS[cfg.name][0](cfg, file)
    for source in (full, test):
        if source is not None:
            source.resize = cfg.resize
    if cfg.augment_style() == "timm":
        full.views = TimmViews(len(class_names), cfg.channels, cfg.img_size, cfg.workers)
    rest, held = _split(full.labels, cfg.val_fraction, cfg.split_seed)
    train, val = full.subset(rest), full.subset(held)
    mean, std = train.pixel_stats()
    return DataBundle(name=cfg.name, class_names=class_names, channels=cfg.channels,
                      img_size=cfg.img_size, resize=cfg.resize, train=train, val=val, test=test, mean=mean, std=std,
                      identity=_identity(cfg, root, train, val, test), crop_pct=cfg.eval_crop_pct())


def check_data(cfg: DataConfig, *, file: str | None = None) -> None:
    """Fast pre-flight: the files exist and their headers parse; raises BadInput otherwise."""
    _DATASETS[cfg.name][1](cfg, file)
