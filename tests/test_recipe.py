"""Recipes: shipped ones validate, overrides apply, every bad-input class is one line and exit 2."""
from __future__ import annotations

from pathlib import Path

import pytest

from conftest import tiny_recipe_text
from lfcc_deploy.recipe import changed_keys, list_recipes, load_recipe, recipe_dict

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("path", sorted((ROOT / "recipes").glob("*.toml")), ids=lambda p: p.stem)
def test_shipped_recipes_validate(path, cli):
    res = cli("recipes", "check", path)
    assert res.code == 0, res.err
    assert "ok" in res.out


def test_recipes_list_show_schema(cli):
    listed = cli("recipes", "list")
    assert listed.code == 0 and "quickstart" in listed.out
    shown = cli("recipes", "show", "quickstart", "--set", "distill.epochs=3")
    assert shown.code == 0
    assert "epochs = 3" in shown.out and "[distill.kd]" in shown.out
    schema = cli("recipes", "schema")
    assert schema.code == 0 and '"DataConfig"' in schema.out


def test_override_is_validated_like_the_file(tiny_recipe):
    rec = load_recipe(tiny_recipe, ["distill.epochs=7", "student.model=resnet18", "data.augment.random_crop=false"])
    assert rec.distill.epochs == 7 and rec.student.model == "resnet18"
    assert rec.data.augment.random_crop is False


def test_changed_keys_names_nested_keys(tiny_recipe):
    a = recipe_dict(load_recipe(tiny_recipe))
    b = recipe_dict(load_recipe(tiny_recipe, ["distill.kd.temperature=2.0", "data.img_size=24"]))
    assert changed_keys(a, b) == ["data.img_size", "distill.kd.temperature"]


BAD = {
    "malformed_toml": (lambda t: t.replace('name = "tiny"', 'name = "tiny'), "malformed TOML"),
    "unknown_section": (lambda t: t + "\n[exporter]\nx = 1\n", "unknown key"),
    "unknown_key": (lambda t: t.replace("lr = 3e-3\ntrain_fraction", "lrr = 3e-3\ntrain_fraction"), "distill.lrr"),
    "wrong_type": (lambda t: t.replace("epochs = 2", 'epochs = "two"'), "distill.epochs"),
    "epochs_zero": (lambda t: t.replace("epochs = 2", "epochs = 0"), "distill.epochs"),
    "lr_negative": (lambda t: t.replace("lr = 3e-3\ntrain_fraction", "lr = -1.0\ntrain_fraction"), "distill.lr"),
    "batch_zero": (lambda t: t.replace("batch_size = 32", "batch_size = 0"), "distill.batch_size"),
    "fraction_above_one": (lambda t: t.replace("train_fraction = 0.3", "train_fraction = 1.5"),
                           "distill.train_fraction"),
    "fraction_zero": (lambda t: t.replace("train_fraction = 0.3", "train_fraction = 0"), "distill.train_fraction"),
    "unknown_model": (lambda t: t.replace('"test_resnet"', '"resnet_does_not_exist"'), "student.model"),
    "unknown_dataset": (lambda t: t.replace('"digits"', '"mnist"'), "data.name"),
    "missing_data": (lambda t: t.replace('"digits"', '"fashion_mnist"\nroot = "/nonexistent/fmnist"'), "data.root"),
    "unknown_method": (lambda t: t.replace('method = "kd"', 'method = "kdd"'), "distill.method"),
    "missing_checkpoint": (lambda t: t.replace('[teacher.train]', 'checkpoint = "/nonexistent/t.safetensors"\n'
                                               '[teacher.train]'), "teacher.checkpoint"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_one_line_exit_2_nothing_written(case, tmp_path, cli):
    mutate, needle = BAD[case]
    path = tmp_path / "bad.toml"
    path.write_text(mutate(tiny_recipe_text()))
    out = tmp_path / "run"
    res = cli("distill", path, "--out", out, "--quiet")
    assert res.code == 2, (res.code, res.err)
    lines = res.err.strip().splitlines()
    assert 1 <= len(lines) <= 2, res.err
    assert "Traceback" not in res.err
    assert needle in lines[0] and str(path) in lines[0], lines[0]
    assert not out.exists()


def test_missing_recipe_file(tmp_path, cli):
    res = cli("distill", tmp_path / "nope.toml")
    assert res.code == 2 and "recipe file not found" in res.err and len(res.err.strip().splitlines()) <= 2


def test_bad_set_value_and_usage_errors(tiny_recipe, cli):
    res = cli("distill", tiny_recipe, "--set", "distill.epochs=-3")
    assert res.code == 2 and "distill.epochs" in res.err
    res = cli("distill", tiny_recipe, "--set", "noequals")
    assert res.code == 2 and "KEY=VALUE" in res.err
    res = cli("distill", tiny_recipe, "--no-such-flag")
    assert res.code == 2 and len(res.err.strip().splitlines()) <= 2 and "Traceback" not in res.err


def test_every_listed_recipe_is_loadable():
    for path in list_recipes():
        assert load_recipe(path).name
