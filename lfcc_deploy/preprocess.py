"""The one input pipeline from uint8 pixels to a model's input, shared by training, export,
`predict` and the bench's end-to-end mode, so a deployed model sees exactly what it was trained on.

Steps: uint8 N×C×H×W -> float in [0, 1] -> to the model's square size (bilinear, antialiased when
shrinking; or, with `resize = "pad"`, images smaller than that are centred on a black canvas) ->
channel conversion (BT.601 gray / repeated gray) -> (x - mean) / std.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import BadInput

GRAY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R BT.601 luma
RESIZE_MODES = ("interpolate", "pad")
ResizeMode = Literal["interpolate", "pad"]
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def convert_channels(x: Tensor, channels: int) -> Tensor:
    """N×C×H×W to `channels`: RGB->gray by BT.601 weights (uint8 rounds), gray->RGB by repeat."""
    have = x.shape[1]
    if have == channels:
        return x
    if (have, channels) == (1, 3):
        return x.repeat(1, 3, 1, 1)
    if (have, channels) != (3, 1):
        raise ValueError(f"cannot convert {have} channels to {channels}")
    xf = x if x.is_floating_point() else x.float()
    w = torch.tensor(GRAY_WEIGHTS, dtype=xf.dtype, device=x.device).view(1, 3, 1, 1)
    gray = (xf * w).sum(1, keepdim=True)
    return gray if x.is_floating_point() else gray.round().clamp(0, 255).to(x.dtype)


def to_unit_float(x: Tensor, img_size: int, channels: int, resize: ResizeMode = "interpolate") -> Tensor:
    """uint8 N×C×H×W -> float32 in [0, 1] at img_size², `channels` channels.

    `pad` keeps small images' pixels as they are (Fashion-MNIST 28 -> 32 gains a 2-pixel black
    border instead of a blur): strokes and textures keep their sharpness, and a random crop of the
    padded image is the classic small-image augmentation. Larger images are still resized.
    """
    x = x.float().div_(255)
    h, w, s = *x.shape[-2:], img_size
    if resize == "pad" and h <= s and w <= s and (h, w) != (s, s):
        top, left = (s - h) // 2, (s - w) // 2
        x = F.pad(x, (left, s - w - left, top, s - h - top))
    elif (h, w) != (s, s):  # bilinear stays in [0, 1]; antialias only matters downscaling
        x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False, antialias=s < min(h, w))
    return convert_channels(x, channels)


@dataclass(frozen=True)
class Preprocess:
    """A model's input contract; travels in ONNX metadata and engine JSON as `preprocess`."""

    img_size: int
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    resize: ResizeMode = "interpolate"
    # image files only (read_image): the centre square's share kept before resizing, so `predict` on a
    # photo sees the crop that evaluation did (timm: short side to img_size / crop_pct, centre crop)
    crop_pct: float = 1.0

    def __call__(self, x: Tensor) -> Tensor:
        """uint8 images (any size, 1 or 3 channels) -> normalised float32 model input."""
        return self.normalize(to_unit_float(x, self.img_size, self.channels, self.resize))

    def normalize(self, x: Tensor) -> Tensor:
        """float images in [0, 1] at the model's size -> model input."""
        mean = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, -1, 1, 1)
        return (x - mean) / std

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str, *, file: str | None = None) -> "Preprocess":
        try:
            d = json.loads(text)
            pre = cls(int(d["img_size"]), int(d["channels"]), tuple(map(float, d["mean"])),
                      tuple(map(float, d["std"])), d.get("resize", "interpolate"),  # older files: no key
                      float(d.get("crop_pct", 1.0)))
            if pre.resize not in RESIZE_MODES or pre.channels not in (1, 3) or pre.img_size < 1 \
                    or not len(pre.mean) == len(pre.std) == pre.channels or min(pre.std) <= 0 \
                    or not 0 < pre.crop_pct <= 1:
                raise ValueError(f"inconsistent values {d}")
            return pre
        except (ValueError, KeyError, TypeError) as err:
            raise BadInput(f"unreadable preprocess metadata ({type(err).__name__}: {err})", file=file,
                           key="preprocess", hint="re-export the model with `lfcc-deploy export`") from None

    @classmethod
    def of(cls, spec: Any) -> "Preprocess":
        """From a models.ModelSpec."""
        return cls(spec.img_size, spec.in_chans, tuple(spec.mean), tuple(spec.std), spec.resize, spec.crop_pct)


def pad_batch(x: Tensor, rows: int) -> Tensor:
    """`x` topped up to `rows` by repeating its first image: what a static-batch graph must be fed."""
    return torch.cat([x, x[:1].expand(rows - len(x), *x.shape[1:])]) if len(x) < rows else x


def read_image(path: Path, channels: int, crop_pct: float = 1.0) -> Tensor:
    """An image file as uint8 1×C×S×S: decoded to gray or RGB, centre-cropped to a square of
    crop_pct of its short side."""
    from PIL import Image, UnidentifiedImageError
    if path.is_dir():
        raise BadInput("is a directory, not an image file", file=str(path), hint=f"pass the files, e.g. {path}/*.png")
    try:
        with Image.open(path) as img:
            img = img.convert("L" if channels == 1 else "RGB")
            w, h = img.size
            s = max(1, round(min(w, h) * crop_pct))
            img = img.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
            x = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).view(s, s, -1)
    except FileNotFoundError:
        raise BadInput("image file not found", file=str(path)) from None
    except (UnidentifiedImageError, OSError) as err:
        raise BadInput(f"cannot decode image ({type(err).__name__})", file=str(path),
                       hint=f"use one of {', '.join(sorted(IMAGE_SUFFIXES))}") from None
    return x.permute(2, 0, 1).unsqueeze(0).contiguous()


def read_images(paths: Sequence[Path], pre: Preprocess) -> Tensor:
    """Files -> one normalised batch; each file is resized on its own (sizes may differ)."""
    return torch.cat([pre(read_image(Path(p), pre.channels, pre.crop_pct)) for p in paths])
