"""LFCC's pieces against hand-derived values, and every method across every family pair."""
from __future__ import annotations

import math

import pytest
import torch

from lfcc_deploy.losses import METHODS, MethodContext
from lfcc_deploy.losses.blocks import LowPassBank, info_nce
from lfcc_deploy.losses.lfcc import LFCC, LFCCConfig
from lfcc_deploy.models import ModelSpec, build_net, resolve_kwargs

FILTERS = ["avgpool", "gaussian", "fft"]


def checkerboard(n: int) -> torch.Tensor:
    i = torch.arange(n)
    return (((i[:, None] + i[None, :]) % 2) * 2 - 1).float().view(1, 1, n, n)


@pytest.mark.parametrize("kind", FILTERS)
@pytest.mark.parametrize("size", [8, 16])
def test_checkerboard_is_filtered_out(kind, size):
    out = LowPassBank([1, 2, 4], kind)(checkerboard(size).repeat(2, 3, 1, 1))
    assert out.shape == (2, 3 * (1 + 4 + 16))
    assert out.abs().max() < 1e-5


@pytest.mark.parametrize("kind", FILTERS)
def test_checkerboard_on_odd_maps_is_strongly_attenuated(kind):
    # 7×7 has no exact Nyquist pattern: a 3×3 pooling cell of ±1 keeps 1/9 at most
    assert LowPassBank([1, 2, 4], kind)(checkerboard(7)).abs().max() <= 1 / 9 + 1e-6


@pytest.mark.parametrize("kind", FILTERS)
@pytest.mark.parametrize("size", [1, 7, 8])
def test_constant_map_passes_unchanged(kind, size):
    x = torch.full((2, 4, size, size), 3.5)
    out = LowPassBank([1, 2, 4], kind)(x)
    assert torch.allclose(out, torch.full_like(out, 3.5), atol=1e-5)


@pytest.mark.parametrize("size", [1, 7, 8, 12])
def test_avgpool_bank_equals_adaptive_pooling_per_grid(size):
    x = torch.randn(2, 3, size, size)
    ref = torch.cat([torch.nn.functional.adaptive_avg_pool2d(x, g).flatten(1) for g in (1, 2, 4)], dim=1)
    assert torch.allclose(LowPassBank([1, 2, 4], "avgpool")(x), ref, atol=1e-6)


def test_info_nce_matches_hand_computation():
    s = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    t = torch.tensor([[0.8, 0.6], [0.0, 1.0], [1.0, 0.0]])
    tau = 0.5
    sim = [[sum(a * b for a, b in zip(si, tj)) / tau for tj in t.tolist()] for si in s.tolist()]

    def ce_rows(m):
        return sum(-m[i][i] + math.log(sum(math.exp(v) for v in m[i])) for i in range(3)) / 3

    s_to_t = ce_rows(sim)
    t_to_s = ce_rows([list(col) for col in zip(*sim)])
    assert info_nce(s, t, tau, symmetric=False).item() == pytest.approx(s_to_t, rel=1e-6)
    assert info_nce(s, t, tau, symmetric=True).item() == pytest.approx((s_to_t + t_to_s) / 2, rel=1e-6)
    # aligned pairs score lower than shuffled ones
    assert info_nce(t, t, tau) < info_nce(t, t[[1, 2, 0]], tau)


def make(name, kwargs, size=16):
    spec = ModelSpec(name=name, num_classes=10, in_chans=1, img_size=size, mean=[0.5], std=[0.25],
                     kwargs=resolve_kwargs(name, size, kwargs, pretrained=False))
    torch.manual_seed(0)
    return build_net(spec)


FAMILIES = {
    "cnn": ("test_resnet", {}),
    "vit": ("test_vit", {"patch_size": 4}),
    "swin": ("swin_tiny_patch4_window7_224", dict(embed_dim=16, depths=[1, 1, 1], num_heads=[1, 2, 4],
                                                   patch_size=2, window_size=4)),
    "mlp": ("mixer_s16_224", dict(embed_dim=32, num_blocks=4)),
}
PAIRS = [(t, s) for t in FAMILIES for s in FAMILIES if t != s]


@pytest.mark.parametrize("method", METHODS.names())
@pytest.mark.parametrize("teacher_family,student_family", PAIRS)
def test_every_method_learns_across_families(method, teacher_family, student_family):
    teacher, student = make(*FAMILIES[teacher_family]), make(*FAMILIES[student_family])
    cls = METHODS.get(method)
    cfg = cls.Config()
    cls.check(student, teacher if cls.uses_teacher else None, cfg)
    m = cls(student, teacher if cls.uses_teacher else None, cfg, MethodContext(num_classes=10))
    m.train()
    teacher_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student_before = [p.detach().clone() for p in student.parameters()]
    torch.manual_seed(1)
    x, y = torch.rand(16, 1, 16, 16), torch.randint(0, 10, (16,))
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=3e-3)
    totals = []
    for _ in range(6):
        logits, losses = m(x, y)
        loss = sum(losses.values())
        opt.zero_grad()
        loss.backward()
        if not totals:
            own = [p for n, p in m.named_parameters() if not n.startswith(("student.", "teacher."))]
            assert all(p.grad is not None for p in own), "method modules get no gradient"
        totals.append(loss.item())
        opt.step()
    assert logits.shape == (16, 10) and all(math.isfinite(v) for v in totals)
    assert totals[-1] < totals[0]
    assert any(not torch.equal(a, b) for a, b in zip(student_before, student.parameters()))
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in teacher_before.items())
    assert all(p.grad is None for p in teacher.parameters())


def test_lfcc_gradients_reach_student_and_projectors_only():
    teacher, student = make(*FAMILIES["vit"]), make(*FAMILIES["cnn"])
    m = LFCC(student, teacher, LFCCConfig(ce_weight=0, kd_weight=0), MethodContext(10))
    _, losses = m(torch.rand(8, 1, 16, 16), torch.randint(0, 10, (8,)))
    assert set(losses) == {"ce", "lfcc"}
    losses["lfcc"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    assert all(p.grad is not None for p in m.s_proj.parameters())
    assert all(p.grad is not None for p in m.t_proj.parameters())
    assert all(p.grad is None for p in teacher.parameters())


def test_folded_bank_spans_the_full_bank():
    """With average pooling the 1×1 and 2×2 grids are linear in the 4×4 cells, so a projector on the
    folded bank (4×4 only) reaches every function a projector on the full bank does."""
    from lfcc_deploy.losses.blocks import LowPassBank
    x = torch.randn(400, 3, 8, 8, dtype=torch.float64)
    full, fine = LowPassBank([1, 2, 4])(x).double(), LowPassBank([4])(x).double()
    assert full.shape[1] == 3 * 21 and fine.shape[1] == 3 * 16
    solution = torch.linalg.lstsq(fine, full).solution  # full = fine @ A exactly
    assert torch.allclose(fine @ solution, full, atol=1e-5)  # the bank computes in float32


def test_lfcc_branches_add_teacher_taught_deep_supervision(monkeypatch):
    """`branch_stages`: each listed student stage gets a classifier branch whose loss is soft-target
    cross-entropy against the teacher's softmax at `branch_temperature` (OFA's loss, eps 1), summed
    over branches and weighted; a stage both paired and branched is computed once."""
    import torch.nn.functional as F
    from lfcc_deploy.errors import BadInput
    teacher, student = make(*FAMILIES["cnn"]), make(*FAMILIES["vit"])
    base = LFCC(student, teacher, LFCCConfig(), MethodContext(10))
    paired = base.s_idx[0]
    cfg = LFCCConfig(branch_stages=[0, paired], branch_weight=0.5, branch_temperature=2.0, branch_width=8)
    assert f"branches on student stages [0, {paired}]" in LFCC.check(student, teacher, cfg)
    m = LFCC(student, teacher, cfg, MethodContext(10))
    m.train()
    torch.manual_seed(0)
    x, y = torch.rand(8, 1, 16, 16), torch.randint(0, 10, (8,))
    calls = []
    forward_stages = student.forward_stages
    with monkeypatch.context() as patch:
        patch.setattr(student, "forward_stages",
                      lambda x, idx=None: calls.append(list(idx)) or forward_stages(x, idx))
        logits, losses = m(x, y)
    assert calls == [sorted({0, *base.s_idx})]
    assert set(losses) == {"ce", "lfcc", "kd", "branch"}
    with torch.no_grad():
        t_logits = teacher(x)
        _, maps = forward_stages(x, [0, paired])
    p_t = F.softmax(t_logits / 2.0, dim=1)
    expected = sum(-(p_t * F.log_softmax(b(mp) / 2.0, dim=1)).sum(1).mean() for b, mp in zip(m.branches, maps))
    assert losses["branch"].item() == pytest.approx(0.5 * expected.item(), rel=1e-5)
    losses["branch"].backward()
    assert all(p.grad is not None for p in m.branches.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    assert all(p.grad is None for p in teacher.parameters())
    assert any(k.startswith("branches.1.") for k in m.trainable_state())  # saved and resumed with the student
    assert "branch" not in LFCC(student, teacher, LFCCConfig(), MethodContext(10))(x, y)[1]
    with pytest.raises(BadInput) as err:
        LFCC.check(student, teacher, LFCCConfig(branch_stages=[9]))
    assert err.value.key == "distill.lfcc.branch_stages" and "9" in err.value.message
