"""`profile`: every method timed on the recipe's pair, the cached step really skips the teacher."""
from __future__ import annotations

import json

from conftest import tiny_recipe_text

import lfcc_deploy.losses.lfcc as lfcc_mod


def test_profile_prints_all_methods_as_table_or_json(tmp_path, cli, monkeypatch):
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(tiny_recipe_text())
    calls = {"teacher": 0}
    original = lfcc_mod.LFCC.teacher_targets

    def counting(self, x):
        calls["teacher"] += 1
        return original(self, x)
    monkeypatch.setattr(lfcc_mod.LFCC, "teacher_targets", counting)
    res = cli("profile", recipe, "--steps", "3", "--json", "--set", "distill.lfcc.grids=[1,2]")
    assert res.code == 0, res.err
    data = json.loads(res.out)  # --json: the figures and nothing else on stdout
    assert set(data["methods"]) == {"ce", "kd", "lfcc", "lfcc_cached"} and data["device"] == "cpu"
    m = data["methods"]
    assert all(r["step_ms"] > 0 and r["images_per_s"] > 0 for r in m.values())
    assert data["ratios"]["lfcc_vs_kd"] == round(m["lfcc"]["step_ms"] / m["kd"]["step_ms"], 3)
    # live lfcc calls the teacher on every step (3 warm-up + 3 timed = 6); the cached variant only while
    # its one-view cache is built (probe warm-up, probe, one batch = 3), never in its timed steps
    assert calls["teacher"] == 9
    table = cli("profile", recipe, "--steps", "3", "-q", "--set", "distill.lfcc.grids=[1,2]")
    assert "lfcc_cached" in table.out and "data pipeline" in table.out and not table.err


def test_profile_ratios_are_those_of_the_step_times_it_reports(tmp_path, cli, monkeypatch):
    """Regression: ratios were rounded from the unrounded times, so 41.3484 / 37.4696 reported 1.104
    beside step times 41.348 and 37.47, whose ratio rounds to 1.103."""
    import lfcc_deploy.profile as profile_mod

    steps = {"ce": 30.0, "kd": 37.4696, "lfcc": 41.3484, "lfcc_cached": 33.3333}
    monkeypatch.setattr(profile_mod, "method_steps", lambda variants, *a, **k: {n: steps[n] for n in variants})
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(tiny_recipe_text())
    res = cli("profile", recipe, "--steps", "3", "--json")
    assert res.code == 0, res.err
    data = json.loads(res.out)
    m = data["methods"]
    assert m["kd"]["step_ms"] == 37.47 and m["lfcc"]["step_ms"] == 41.348
    assert data["ratios"]["lfcc_vs_kd"] == round(41.348 / 37.47, 3) == 1.103
    assert data["ratios"]["lfcc_cached_vs_ce"] == round(33.333 / 30.0, 3)
