"""Run directories: atomic file writes, a single-writer lock, and what a run has finished.

Every file a run writes goes to a temp file that is renamed into place, so a
kill at any moment leaves either the previous version or the new one, never half.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable

from .errors import BadInput

RECIPE_FILE = "recipe.toml"
RUNS_DIR = Path("runs")  # where runs go by default (runs/<recipe name>), relative to the working directory
_UMASK = os.umask(0)
os.umask(_UMASK)
SUMMARY_FILE = "summary.json"


def atomic_write(path: Path, write: Callable[[Path], Any]) -> None:
    """Call `write(tmp_path)`, fsync, then rename over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        publish(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def publish(written: Path, path: Path) -> None:
    """fsync a finished file, then rename it over `path` (same file system): all of it or nothing."""
    with open(written, "rb+") as f:
        os.fsync(f.fileno())
    os.chmod(written, 0o666 & ~_UMASK)  # some writers create 0600 temp files; artifacts are shareable
    os.replace(written, path)


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def file_sha256(path: Path) -> str:
    """Hex digest of a file's bytes: what identifies a checkpoint or an engine, wherever it was copied."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise BadInput(f"cannot read JSON ({type(err).__name__})", file=str(path)) from None


class RunLock:
    """An flock on RUN_DIR/.lock: released by the kernel even when the holder is killed -9."""

    def __init__(self, run_dir: Path, hint: str = "wait for it to finish, or pass another --out"):
        self.path, self.hint = Path(run_dir) / ".lock", hint
        self._fd: int | None = None

    def __enter__(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise BadInput(f"run directory is in use by pid {holder}", file=str(self.path.parent),
                           hint=self.hint) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def check_run_dir(run_dir: Path, *, resume: bool, force: bool) -> None:
    """Refuse to silently overwrite a run; writes nothing (called before and under the lock)."""
    run_dir = Path(run_dir)
    if resume and force:
        raise BadInput("--resume and --force contradict each other", hint="pick one")
    if run_dir.exists() and not run_dir.is_dir():
        raise BadInput("run directory path exists and is not a directory", file=str(run_dir),
                       hint="pass another --out")
    has_run = (run_dir / RECIPE_FILE).exists()
    if resume and not has_run:
        raise BadInput("nothing to resume: no recipe.toml here", file=str(run_dir),
                       hint="drop --resume to start a new run")
    if has_run and not resume and not force:
        state = "a finished" if (run_dir / SUMMARY_FILE).exists() else "an unfinished"
        raise BadInput(f"run directory already holds {state} run", file=str(run_dir),
                       hint="use --resume to continue it, --force to start over, or --out for another directory")


def latest_finished_run(root: Path = RUNS_DIR) -> Path:
    """The run under `root` whose summary.json was written last: what `export`, `bench`, `gate` and `eval`
    take when no RUN_DIR is given. A run still training (or killed) has no summary.json and is passed over."""
    root = Path(root)
    finished = [p.parent for p in root.glob(f"*/{SUMMARY_FILE}")]
    if finished:
        return max(finished, key=lambda d: ((d / SUMMARY_FILE).stat().st_mtime, d.name))
    unfinished = sorted(p.parent.name for p in root.glob(f"*/{RECIPE_FILE}"))
    if unfinished:
        raise BadInput(f"no finished run under {root}/ (unfinished: {', '.join(unfinished)})",
                       hint="finish one with `lfcc-deploy distill RECIPE --resume`, or pass RUN_DIR")
    raise BadInput(f"no run under {root}/ and no RUN_DIR given",
                   hint="run `lfcc-deploy distill RECIPE` (or `pipeline`) first, or pass RUN_DIR")


def clear_run_dir(run_dir: Path) -> None:
    """`--force`: remove the previous run's files; only ever called while holding the lock."""
    for child in Path(run_dir).iterdir():
        if child.name != ".lock":
            shutil.rmtree(child) if child.is_dir() else child.unlink()
