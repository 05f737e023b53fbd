"""Every export format in one table (as Ultralytics' `export_formats()`): what it is called, the
precision it runs at, its file, the `export` flags that make it, whether it needs a GPU.

Export, the bench backends, `predict` and the pipeline all read this table, so a format's file
name or flag is written down once. The function that builds each format is registered against
its name in export/steps.py (a test checks that every row has one). Plain data: importing it
pulls in neither onnx nor tensorrt.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import BadInput

EXPORT_DIR = "export"


@dataclass(frozen=True)
class Format:
    name: str       # ExportResult.format and export.json
    key: str        # its entry in parity.json
    runtime: str    # what loads the file: onnx (onnxruntime) | tensorrt
    precision: str  # fp32 | fp16 | int8
    suffix: str     # export/<model><suffix>
    flags: str      # `lfcc-deploy export` options that make it
    gpu: bool       # building it needs a CUDA GPU
    sidecar: str = ""  # suffix of a metadata file beside the artifact (TensorRT: .json)

    def file(self, run_dir: Path, model: str) -> Path:
        return Path(run_dir) / EXPORT_DIR / f"{model}{self.suffix}"

    def files(self, run_dir: Path, model: str) -> list[Path]:
        """The artifact and its sidecar: they are replaced and removed together."""
        path = self.file(run_dir, model)
        return [path, path.with_suffix(self.sidecar)] if self.sidecar else [path]

    def hint(self, model: str) -> str:
        """The command that makes this artifact, for a skipped bench row or a missing file."""
        return f"run `lfcc-deploy export RUN_DIR --model {model}{' ' + self.flags if self.flags else ''}`"


FORMATS: tuple[Format, ...] = (
    Format("onnx", "fp32", "onnx", "fp32", ".onnx", "", False),
    Format("onnx-fp16", "fp16", "onnx", "fp16", ".fp16.onnx", "--fp16", False),
    Format("onnx-int8", "int8", "onnx", "int8", ".int8.onnx", "--int8", False),
    # one engine per model: its precision is recorded in the JSON beside it
    Format("tensorrt-fp32", "tensorrt-fp32", "tensorrt", "fp32", ".engine", "--trt", True, ".json"),
    Format("tensorrt-fp16", "tensorrt-fp16", "tensorrt", "fp16", ".engine", "--trt --fp16", True, ".json"),
    Format("tensorrt-int8", "tensorrt-int8", "tensorrt", "int8", ".engine", "--trt --int8", True, ".json"),
)
PRECISIONS = ("fp32", "fp16", "int8")


def export_format(runtime: str, precision: str) -> Format:
    """The row for (runtime, precision), e.g. ("onnx", "int8") -> onnx-int8."""
    for f in FORMATS:
        if (f.runtime, f.precision) == (runtime, precision):
            return f
    raise BadInput(f"no {runtime} {precision} export format; "
                   f"known: {', '.join(f.name for f in FORMATS)}")


def by_name(name: str) -> Format:
    for f in FORMATS:
        if f.name == name:
            return f
    raise BadInput(f"unknown export format {name!r}; known: {', '.join(f.name for f in FORMATS)}")


def runtime_of(path: Path) -> str | None:
    """Which runtime loads an exported file, from its name (None when no format writes such files)."""
    return next((f.runtime for f in sorted(FORMATS, key=lambda f: -len(f.suffix))
                 if Path(path).name.endswith(f.suffix)), None)


def derived(run_dir: Path, model: str) -> list[Path]:
    """Files built from the fp32 ONNX graph, sidecars included (stale once it is replaced)."""
    fp32 = export_format("onnx", "fp32")
    return list(dict.fromkeys(p for f in FORMATS if f != fp32 for p in f.files(run_dir, model)))
