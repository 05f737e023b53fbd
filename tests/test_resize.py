"""`data.resize = "pad"`: small images keep their pixels on a black canvas, in training and deployment alike."""
from __future__ import annotations

import torch

from lfcc_deploy.preprocess import Preprocess, to_unit_float


def test_pad_centres_small_images_and_keeps_their_pixels():
    x = torch.randint(1, 256, (2, 1, 28, 28), dtype=torch.uint8)
    out = to_unit_float(x, 32, 1, "pad")
    assert out.shape == (2, 1, 32, 32)
    assert torch.equal(out[:, :, 2:30, 2:30], x.float() / 255)
    border = torch.ones(32, 32, dtype=torch.bool)
    border[2:30, 2:30] = False
    assert (out[:, :, border] == 0).all()


def test_pad_still_resizes_larger_images_and_odd_margins_are_exact():
    big = torch.full((1, 3, 40, 40), 255, dtype=torch.uint8)
    assert to_unit_float(big, 32, 3, "pad").shape == (1, 3, 32, 32)
    odd = torch.full((1, 1, 27, 30), 255, dtype=torch.uint8)
    out = to_unit_float(odd, 32, 1, "pad")
    assert out.sum().item() == 27 * 30  # every pixel kept once, nothing interpolated


def test_interpolate_is_unchanged_default():
    x = torch.randint(0, 256, (1, 1, 28, 28), dtype=torch.uint8)
    assert not torch.equal(to_unit_float(x, 32, 1)[:, :, 2:30, 2:30], x.float() / 255)


def test_resize_mode_travels_in_the_preprocess_metadata():
    pre = Preprocess(32, 1, (0.5,), (0.25,), "pad")
    assert Preprocess.from_json(pre.to_json()) == pre
    old = '{"img_size": 32, "channels": 1, "mean": [0.5], "std": [0.25]}'  # files exported before the key
    assert Preprocess.from_json(old).resize == "interpolate"


def test_recipe_pad_reaches_training_batches_and_the_student_spec(tmp_path):
    from conftest import tiny_recipe_text
    from lfcc_deploy import training
    from lfcc_deploy.data import load_data
    from lfcc_deploy.models import load_net
    from lfcc_deploy.recipe import load_recipe
    path = tmp_path / "r.toml"
    path.write_text(tiny_recipe_text(epochs=1).replace("img_size = 16", 'img_size = 16\nresize = "pad"'))
    recipe = load_recipe(path)
    data = load_data(recipe.data)  # digits are 8×8: 4 black pixels each side at 16
    x, _ = next(data.train.subset(torch.arange(8)).batches(8, device="cpu", train=False))
    assert (x[:, :, :4] == 0).all() and (x[:, :, 12:] == 0).all() and x[:, :, 4:12, 4:12].max() > 0
    training.distill(recipe, out=tmp_path / "run")
    assert load_net(tmp_path / "run/student.safetensors").spec.resize == "pad"
