"""tools/archive_results.py keeps a run tree's tables and summaries, never its weights or checkpoints."""
from __future__ import annotations

import importlib.util
from pathlib import Path

TOOL = Path(__file__).resolve().parent.parent / "tools" / "archive_results.py"


def test_archive_keeps_summaries_not_weights(tmp_path):
    spec = importlib.util.spec_from_file_location("archive_results", TOOL)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    tree = tmp_path / "runs" / "x-compare"
    for rel in ("compare.md", "kd/seed0/summary.json", "kd/seed0/recipe.toml", "kd/seed0/student.safetensors",
                "kd/seed0/checkpoint/recipe.toml", "teacher/teacher.safetensors", "teacher/summary.json"):
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_text(rel)
    copied = tool.archive(tree, tmp_path / "results" / "x-compare")
    kept = sorted(str(p.relative_to(tmp_path / "results" / "x-compare")) for p in copied)
    assert kept == ["compare.md", "kd/seed0/recipe.toml", "kd/seed0/summary.json", "teacher/summary.json"]
    assert (tmp_path / "results" / "x-compare" / "kd/seed0/summary.json").read_text() == "kd/seed0/summary.json"
