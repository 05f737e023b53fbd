"""Datasets as seeded, resumable streams of batches that live on the training device.

Small datasets are held whole as uint8 at native resolution and moved to the device
once; image folders are decoded by DataLoader workers. Either way float conversion,
resizing and the pad-crop augmentation run on the device; with `data.augment.style = "timm"`
the training views come from timm's transforms in DataLoader workers instead (`augment`).
Every random choice comes from a generator seeded by (seed, epoch[, step or image]), so a
run resumed at step k sees exactly the batches an uninterrupted run would.
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
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .augment import SEED_RANGE, TimmViews, eval_transform
from .errors import BadInput
from .preprocess import convert_channels, to_unit_float

if TYPE_CHECKING:  # recipe imports the method registry; data only needs the field names
    from .recipe import Augment, DataConfig

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
STATS_SAMPLES = 1024  # images an image folder decodes to estimate its channel statistics


def _generator(*parts: object) -> torch.Generator:
    """A CPU generator whose seed mixes all parts, so (seed, epoch, step) never collide."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)


def _seed(*parts: object) -> int:
    """A seed for timm's global-RNG transforms, mixed from all parts like `_generator`'s."""
    return _generator(*parts).initial_seed() % SEED_RANGE


def _device(device: str | torch.device) -> torch.device:
    d = torch.device(device)
    return torch.device("cuda", torch.cuda.current_device()) if d == torch.device("cuda") else d


def _stratified_pick(labels: Tensor, fraction: float, seed: int, *, leave_one: bool) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    picked = []
    for c in torch.unique(labels).tolist():
        idx = (labels == c).nonzero().flatten()
        k = max(1, int(fraction * len(idx) + 0.5))
        k = min(k, len(idx) - 1) if leave_one else k
        picked.append(idx[torch.randperm(len(idx), generator=g)[:k]])
    return torch.cat(picked).sort().values if picked else torch.zeros(0, dtype=torch.long)


def stratified_subset(labels: Tensor, fraction: float, seed: int) -> Tensor:
    """Sorted indices of a seeded per-class share: the same seed picks the same samples, and
    every class keeps at least one so small fractions still cover every label."""
    return _stratified_pick(labels, fraction, seed, leave_one=False)


def _split(labels: Tensor, fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """(rest, held_out): a seeded stratified hold-out that leaves every class in the rest."""
    held = _stratified_pick(labels, fraction, seed, leave_one=True)
    keep = torch.ones(len(labels), dtype=torch.bool)
    keep[held] = False
    return keep.nonzero().flatten(), held


def augment_params(n: int, aug: Augment, generator: torch.Generator) -> Tensor:
    """Per-sample (dy, dx, flip) as int16 n×3, drawn on the CPU from `generator` in a fixed order.
    Kept apart from `apply_augment` so a teacher cache can store exactly which view it computed."""
    p = aug.crop_padding if aug.random_crop else 0
    shift = torch.randint(0, 2 * p + 1, (2, n), generator=generator) if p else torch.zeros(2, n, dtype=torch.long)
    flip = (torch.rand(n, generator=generator) < 0.5) if aug.horizontal_flip else torch.zeros(n, dtype=torch.bool)
    return torch.stack([shift[0], shift[1], flip.long()], 1).to(torch.int16)


def apply_augment(x: Tensor, aug: Augment, params: Tensor) -> Tensor:
    """Per-sample crop of the zero-padded batch at (dy, dx), then the flips: one index gather,
    so the batch never leaves the device."""
    n, c, h, w = x.shape
    dev, p = x.device, aug.crop_padding if aug.random_crop else 0
    params = params.to(dev, torch.long)
    if p:
        dy, dx = params[:, 0], params[:, 1]
        rows = (dy[:, None] + torch.arange(h, device=dev))[:, None, :, None]
        cols = (dx[:, None] + torch.arange(w, device=dev))[:, None, None, :]
        x = F.pad(x, (p, p, p, p))[torch.arange(n, device=dev)[:, None, None, None],
                                   torch.arange(c, device=dev)[None, :, None, None], rows, cols]
    if aug.horizontal_flip:
        x = torch.where(params[:, 2].bool()[:, None, None, None], x.flip(3), x)
    return x


def augment_batch(x: Tensor, aug: Augment, generator: torch.Generator) -> Tensor:
    """Random crop of the zero-padded batch, then optional horizontal flip, per sample."""
    return apply_augment(x, aug, augment_params(len(x), aug, generator))


class Source:
    """One split as a stream of float batches on the device. Subclasses supply `_subset`,
    `_uint8_batches` (uint8 x and labels on the device, in the given order), `_stats_batches`
    (uint8 CPU batches to measure) and `_reader` (position -> RGB PIL image, for timm's views)."""

    labels: Tensor  # int64 [N] on the CPU
    views: TimmViews | None = None  # set when data.augment.style resolves to "timm"
    resize: str = "interpolate"  # set by load_data from data.resize; subsets inherit it

    def __init__(self, labels: Tensor, channels: int, img_size: int):
        self.labels, self.channels, self.img_size = labels, channels, img_size

    def __len__(self) -> int:
        return len(self.labels)

    def steps_per_epoch(self, batch_size: int, train: bool, world: int = 1) -> int:
        """Training drops a final batch of one sample (BatchNorm cannot normalise it). With `world`
        data-parallel ranks each rank sees len // world images per epoch."""
        full, rest = divmod(len(self) // world, batch_size)
        return full + int(rest > (1 if train else 0))

    def batches(self, batch_size: int, *, device: str | torch.device, train: bool, seed: int = 0,
                epoch: int = 0, start_step: int = 0, augment: Augment | None = None,
                shard: tuple[int, int] = (0, 1), with_index: bool = False) -> Iterator[tuple[Tensor, ...]]:
        """(x float32 in [0, 1], B×channels×img_size², y int64), both on `device`. Training
        order is a (seed, epoch) permutation and augmentation is seeded per step, so
        starting at `start_step` yields exactly the tail of an uninterrupted epoch.

        `shard=(rank, world)`: this rank's 1/world of the permutation (data parallelism; every rank
        draws the same permutation, so shards never overlap). `with_index`: also yield the batch's
        positions in this source (CPU int64), for per-image lookups such as a teacher cache."""
        device, (rank, world) = _device(device), shard
        order = torch.randperm(len(self), generator=_generator("order", seed, epoch)) if train \
            else torch.arange(len(self))
        order = order[rank: len(order) // world * world: world] if world > 1 else order
        end = min(len(order), self.steps_per_epoch(batch_size, train, world) * batch_size)
        picked = order[start_step * batch_size:end]
        rank_part = (rank,) if world > 1 else ()
        timm = train and augment is not None and self.views is not None
        if timm:  # float views (and soft targets with mixup) from timm's transforms in the workers
            seeds = torch.randint(SEED_RANGE, (len(self),), generator=_generator("views", seed, epoch))
            chunks = self.views.batches(augment.timm, self._reader(), self.labels, picked, batch_size, device,
                                        seeds, lambda step: _seed("mix", seed, epoch, step, *rank_part), start_step)
        else:
            chunks = self._uint8_batches(picked, batch_size, device)
        for step, (x, y) in enumerate(chunks, start=start_step):
            if not timm:
                x = to_unit_float(x, self.img_size, self.channels, self.resize)
                if train and augment is not None:
                    x = augment_batch(x, augment, _generator("augment", seed, epoch, step, *rank_part))
            if with_index:
                first = (step - start_step) * batch_size
                yield x, y, picked[first: first + len(y)]
            else:
                yield x, y

    def uint8_images(self, limit: int) -> Tensor:
        """The first `limit` images as stored (uint8 on the CPU): what a deployed model is handed."""
        idx = torch.arange(min(limit, len(self)))
        return torch.cat([x for x, _ in self._uint8_batches(idx, 256, torch.device("cpu"))])

    def pixel_stats(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel mean and std in [0, 1] after channel conversion, from a histogram."""
        hist = sum(torch.stack([torch.bincount(x[:, c].flatten(), minlength=256)
                                for c in range(x.shape[1])]) for x in self._stats_batches())
        p = hist.double() / hist.sum(1, keepdim=True)
        v = torch.arange(256, dtype=torch.float64) / 255
        mean = (p * v).sum(1)
        std = ((p * v * v).sum(1) - mean**2).clamp(min=0).sqrt()
        reps = self.channels // len(mean)  # gray held once, widened to RGB per batch
        return tuple(mean.tolist()) * reps, tuple(std.tolist()) * reps

    def subset(self, indices: Tensor) -> Source:
        child = self._subset(indices)
        child.resize, child.views = self.resize, self.views
        return child

    def _subset(self, indices: Tensor) -> Source:
        raise NotImplementedError


class TensorSource(Source):
    """A split held whole as uint8 N×C×H×W at native resolution (upscaling in memory would
    not fit), reduced to gray at load when one channel is asked for."""

    def __init__(self, images: Tensor, labels: Tensor, channels: int, img_size: int):
        super().__init__(labels, channels, img_size)
        if images.shape[1] == 3 and channels == 1:
            images = torch.cat([convert_channels(c, 1) for c in images.split(4096)])
        self.images = images
        self._on_device: dict[torch.device, tuple[Tensor, Tensor]] = {}

    def _subset(self, indices: Tensor) -> TensorSource:
        return TensorSource(self.images[indices], self.labels[indices], self.channels,
                            self.img_size)

    def _uint8_batches(self, indices, batch_size, device):
        if device not in self._on_device:  # once per device, so batching never waits on a copy
            self._on_device[device] = (self.images.to(device), self.labels.to(device))
        images, labels = self._on_device[device]
        for idx in indices.to(device).split(batch_size):
            yield images[idx], labels[idx]

    def _stats_batches(self):
        return self.images.split(4096)

    def _reader(self):
        return _TensorImages(self.images)


class _TensorImages:
    """Position -> RGB PIL image of a uint8 N×C×H×W tensor (picklable for DataLoader workers)."""

    def __init__(self, images: Tensor):
        self.images = images

    def __call__(self, i: int):
        from PIL import Image
        a = self.images[i].permute(1, 2, 0).numpy()
        return Image.fromarray(a[:, :, 0] if a.shape[2] == 1 else a).convert("RGB")


class _FolderImages:
    """Position -> RGB PIL image of an ImageFolder's rows `index`, undecoded by its own transform."""

    def __init__(self, dataset, index: Tensor):
        self.dataset, self.index = dataset, index

    def __call__(self, i: int):
        return self.dataset.loader(self.dataset.samples[int(self.index[i])][0]).convert("RGB")


class _Decode:
    """Worker-side transform: decode to L/RGB, then timm's evaluation crop (resize the short side to
    size / crop_pct, centre-crop size), uint8 C×H×W. crop_pct = 1 unless data.augment.style is timm."""

    def __init__(self, channels: int, size: int, crop_pct: float = 1.0):
        self.mode, self.crop = ("L" if channels == 1 else "RGB"), eval_transform(size, crop_pct)

    def __call__(self, img):
        return self.crop(img.convert(self.mode))


class FolderSource(Source):
    """Rows `index` of a torchvision ImageFolder, decoded by `workers` DataLoader workers."""

    def __init__(self, dataset, index: Tensor, channels: int, img_size: int, workers: int):
        super().__init__(torch.as_tensor(dataset.targets, dtype=torch.long)[index], channels,
                         img_size)
        self.dataset, self.index, self.workers = dataset, index, workers

    def _subset(self, indices: Tensor) -> FolderSource:
        return FolderSource(self.dataset, self.index[indices], self.channels, self.img_size,
                            self.workers)

    def _uint8_batches(self, indices, batch_size, device):
        from torch.utils.data import DataLoader
        loader = DataLoader(self.dataset, batch_size=batch_size, num_workers=self.workers,
                            sampler=self.index[indices].tolist(), pin_memory=device.type == "cuda")
        for x, y in loader:
            yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)

    def _stats_batches(self):
        sample = stratified_subset(self.labels, min(1.0, STATS_SAMPLES / max(len(self), 1)), 0)
        chunks = self._uint8_batches(sample, 64, torch.device("cpu"))
        return (x for x, _ in chunks)

    def _reader(self):
        return _FolderImages(self.dataset, self.index)


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
    crop_pct = cfg.augment.timm.crop_pct if cfg.augment_style() == "timm" else 1.0

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
                      identity=_identity(cfg, root, train, val, test))


def check_data(cfg: DataConfig, *, file: str | None = None) -> None:
    """Fast pre-flight: the files exist and their headers parse; raises BadInput otherwise."""
    _DATASETS[cfg.name][1](cfg, file)
