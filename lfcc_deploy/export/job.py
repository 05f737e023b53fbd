"""One export job: the model of a run directory, its reference logits on the test images, and the
calibration images, prepared once for every format that is built from it."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .. import __version__
from ..data import DataBundle, load_data
from ..sources import stratified_subset
from ..errors import BadInput
from ..models import Net, load_net
from ..preprocess import Preprocess, pad_batch
from ..recipe import Recipe, apply_overrides, read_toml, validate_recipe
from ..rundir import RECIPE_FILE
from .common import batch_list, calibration_batches, stack_inputs
from .formats import EXPORT_DIR, Format
from .parity import compare

MODELS = ("student", "teacher")
PROBE_BATCHES = (1, 7)


def run_recipe(run_dir: Path, overrides: list[str]) -> tuple[Recipe, str]:
    path = run_dir / RECIPE_FILE
    if not path.is_file():
        raise BadInput("not a run directory (no recipe.toml)", file=str(run_dir),
                       hint="pass the directory `lfcc-deploy distill` wrote, e.g. runs/quickstart")
    label = f"{path} with command-line overrides" if overrides else str(path)
    return validate_recipe(apply_overrides(read_toml(path), overrides), label), str(path)


class Exporter:
    """The model, its reference logits on the test images, calibration images."""

    def __init__(self, run_dir: Path, recipe: Recipe, file: str, model: str, say: Callable[[str], None],
                 data: DataBundle | None = None):
        if model not in MODELS:
            raise BadInput(f"--model must be one of {', '.join(MODELS)} (got {model!r})")
        weights = run_dir / f"{model}.safetensors"
        if not weights.is_file():
            raise BadInput(f"no {model}.safetensors in the run directory", file=str(run_dir),
                           hint="run `lfcc-deploy distill` (or train-teacher) into it first")
        self.run_dir, self.recipe, self.cfg, self.model, self.say = run_dir, recipe, recipe.export, model, say
        self.out = run_dir / EXPORT_DIR
        self.net: Net = load_net(weights).eval()
        self.pre = Preprocess.of(self.net.spec)
        data = data or load_data(recipe.data, file=file)
        self.split = "test" if data.test is not None else "val"
        x, y = stack_inputs(data.test if data.test is not None else data.val, self.pre, self.cfg.parity_images)
        if not self.cfg.dynamic_batch:  # a static graph takes whole batches only
            b = self.cfg.static_batch
            keep = len(y) // b * b
            x, y = (x[:keep], y[:keep]) if keep else (pad_batch(x, b), pad_batch(y, b))
        self.x, self.labels = x, y.numpy()
        with torch.no_grad():
            self.reference = torch.cat([self.net.model(b) for b in x.split(256)]).numpy()
        calib = data.train.subset(stratified_subset(
            data.train.labels, min(1.0, self.cfg.calibration_images / len(data.train)), self.cfg.calibration_seed))
        self.calib_x = stack_inputs(calib, self.pre, self.cfg.calibration_images)[0]

    @property
    def batch(self) -> int:
        return 256 if self.cfg.dynamic_batch else self.cfg.static_batch

    def inputs(self) -> list[np.ndarray]:
        return batch_list(self.x, self.batch)

    def calibration(self) -> list[np.ndarray]:
        """Calibration batches for onnxruntime and TensorRT alike: a static graph takes static_batch only."""
        dynamic = self.cfg.dynamic_batch
        return calibration_batches(self.calib_x, self.cfg.calibration_batch if dynamic else self.cfg.static_batch,
                                   exact=not dynamic)

    def path(self, fmt: Format) -> Path:
        return fmt.file(self.run_dir, self.model)

    def metadata(self) -> dict[str, Any]:
        s = self.net.spec
        return dict(producer="lfcc-deploy", lfcc_deploy_version=__version__, recipe=self.recipe.name,
                    role=self.model, model=s.name, class_names=s.class_names, img_size=s.img_size,
                    channels=s.in_chans, mean=s.mean, std=s.std, preprocess=self.pre.to_json(),
                    input_layout="NCHW float32 = (pixel / 255 - mean) / std after bilinear resize to img_size",
                    precision="fp32")

    def judge(self, logits: np.ndarray, precision: str) -> dict[str, Any]:
        return compare(self.reference, logits, self.labels, getattr(self.cfg, precision))

    def probe(self, session) -> dict[str, float]:
        """Max |Δlogit| at batch 1 and 7: proves the batch axis really is dynamic."""
        name = session.get_inputs()[0].name
        return {str(b): float(np.abs(session.run(None, {name: self.x[:b].numpy()})[0] - self.reference[:b]).max())
                for b in PROBE_BATCHES if b <= len(self.x)}
