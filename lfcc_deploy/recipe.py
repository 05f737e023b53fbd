"""Recipes: declarative TOML validated by pydantic, with dotted `--set` overrides.

Schema validation is kept apart from resolving resources (data files, model
names, checkpoints) so that presets for data this machine lacks still validate.
"""
from __future__ import annotations

import hashlib
import json
import tomllib
from pathlib import Path
from typing import Any, Literal

import tomli_w
from pydantic import Field, ValidationError, create_model, field_validator, model_validator

from .errors import BadInput
from .export.config import ExportConfig
from .gate_config import GatesConfig
from .losses import METHODS
from .data_config import DataConfig
from .schema import Strict

RECIPE_DIRS = (Path("recipes"), Path(__file__).resolve().parent.parent / "recipes")
class TrainConfig(Strict):
    epochs: int = Field(10, gt=0)
    batch_size: int = Field(128, gt=0)
    optimizer: Literal["sgd", "adamw", "adam"] = "adamw"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.05, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1, description="sgd only")
    schedule: Literal["cosine", "constant", "linear"] = "cosine"
    warmup: float = Field(0.0, ge=0, description="warm-up length in epochs")
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    grad_clip: float | None = Field(None, gt=0, description="max gradient norm")
    seed: int = 0
    train_fraction: float = Field(1.0, gt=0, le=1, description="stratified seeded share of train")
    log_every: int = Field(20, gt=0, description="steps between progress updates (host syncs)")
    compile: bool = Field(False, description="torch.compile the trained model (slow first steps; falls back to eager)")
    sync_batchnorm: bool = Field(False, description="torchrun, CUDA: BatchNorm statistics over the global batch")
    lr_scaling: Literal["none", "linear", "sqrt"] = Field(
        "linear", description="torchrun: effective lr = lr × world_size (linear) or × √world_size (sqrt); "
                              "batch_size is per process")


class LoggingConfig(Strict):
    """Where training curves go besides metrics.jsonl and metrics.csv (always written)."""

    tensorboard: bool = Field(False, description="TensorBoard event files in RUN_DIR/tensorboard/<phase>/ "
                                                 "(pip install \"lfcc-deploy[tensorboard]\")")


class ModelConfig(Strict):
    model: str = Field(description="timm model name")
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    pretrained: bool = Field(False, description="timm hub weights (needs internet)")
    mean: list[float] | None = Field(None, description="input normalisation; default per model")
    std: list[float] | None = None


class TeacherConfig(ModelConfig):
    checkpoint: str | None = Field(None, description="safetensors or torch state dict")
    finetune: bool = Field(True, description="with pretrained = true: false uses the hub weights as they are")
    train: TrainConfig = TrainConfig()

    @model_validator(mode="after")
    def _one_source(self):
        if self.checkpoint and self.pretrained:
            raise ValueError("set checkpoint or pretrained, not both")
        if not self.finetune and not self.pretrained:
            raise ValueError("finetune = false needs pretrained = true (a scratch teacher must be trained)")
        return self


class StudentConfig(ModelConfig):
    pass


class DistillBase(TrainConfig):
    method: str = "kd"
    ce_reference: bool = Field(False, description="also train a CE-only student to compare")
    teacher_cache: Literal["off", "memory", "disk"] = Field(
        "off", description="compute the teacher's outputs for cache_views augmented views once (kd, lfcc)")
    cache_views: int = Field(4, ge=1, le=64, description="fixed augmented views per training image")
    cache_dtype: Literal["float16", "float32"] = Field("float16", description="storage of cached outputs")

    @field_validator("method")
    @classmethod
    def _known_method(cls, v: str) -> str:
        if v not in METHODS:
            raise ValueError(f"unknown method {v!r}; allowed: {', '.join(METHODS.names())}")
        return v


# One sub-table per registered method ([distill.kd], ...): a method file adds its own.
DistillConfig = create_model(
    "DistillConfig", __base__=DistillBase,
    **{name: (cls.Config, Field(default_factory=cls.Config)) for name, cls in METHODS.items()},
)


class Recipe(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    data: DataConfig
    teacher: TeacherConfig
    student: StudentConfig
    distill: DistillConfig = Field(default_factory=DistillConfig)  # type: ignore[valid-type]
    export: ExportConfig = ExportConfig()
    gates: GatesConfig = GatesConfig()
    logging: LoggingConfig = LoggingConfig()

    def method_config(self) -> Strict:
        return getattr(self.distill, self.distill.method)


def find_recipe(name_or_path: str | Path) -> Path:
    """A path as given, else a name in ./recipes or the recipes shipped beside the package."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    for d in RECIPE_DIRS:
        for cand in (d / p, d / f"{p}.toml"):
            if cand.is_file():
                return cand
    raise BadInput("recipe file not found", file=str(name_or_path),
                   hint="give a path to a .toml file or a name from `lfcc-deploy recipes list`")


def list_recipes() -> list[Path]:
    seen: dict[str, Path] = {}
    for d in RECIPE_DIRS:
        for p in sorted(d.glob("*.toml")) if d.is_dir() else []:
            seen.setdefault(p.stem, p)
    return [seen[k] for k in sorted(seen)]


def parse_override(item: str) -> tuple[list[str], Any]:
    """`a.b=VALUE` -> (['a', 'b'], value); VALUE is a TOML literal, else a bare string."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise BadInput(f"--set {item!r}: expected KEY=VALUE, e.g. distill.epochs=3")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return key.strip().split("."), value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    for item in overrides:
        path, value = parse_override(item)
        node = data
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise BadInput(f"--set {item!r}: {part} is not a table")
        node[path[-1]] = value
    return data


def _allowed_keys(model: type[Strict], loc: tuple) -> list[str]:
    for part in loc[:-1]:
        field = model.model_fields.get(str(part)) if isinstance(part, str) else None
        ann = getattr(field, "annotation", None)
        if not (isinstance(ann, type) and issubclass(ann, Strict)):
            return []
        model = ann
    return list(model.model_fields)


def _describe(error: dict) -> tuple[str, str]:
    """One pydantic error as (dotted key, message a person can act on)."""
    loc = tuple(error["loc"])
    key = ".".join(str(p) for p in loc) or "(top level)"
    if error["type"] == "extra_forbidden":
        allowed = _allowed_keys(Recipe, loc)
        return key, "unknown key" + (f"; allowed: {', '.join(allowed)}" if allowed else "")
    if error["type"] == "missing":
        return key, "required key is missing"
    msg = error["msg"].removeprefix("Value error, ")
    if "input" in error and error["type"] != "value_error":
        msg += f" (got {error['input']!r})"
    return key, msg


def describe_validation_error(err: ValidationError, file: str) -> BadInput:
    """First pydantic error as one line naming file and dotted key; the count of others as hint."""
    key, msg = _describe(err.errors()[0])
    more = len(err.errors()) - 1
    hint = f"{more} more error(s); `lfcc-deploy recipes check {file.split(' ')[0]}` lists them all" if more else None
    return BadInput(msg, file=file, key=key, hint=hint)


def recipe_errors(name_or_path: str | Path, overrides: list[str] | None = None) -> list[BadInput]:
    """Every schema error of a recipe at once (for `recipes check`); empty when it validates."""
    path = find_recipe(name_or_path)
    data = apply_overrides(read_toml(path), overrides or [])
    try:
        Recipe.model_validate(data)
    except ValidationError as err:
        return [BadInput(msg, file=str(path), key=key) for key, msg in map(_describe, err.errors())]
    return []


def validate_recipe(data: dict, file: str) -> Recipe:
    try:
        return Recipe.model_validate(data)
    except ValidationError as err:
        raise describe_validation_error(err, file) from None


def read_toml(path: Path) -> dict:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise BadInput(f"malformed TOML: {err}", file=str(path)) from None
    except (UnicodeDecodeError, IsADirectoryError, PermissionError) as err:
        raise BadInput(f"cannot read recipe: {err.__class__.__name__}", file=str(path)) from None


def load_recipe(name_or_path: str | Path, overrides: list[str] | None = None) -> Recipe:
    path = find_recipe(name_or_path)
    data = apply_overrides(read_toml(path), overrides or [])
    return validate_recipe(data, f"{path} with --set overrides" if overrides else str(path))


def recipe_dict(recipe: Recipe) -> dict:
    return recipe.model_dump(mode="json", exclude_none=True)


def recipe_to_toml(recipe: Recipe) -> str:
    return tomli_w.dumps(recipe_dict(recipe))


def recipe_hash(recipe: Recipe) -> str:
    blob = json.dumps(recipe_dict(recipe), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def changed_keys(old: dict, new: dict) -> list[str]:
    a, b = flatten(old), flatten(new)
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
