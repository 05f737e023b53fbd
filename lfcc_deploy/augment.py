"""The field's training augmentation at real resolution (`data.augment.style = "timm"`), from timm's parts.

Per image, in the DataLoader workers: timm's `create_transform` train pipeline (random-resized crop,
flip, colour jitter or RandAugment, random erasing). Per batch, on the device: timm's `Mixup`
(mixup/cutmix, soft targets). Evaluation is timm's eval transform (resize to img_size / crop_pct,
centre crop), built in `data` where image folders are decoded.

timm's transforms draw from Python's, NumPy's and torch's global generators. Each image's view is
drawn with all three seeded from (seed, epoch, image), so a view does not depend on worker count,
batch size, data-parallel world size or a `--resume` in between; in the main process (workers = 0,
and mixup) they are restored afterwards, so training's own random stream is never touched.
"""
from __future__ import annotations

import random
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np
import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, Mixup, create_transform
from timm.data.mixup import mixup_target
from torch import Tensor

from .preprocess import convert_channels

if TYPE_CHECKING:
    from PIL.Image import Image

    from .data_config import TimmAugment

SEED_RANGE = 2**31  # NumPy's global seed must fit 32 bits


@contextmanager
def seeded(seed: int, restore: bool = True):
    """Python, NumPy and torch (CPU) global generators seeded for one draw, then restored. A DataLoader
    worker owns its generators, so there `restore=False` skips the save (NumPy's costs ~150 µs)."""
    if not restore:
        random.seed(seed)
        np.random.seed(seed)
        torch.default_generator.manual_seed(seed)  # torch.manual_seed would also visit every backend
        yield
        return
    py, npy = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        try:
            with seeded(seed, restore=False):
                yield
        finally:
            random.setstate(py)
            np.random.set_state(npy)


class _ToUnitRange:
    """timm normalises (and erases with N(0, 1) noise) in ImageNet-normalised space; models here take
    [0, 1] input and normalise themselves, so undo timm's normalisation after its pipeline."""

    def __init__(self):
        self.mean = torch.tensor(IMAGENET_DEFAULT_MEAN).view(3, 1, 1)
        self.std = torch.tensor(IMAGENET_DEFAULT_STD).view(3, 1, 1)

    def __call__(self, x: Tensor) -> Tensor:
        return x * self.std + self.mean


def train_transform(aug: TimmAugment, img_size: int) -> Callable[[Image], Tensor]:
    """RGB PIL image -> float 3×img_size² (about [0, 1]; erased boxes hold noise), timm's recipe."""
    from torchvision.transforms import Compose
    timm_tf = create_transform(img_size, is_training=True, scale=aug.scale, ratio=aug.ratio, hflip=aug.hflip,
                               color_jitter=aug.color_jitter,
                               auto_augment=None if aug.randaugment == "off" else aug.randaugment,
                               re_prob=aug.random_erasing, re_mode="pixel")
    return Compose([timm_tf, _ToUnitRange()])


def eval_transform(img_size: int, crop_pct: float) -> Callable[[Image], Tensor]:
    """PIL image -> uint8 C×img_size²: resize the short side to floor(img_size / crop_pct) (bilinear,
    antialiased), centre-crop. crop_pct = 1 is a plain resize and centre crop."""
    return create_transform(img_size, crop_pct=crop_pct, interpolation="bilinear", use_prefetcher=True)


class _Views(torch.utils.data.Dataset):
    """(position, seed) -> that image's training view; `read` turns a position into an RGB PIL image."""

    def __init__(self, read: Callable[[int], Image], transform: Callable[[Image], Tensor]):
        self.read, self.transform = read, transform

    def __getitem__(self, item: tuple[int, int]) -> Tensor:
        position, seed = item
        with seeded(seed, restore=torch.utils.data.get_worker_info() is None):
            return self.transform(self.read(position))


@dataclass(frozen=True)
class TimmViews:
    """What a split needs to draw timm-style training views; `data.load_data` attaches one to every split
    when data.augment.style resolves to "timm"."""

    num_classes: int
    channels: int
    img_size: int
    workers: int

    def batches(self, aug: TimmAugment, read: Callable[[int], Image], labels: Tensor, picked: Tensor,
                batch_size: int, device: torch.device, image_seeds: Tensor, batch_seed: Callable[[int], int],
                start_step: int) -> Iterator[tuple[Tensor, Tensor]]:
        """(x float B×channels×S², y) on `device` for the positions `picked`, `batch_size` at a time;
        y is int64 labels, or B×classes probabilities when mixup or cutmix is on."""
        from torch.utils.data import DataLoader
        loader = DataLoader(_Views(read, train_transform(aug, self.img_size)), batch_size=batch_size,
                            num_workers=self.workers, pin_memory=device.type == "cuda",
                            generator=torch.Generator(),  # its worker seeds go unused; keeps the global RNG
                            sampler=list(zip(picked.tolist(), image_seeds[picked].tolist())))
        mix = Mixup(mixup_alpha=aug.mixup, cutmix_alpha=aug.cutmix, label_smoothing=0.0,
                    num_classes=self.num_classes) if aug.mixup or aug.cutmix else None
        for step, (x, idx) in enumerate(zip(loader, picked.split(batch_size)), start=start_step):
            x = convert_channels(x.to(device, non_blocking=True), self.channels)
            y = labels[idx].to(device, non_blocking=True)
            if mix is not None:
                with seeded(batch_seed(step)):
                    x, y = self._mix(mix, x, y)
            yield x, y

    def _mix(self, mix: Mixup, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """timm's Mixup needs an even batch: an odd last image stays unmixed, with its one-hot target.
        Label smoothing stays with the loss (torch's cross-entropy smooths probability targets the same
        way timm's mixup_target would)."""
        even = len(x) - len(x) % 2
        if even == len(x):
            return mix(x, y)
        head, target = mix(x[:even], y[:even])
        x = torch.cat([head, x[even:]])
        return x, torch.cat([target, mixup_target(y[even:], self.num_classes)])
