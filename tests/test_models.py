"""Every family builds at small sizes, exposes a stage list and taps, and checkpoints load safely."""
from __future__ import annotations

import os
import pickle

import pytest
import torch

from lfcc_deploy.errors import BadInput
from lfcc_deploy.models import ModelSpec, build_net, load_net, load_weights, resolve_kwargs, save_net

from families import FAMILIES


def make(name, kwargs, img_size, channels=1):
    spec = ModelSpec(name=name, num_classes=10, in_chans=channels, img_size=img_size, mean=[0.5] * channels,
                     std=[0.25] * channels, kwargs=resolve_kwargs(name, img_size, kwargs, pretrained=False))
    torch.manual_seed(0)
    return build_net(spec).eval()


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_stage_taps_match_forward(family):
    name, kwargs, size, hierarchical = FAMILIES[family]
    net = make(name, kwargs, size)
    x = torch.rand(2, 1, size, size)
    with torch.no_grad():
        logits, maps = net.forward_stages(x)
        assert torch.allclose(logits, net(x), atol=1e-5)  # taps come from the same forward pass
    assert logits.shape == (2, 10)
    assert 2 <= len(maps) <= 5 and all(m.ndim == 4 and m.shape[0] == 2 for m in maps)
    sizes = [m.shape[-1] for m in maps]
    if hierarchical:
        assert sizes == sorted(sizes, reverse=True) and len(set(sizes)) == len(sizes)
    else:
        assert len(set(sizes)) == 1 and len(maps) == 4
        n = len(net.model.feature_info)
        assert net.stages[-1] == n - 1 and net.stages == sorted(set(net.stages))
    described = net.describe_stages()
    assert [d["channels"] for d in described] == [m.shape[1] for m in maps]


def test_small_image_defaults_and_pinned_arguments():
    # mixer_s16_224's entry point pins patch_size=16; the recipe's value must win (8x8 tokens at 32 px)
    net = make("mixer_s16_224", dict(embed_dim=32, num_blocks=2, patch_size=4), 32)
    assert net.describe_stages()[-1]["height"] == 8
    assert resolve_kwargs("swin_tiny_patch4_window7_224", 32, {}, False) == dict(img_size=32, patch_size=2,
                                                                                 window_size=4)
    assert resolve_kwargs("vit_tiny_patch16_224", 32, {"patch_size": 8}, False)["patch_size"] == 8
    assert resolve_kwargs("resnet18", 32, {}, False) == {}
    assert resolve_kwargs("vit_tiny_patch16_224", 64, {}, True) == {"img_size": 64}  # keep pretrained patches


def test_gray_and_rgb_inputs():
    for channels in (1, 3):
        net = make("test_resnet", {}, 16, channels)
        assert net(torch.rand(2, channels, 16, 16)).shape == (2, 10)


def test_safetensors_roundtrip_carries_spec(tmp_path):
    net = make("test_vit", dict(patch_size=4), 16)
    save_net(net, tmp_path / "m.safetensors")
    again = load_net(tmp_path / "m.safetensors").eval()
    assert again.spec == net.spec
    x = torch.rand(3, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(net(x), again(x))


def test_torch_state_dict_with_wrappers_loads(tmp_path):
    net = make("test_resnet", {}, 16)
    wrapped = {"state_dict": {f"module.{k}": v for k, v in net.model.state_dict().items()}}
    torch.save(wrapped, tmp_path / "m.pth")
    other = make("test_resnet", {}, 16)
    torch.nn.init.zeros_(other.model.fc.weight)
    load_weights(other, tmp_path / "m.pth")
    assert torch.equal(other.model.fc.weight, net.model.fc.weight)


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_that_runs_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"weight": _Evil(marker)}, f)
    torch.save({"w": torch.zeros(1), "x": _Evil(marker)}, tmp_path / "evil2.pt")
    for p in (path, tmp_path / "evil2.pt"):
        with pytest.raises(BadInput) as err:
            load_weights(make("test_resnet", {}, 16), p)
        assert str(p) in err.value.line()
    assert not marker.exists()


def test_truncated_foreign_and_missing_checkpoints(tmp_path):
    net = make("test_resnet", {}, 16)
    save_net(net, tmp_path / "ok.safetensors")
    data = (tmp_path / "ok.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    vit = make("test_vit", dict(patch_size=4), 16)
    save_net(vit, tmp_path / "vit.safetensors")
    for name, needle in [("cut.safetensors", "safetensors"), ("junk.pt", "cannot read"),
                         ("vit.safetensors", "does not fit"), ("absent.pt", "not found")]:
        with pytest.raises(BadInput) as err:
            load_weights(make("test_resnet", {}, 16), tmp_path / name)
        assert needle in err.value.line(), err.value.line()


def test_models_show_command(cli):
    res = cli("models", "show", "resnet18", "--img-size", "32", "--channels", "1")
    assert res.code == 0, res.err
    assert "layer4" in res.out and "1×1" in res.out
    res = cli("models", "show", "resnet_nope")
    assert res.code == 2 and "unknown timm model" in res.err
