"""`bench` and `gate`."""
from __future__ import annotations

from typing import Optional

import typer
from rich.table import Table

from . import app
from .common import DEVICE, JSON, QUIET, RUN_RECIPE, find_run, out, print_json, recipe_file, run_arg, say
from .progress import pct


def _csv(value: Optional[str], cast=str) -> Optional[list]:
    if value is None:
        return None
    from ..errors import BadInput
    try:
        items = [cast(v.strip()) for v in value.split(",") if v.strip()]
    except ValueError:
        raise BadInput(f"cannot read {value!r} as a comma-separated list of {cast.__name__}") from None
    if not items:
        raise BadInput(f"empty list {value!r}", hint="leave the option out for the default, or name values")
    return list(dict.fromkeys(items))  # duplicates would time the same row twice


@app.command()
def bench(run_dir: Optional[str] = run_arg(" (after `export`)"), recipe: Optional[str] = RUN_RECIPE,
          backends: Optional[str] = typer.Option(None, "--backends", help="e.g. torch,onnxruntime (default: all)."),
          precisions: Optional[str] = typer.Option(None, "--precisions",
                                                   help="fp32,int8,fp16 (default: what the run has)."),
          device: Optional[str] = DEVICE,
          batch: Optional[str] = typer.Option(None, "--batch", help="e.g. 1,32 (default 1,32 cpu; 1,32,256 cuda)."),
          model: str = typer.Option("both", "--model", help="student | teacher | both"),
          warmup_ms: float = typer.Option(200.0, "--warmup-ms", min=0),
          duration_s: float = typer.Option(3.0, "--duration-s", min=0),
          min_iters: int = typer.Option(10, "--min-iters", min=1),
          mode: str = typer.Option("compute", "--mode", help="compute | e2e"),
          threads: Optional[int] = typer.Option(None, "--threads", min=1, help="CPU threads (default: all)."),
          quiet: bool = QUIET, as_json: bool = JSON) -> None:
    """Latency (p50/p90/p95/p99, CoV), throughput and accuracy of every backend; writes report.json/.md/.png."""
    from ..bench.run import BenchConfig, bench_run
    from ..bench.timing import TimingConfig
    run_dir = find_run(run_dir, recipe)
    cfg = BenchConfig(backends=_csv(backends), precisions=_csv(precisions), device=device, batches=_csv(batch, int),
                      models=["student", "teacher"] if model == "both" else [model], mode=mode, threads=threads,
                      timing=TimingConfig(warmup_ms=warmup_ms, duration_s=duration_s, min_iters=min_iters))
    report = bench_run(run_dir, cfg, say=say(quiet))
    if as_json:
        return print_json(report)
    out.print(bench_table(report))
    for r in report["rows"]:
        if r["status"] != "ok":
            out.print(f"{r['status']}: {r['model']} {r['backend']} {r['precision']} batch {r['batch']} — "
                      f"{r['reason']}", highlight=False)
    out.print(f"wrote {run_dir}/report.json, report.md, report.png", highlight=False)


def bench_table(report: dict) -> Table:
    t = Table(title=f"{report['recipe']} on {report['config']['device']} ({report['config']['mode']})")
    for col in ("model", "backend", "prec", "batch", "p50 ms", "p99 ms", "CoV", "img/s", "acc", "vs T", "vs fp32"):
        t.add_column(col, no_wrap=True)
    for r in (r for r in report["rows"] if r["status"] == "ok"):
        lat = r["latency"]
        t.add_row(r["model"], r["backend"], r["precision"], str(r["batch"]), f"{lat['p50_ms']:.3f}",
                  f"{lat['p99_ms']:.3f}", f"{100 * lat['cov']:.0f}%" + ("!" if r["unstable"] else ""),
                  f"{r['throughput_ips']:.0f}", pct(r["accuracy"]),
                  f"{r['speedup_vs_teacher']:.2f}×" if r["speedup_vs_teacher"] else "",
                  f"{r['speedup_vs_fp32']:.2f}×" if r["speedup_vs_fp32"] else "")
    return t


JUNIT = typer.Option(None, "--junit", metavar="FILE",
                     help="Also write JUnit XML (one testcase per check) for CI test reports.")


@app.command("gate")
def gate_cmd(run_dir: Optional[str] = run_arg(" with report.json (after `bench`)"),
             recipe: Optional[str] = typer.Option(None, "--recipe", metavar="NAME",
                                                  help="Take [gates] from this recipe (default: the run's own); "
                                                       "without RUN_DIR, gate its run runs/<name>."),
             baseline: Optional[str] = typer.Option(None, "--baseline",
                                                    help="OLD_RUN_DIR (re-measured, interleaved) or OLD_REPORT.json."),
             set_: Optional[list[str]] = typer.Option(None, "--set", metavar="KEY=VALUE",
                                                      help="Override a gate, value as a TOML literal, "
                                                           "e.g. --set gates.min_accuracy=0.95"),
             duration_s: float = typer.Option(3.0, "--duration-s", min=0.1,
                                              help="Timed seconds per row when re-measuring against --baseline."),
             junit: Optional[str] = JUNIT, as_json: bool = JSON, quiet: bool = QUIET) -> None:
    """Turn the recipe's [gates] into PASS/FAIL lines and an exit code (0 pass, 1 breach, 2 bad input)."""
    from ..errors import BadInput
    from ..gate import run_gate
    from ..rundir import RUNS_DIR
    run_dir = find_run(run_dir, recipe)
    gates_from = recipe_file(recipe) if recipe else None  # a bare run name: the run's own [gates]
    if recipe and gates_from is None and run_dir != str(RUNS_DIR / recipe):
        raise BadInput("recipe file not found", file=recipe, key="--recipe",
                       hint="give a recipe path or a name from `lfcc-deploy recipes list`")
    result = run_gate(run_dir, recipe=gates_from, baseline=baseline, overrides=set_, seconds=duration_s,
                      say=say(quiet))
    print_gate(result, run_dir, junit=junit, as_json=as_json)


def print_gate(result: dict, run_dir: str, junit: Optional[str] = None, as_json: bool = False) -> None:
    """One unwrapped line per check (or the JSON), JUnit XML and the GitHub step summary when asked,
    then CheckFailed (exit 1) when any check failed; gate.json is already written."""
    from ..errors import CheckFailed
    from ..gate_report import append_step_summary, line, write_junit
    if junit:
        write_junit(junit, result)
    append_step_summary(result)
    if as_json:
        print_json(result)
    else:
        if not result["checks"]:
            print("no gates configured: add a [gates] table to the recipe (see README)")
        for c in result["checks"]:
            print(line(c))  # plain print: rich would wrap a long check over two lines in a narrow log
    failed = [c for c in result["checks"] if not c["passed"]]
    if failed:
        raise CheckFailed(f"{len(failed)} of {len(result['checks'])} gate checks failed", file=f"{run_dir}/gate.json")
    if not as_json:
        print(f"all {len(result['checks'])} gate checks passed; wrote {run_dir}/gate.json"
              + (f" and {junit}" if junit else ""))
