"""TensorRT engines: build one from an ONNX file with the real `tensorrt` API, and run it.

`tensorrt` is optional and needs a CUDA GPU, so it is imported lazily: shapes, flags and
calibration batches are plain Python (tested anywhere); only building and running need it.
Every file is written atomically, so a crash never leaves half an engine or cache.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import BadInput, CheckFailed, MissingDependency
from ..rundir import atomic_write, file_sha256, read_json, write_json, write_text
from .config import ExportConfig
from .trt_calibration import calibration_cache_path, make_calibrator

TRT_INSTALL_HINT = ('pip install "lfcc-deploy[trt]" (NVIDIA\'s index: pip install "tensorrt>=10,<11" '
                    '--extra-index-url https://pypi.nvidia.com); needs an NVIDIA GPU with CUDA')
_NOT_INSTALLED = "TensorRT is not installed (python package 'tensorrt')"
_FLAGS = {"fp32": [], "fp16": ["FP16"], "int8": ["INT8", "FP16"]}  # FP16: fallback for non-INT8 layers
_PORTABILITY = "engines are not portable: rebuild for another TensorRT version or another GPU model"


def import_tensorrt():
    """The `tensorrt` module, or MissingDependency with the install hint."""
    try:
        import tensorrt
    except (ImportError, OSError) as err:  # OSError: libnvinfer or CUDA libraries missing
        if isinstance(err, ModuleNotFoundError) and err.name == "tensorrt":
            raise MissingDependency(_NOT_INSTALLED, hint=TRT_INSTALL_HINT) from None
        raise MissingDependency(f"TensorRT is installed but cannot be loaded: {_one_line(str(err))}",
                                hint=TRT_INSTALL_HINT) from None
    return tensorrt


def _builder_major(trt) -> int:
    """TensorRT's major version; 11.x removed the FP16/INT8 builder flags and calibrators used here."""
    major = int(trt.__version__.split(".")[0])
    if major >= 11:
        raise MissingDependency(f"TensorRT {trt.__version__} is not supported: 11.x removed the FP16/INT8 builder "
                                "flags and INT8 calibrators this export uses", hint=TRT_INSTALL_HINT)
    return major


def tensorrt_available() -> tuple[bool, str]:
    """(ok, reason) for benchmark rows that report why TensorRT was skipped."""
    try:
        trt = import_tensorrt()
        _builder_major(trt)
    except MissingDependency as err:
        return False, err.message
    if not torch.cuda.is_available():
        return False, "TensorRT is installed but no CUDA GPU is visible (torch.cuda.is_available() is False)"
    return True, f"TensorRT {trt.__version__}"


def profile_shapes(cfg: ExportConfig, channels: int, img_size: int) -> dict[str, tuple[int, int, int, int]]:
    """The optimisation profile: the batch range the engine accepts, tuned for `opt`."""
    chw = (channels, img_size, img_size)
    if not cfg.dynamic_batch:
        return {k: (cfg.static_batch, *chw) for k in ("min", "opt", "max")}
    return {"min": (cfg.trt_min_batch, *chw), "opt": (cfg.trt_opt_batch, *chw), "max": (cfg.trt_max_batch, *chw)}


def builder_flags(precision: str) -> list[str]:
    """Names of the `trt.BuilderFlag` members a precision turns on."""
    if precision not in _FLAGS:
        raise BadInput(f"unknown TensorRT precision {precision!r}; allowed: {', '.join(_FLAGS)}")
    return list(_FLAGS[precision])


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _make_logger(trt):
    """An ILogger keeping INFO and worse (VERBOSE would be megabytes per build) for the build log."""

    class ListLogger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.lines: list[str] = []

        def log(self, severity, msg):
            if int(severity) <= int(trt.ILogger.Severity.INFO):
                self.lines.append(f"[{severity.name}] {msg}")

        def errors(self) -> str:
            bad = [ln for ln in self.lines if ln.startswith(("[ERROR]", "[INTERNAL_ERROR]"))]
            return _one_line(" | ".join(bad[-3:])) or "no error message from TensorRT"

    return ListLogger()


def _check_request(onnx_path: Path, precision: str, shapes: dict, calibration: list[np.ndarray] | None) -> None:
    """Everything that can be refused before touching the GPU."""
    builder_flags(precision)
    if not onnx_path.is_file():
        raise BadInput("ONNX file not found", file=str(onnx_path))
    if precision == "int8":
        if not calibration:
            raise BadInput("an INT8 engine needs calibration batches", key="export.calibration_images")
        if tuple(calibration[0].shape[1:]) != tuple(shapes["opt"][1:]):
            raise BadInput(f"calibration images {tuple(calibration[0].shape[1:])} do not match the model input "
                           f"{tuple(shapes['opt'][1:])}", key="export.calibration_images")
    if not torch.cuda.is_available():
        raise MissingDependency("no CUDA GPU is visible; TensorRT needs one", hint=TRT_INSTALL_HINT)


def build_engine(onnx_path: Path, engine_path: Path, *, precision: str, shapes: dict,
                 calibration: list[np.ndarray] | None, workspace_gb: float, timing_cache: Path,
                 log_path: Path, extra: dict[str, Any] | None = None,
                 calibration_cache: Path | None = None) -> dict:
    """Build and save an engine plus its metadata JSON (with `extra`: preprocessing, class names).

    `calibration_cache`: where INT8 scales are kept (default: named after the engine and its inputs);
    export builds into a temp folder and passes the cache beside the final engine, so it survives."""
    trt = import_tensorrt()  # first: without TensorRT nothing is written
    major = _builder_major(trt)
    onnx_path, engine_path, timing_cache = Path(onnx_path), Path(engine_path), Path(timing_cache)
    _check_request(onnx_path, precision, shapes, calibration)
    logger = _make_logger(trt)
    try:
        builder = trt.Builder(logger)
        explicit = 0 if major >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)  # TRT 8.x
        network = builder.create_network(explicit)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(onnx_path)):  # from the file: external weights resolve beside it
            errs = [_one_line(parser.get_error(i).desc()) for i in range(parser.num_errors)] or ["?"]
            raise BadInput(f"TensorRT cannot parse the ONNX ({parser.num_errors} error(s)): {errs[0]}",
                           file=str(onnx_path))
        if network.num_inputs != 1:
            raise BadInput(f"expected one network input, found {network.num_inputs}", file=str(onnx_path))
        name, dims = network.get_input(0).name, tuple(network.get_input(0).shape)
        wanted = dict(shapes, **({"calibration": calibration[0].shape} if precision == "int8" else {}))
        for key, shape in wanted.items():
            if len(shape) != len(dims) or any(d not in (-1, s) for d, s in zip(dims, shape)):
                raise BadInput(f"{key} shape {tuple(shape)} does not fit the ONNX input {dims}",
                               file=str(onnx_path), hint="export with a dynamic batch, or set export.static_batch")

        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
        profile = builder.create_optimization_profile()
        profile.set_shape(name, shapes["min"], shapes["opt"], shapes["max"])
        config.add_optimization_profile(profile)
        for flag in builder_flags(precision):
            config.set_flag(getattr(trt.BuilderFlag, flag))
        if precision == "fp32":
            config.clear_flag(trt.BuilderFlag.TF32)  # TF32 is on by default and breaks fp32 logit parity
        if precision == "int8":  # the local name keeps the calibrator alive through the build
            calib_cache = calibration_cache or calibration_cache_path(engine_path, onnx_path, calibration)
            calibrator = make_calibrator(trt, calibration, calib_cache)
            config.int8_calibrator = calibrator
            calib_profile = builder.create_optimization_profile()  # calibration runs at exactly this shape
            shape = tuple(calibration[0].shape)
            calib_profile.set_shape(name, shape, shape, shape)
            config.set_calibration_profile(calib_profile)
        cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache.is_file() else b"")
        if not config.set_timing_cache(cache, ignore_mismatch=False):  # another GPU's or version's cache
            config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)

        start = time.perf_counter()
        serialized = builder.build_serialized_network(network, config)
        seconds = time.perf_counter() - start
        if serialized is None:
            raise CheckFailed(f"TensorRT engine build failed: {logger.errors()}", hint=f"full log: {log_path}")
        atomic_write(engine_path, lambda tmp: tmp.write_bytes(memoryview(serialized)))
        atomic_write(timing_cache, lambda tmp: tmp.write_bytes(memoryview(config.get_timing_cache().serialize())))
        major_cc, minor_cc = torch.cuda.get_device_capability()
        meta = {
            **(extra or {}), "tensorrt_version": trt.__version__, "precision": precision, "input_name": name,
            "profile": {k: list(v) for k, v in shapes.items()},
            "calibration_batches": len(calibration) if precision == "int8" else 0,
            "gpu": torch.cuda.get_device_name(), "compute_capability": f"{major_cc}.{minor_cc}",
            "build_seconds": round(seconds, 2), "onnx": onnx_path.name, "engine": engine_path.name,
            "engine_bytes": engine_path.stat().st_size, "engine_sha256": file_sha256(engine_path),
            "note": _PORTABILITY,
        }
        write_json(engine_path.with_suffix(".json"), meta)  # last: metadata present means the engine is whole
        return meta
    finally:
        write_text(Path(log_path), "\n".join(logger.lines) + "\n")


def engine_metadata(engine_path: Path) -> dict[str, Any]:
    """The metadata JSON written beside an engine by build_engine, refused when it describes another
    engine (the two files are replaced one after the other, and a kill could fall between)."""
    path = Path(engine_path).with_suffix(".json")
    if not path.is_file():
        raise BadInput("no engine metadata beside the TensorRT engine", file=str(path), hint="rebuild the engine")
    meta = read_json(path)
    digest = meta.get("engine_sha256")
    if digest is not None and Path(engine_path).is_file() and digest != file_sha256(Path(engine_path)):
        raise BadInput("the metadata describes another engine than the one beside it", file=str(path),
                       hint="rebuild the engine with `lfcc-deploy export RUN_DIR --trt`")
    return meta


class TrtRunner:
    """Runs a single-input, single-output engine on CUDA tensors (TensorRT 10 named-tensor API)."""

    def __init__(self, engine_path: Path):
        trt = import_tensorrt()
        engine_path = Path(engine_path)
        if not engine_path.is_file():
            raise BadInput("TensorRT engine not found", file=str(engine_path), hint="build it first")
        self._logger = _make_logger(trt)  # must outlive the runtime and engine
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(engine_path.read_bytes())
        if self.engine is None:
            raise BadInput(f"cannot load the TensorRT engine: {self._logger.errors()}", file=str(engine_path),
                           hint=f"{_PORTABILITY}; rebuild it on this machine")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]
        if len(inputs) != 1 or len(outputs) != 1:
            raise BadInput(f"expected 1 input and 1 output tensor, found {len(inputs)} and {len(outputs)}",
                           file=str(engine_path))
        self.input_name, self.output_name = inputs[0], outputs[0]
        dtypes = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16}
        self._out_dtype = dtypes[self.engine.get_tensor_dtype(self.output_name)]

    def host(self, x: torch.Tensor) -> np.ndarray:
        """Logits of a host batch on the host (parity checks and predict; the bench times __call__)."""
        out = self(x.to("cuda", torch.float32)).float().cpu()  # .cpu() waits for the stream
        return out.numpy()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Enqueue on the current stream; the caller synchronises before reading the result."""
        if not x.is_cuda or x.dtype != torch.float32:
            raise BadInput(f"TrtRunner needs a float32 CUDA tensor, got {x.dtype} on {x.device}")
        x = x.contiguous()
        if not self.context.set_input_shape(self.input_name, tuple(x.shape)):
            lo, _, hi = self.engine.get_tensor_profile_shape(self.input_name, 0)
            raise BadInput(f"input shape {tuple(x.shape)} is outside the engine profile {tuple(lo)}..{tuple(hi)}")
        out = torch.empty(tuple(self.context.get_tensor_shape(self.output_name)), dtype=self._out_dtype,
                          device=x.device)
        self.context.set_tensor_address(self.input_name, int(x.data_ptr()))
        self.context.set_tensor_address(self.output_name, int(out.data_ptr()))
        if not self.context.execute_async_v3(torch.cuda.current_stream(x.device).cuda_stream):
            raise CheckFailed(f"TensorRT execution failed: {self._logger.errors()}")
        return out
