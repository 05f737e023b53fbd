"""Sources: one split as a seeded, resumable stream of float batches on the training device, and the
on-device pad-crop augmentation. `data` builds them from the files of each dataset.

Every random choice comes from a generator seeded by (seed, epoch[, step or image]), so a run
resumed at step k sees exactly the batches an uninterrupted run would.
"""
from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

from .augment import SEED_RANGE, TimmViews, eval_transform
from .preprocess import convert_channels, to_unit_float

if TYPE_CHECKING:
    from .data_config import Augment

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
