"""lfcc-deploy: distil a large vision model into a small one of another family, export it, prove it.

Python API (the CLI is a thin layer over these):
    from lfcc_deploy import load_recipe, distill, export_run, bench_run, BenchConfig, run_gate
    summary = distill(load_recipe("recipes/quickstart.toml", ["distill.epochs=5"]), out="runs/q")
    export_run("runs/q", int8=True); bench_run("runs/q", BenchConfig()); run_gate("runs/q")
"""
__version__ = "0.1.0"

_API = {"load_recipe": "recipe", "train_teacher": "training", "distill": "training", "evaluate_run": "training",
        "export_run": "export.run", "bench_run": "bench.run", "BenchConfig": "bench.run", "run_gate": "gate",
        "run_pipeline": "pipeline", "predict_files": "predict"}


def __getattr__(name: str):
    """Import torch-heavy modules only when the API is used (keeps `--version` and `--help` fast)."""
    if name in _API:
        from importlib import import_module
        return getattr(import_module(f".{_API[name]}", __name__), name)
    raise AttributeError(name)


__all__ = list(_API)
