"""The shipped list of deployable timm students, and the user's own names, as candidates.

Widths are timm's own except where a family's smallest entry point is still far heavier than
its siblings at the small sizes this toolkit trains at (ViT, Mixer, ResMLP): those get a slim
variant, recorded in `kwargs` so the written recipe rebuilds exactly what was measured.
Every entry builds at 32 px with 1 or 3 channels (tests/test_students.py builds them all).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ..errors import BadInput

FAMILIES = ("cnn", "hybrid", "vit", "mlp")
# timm modules of non-CNN families; everything else counts as a CNN
_MODULE_FAMILY = {
    "vision_transformer": "vit", "deit": "vit", "swin_transformer": "vit", "swin_transformer_v2": "vit",
    "mlp_mixer": "mlp", "mobilevit": "hybrid", "fastvit": "hybrid", "efficientvit_mit": "hybrid",
    "efficientvit_msra": "hybrid", "levit": "hybrid", "efficientformer": "hybrid", "efficientformer_v2": "hybrid",
}
_LABEL = re.compile(r"[^A-Za-z0-9_.-]")


@dataclass(frozen=True)
class Candidate:
    """One student to measure: `label` names it in tables, run directories and the written recipe."""

    label: str
    model: str
    family: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    note: str = ""


SHIPPED = (
    Candidate("resnet10t-slim", "resnet10t", "cnn", dict(channels=[32, 64, 128, 256], stem_width=16),
              "quarter-width ResNet-10"),
    Candidate("resnet10t", "resnet10t", "cnn"),
    Candidate("resnet18", "resnet18", "cnn"),
    Candidate("resnet34", "resnet34", "cnn"),
    Candidate("mobilenetv2_050", "mobilenetv2_050", "cnn"),
    Candidate("mobilenetv2_100", "mobilenetv2_100", "cnn"),
    Candidate("mobilenetv3_small_050", "mobilenetv3_small_050", "cnn"),
    Candidate("mobilenetv3_small_100", "mobilenetv3_small_100", "cnn"),
    Candidate("mobilenetv3_large_100", "mobilenetv3_large_100", "cnn"),
    Candidate("mobilenetv4_conv_small", "mobilenetv4_conv_small", "cnn"),
    Candidate("efficientnet_b0", "efficientnet_b0", "cnn"),
    Candidate("efficientnet_lite0", "efficientnet_lite0", "cnn"),
    Candidate("ghostnet_100", "ghostnet_100", "cnn"),
    Candidate("repghostnet_050", "repghostnet_050", "cnn", note="RepGhost, timed re-parameterised (fused)"),
    Candidate("repvgg_a0", "repvgg_a0", "cnn", note="RepVGG, timed re-parameterised (fused)"),
    Candidate("repvit_m0_9", "repvit_m0_9", "cnn", note="RepViT, timed re-parameterised (fused)"),
    Candidate("convnext_atto", "convnext_atto", "cnn"),
    Candidate("convnext_femto", "convnext_femto", "cnn"),
    Candidate("mobilevit_xxs", "mobilevit_xxs", "hybrid"),
    Candidate("mobilevitv2_050", "mobilevitv2_050", "hybrid"),
    Candidate("fastvit_t8", "fastvit_t8", "hybrid", note="timed re-parameterised (fused)"),
    Candidate("efficientvit_m0", "efficientvit_m0", "hybrid"),
    Candidate("deit_tiny", "deit_tiny_patch16_224", "vit"),
    Candidate("vit_tiny-d6", "vit_tiny_patch16_224", "vit", dict(depth=6), "ViT-Ti, 6 of 12 blocks"),
    Candidate("mixer-slim", "mixer_s16_224", "mlp", dict(embed_dim=256), "Mixer-S, width 256"),
    Candidate("resmlp-slim", "resmlp_12_224", "mlp", dict(embed_dim=192), "ResMLP-12, width 192"),
)


def family_of(model: str) -> str:
    """The family of a timm name, from the module its entry point lives in (unknown names: cnn)."""
    import timm
    from timm.models._registry import model_entrypoint
    if not timm.is_model(model):  # unknown to timm: the build reports it as the row's reason
        return "cnn"
    return _MODULE_FAMILY.get(model_entrypoint(model).__module__.rsplit(".", 1)[-1], "cnn")


def user_candidate(name: str) -> Candidate:
    return Candidate(_LABEL.sub("-", name), name, family_of(name), note="from --candidates")


def select(families: list[str] | None, extra: list[str], only: bool) -> list[Candidate]:
    """The shipped candidates of the wanted families (none with `only`), then the user's own names."""
    bad = [f for f in families or [] if f not in FAMILIES]
    if bad:
        raise BadInput(f"unknown family {bad[0]!r}; allowed: {', '.join(FAMILIES)}", key="--families")
    if only and not extra:
        raise BadInput("--only measures the --candidates names, and none were given", key="--only",
                       hint="e.g. --candidates resnet18,mobilenetv3_small_100 --only")
    shipped = [] if only else [c for c in SHIPPED if families is None or c.family in families]
    chosen = shipped + [user_candidate(n) for n in extra if n not in {c.label for c in shipped}]
    if not chosen:
        raise BadInput("no candidate left to measure", key="--families", hint=f"choose from {', '.join(FAMILIES)}")
    return chosen
