"""The `[data]` table: dataset, size, resizing and augmentation — apart from the recipe's other tables so
data code reads its schema without importing the method registry or the export and gate schemas."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from .schema import Strict

TIMM_STYLE_MIN_SIZE = 64  # data.augment.style = "auto": image folders this large get the field's augmentation


class TimmAugment(Strict):
    """The field's augmentation at real resolution, through timm's transforms in the DataLoader workers
    (style "timm"). Defaults follow timm's `train.py`; RandAugment, mixup/cutmix and erasing are opt-in."""

    scale: tuple[float, float] = Field((0.08, 1.0), description="random-resized crop: range of the area share")
    ratio: tuple[float, float] = Field((3 / 4, 4 / 3), description="random-resized crop: range of aspect ratios")
    hflip: float = Field(0.5, ge=0, le=1, description="horizontal flip probability")
    color_jitter: float = Field(0.4, ge=0, description="brightness/contrast/saturation jitter; timm skips it "
                                                       "when randaugment is on")
    randaugment: str = Field("off", description='timm auto-augment spec, e.g. "rand-m9-mstd0.5-inc1", or "off"')
    mixup: float = Field(0.0, ge=0, description="mixup Beta alpha (0 = off); gives soft targets")
    cutmix: float = Field(0.0, ge=0, description="cutmix Beta alpha (0 = off); with mixup, one of the two per batch")
    random_erasing: float = Field(0.0, ge=0, le=1, description="probability of erasing a box with noise, per image")
    crop_pct: float = Field(0.875, gt=0, le=1, description="evaluation of image folders: resize the short side to "
                                                           "img_size / crop_pct, centre-crop img_size")

    @field_validator("scale", "ratio")
    @classmethod
    def _range(cls, v: tuple[float, float], info) -> tuple[float, float]:
        top = 1.0 if info.field_name == "scale" else float("inf")
        if not 0 < v[0] <= v[1] <= top:
            raise ValueError(f"expected [low, high] with 0 < low <= high{' <= 1' if top == 1 else ''}")
        return v

    @field_validator("randaugment")
    @classmethod
    def _timm_spec(cls, v: str) -> str:
        if v != "off":
            from timm.data import create_transform
            try:  # timm parses the spec; building a tiny pipeline is the one check that matches its rules
                create_transform(32, is_training=True, auto_augment=v)
            except (AssertionError, ValueError, KeyError, IndexError) as err:
                raise ValueError(f"not a timm auto-augment spec ({type(err).__name__}: {err}); "
                                 'e.g. "rand-m9-mstd0.5-inc1", or "off"') from None
        return v


class Augment(Strict):
    """Training augmentation. `pad_crop`: padded random crops and flips on the device (CIFAR-style, small
    images). `timm`: random-resized crops and the rest of `[data.augment.timm]` in the DataLoader workers."""

    style: Literal["auto", "pad_crop", "timm"] = Field(
        "auto", description=f"auto: timm for imagefolder at img_size >= {TIMM_STYLE_MIN_SIZE}, else pad_crop")
    random_crop: bool = Field(True, description="pad_crop")
    crop_padding: int = Field(2, ge=0, description="pad_crop: pixels of zero padding before the random crop")
    horizontal_flip: bool = Field(False, description="pad_crop")
    timm: TimmAugment = TimmAugment()


PAD_CROP_KEYS = ("random_crop", "crop_padding", "horizontal_flip")


class DataConfig(Strict):
    name: Literal["digits", "fashion_mnist", "cifar10", "cifar100", "imagefolder"]
    root: str | None = Field(None, description="data folder; default per dataset")
    img_size: int = Field(32, ge=8, le=1024)
    resize: Literal["interpolate", "pad"] = Field(
        "interpolate", description="images smaller than img_size: bilinear resize, or centred zero padding")
    channels: Literal[1, 3] = 3
    val_fraction: float = Field(0.1, gt=0, lt=1, description="seeded validation split of train")
    split_seed: int = 0
    augment: Augment = Augment()
    workers: int = Field(2, ge=0, description="DataLoader workers (image folders, and timm-style training views)")

    def augment_style(self) -> Literal["pad_crop", "timm"]:
        """`auto` resolved: real-resolution image folders get timm's augmentation; the in-memory datasets
        (digits, Fashion-MNIST, CIFAR) keep the on-device pad-crop unless a recipe asks for timm."""
        style = self.augment.style
        if style != "auto":
            return style
        return "timm" if self.name == "imagefolder" and self.img_size >= TIMM_STYLE_MIN_SIZE else "pad_crop"

    def eval_crop_pct(self) -> float:
        """The centre share of an image that evaluation keeps: timm's crop_pct, or all of it."""
        return self.augment.timm.crop_pct if self.augment_style() == "timm" else 1.0

    @model_validator(mode="after")
    def _augment_keys_fit_style(self):
        """Keys of the other style would be ignored silently; say so instead (defaults are fine, so a
        run directory's fully written recipe.toml still validates)."""
        aug, style = self.augment, self.augment_style()
        why = f"data.augment.style resolves to {style!r} ({self.name} at {self.img_size} px)"
        if style == "pad_crop" and aug.timm != TimmAugment():
            raise ValueError(f"data.augment.timm is set but {why}; set data.augment.style = \"timm\" to use it")
        changed = [k for k in PAD_CROP_KEYS if getattr(aug, k) != Augment.model_fields[k].default]
        if style == "timm" and changed:
            raise ValueError(f"data.augment.{changed[0]} applies to style \"pad_crop\" but {why}; set "
                             f"data.augment.style = \"pad_crop\" or use the [data.augment.timm] keys")
        return self
