"""LFCC's negatives: the queue against a hand-built reference, same-class dropping, resume, ramps."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from conftest import tiny_recipe_text
from lfcc_deploy import training
from lfcc_deploy.losses import MethodContext
from lfcc_deploy.losses.blocks import info_nce
from lfcc_deploy.losses.kd import KD, KDConfig
from lfcc_deploy.losses.lfcc import LFCC, LFCCConfig
from lfcc_deploy.recipe import load_recipe
from test_engine import InterruptAt
from test_pairing import make


class Interrupt(InterruptAt):
    def note(self, text): ...


def reference_nce(s, keys, positive, drop, tau):
    """Row by row, in plain Python: -log(exp(s·k+ / τ) / Σ_kept exp(s·k / τ))."""
    total = 0.0
    for i in range(len(s)):
        logits = [(s[i] @ k).item() / tau for j, k in enumerate(keys) if j == positive[i] or not drop[i][j]]
        pos = (s[i] @ keys[positive[i]]).item() / tau
        total += -pos + torch.logsumexp(torch.tensor(logits, dtype=torch.float64), 0).item()
    return total / len(s)


def unit(*shape):
    return F.normalize(torch.randn(*shape), dim=1)


def test_queue_negatives_equal_a_hand_built_reference():
    torch.manual_seed(0)
    s, t, q = unit(4, 8), unit(4, 8), unit(6, 8)
    labels = torch.tensor([0, 1, 0, 2])
    q_labels = torch.tensor([1, 0, -1, 2, 2, -1])  # two empty slots
    keys = torch.cat([t, q])
    key_labels = torch.cat([labels, q_labels]).tolist()
    for negatives in ("all", "other_classes"):
        lab = labels if negatives == "other_classes" else None
        drop = [[key_labels[j] < 0 or (lab is not None and key_labels[j] == labels[i].item())
                 for j in range(len(keys))] for i in range(len(s))]
        ref = reference_nce(s, keys, list(range(4)), drop, 0.2)
        got = info_nce(s, t, 0.2, symmetric=False, labels=lab, queue=q, queue_labels=q_labels)
        assert got.item() == pytest.approx(ref, rel=1e-5), negatives


def reference_soft_nce(s, t, keys, drop, tau, soft):
    """Row by row: cross-entropy of softmax(s·k / τ) against (1 − soft)·one-hot(i) + soft·softmax(t_i·k / τ),
    both over the kept keys (the positive is always kept)."""
    total = 0.0
    for i in range(len(s)):
        kept = [j for j in range(len(keys)) if j == i or not drop[i][j]]
        log_p = torch.log_softmax(torch.tensor([(s[i] @ keys[j]).item() / tau for j in kept], dtype=torch.float64), 0)
        q = torch.softmax(torch.tensor([(t[i] @ keys[j]).item() / tau for j in kept], dtype=torch.float64), 0)
        target = soft * q + (1 - soft) * torch.tensor([float(j == i) for j in kept], dtype=torch.float64)
        total += -(target * log_p).sum().item()
    return total / len(s)


def test_soft_targets_mix_the_teachers_similarities_into_the_positive():
    torch.manual_seed(3)
    s, t, q = unit(4, 8), unit(4, 8), unit(5, 8)
    labels = torch.tensor([0, 1, 0, 2])
    q_labels = torch.tensor([1, 0, -1, 2, 2])
    keys = torch.cat([t, q])
    key_labels = torch.cat([labels, q_labels]).tolist()
    drop = [[key_labels[j] < 0 or key_labels[j] == labels[i].item() for j in range(len(keys))] for i in range(4)]
    for soft in (0.0, 0.5, 1.0):
        ref = reference_soft_nce(s, t, keys, drop, 0.2, soft)
        got = info_nce(s, t, 0.2, symmetric=False, labels=labels, queue=q, queue_labels=q_labels, soft=soft)
        assert got.item() == pytest.approx(ref, rel=1e-5), soft
    assert ref != pytest.approx(reference_nce(s, keys, list(range(4)), drop, 0.2), rel=1e-3)  # soft really differs
    # the teacher side of the target is a constant: with soft = 1 and symmetric = False, t's gradient
    # comes only through the keys of the student's logits
    t1, t2 = t.clone().requires_grad_(), t.clone().requires_grad_()
    info_nce(s, t1, 0.2, symmetric=False, soft=1.0).backward()
    log_p = torch.log_softmax(s @ t2.t() / 0.2, dim=1)
    target = torch.softmax(t @ t.t() / 0.2, dim=1)
    (-(target * log_p).sum(1).mean()).backward()
    assert torch.allclose(t1.grad, t2.grad, atol=1e-6)


def test_other_classes_drops_same_class_batch_negatives_in_both_directions():
    torch.manual_seed(1)
    s, t = unit(4, 8), unit(4, 8)
    labels = torch.tensor([0, 0, 1, 1])
    drop = [[labels[i] == labels[j] for j in range(4)] for i in range(4)]
    s2t = reference_nce(s, t, list(range(4)), drop, 0.1)
    t2s = reference_nce(t, s, list(range(4)), drop, 0.1)
    assert info_nce(s, t, 0.1, labels=labels).item() == pytest.approx((s2t + t2s) / 2, rel=1e-5)


@pytest.mark.parametrize("reproject", [False, True])
def test_lfcc_queue_holds_the_last_teacher_rows_first_in_first_out(reproject):
    teacher, student = make("swin"), make("resnet")
    m = LFCC(student, teacher, LFCCConfig(queue=10, ce_weight=0, kd_weight=0, queue_reproject=reproject),
             MethodContext(10))
    m.train()
    opt = torch.optim.SGD(m.t_proj.parameters(), lr=1.0)  # the projector moves between steps
    raw, seen, labels = [], [], []
    for step in range(3):
        torch.manual_seed(step)
        x, y = torch.rand(4, 1, 32, 32), torch.randint(0, 10, (4,))
        with torch.no_grad():
            _, vecs = m.teacher_targets(x)
            raw.append(vecs[0])
            seen.append(vecs[0] if reproject else m.t_proj[0](vecs[0]))
        labels.append(y)
        opt.zero_grad()
        sum(m(x, y)[1].values()).backward()
        opt.step()
    expected = torch.cat(seen)[-10:]  # 12 rows pushed into 10 slots: slots 0, 1 hold the last batch's tail
    rows = (torch.arange(2, 12)) % 10
    assert torch.allclose(m.queue_0[rows], expected, atol=1e-6)
    assert torch.equal(m.queue_labels[rows], torch.cat(labels)[-10:])
    assert int(m.queue_ptr) == 2
    keys = m.queue_keys()[0][rows]
    fresh = m.t_proj[0](torch.cat(raw)[-10:])  # the same teacher rows through today's projector
    assert torch.allclose(keys, fresh, atol=1e-6) == reproject  # stored embeddings are stale
    if reproject:
        assert not keys.requires_grad
        with pytest.raises(ValueError, match="queue_reproject needs"):
            LFCCConfig(queue_reproject=True, projector="mlp")


def test_queue_is_not_filled_in_eval_mode():
    teacher, student = make("swin"), make("resnet")
    m = LFCC(student, teacher, LFCCConfig(queue=8), MethodContext(10))
    m.eval()
    with torch.no_grad():
        m(torch.rand(4, 1, 32, 32), torch.randint(0, 10, (4,)))
    assert (m.queue_labels == -1).all()


def test_ramp_scales_teacher_terms_linearly():
    teacher, student = make("swin"), make("resnet")
    m = KD(student, teacher, KDConfig(ramp_epochs=2.0), MethodContext(10))
    x, y = torch.rand(4, 1, 32, 32), torch.randint(0, 10, (4,))
    full = KD(student, teacher, KDConfig(), MethodContext(10))(x, y)[1]["kd"]
    m.set_progress(step=9, steps_per_epoch=10, total_steps=100)  # one epoch done: half weight
    assert m(x, y)[1]["kd"].item() == pytest.approx(0.5 * full.item(), rel=1e-5)
    m.set_progress(step=50, steps_per_epoch=10, total_steps=100)
    assert m(x, y)[1]["kd"].item() == pytest.approx(full.item(), rel=1e-5)


LFCC_TAIL = """
[distill.lfcc]
queue = 48
negatives = "other_classes"
ramp_epochs = 1.0
"""


@pytest.mark.parametrize("reproject", ["false", "true"])
def test_resumed_run_with_a_queue_gives_the_same_losses(tmp_path, reproject):
    path = tmp_path / "r.toml"
    path.write_text(tiny_recipe_text(epochs=2).replace('method = "kd"', 'method = "lfcc"') + LFCC_TAIL
                    + f"queue_reproject = {reproject}\n")
    recipe = load_recipe(path)
    training.distill(recipe, out=tmp_path / "straight")
    with pytest.raises(KeyboardInterrupt):
        training.distill(recipe, out=tmp_path / "cut", reporter=Interrupt("student", 5))
    blob = torch.load(tmp_path / "cut/checkpoint/student.pt", weights_only=True)
    assert (blob["model"]["queue_labels"] >= 0).sum() > 0, "the queue is not in the checkpoint"
    training.distill(recipe, out=tmp_path / "cut", resume=True)

    def losses(run):
        rows = [json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
        return [{k: v for k, v in r.items() if k.startswith(("loss", "train_loss"))} for r in rows
                if r.get("phase") == "student"]
    straight, cut = losses("straight"), losses("cut")
    assert straight and straight == cut


def test_info_nce_runs_in_float32_inside_autocast():
    """bfloat16 logits at τ = 0.1 keep 2–3 digits; the loss must not change under autocast."""
    torch.manual_seed(2)
    s, t = unit(16, 32), unit(16, 32)
    ref = info_nce(s, t, 0.1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = info_nce(s.bfloat16(), t.bfloat16(), 0.1)
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(info_nce(s.bfloat16().float(), t.bfloat16().float(), 0.1).item(), rel=1e-6)
    assert got.item() == pytest.approx(ref.item(), rel=1e-2)


def test_a_batch_larger_than_the_queue_keeps_its_last_rows():
    teacher, student = make("swin"), make("resnet")
    m = LFCC(student, teacher, LFCCConfig(queue=3), MethodContext(10))
    embs, labels = [torch.arange(5.0)[:, None].expand(5, 128)] * 2, torch.arange(5)
    m.enqueue(embs, labels)
    assert sorted(m.queue_labels.tolist()) == [2, 3, 4]
    assert torch.equal(m.queue_0[:, 0][m.queue_labels.argsort()], torch.tensor([2.0, 3.0, 4.0]))
