"""`recipes check` lists every schema error of a file at once; other commands show the first and point there."""
from __future__ import annotations

BAD = 'name = "x"\n[data]\nname = "digits"\nimg_siz = 3\n[teacher]\nmodel = "resnet18"\n[teacher.train]\nepochs = -1\n'


def test_check_lists_every_error(tmp_path, cli):
    path = tmp_path / "bad.toml"
    path.write_text(BAD)
    res = cli("recipes", "check", path)
    assert res.code == 2 and "Traceback" not in res.err
    lines = [ln for ln in res.err.splitlines() if ln.startswith(f"error: {path}: ")]
    keys = [ln.split(": ")[2] for ln in lines[:3]]
    assert keys == ["data.img_siz", "teacher.train.epochs", "student"], res.err
    assert "3 error(s)" in res.err and "recipes check" not in res.err  # no hint to run what just ran


def test_other_commands_show_the_first_and_point_to_check(tmp_path, cli):
    path = tmp_path / "bad.toml"
    path.write_text(BAD)
    res = cli("distill", path)
    assert res.code == 2 and res.err.count("error:") == 1
    assert f"2 more error(s); `lfcc-deploy recipes check {path}` lists them all" in res.err
