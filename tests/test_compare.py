"""`compare`: one teacher for every row, per-seed run directories, a table computed from them, resumable."""
from __future__ import annotations

import json
import statistics
from pathlib import Path

from conftest import tiny_recipe_text
from lfcc_deploy.losses import METHODS
from lfcc_deploy.rundir import file_sha256

LOSSES = Path(__file__).resolve().parent.parent / "lfcc_deploy" / "losses"


def test_registry_and_method_files_agree():
    files = {p.stem for p in LOSSES.glob("*.py")} - {"__init__", "base", "blocks"}
    assert files == set(METHODS.names())


def test_compare_table_from_per_seed_runs(tmp_path, cli):
    recipe = tmp_path / "r.toml"
    recipe.write_text(tiny_recipe_text(epochs=1))
    out = tmp_path / "cmp"
    res = cli("compare", recipe, "--methods", "ce,kd", "--seeds", "2", "--out", out, "--quiet",
              "--variant", "kd-t1=kd distill.kd.temperature=1.0")
    assert res.code == 0, res.err
    for name in ("compare.md", "compare.json", "compare.png", "teacher/teacher.safetensors"):
        assert (out / name).is_file(), name
    table = json.loads((out / "compare.json").read_text())
    assert [r["label"] for r in table["rows"]] == ["ce", "kd", "kd-t1"]
    for row in table["rows"]:
        accs = [json.loads((out / row["label"] / f"seed{s}" / "summary.json").read_text())["student"]["test_acc"]
                for s in range(2)]
        assert row["acc_mean"] == statistics.fmean(accs) and row["acc_std"] == statistics.stdev(accs)
        recipe_text = (out / row["label"] / "seed1" / "recipe.toml").read_text()
        assert "seed = 1" in recipe_text and str((out / "teacher" / "teacher.safetensors").resolve()) in recipe_text
    assert table["rows"][1]["step_rel"] == 1.0 and table["step_reference"] == "kd"
    assert all(r["step_ms_bench"] > 0 for r in table["rows"])
    # the CE row skips the teacher forward, so its interleaved step is the cheapest
    assert table["rows"][0]["step_ms_bench"] < table["rows"][1]["step_ms_bench"]
    assert "temperature = 1.0" in (out / "kd-t1" / "seed0" / "recipe.toml").read_text()
    assert "| kd-t1 |" in res.out and "Teacher" in res.out
    # seeds really differ, the teacher is shared
    w0 = (out / "kd" / "seed0" / "student.safetensors").read_bytes()
    assert w0 != (out / "kd" / "seed1" / "student.safetensors").read_bytes()

    stamp = (out / "kd" / "seed0" / "student.safetensors").stat().st_mtime_ns
    again = cli("compare", recipe, "--methods", "ce,kd", "--seeds", "2", "--out", out, "--quiet",
                "--variant", "kd-t1=kd distill.kd.temperature=1.0")
    assert again.code == 0
    assert (out / "kd" / "seed0" / "student.safetensors").stat().st_mtime_ns == stamp  # reused, not retrained
    accuracy = lambda rows: [(r["label"], r["accs"], r["val_mean"]) for r in rows]  # noqa: E731
    assert accuracy(json.loads((out / "compare.json").read_text())["rows"]) == accuracy(table["rows"])

    reuse = cli("compare", recipe, "--methods", "ce", "--seeds", "1", "--teacher", out / "teacher",
                "--out", tmp_path / "cmp2", "--quiet")
    assert reuse.code == 0 and not (tmp_path / "cmp2" / "teacher").exists()


def test_compare_bad_arguments(tmp_path, cli):
    recipe = tmp_path / "r.toml"
    recipe.write_text(tiny_recipe_text(epochs=1))
    for args, needle in [(("--methods", "ce,nope"), "unknown method"),
                         (("--variant", "broken"), "LABEL=METHOD"),
                         (("--variant", "x=kd distill.kd.temperature=-1"), "distill.kd.temperature"),
                         (("--teacher", tmp_path / "none"), "teacher.safetensors")]:
        res = cli("compare", recipe, "--seeds", "1", "--out", tmp_path / "o", *args)
        assert res.code == 2 and needle in res.err, (args, res.err)
        assert len(res.err.strip().splitlines()) <= 2
    assert not (tmp_path / "o").exists()


def test_compare_refuses_rows_of_another_teacher(tmp_path, cli):
    """Resuming a table with other teacher weights must not mix two teachers' students in one row."""
    recipe = tmp_path / "r.toml"
    recipe.write_text(tiny_recipe_text(epochs=1))
    out = tmp_path / "cmp"
    assert cli("compare", recipe, "--methods", "ce,kd", "--seeds", "1", "--out", out, "--quiet").code == 0
    kd_summary = json.loads((out / "kd" / "seed0" / "summary.json").read_text())
    assert kd_summary["teacher"]["sha256"] == file_sha256(out / "teacher" / "teacher.safetensors")
    other = tmp_path / "other"
    assert cli("train-teacher", recipe, "--out", other, "--set", "teacher.train.seed=7", "--quiet").code == 0
    assert file_sha256(other / "teacher.safetensors") != kd_summary["teacher"]["sha256"]
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*/seed0/student.safetensors")}

    mixed = cli("compare", recipe, "--methods", "ce,kd", "--seeds", "1", "--out", out, "--teacher", other, "--quiet")
    assert mixed.code == 2 and "another teacher" in mixed.err and str(out / "kd" / "seed0") in mixed.err, mixed.err
    # a CE row never read the teacher, so it belongs to a table of any teacher
    ce_only = cli("compare", recipe, "--methods", "ce", "--seeds", "1", "--out", out, "--teacher", other, "--json")
    assert ce_only.code == 0, ce_only.err
    assert json.loads(ce_only.out)["teacher"]["sha256"] == file_sha256(other / "teacher.safetensors")
    same = cli("compare", recipe, "--methods", "ce,kd", "--seeds", "1", "--out", out, "--teacher", out / "teacher",
               "--quiet")
    assert same.code == 0, same.err
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/seed0/student.safetensors")} == stamps  # nothing retrained


def test_compare_refuses_finished_rows_of_a_changed_recipe(tmp_path, cli):
    """A finished seed is reused only while its row's recipe is what it ran with: a changed key retrains
    nothing silently and mixes no settings into one row, while keys the row never reads stay free."""
    recipe = tmp_path / "r.toml"
    recipe.write_text(tiny_recipe_text(epochs=1))
    out = tmp_path / "cmp"
    assert cli("compare", recipe, "--methods", "kd", "--seeds", "1", "--out", out, "--quiet").code == 0
    weights = out / "kd" / "seed0" / "student.safetensors"
    stamp = weights.stat().st_mtime_ns

    # the stale row comes last: it must stop the table before the new CE row trains
    changed = cli("compare", recipe, "--methods", "ce,kd", "--seeds", "1", "--out", out, "--quiet",
                  "--set", "distill.kd.temperature=2.0")
    assert changed.code == 2, changed.err
    assert "distill.kd.temperature" in changed.err and str(out / "kd" / "seed0") in changed.err
    assert "Traceback" not in changed.err and len(changed.err.strip().splitlines()) <= 2
    assert not (out / "ce").exists()
    # LFCC's keys are not the KD row's: tuning them keeps the finished row
    other = cli("compare", recipe, "--methods", "kd", "--seeds", "1", "--out", out, "--quiet",
                "--set", "distill.lfcc.temperature=0.2")
    assert other.code == 0, other.err
    assert weights.stat().st_mtime_ns == stamp
    # how the given teacher was trained is not the row's business: its weights' sha256 is checked instead
    schedule = cli("compare", recipe, "--methods", "kd", "--seeds", "1", "--out", out, "--quiet",
                   "--teacher", out / "teacher", "--set", "teacher.train.epochs=3")
    assert schedule.code == 0, schedule.err
    assert weights.stat().st_mtime_ns == stamp
