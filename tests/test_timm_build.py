"""Building timm models whose entry points pin arguments a recipe may set, without patching timm."""
from __future__ import annotations

from test_models import make


def test_pinned_entry_point_arguments_are_overridden_without_patching_timm(monkeypatch):
    """MLP-Mixer's entry points fix patch_size; the recipe's value wins through the module's own
    builder, and timm's module globals stay untouched while the model is built."""
    import timm.models.mlp_mixer as mixer
    from timm.models._builder import build_model_with_cfg

    seen = []
    init = mixer.MlpMixer.__init__

    def spy(self, *args, **kwargs):
        seen.append(mixer.build_model_with_cfg is build_model_with_cfg)
        init(self, *args, **kwargs)

    monkeypatch.setattr(mixer.MlpMixer, "__init__", spy)
    net = make("resmlp_12_224", dict(embed_dim=32, num_blocks=2, patch_size=4), 32)
    assert seen == [True]
    assert net.model.stem.proj.kernel_size == (4, 4) and type(net.model.blocks[0]).__name__ == "ResBlock"
