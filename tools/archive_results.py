"""Copy the light, reviewable files of a run tree (a `compare` or `students` output) into results/.

Run directories hold megabytes of weights and checkpoints and live outside git; the README's tables
are backed by what this keeps: every summary.json (accuracies, times, teacher sha256, versions),
recipe.toml, metrics.csv and the compare/students tables themselves.

    python tools/archive_results.py runs/swin_to_mobilenet-compare      # -> results/swin_to_mobilenet-compare
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

KEEP = ("summary.json", "recipe.toml", "metrics.csv", "compare.md", "compare.json", "compare.png",
        "students.md", "students.json", "students.png")
RESULTS = Path(__file__).resolve().parent.parent / "results"


def archive(tree: Path, dest: Path) -> list[Path]:
    copied = []
    for path in sorted(tree.rglob("*")):
        if path.name in KEEP and path.is_file() and "checkpoint" not in path.parts:
            target = dest / path.relative_to(tree)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
            copied.append(target)
    return copied


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not Path(argv[0]).is_dir():
        print("usage: python tools/archive_results.py RUN_TREE", file=sys.stderr)
        return 2
    tree = Path(argv[0])
    copied = archive(tree, RESULTS / tree.name)
    print(f"{len(copied)} files -> {RESULTS / tree.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
