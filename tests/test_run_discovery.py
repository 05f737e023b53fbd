"""Run discovery: `export`, `bench`, `gate`, `eval` without RUN_DIR take the newest finished run under runs/."""
from __future__ import annotations

import importlib.util
import os
import time

import pytest
from conftest import tiny_recipe_text

from lfcc_deploy.errors import BadInput
from lfcc_deploy.rundir import latest_finished_run

NO_TRT = importlib.util.find_spec("tensorrt") is None


def _run(root, name: str, finished: bool = True, age_s: float = 0.0):
    """A run directory; `finished` ones have summary.json, written `age_s` seconds ago."""
    d = root / "runs" / name
    d.mkdir(parents=True)
    (d / "recipe.toml").write_text(tiny_recipe_text())
    if finished:
        (d / "summary.json").write_text("{}")
        t = time.time() - age_s
        os.utime(d / "summary.json", (t, t))
    return d


def test_no_run_is_one_line_with_a_fix(tmp_path):
    with pytest.raises(BadInput, match="no run under") as e:
        latest_finished_run(tmp_path / "runs")
    assert "distill" in e.value.hint


def test_one_run_is_taken(tmp_path):
    d = _run(tmp_path, "only")
    assert latest_finished_run(tmp_path / "runs") == d


def test_several_runs_newest_summary_wins(tmp_path):
    _run(tmp_path, "a_new", age_s=10)
    newest = _run(tmp_path, "b_newest", age_s=1)
    old = _run(tmp_path, "c_old", age_s=100)
    (old / "recipe.toml").write_text(tiny_recipe_text())  # touched later, but finished earlier
    assert latest_finished_run(tmp_path / "runs") == newest


def test_unfinished_run_is_passed_over(tmp_path):
    done = _run(tmp_path, "done", age_s=60)
    _run(tmp_path, "training_now", finished=False)
    assert latest_finished_run(tmp_path / "runs") == done


def test_only_unfinished_runs_name_them(tmp_path):
    _run(tmp_path, "killed", finished=False)
    with pytest.raises(BadInput, match="unfinished: killed") as e:
        latest_finished_run(tmp_path / "runs")
    assert "--resume" in e.value.hint


@pytest.mark.skipif(not NO_TRT, reason="tensorrt is installed: the not-installed message cannot appear")
def test_export_trt_without_run_dir_reaches_the_tensorrt_step(tmp_path, cli, monkeypatch):
    """The README's `lfcc-deploy export --trt`, run in the repository root after the quickstart."""
    monkeypatch.chdir(tmp_path)
    _run(tmp_path, "older", age_s=30)
    _run(tmp_path, "quickstart", age_s=1)
    res = cli("export", "--trt")
    assert res.code == 2, res.err
    assert "run directory: runs/quickstart (the most recently finished run" in res.err
    assert "TensorRT is not installed" in res.err and "Traceback" not in res.err
    assert res.err.count("error:") == 1


def test_recipe_option_resolves_runs_name(tmp_path, cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _run(tmp_path, "tiny", age_s=30)
    _run(tmp_path, "other")
    (tmp_path / "mine.toml").write_text(tiny_recipe_text())          # declares name = "tiny"
    for name in ("tiny", "mine.toml"):
        res = cli("gate", "--recipe", name)
        assert "run directory: runs/tiny (the run of --recipe" in res.err, res.err
        assert res.code == 2 and "no bench report" in res.err       # it looked in runs/tiny


def test_no_runs_at_all_is_exit_2(tmp_path, cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = cli("bench")
    assert res.code == 2 and "no run under runs/" in res.err and "Traceback" not in res.err
