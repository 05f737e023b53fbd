"""Small training pieces that must accept every value the schema allows, and a teacher-cache key
that does not depend on how the method is wrapped (torchrun's DDP or none)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from lfcc_deploy.cache import cache_key, check_cacheable
from lfcc_deploy.data import load_data
from lfcc_deploy.distributed import DataParallel, unwrap
from lfcc_deploy.errors import BadInput
from lfcc_deploy.losses import METHODS
from lfcc_deploy.optim import make_optimizer
from lfcc_deploy.recipe import DistillConfig, load_recipe
from lfcc_deploy.training import make_method, make_net


@pytest.fixture(scope="module")
def kd(tmp_path_factory):
    from conftest import tiny_recipe_text
    path = tmp_path_factory.mktemp("kd") / "r.toml"
    path.write_text(tiny_recipe_text())
    recipe = load_recipe(path)
    data = load_data(recipe.data)
    student, teacher = make_net(recipe.student, data, 0, "student"), make_net(recipe.teacher, data, 0, "teacher")
    return recipe, make_method("kd", student, teacher, recipe.distill, recipe.method_config(), data), data


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_sgd_accepts_every_momentum_the_schema_allows(kd, momentum):
    _, method, data = kd
    opt = make_optimizer(method, DistillConfig(optimizer="sgd", momentum=momentum))
    assert opt.defaults["nesterov"] == (momentum > 0)
    x, y = next(data.train.batches(8, device="cpu", train=True))
    logits, losses = method(x, y)
    sum(losses.values()).backward()
    opt.step()


def _wrapped(method: nn.Module) -> DataParallel:
    """A DataParallel around `method` without a process group (its class is what matters here)."""
    ddp = DataParallel.__new__(DataParallel)
    nn.Module.__init__(ddp)
    ddp.module = method
    return ddp


def test_cache_key_is_the_same_under_torchrun_and_without(kd):
    recipe, method, data = kd
    sub = torch.arange(len(data.train))
    args = (data.identity, sub, recipe.data.augment, 4, 0, "float16")
    wrapped = _wrapped(method)
    assert unwrap(wrapped) is method and type(wrapped).__name__ != type(method).__name__
    assert cache_key(wrapped, *args) == cache_key(method, *args)


def test_one_cacheable_rule_names_the_methods_that_can():
    check_cacheable(METHODS.get("kd"))
    with pytest.raises(BadInput) as err:
        check_cacheable(METHODS.get("fitnet"))
    cacheable = [n for n, c in METHODS.items() if c.cacheable]
    assert "'fitnet'" in err.value.message and all(n in err.value.hint for n in cacheable)
