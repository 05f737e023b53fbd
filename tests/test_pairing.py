"""Stage taps and the default teacher↔student pairing: deep stages of every family, no identity bank."""
from __future__ import annotations

import pytest
import torch

from lfcc_deploy.errors import BadInput
from lfcc_deploy.losses import MethodContext
from lfcc_deploy.losses.blocks import bank_grids, pair_stages, usable_stages
from lfcc_deploy.losses.fitnet import FitNet
from lfcc_deploy.losses.lfcc import LFCC, LFCCConfig
from lfcc_deploy.models import ModelSpec, build_net, resolve_kwargs

# small members of the families the shipped recipes pair, at the recipes' 32 px
FAMILIES = {
    "resnet": ("resnet10t", dict(channels=[8, 16, 32, 64], stem_width=8)),
    "mobilenet": ("mobilenetv2_050", {}),
    "vit": ("vit_tiny_patch16_224", dict(embed_dim=32, depth=6, num_heads=2)),
    "deit": ("deit_tiny_patch16_224", dict(embed_dim=32, depth=6, num_heads=2)),
    "swin": ("swin_tiny_patch4_window7_224", dict(embed_dim=16, depths=[1, 1, 1], num_heads=[1, 2, 4],
                                                   patch_size=4, window_size=4)),
    "mixer": ("mixer_s16_224", dict(patch_size=4, embed_dim=32, num_blocks=8)),
}
PAIRS = [(t, s) for t in FAMILIES for s in FAMILIES if t != s]


def make(family: str, size: int = 32):
    name, kwargs = FAMILIES[family]
    spec = ModelSpec(name=name, num_classes=10, in_chans=1, img_size=size, mean=[0.5], std=[0.25],
                     kwargs=resolve_kwargs(name, size, kwargs, pretrained=False))
    torch.manual_seed(0)
    return build_net(spec)


@pytest.fixture(scope="module")
def nets():
    return {f: make(f) for f in FAMILIES}


@pytest.mark.parametrize("teacher_family,student_family", PAIRS)
def test_default_pairing_reaches_deep_stages_without_identity_banks(nets, teacher_family, student_family):
    teacher, student = nets[teacher_family], nets[student_family]
    s_idx, t_idx = LFCC.stages(student, teacher, LFCCConfig())
    assert len(s_idx) == len(t_idx) == 2
    for net, idx in ((student, s_idx), (teacher, t_idx)):
        last = len(net.stages) - 1
        assert max(idx) >= last - 1, f"{net.spec.name}: deepest tap {max(idx)} of {last}"
        for i in idx:
            d = net.describe_stages()[i]
            grids = bank_grids(d["height"], d["width"], [1, 2, 4])
            assert max(grids) < min(d["height"], d["width"]), f"{net.spec.name} stage {i} bank is the identity"
    note = LFCC.check(student, teacher, LFCCConfig())
    assert "warning" not in note and "grids" in note
    m = LFCC(student, teacher, LFCCConfig(queue=0), MethodContext(10))
    for bank, i, net in [(b, i, student) for b, i in zip(m.s_banks, s_idx)] + \
                        [(b, i, teacher) for b, i in zip(m.t_banks, t_idx)]:
        d = net.describe_stages()[i]
        x = torch.randn(2, d["channels"], d["height"], d["width"])
        assert bank(x).shape[1] < x[0].numel(), "bank passes the raw map through"


def test_pairing_matches_relative_depth(nets):
    # MobileNetV2 at 32 px: 16², 8², 4², 2², 1² maps; Swin: 8², 4², 2²
    s_idx, t_idx = pair_stages(nets["mobilenet"], nets["swin"], None, None, "k")
    assert (s_idx, t_idx) == ([2, 3], [1, 2])
    # one side given: the other follows by relative depth
    assert pair_stages(nets["mobilenet"], nets["swin"], [3], None, "k") == ([3], [2])
    assert pair_stages(nets["mobilenet"], nets["swin"], None, [0], "k")[0] == [0]  # depth 1/3 ~ 1/4


def test_bank_grids_are_clipped_per_map():
    assert bank_grids(8, 8, [1, 2, 4]) == [1, 2, 4]
    assert bank_grids(4, 4, [1, 2, 4]) == [1, 2]
    assert bank_grids(2, 2, [1, 2, 4]) == [1]
    assert bank_grids(1, 1, [1, 2, 4]) == [1]  # a 1×1 map keeps only its mean
    assert bank_grids(7, 5, [2, 4, 8]) == [2, 4]


def test_identity_bank_of_a_chosen_1x1_stage_is_warned(nets):
    student, teacher = nets["mobilenet"], nets["swin"]
    last = len(student.stages) - 1  # 1×1 at 32 px
    note = LFCC.check(student, teacher, LFCCConfig(student_stages=[last]))
    assert "warning" in note and f"student stage {last}" in note
    assert usable_stages(student) == list(range(last))


def test_explicit_grids_larger_than_a_map_are_clipped_not_replicated(nets):
    """Old behaviour: a 2×2 map pooled to 4×4 replicated cells; now the bank keeps the real low-pass."""
    student, teacher = nets["resnet"], nets["swin"]
    m = LFCC(student, teacher, LFCCConfig(grids=[4], student_stages=[3], teacher_stages=[2], queue=0),
             MethodContext(10))
    assert m.s_banks[0].grids == [1] and m.t_banks[0].grids == [1]


def test_bad_stage_indexes_are_bad_input(nets):
    student, teacher = nets["resnet"], nets["vit"]
    with pytest.raises(BadInput) as err:
        LFCC.check(student, teacher, LFCCConfig(student_stages=[9], teacher_stages=[1]))
    assert "distill.lfcc.student_stages" in err.value.line()
    with pytest.raises(BadInput):
        LFCC.check(student, teacher, LFCCConfig(student_stages=[0, 1], teacher_stages=[1]))


@pytest.mark.parametrize("depth,expected", [(6, [1, 2, 4, 5]), (8, [1, 3, 5, 7]), (12, [2, 5, 8, 11]),
                                            (4, [0, 1, 2, 3]), (3, [0, 1, 2])])
def test_isotropic_taps_are_evenly_spaced_and_end_at_the_last_block(depth, expected):
    spec = ModelSpec(name="vit_tiny_patch16_224", num_classes=10, in_chans=1, img_size=32, mean=[0.5], std=[0.25],
                     kwargs=resolve_kwargs("vit_tiny_patch16_224", 32, dict(embed_dim=16, depth=depth, num_heads=1),
                                           pretrained=False))
    assert build_net(spec).stages == expected


def test_fitnet_default_never_hints_a_1x1_map(nets):
    student, teacher = nets["mobilenet"], nets["swin"]
    s_idx, t_idx = FitNet.stages(student, teacher, FitNet.Config())
    for net, idx in ((student, s_idx), (teacher, t_idx)):
        assert all(min(net.describe_stages()[i]["height"], net.describe_stages()[i]["width"]) > 1 for i in idx)
