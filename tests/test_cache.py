"""Teacher cache: cached and live teacher give the same losses on the same views, every key change
rebuilds, disk caches are reused only when their key matches, and size is checked before building."""
from __future__ import annotations

import copy

import pytest
import torch
from conftest import tiny_recipe_text

import lfcc_deploy.cache as cache_mod
from lfcc_deploy.cache import cache_key, prepare_cache
from lfcc_deploy.data import load_data
from lfcc_deploy.sources import stratified_subset
from lfcc_deploy.errors import BadInput
from lfcc_deploy.training import make_method, make_net
from lfcc_deploy.data_config import Augment
from lfcc_deploy.recipe import load_recipe


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cache")
    (tmp / "t.toml").write_text(tiny_recipe_text())
    rec = load_recipe(tmp / "t.toml", ["distill.method=lfcc", "distill.lfcc.grids=[1,2]",
                                       "data.augment.horizontal_flip=true"])
    data = load_data(rec.data)
    teacher = make_net(rec.teacher, data, 0, "teacher")
    student = make_net(rec.student, data, 0, "student")
    method = make_method("lfcc", student, teacher, rec.distill, rec.method_config(), data).eval()
    subset = stratified_subset(data.train.labels, rec.distill.train_fraction, rec.distill.seed)
    return dict(tmp=tmp, rec=rec, data=data, method=method, subset=subset, src=data.train.subset(subset))


def _build(s, run_dir, **kw):
    args = dict(mode="memory", views=3, seed=0, dtype="float32", run_dir=run_dir, device=torch.device("cpu"))
    args.update(kw)
    return prepare_cache(s["method"], s["src"], s["subset"], s["data"].identity, s["rec"].data.augment, **args)


@pytest.mark.parametrize("dtype, tol", [("float32", 1e-4), ("float16", 2e-3)])
def test_cached_and_live_teacher_give_the_same_losses(setup, tmp_path, dtype, tol):
    s = setup
    cache = _build(s, tmp_path, dtype=dtype)
    x, y, idx = next(s["src"].batches(32, device="cpu", train=True, seed=0, epoch=1, with_index=True))
    views = cache.pick_views(0, 1)
    x_view, targets = cache.batch(x, idx, views, s["rec"].data.augment)
    with torch.no_grad():
        _, live = s["method"](x_view, y)              # the teacher runs on exactly that view
        _, cached = s["method"](x_view, y, targets)   # the teacher is skipped
        wrong = (targets[0].roll(1, 0), [f.roll(1, 0) for f in targets[1]])
        _, mispaired = s["method"](x_view, y, wrong)  # what a cache that lost the pairing would give
    gaps = {k: abs(live[k].item() - cached[k].item()) for k in live}
    assert max(gaps.values()) <= tol, gaps
    # the check can tell a mis-paired cache from storage rounding (an untrained teacher's logits are
    # nearly uniform, so the contrastive term is the sensitive one)
    assert abs(mispaired["lfcc"].item() - live["lfcc"].item()) > 10 * max(gaps["lfcc"], 1e-4), gaps


def test_views_differ_and_are_reproducible(setup, tmp_path):
    s = setup
    a, b = _build(s, tmp_path), _build(s, tmp_path)
    assert torch.equal(a.params, b.params) and torch.equal(a.logits, b.logits)
    assert not torch.equal(a.params[0], a.params[1])          # K distinct augmentations per image
    assert not torch.equal(a.pick_views(0, 0), a.pick_views(0, 1))  # a new draw every epoch


def test_every_key_ingredient_changes_the_key(setup):
    s = setup
    m, ident, sub, aug = s["method"], s["data"].identity, s["subset"], s["rec"].data.augment
    base = cache_key(m, ident, sub, aug, 4, 0, "float16")
    other_teacher = copy.deepcopy(m)
    with torch.no_grad():
        next(other_teacher.teacher.model.parameters()).add_(1e-3)
    other_method = copy.deepcopy(m)
    # the filter changes what the banks compute (grids may not: they are clipped to each map)
    other_method.cfg = other_method.cfg.model_copy(update={"filter": "gaussian"})
    changed = [cache_key(other_teacher, ident, sub, aug, 4, 0, "float16"),
               cache_key(m, ident + "x", sub, aug, 4, 0, "float16"),
               cache_key(m, ident, sub[:-1], aug, 4, 0, "float16"),
               cache_key(m, ident, sub, Augment(crop_padding=3), 4, 0, "float16"),
               cache_key(m, ident, sub, aug, 5, 0, "float16"),
               cache_key(m, ident, sub, aug, 4, 1, "float16"),
               cache_key(m, ident, sub, aug, 4, 0, "float32"),
               cache_key(other_method, ident, sub, aug, 4, 0, "float16")]
    assert len({base, *changed}) == len(changed) + 1


def test_disk_cache_is_reused_only_with_a_matching_key(setup, tmp_path):
    s = setup
    notes = []
    first = _build(s, tmp_path, mode="disk", say=notes.append)
    again = _build(s, tmp_path, mode="disk", say=notes.append)
    assert any("reusing" in n for n in notes) and torch.equal(torch.as_tensor(again.logits), first.logits)
    _build(s, tmp_path, mode="disk", views=2, say=notes.append)  # another key: a second folder
    assert len(list((tmp_path / "cache").glob("teacher-*"))) == 2
    assert not list((tmp_path / "cache").glob("*.tmp-*"))


def test_cache_larger_than_free_space_is_refused_before_building(setup, tmp_path, monkeypatch):
    monkeypatch.setattr(cache_mod, "_free_bytes", lambda mode, where: 1000)
    with pytest.raises(BadInput) as err:
        _build(setup, tmp_path, mode="memory")
    assert err.value.key == "distill.cache_views" and "GB" in err.value.message


def test_distill_with_cache_end_to_end_and_refused_for_uncacheable(setup, cli, tmp_path):
    recipe = setup["tmp"] / "t.toml"
    res = cli("distill", recipe, "--out", tmp_path / "run", "--quiet", "--set", "distill.method=lfcc",
              "--set", "distill.lfcc.grids=[1,2]", "--set", "distill.teacher_cache=disk", "--set", "distill.cache_views=2")
    assert res.code == 0, res.err
    assert "teacher cache (disk)" in res.err and list((tmp_path / "run" / "cache").glob("teacher-*/meta.json"))
    for method in ("ofa", "ce"):  # refused before the teacher is trained: nothing is written
        res = cli("distill", recipe, "--out", tmp_path / method, "--quiet", "--set", f"distill.method={method}",
                  "--set", "distill.teacher_cache=memory")
        assert res.code == 2 and "distill.teacher_cache" in res.err and not (tmp_path / method).exists()


def test_teacher_hash_covers_batchnorm_buffers():
    """CNN teachers carry 0-d integer buffers (num_batches_tracked) and running statistics."""
    from types import SimpleNamespace
    bn = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3), torch.nn.BatchNorm2d(3))
    first = cache_mod._teacher_hash(SimpleNamespace(teacher=SimpleNamespace(model=bn)))
    bn[1].running_mean += 1
    assert cache_mod._teacher_hash(SimpleNamespace(teacher=SimpleNamespace(model=bn))) != first
