"""`students --distill K`: the K most promising candidates distilled as `compare` distils its rows.

One teacher, trained once into OUT/teacher (reused from there, or given by --teacher), serves every candidate; each
candidate is its own resumable run directory under OUT/distill/, so an interrupted search picks
up where it stopped. After training, each student is exported with the recipe's own [export]
table (full parity tolerances now that the weights are trained) and timed again, interleaved.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from ..compare import Row, adopt_teacher, distil_row, row_recipe, shared_teacher
from ..recipe import Recipe
from .candidates import Candidate
from .measure import apply_timing, candidate_recipe, export_artifact, load_runner, time_interleaved


def candidate_of(row: dict[str, Any]) -> Candidate:
    return Candidate(row["label"], row["model"], row["family"], row["kwargs"], row["note"])


def distil_rows(base: Recipe, file: str, picks: list[dict[str, Any]], cfg, out: Path, teacher_dir: str | None,
                device: str, data, threads: int, reporter, say: Callable[[str], None]) -> dict[str, Any]:
    """Train, export and time `picks` (rows gain val_acc, test_acc, deployed); returns the teacher record."""
    ckpt, teacher, teacher_sha256 = shared_teacher(base, file, out, teacher_dir, device, reporter)
    for row in picks:
        recipe = row_recipe(candidate_recipe(base, candidate_of(row), file), Row(row["label"], base.distill.method),
                            base.distill.seed, ckpt, file)
        run_dir = out / "distill" / row["label"]
        summary = distil_row(recipe, run_dir, file=file, device=device, reporter=reporter, teacher=teacher,
                             teacher_sha256=teacher_sha256, note=f"students: distilling {row['label']}")
        teacher = adopt_teacher(teacher, summary, teacher_sha256)
        s = summary["student"]
        row.update(val_acc=s["val_acc"], test_acc=s.get("test_acc"), train_s=round(s["wall_s"], 1),
                   distill_dir=str(run_dir), deployed=dict(status="ok", reason=""))
    loaded = {}
    for row in picks:
        deployed = dict(row, run_dir=row["distill_dir"], status="ok", reason="")
        say(f"students: exporting the trained {row['label']}")
        path = export_artifact(deployed, cfg.backend, cfg.precision, device, base.export, data,
                               say=lambda _: None)
        runner = load_runner(deployed, path, cfg.backend, cfg.precision, device, cfg.batch, threads, data) \
            if path else None
        row["deployed"].update(status=deployed["status"], stage=deployed["stage"], reason=deployed["reason"],
                               export=deployed.get("export"))
        if runner:
            loaded[row["label"]] = runner
    say(f"students: timing {len(loaded)} trained students, interleaved")
    apply_timing({r["label"]: r["deployed"] for r in picks},
                 time_interleaved(loaded, cfg.timing, cfg.rounds, cfg.percentile), cfg.budget_ms)
    return dict(teacher or {}, checkpoint=str(ckpt))
