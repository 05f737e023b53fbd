"""The package's import graph has no cycle outside cli/, counting imports inside functions too."""
import subprocess
import sys
from pathlib import Path

TOOL = Path(__file__).resolve().parent.parent / "tools" / "import_graph.py"


def _run(*args):
    return subprocess.run([sys.executable, str(TOOL), *map(str, args)], capture_output=True, text=True)


def test_lfcc_deploy_has_no_import_cycle_outside_cli():
    res = _run()
    assert res.returncode == 0, res.stdout + res.stderr
    assert "0 cycle(s)" in res.stdout


def test_tool_finds_a_cycle_hidden_in_a_function(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "cli").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .b import x\n")
    (pkg / "b.py").write_text("x = 1\n\ndef f():\n    from . import a\n")
    (pkg / "cli" / "__init__.py").write_text("from .. import a\n")
    (pkg / "cli" / "c.py").write_text("from . import d\n")  # cycles inside cli/ are allowed
    (pkg / "cli" / "d.py").write_text("from . import c\n")
    res = _run(pkg)
    assert res.returncode == 1
    assert "pkg.a -> pkg.b" in res.stdout and "pkg.b -> pkg.a" in res.stdout
    assert "1 cycle(s)" in res.stdout
