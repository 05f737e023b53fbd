"""FitNet, OFA-KD and DKD: losses against hand arithmetic, training across CNN ↔ ViT, stage checks."""
from __future__ import annotations

import math

import pytest
import torch
from pydantic import ValidationError

from lfcc_deploy.errors import BadInput
from lfcc_deploy.losses import METHODS, MethodContext
from lfcc_deploy.losses.dkd import dkd_loss, dkd_parts
from lfcc_deploy.losses.kd import kd_loss
from lfcc_deploy.losses.ofa import ofa_loss
from lfcc_deploy.models import ModelSpec, build_net, resolve_kwargs

S = [[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]]  # student logits, 2 samples × 3 classes
T = [[2.0, 0.0, 1.0], [1.0, 1.0, 0.0]]  # teacher logits
Y = [0, 2]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models gain nothing from a second thread; on a busy 2-core box OpenMP spin-waits cost 100×."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def softmax(v, temp=1.0):
    e = [math.exp(a / temp) for a in v]
    return [a / sum(e) for a in e]


def tensors():
    return torch.tensor(S), torch.tensor(T), torch.tensor(Y)


# --- ofa_loss ------------------------------------------------------------------------------------

def test_ofa_loss_eps1_is_soft_target_ce():
    # eps = 1: w = (p_t + y) − y = p_t, cross-entropy against the teacher's distribution
    expected = 0.0
    for s, t in zip(S, T):
        ps, pt = softmax(s), softmax(t)
        expected += -sum(pt[c] * math.log(ps[c]) for c in range(3))
    expected /= 2
    assert ofa_loss(*tensors(), eps=1.0).item() == pytest.approx(expected, rel=1e-5)


def test_ofa_loss_eps15_target_enhanced():
    expected = 0.0
    for s, t, y in zip(S, T, Y):
        ps, pt = softmax(s), softmax(t)
        w = [(pt[c] + (c == y)) ** 1.5 - (c == y) for c in range(3)]
        expected += -sum(w[c] * math.log(ps[c]) for c in range(3))
    expected /= 2
    assert ofa_loss(*tensors(), eps=1.5).item() == pytest.approx(expected, rel=1e-5)
    # one sample by hand, fully spelled out: s=[1,2,.5], t=[2,0,1], y=0
    z_s, z_t = math.exp(1) + math.exp(2) + math.exp(0.5), math.exp(2) + math.exp(0) + math.exp(1)
    w0 = (math.exp(2) / z_t + 1) ** 1.5 - 1
    w1 = (math.exp(0) / z_t) ** 1.5
    w2 = (math.exp(1) / z_t) ** 1.5
    one = -(w0 * (1 - math.log(z_s)) + w1 * (2 - math.log(z_s)) + w2 * (0.5 - math.log(z_s)))
    s, t, y = tensors()
    assert ofa_loss(s[:1], t[:1], y[:1], eps=1.5).item() == pytest.approx(one, rel=1e-5)


def test_ofa_loss_temperature_divides_both_sides():
    expected = 0.0
    for s, t, y in zip(S, T, Y):
        ps, pt = softmax(s, 2.0), softmax(t, 2.0)
        w = [(pt[c] + (c == y)) ** 1.5 - (c == y) for c in range(3)]
        expected += -sum(w[c] * math.log(ps[c]) for c in range(3))
    assert ofa_loss(*tensors(), eps=1.5, temperature=2.0).item() == pytest.approx(expected / 2, rel=1e-5)


# --- dkd_loss ------------------------------------------------------------------------------------

def hand_dkd(s, t, y, temp):
    ps, pt = softmax(s, temp), softmax(t, temp)
    bs, bt = [ps[y], 1 - ps[y]], [pt[y], 1 - pt[y]]
    tckd = sum(bt[i] * math.log(bt[i] / bs[i]) for i in range(2)) * temp ** 2
    rest = [c for c in range(3) if c != y]
    qs = [ps[c] / (1 - ps[y]) for c in rest]
    qt = [pt[c] / (1 - pt[y]) for c in rest]
    nckd = sum(qt[i] * math.log(qt[i] / qs[i]) for i in range(2)) * temp ** 2
    return tckd, nckd


def test_dkd_loss_matches_hand_arithmetic():
    s, t, y = tensors()
    tckd, nckd = hand_dkd(S[0], T[0], Y[0], 2.0)
    assert dkd_loss(s[:1], t[:1], y[:1], alpha=1.0, beta=8.0, temperature=2.0).item() == \
        pytest.approx(tckd + 8 * nckd, rel=1e-5)
    both = [hand_dkd(a, b, c, 4.0) for a, b, c in zip(S, T, Y)]
    got_t, got_n = dkd_parts(s, t, y, 4.0)
    assert got_t.item() == pytest.approx(sum(p[0] for p in both) / 2, rel=1e-5)
    assert got_n.item() == pytest.approx(sum(p[1] for p in both) / 2, rel=1e-5)


def test_dkd_decomposes_kd():
    # the paper's identity: KD = TCKD + (1 − p_t,target) · NCKD, per sample
    s, t, y = tensors()
    for i in range(2):
        tckd, nckd = dkd_parts(s[i:i + 1], t[i:i + 1], y[i:i + 1], 2.0)
        p_target = softmax(T[i], 2.0)[Y[i]]
        kd = kd_loss(s[i:i + 1], t[i:i + 1], 2.0).item()
        assert kd == pytest.approx(tckd.item() + (1 - p_target) * nckd.item(), rel=1e-5)


# --- training across families ----------------------------------------------------------------------

CNN = ("test_resnet", {})
VIT = ("test_vit", {"patch_size": 4})
PAIRS = {"cnn_teacher-vit_student": (CNN, VIT), "vit_teacher-cnn_student": (VIT, CNN)}
OWNED = {"fitnet": "adapters", "ofa": "branches", "dkd": None}


def make(name, kwargs, seed):
    spec = ModelSpec(name=name, num_classes=10, in_chans=1, img_size=16, mean=[0.5], std=[0.25],
                     kwargs=resolve_kwargs(name, 16, kwargs, pretrained=False))
    torch.manual_seed(seed)
    return build_net(spec)


def build(method, pair, **cfg):
    (tn, tk), (sn, sk) = PAIRS[pair]
    teacher, student = make(tn, tk, 0).eval(), make(sn, sk, 1)
    cls = METHODS.get(method)
    return cls(student, teacher, cls.Config(**cfg), MethodContext(num_classes=10)), student, teacher


@pytest.mark.parametrize("pair", sorted(PAIRS))
@pytest.mark.parametrize("method", sorted(OWNED))
def test_trains_student_and_owned_parts_never_teacher(method, pair):
    m, student, teacher = build(method, pair)
    m.train()
    t_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    s_before = {k: v.detach().clone() for k, v in student.named_parameters()}
    torch.manual_seed(2)
    x, y = torch.rand(16, 1, 16, 16), torch.randint(0, 10, (16,))
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-3)
    first = None
    for step in range(5):
        opt.zero_grad(set_to_none=True)
        logits, losses = m(x, y)
        assert logits.shape == (16, 10)
        assert all(v.dtype == torch.float32 and v.ndim == 0 for v in losses.values())
        total = sum(losses.values())
        total.backward()
        if step == 0:
            first = total.item()
            owned = OWNED[method]
            if owned:
                params = list(getattr(m, owned).parameters())
                assert params and all(p.grad is not None for p in params)
                assert all(p.grad.abs().sum() > 0 for p in params if p.ndim > 1)
        opt.step()
    with torch.no_grad():
        last = sum(m(x, y)[1].values()).item()
    assert last < first, (first, last)
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in t_before.items())
    changed = [k for k, p in student.named_parameters() if not torch.equal(p, s_before[k])]
    assert len(changed) == len(s_before)
    assert not teacher.training and student.training


def test_loss_keys_and_float32_under_bf16_autocast():
    x, y = torch.rand(4, 1, 16, 16), torch.randint(0, 10, (4,))
    keys = {"fitnet": {"ce", "hint"}, "ofa": {"ce", "ofa", "ofa_branch"}, "dkd": {"ce", "tckd", "nckd"}}
    for method, want in keys.items():
        m, _, _ = build(method, "vit_teacher-cnn_student")
        with torch.autocast("cpu", dtype=torch.bfloat16):
            _, losses = m(x, y)
        assert set(losses) == want
        assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in losses.values())
    m, _, _ = build("fitnet", "vit_teacher-cnn_student", kd_weight=0.5)
    assert set(m(x, y)[1]) == {"ce", "hint", "kd"}


# --- stage checks and config ---------------------------------------------------------------------

def test_check_resolves_stages_and_rejects_bad_indexes():
    teacher, student = make(*VIT, 0), make(*CNN, 1)  # test_vit: 4 stages, test_resnet: 5 stages
    fit = METHODS.get("fitnet")
    line = fit.check(student, teacher, fit.Config())
    # the deepest student stages larger than 1×1 (the 1×1 ones would be hinted as constants), by depth
    assert line == ("fitnet stages: student 1 layer1 (32×4×4) → teacher 2 blocks.4 (64×4×4), "
                    "student 2 layer2 (48×2×2) → teacher 3 blocks.5 (64×4×4)")
    line = fit.check(student, teacher, fit.Config(student_stages=[-1], teacher_stages=[0]))
    assert "student 4" in line and "teacher 0" in line
    with pytest.raises(BadInput) as err:
        fit.check(student, teacher, fit.Config(student_stages=[5], teacher_stages=[0]))
    assert err.value.key == "distill.fitnet.student_stages"
    with pytest.raises(BadInput):
        fit.check(student, teacher, fit.Config(student_stages=[0], teacher_stages=[4]))
    with pytest.raises(BadInput):  # lists of different lengths
        fit.check(student, teacher, fit.Config(student_stages=[0, 1], teacher_stages=[0]))

    ofa = METHODS.get("ofa")
    line = ofa.check(student, teacher, ofa.Config())
    assert "1 (32×4×4), 2 (48×2×2), 3 (192×1×1)" in line  # all but the last, capped to three
    assert "0 (64×4×4), 1 (64×4×4), 2 (64×4×4)" in ofa.check(teacher, student, ofa.Config())
    assert "4 (96×1×1)" in ofa.check(student, teacher, ofa.Config(stages=[-1]))
    with pytest.raises(BadInput) as err:
        ofa.check(student, teacher, ofa.Config(stages=[0, 7]))
    assert err.value.key == "distill.ofa.stages" and "7" in err.value.message
    assert METHODS.get("dkd").check(student, teacher, METHODS.get("dkd").Config()) is None


def test_configs_defaults_and_recipe_tables():
    from lfcc_deploy.recipe import DistillConfig
    d = DistillConfig()
    assert d.fitnet.model_dump() == dict(student_stages=None, teacher_stages=None, hint_weight=1.0, ce_weight=1.0,
                                         kd_weight=0.0, kd_temperature=4.0)
    assert d.ofa.eps == 1.0 and d.ofa.temperature == 1.0 and d.ofa.stages is None
    assert (d.dkd.alpha, d.dkd.beta, d.dkd.temperature) == (1.0, 8.0, 4.0)
    for bad in (dict(eps=0), dict(temperature=0), dict(branch_weight=-1), dict(typo=1)):
        with pytest.raises(ValidationError):
            METHODS.get("ofa").Config(**bad)
    with pytest.raises(ValidationError):
        METHODS.get("fitnet").Config(hint_weight=-1)
