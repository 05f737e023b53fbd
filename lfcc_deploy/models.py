"""timm models behind one factory, with their normalisation, stage taps and safe checkpoints.

Every family (CNN, ViT/DeiT, Swin, MLP-Mixer/ResMLP) is reached only through
timm's common API: `create_model`, `feature_info`, `forward_intermediates` and
`forward_head` — no hooks and no per-architecture forward patches.
"""
from __future__ import annotations

import ast
import inspect
import json
import math
import sys
import textwrap
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import timm
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from timm.models._registry import model_entrypoint, split_model_name_tag
from torch import nn

from .errors import BadInput
from .rundir import atomic_write

# Small-input settings per timm module, used when training from scratch below the
# model's native size: 8x8 token grids for ViT/Mixer, patch 2 + window 4 for Swin at 32 px.
SMALL_IMAGE = {
    "timm.models.swin_transformer": lambda s: dict(img_size=s, patch_size=max(1, s // 16), window_size=4),
    "timm.models.swin_transformer_v2": lambda s: dict(img_size=s, patch_size=max(1, s // 16), window_size=4),
    "timm.models.vision_transformer": lambda s: dict(img_size=s, patch_size=max(2, s // 8)),
    "timm.models.deit": lambda s: dict(img_size=s, patch_size=max(2, s // 8)),
    "timm.models.mlp_mixer": lambda s: dict(img_size=s, patch_size=max(2, s // 8)),
}
TOKEN_MODULES = set(SMALL_IMAGE)
META_KEY = "lfcc_deploy"


@dataclass
class ModelSpec:
    """Everything needed to rebuild a model and feed it: travels inside its safetensors file."""

    name: str
    num_classes: int
    in_chans: int
    img_size: int
    mean: list[float]
    std: list[float]
    kwargs: dict[str, Any] = field(default_factory=dict)
    class_names: list[str] = field(default_factory=list)
    resize: str = "interpolate"  # how smaller images reach img_size (preprocess.RESIZE_MODES)
    crop_pct: float = 1.0  # centre share of an image file it was evaluated on (timm's eval crop)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ModelSpec":
        return cls(**json.loads(text))


def check_model_name(name: str, *, file: str | None = None, key: str | None = None) -> None:
    if not timm.is_model(name):
        close = __import__("difflib").get_close_matches(name, timm.list_models(), n=3)
        raise BadInput(f"unknown timm model {name!r}", file=file, key=key,
                       hint=f"did you mean {' or '.join(close)}?" if close
                       else "see `python -c 'import timm; print(timm.list_models())'`")


def resolve_kwargs(name: str, img_size: int, user: dict[str, Any], pretrained: bool) -> dict[str, Any]:
    """Small-image defaults for the family, overridden by the recipe's `model_kwargs`."""
    module = model_entrypoint(name).__module__
    native = timm.models.get_pretrained_cfg(name)
    native_size = native.input_size[-1] if native else 224
    defaults = SMALL_IMAGE[module](img_size) if module in SMALL_IMAGE and img_size < native_size else {}
    if pretrained:  # keep the checkpoint's patch/window; timm resamples position embeddings
        defaults = {k: v for k, v in defaults.items() if k == "img_size"}
    return {**defaults, **user}


# Entry points of these timm modules fix some arguments inside `dict(patch_size=16, ..., **kwargs)`,
# so a recipe value for one of them is a duplicate keyword, not an override (MLP-Mixer's patch_size).
# For them the module's own builder is called with the entry point's arguments, the recipe's on top.
PINNING_BUILDERS = {"timm.models.mlp_mixer": "_create_mixer"}


def _entry_call(entry) -> tuple[str, dict[str, Any]]:
    """(variant, fixed arguments) an entry point hands its builder, read from its source: the
    variant is the builder call's first argument, the arguments the `dict(...)` literal's keywords,
    evaluated in the entry point's module (values such as `block_layer=ResBlock` name its classes)."""
    module = sys.modules[entry.__module__]
    tree = ast.parse(textwrap.dedent(inspect.getsource(entry)))
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)]
    fixed = next(c for c in calls if c.func.id == "dict")
    build = next(c for c in calls if c.func.id == PINNING_BUILDERS[entry.__module__])
    value = lambda node: eval(compile(ast.Expression(node), module.__file__, "eval"), vars(module))  # noqa: E731
    return value(build.args[0]), {k.arg: value(k.value) for k in fixed.keywords if k.arg}


def _build(name: str, pretrained: bool, kwargs: dict[str, Any]) -> nn.Module:
    entry = model_entrypoint(name)
    builder = PINNING_BUILDERS.get(entry.__module__)
    variant, fixed = _entry_call(entry) if builder else (name, {})
    if not set(kwargs) & set(fixed):  # nothing pinned is overridden: timm's own path
        return timm.create_model(name, pretrained=pretrained, **kwargs)
    tag = split_model_name_tag(name)[1]
    extra = {"pretrained_cfg": tag} if tag else {}
    return getattr(sys.modules[entry.__module__], builder)(variant, pretrained=pretrained, **extra,
                                                           **{**fixed, **kwargs})


def create_timm_model(name: str, *, pretrained: bool = False, key: str = "model_kwargs", **kwargs) -> nn.Module:
    try:
        return _build(name, pretrained, kwargs)
    except (TypeError, ValueError, AssertionError, RuntimeError) as err:
        raise BadInput(f"timm cannot build {name!r} with {kwargs}: {str(err)[:160]}", key=key,
                       hint="check the names and values in model_kwargs") from None


def stage_indices(model: nn.Module) -> list[int]:
    """Distinct-resolution stages of hierarchical models; evenly spaced blocks of isotropic ones."""
    info = model.feature_info
    reductions = [f["reduction"] for f in info]
    if len(set(reductions)) > 1:
        return [i for i, r in enumerate(reductions) if i == len(info) - 1 or reductions[i + 1] != r]
    n, taps = len(info), min(4, len(info))
    # evenly spaced, ending at the last block; halves round up (round() would round 1.5 and 4.5 to even)
    return sorted({math.floor((k + 1) * n / taps + 0.5) - 1 for k in range(taps)})


class Net(nn.Module):
    """A timm model plus its input normalisation and stage taps; input is float in [0, 1]."""

    def __init__(self, model: nn.Module, spec: ModelSpec):
        super().__init__()
        self.model, self.spec = model, spec
        self.stages = stage_indices(model)
        c = spec.in_chans
        self.register_buffer("mean", torch.tensor(spec.mean).view(1, c, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(spec.std).view(1, c, 1, 1), persistent=False)
        self.channels_last = False

    @property
    def is_token_model(self) -> bool:
        return type(self.model).__module__ in TOKEN_MODULES

    def place(self, device: torch.device) -> "Net":
        """Move to `device`; CNNs on CUDA run channels_last (tensor cores prefer NHWC)."""
        self.channels_last = device.type == "cuda" and not self.is_token_model
        return self.to(device, memory_format=torch.channels_last) if self.channels_last else self.to(device)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.normalize(x))

    def forward_stages(self, x: torch.Tensor, indices: list[int] | None = None):
        """(logits, [B×C×H×W map per requested stage]) from one forward pass."""
        idx = [self.stages[i] for i in (indices if indices is not None else range(len(self.stages)))]
        final, maps = self.model.forward_intermediates(self.normalize(x), indices=idx)
        return self.model.forward_head(final), maps

    def describe_stages(self) -> list[dict[str, Any]]:
        """Index, timm block, channels and map size of each stage (dry forward at the spec's size)."""
        was = self.training
        self.eval()
        with torch.inference_mode():
            x = torch.zeros(1, self.spec.in_chans, self.spec.img_size, self.spec.img_size,
                            device=self.mean.device)
            _, maps = self.forward_stages(x)
        self.train(was)
        info = self.model.feature_info
        return [dict(index=i, module=info[s]["module"], channels=m.shape[1], height=m.shape[2],
                     width=m.shape[3]) for i, (s, m) in enumerate(zip(self.stages, maps))]


def default_normalisation(name: str, channels: int, pretrained: bool,
                          data_mean, data_std) -> tuple[list[float], list[float]]:
    """Pretrained weights need timm's statistics; scratch models use the data's own."""
    if not pretrained:
        return list(data_mean), list(data_std)
    cfg = timm.models.get_pretrained_cfg(name)
    mean, std = list(cfg.mean), list(cfg.std)
    if channels == 1:
        mean, std = [sum(mean) / len(mean)], [sum(std) / len(std)]
    return mean, std


def build_net(spec: ModelSpec, pretrained: bool = False, key: str = "model_kwargs") -> Net:
    model = create_timm_model(spec.name, pretrained=pretrained, key=key, num_classes=spec.num_classes,
                              in_chans=spec.in_chans, **spec.kwargs)
    return Net(model, spec)


def param_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def save_net(net: Net, path: Path) -> None:
    """safetensors: weights that can be loaded without executing code, spec in the header."""
    state = {k: v.detach().contiguous().cpu() for k, v in net.model.state_dict().items()}
    atomic_write(path, lambda tmp: save_file(state, str(tmp), metadata={META_KEY: net.spec.to_json()}))


def read_state(path: Path, *, key: str | None = None) -> tuple[dict[str, torch.Tensor], ModelSpec | None]:
    """Tensors (and our spec when present) from safetensors or a torch state dict, never unpickling code."""
    where = dict(file=str(path), key=key)
    if not path.is_file():
        raise BadInput("checkpoint file not found", **where)
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open
            with safe_open(str(path), "pt") as f:
                meta = (f.metadata() or {}).get(META_KEY)
            return load_file(str(path)), ModelSpec.from_json(meta) if meta else None
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except SafetensorError as err:
        raise BadInput(f"not a valid safetensors file ({err})", **where) from None
    except Exception as err:  # torch raises several unrelated types for bad pickles
        if "Unsupported global" in str(err):
            raise BadInput("refused: the file holds Python objects, not just tensors (it could run code)",
                           hint="re-save the state dict with safetensors or as plain tensors", **where) from None
        detail = str(err).split("WeightsUnpickler error:")[-1].strip().splitlines()[0][:120]
        raise BadInput(f"cannot read checkpoint: truncated or not a tensor file ({detail})", **where) from None
    for wrapper in ("state_dict", "model", "model_state"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise BadInput("not a state dict of tensors", **where)
    return {k.removeprefix("module."): v for k, v in obj.items()}, None


def load_weights(net: Net, path: Path, *, key: str | None = None,
                 state: dict[str, torch.Tensor] | None = None) -> None:
    """Copy a checkpoint into `net`, naming what does not fit instead of a raw key dump."""
    state = state if state is not None else read_state(path, key=key)[0]
    own = net.model.state_dict()
    missing = [k for k in own if k not in state]
    shape = [k for k in own if k in state and state[k].shape != own[k].shape]
    if missing or shape:
        bad = (missing + shape)[:3]
        raise BadInput(f"checkpoint does not fit {net.spec.name} ({len(missing)} missing, "
                       f"{len(shape)} mis-shaped tensors, e.g. {', '.join(bad)})", file=str(path), key=key,
                       hint="check the model name, model_kwargs, channels and number of classes")
    net.model.load_state_dict({k: state[k] for k in own})


def load_net(path: Path, *, key: str | None = None) -> Net:
    """Rebuild a model saved by `save_net` from its own header."""
    state, spec = read_state(path, key=key)
    if spec is None:
        raise BadInput("checkpoint carries no lfcc-deploy model spec", file=str(path), key=key)
    net = build_net(spec)
    load_weights(net, path, key=key, state=state)
    return net
