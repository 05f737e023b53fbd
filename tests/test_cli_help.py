"""The command line as a person meets it first: fast start, `-h`, completion, help text that reads as written."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest
import typer

from lfcc_deploy.cli import app

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "timm", "torchvision", "onnx", "onnxruntime", "matplotlib", "sklearn")


def _commands(group: click.Command, path: tuple[str, ...] = ()):
    """(command path, click command) for the root and every command and group below it."""
    yield path, group
    for name, cmd in getattr(group, "commands", {}).items():
        yield from _commands(cmd, path + (name,))


COMMANDS = list(_commands(typer.main.get_command(app)))


def test_help_and_version_import_no_heavy_module():
    """Each `--help` and `--version` runs without torch, timm or onnx: under a second of CPU, not seven."""
    paths = [list(p) for p, _ in COMMANDS]
    code = ("import sys, contextlib, io\n"
            "from lfcc_deploy.cli import main\n"
            f"for path in {paths!r} + [['--version']]:\n"
            "    with contextlib.redirect_stdout(io.StringIO()):\n"
            "        assert main(path + ['--help'] if path != ['--version'] else path) == 0, path\n"
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]", f"imported at startup: {res.stdout.strip()}"


def _help_strings(cmd: click.Command) -> list[str]:
    return [cmd.help or ""] + [getattr(p, "help", None) or "" for p in cmd.params]


@pytest.mark.parametrize("path, cmd", COMMANDS, ids=[" ".join(p) or "lfcc-deploy" for p, _ in COMMANDS])
def test_help_text_keeps_bracketed_words(path, cmd, cli, monkeypatch):
    """`[gates]`, `[export] opset`: every bracketed word of a command's help reaches the screen, with -h."""
    monkeypatch.setenv("COLUMNS", "100")
    res = cli(*path, "-h")
    assert res.code == 0, res.err
    shown = " ".join(res.out.split())
    for word in (b for t in _help_strings(cmd) for b in re.findall(r"\[[^\]\s]+\]", t)):
        assert word in shown, f"{' '.join(path) or 'lfcc-deploy'} -h lost {word!r}"
    first_paragraph = " ".join((cmd.help or "").split("\n\n")[0].split())
    assert first_paragraph in shown
    assert (cmd.help or "").strip(), "no help text"


def test_known_brackets_survive(cli):
    assert "[gates]" in " ".join(cli("gate", "--help").out.split())
    assert "[export] opset" in " ".join(cli("export", "--help").out.split())


def test_shell_completion_is_installable(cli):
    assert "--install-completion" in cli("--help").out
    env = dict(os.environ, PYTHONPATH=str(ROOT), _LFCC_DEPLOY_COMPLETE="complete_bash",
               COMP_WORDS="lfcc-deploy ex", COMP_CWORD="1")
    res = subprocess.run([sys.executable, "-c", "from lfcc_deploy.cli import run; run()"], capture_output=True,
                         text=True, env=env, timeout=60)
    assert res.stdout.split() == ["export"], res.stdout + res.stderr
