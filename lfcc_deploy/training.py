"""The training jobs behind the CLI, usable from Python: train a teacher, distil a student, evaluate a run.

Everything that can reject the input (recipe, data files, model names, checkpoints,
run directory state) is checked before the first byte is written to the run directory.
"""
from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import torch

from . import distributed
from .cache import check_cacheable
from .data import DataBundle, check_data, load_data
from .device import resolve_device
from .engine import Phase, Reporter, Trainer, net_accuracy
from .errors import BadInput
from .losses import METHODS, Method, MethodContext
from .manifest import manifest
from .models import (ModelSpec, Net, build_net, check_model_name, default_normalisation, load_net,
                     load_weights, param_count, read_state, resolve_kwargs)
from .metrics_log import require_tensorboard
from .plots import plot_curves
from .progress import default_reporter
from .recipe import (ModelConfig, Recipe, TrainConfig, changed_keys, read_toml, recipe_dict, recipe_hash,
                     recipe_to_toml, validate_recipe)
from .rundir import (RECIPE_FILE, RUNS_DIR, SUMMARY_FILE, RunLock, check_run_dir, clear_run_dir, file_sha256,
                     read_json, write_json, write_text)
IGNORED_ON_RESUME = {"device", "description", "export", "gates", "logging"}  # not training keys


class SilentReporter:
    """Ranks other than 0 of a data-parallel run: rank 0 reports for all."""

    def note(self, *a) -> None: ...
    def start(self, *a) -> None: ...
    def progress(self, *a) -> None: ...
    def epoch(self, *a) -> None: ...
    def finish(self, *a) -> None: ...


def check_resources(recipe: Recipe, file: str | None = None):
    """What schema validation cannot know: data files, model names, the teacher checkpoint.

    Returns the teacher checkpoint's (tensors, spec) when the recipe names one, so callers read it once.
    """
    check_data(recipe.data, file=file)
    check_model_name(recipe.teacher.model, file=file, key="teacher.model")
    check_model_name(recipe.student.model, file=file, key="student.model")
    ckpt = recipe.teacher.checkpoint
    if ckpt and not Path(ckpt).is_file():
        raise BadInput(f"checkpoint file not found: {ckpt}", file=file, key="teacher.checkpoint",
                       hint="train one with `lfcc-deploy train-teacher` or fix the path")
    return read_state(Path(ckpt), key="teacher.checkpoint") if ckpt else None


def make_net(cfg: ModelConfig, data: DataBundle, seed: int, role: str,
             spec_hint: ModelSpec | None = None) -> Net:
    """Build and dry-run one model; seeded so a CE reference and the distilled student start alike."""
    mean, std = default_normalisation(cfg.model, data.channels, cfg.pretrained, data.mean, data.std)
    if spec_hint is not None:  # a toolkit checkpoint knows the normalisation it was trained with
        mean, std = spec_hint.mean, spec_hint.std
    spec = ModelSpec(name=cfg.model, num_classes=len(data.class_names), in_chans=data.channels,
                     img_size=data.img_size, mean=cfg.mean or mean, std=cfg.std or std,
                     kwargs=resolve_kwargs(cfg.model, data.img_size, cfg.model_kwargs, cfg.pretrained),
                     class_names=data.class_names, resize=data.resize,
                     crop_pct=data.crop_pct)
    if len(spec.mean) != spec.in_chans or len(spec.std) != spec.in_chans:
        raise BadInput(f"mean/std need {spec.in_chans} values (data.channels)", key=f"{role}.mean")
    torch.manual_seed(seed)
    net = build_net(spec, pretrained=cfg.pretrained, key=f"{role}.model_kwargs")
    try:
        net.describe_stages()  # a dry forward at the recipe's input size, before anything is written
    except (RuntimeError, ValueError, AssertionError) as err:
        raise BadInput(f"{cfg.model} cannot run on {data.channels}×{data.img_size}×{data.img_size} input: "
                       f"{str(err).splitlines()[0][:160]}", key=f"{role}.model_kwargs",
                       hint="change data.img_size or the model's patch/window arguments") from None
    return net


def make_method(name: str, student: Net, teacher: Net | None, cfg: TrainConfig, method_cfg,
                data: DataBundle) -> Method:
    """A registered method over the given nets, with what it may need to know about the run."""
    cls = METHODS.get(name)
    ctx = MethodContext(num_classes=len(data.class_names), label_smoothing=cfg.label_smoothing)
    return cls(student, teacher if cls.uses_teacher else None, method_cfg or cls.Config(), ctx)


def run_dir_for(recipe: Recipe, out: str | Path | None) -> Path:
    return Path(out) if out else RUNS_DIR / recipe.name


def refuse_changes(run_dir: Path, recipe: Recipe, ignore: set[str],
                   hint: str = "resume with the original recipe, or use --force / another --out to start over",
                   ) -> None:
    """Refuse to continue (or reuse) RUN_DIR under a recipe that differs from the one it ran with.

    `ignore` holds key prefixes ("logging", "teacher.checkpoint") whose changes do not alter what ran.
    """
    path = run_dir / RECIPE_FILE
    # validated, so keys a newer version added (at their defaults) do not count as changes
    old = recipe_dict(validate_recipe(read_toml(path), str(path)))
    diff = [k for k in changed_keys(old, recipe_dict(recipe))
            if not any(k == p or k.startswith(p + ".") for p in ignore)]
    if diff:
        raise BadInput(f"recipe changed since this run started: {', '.join(diff[:6])}", file=str(path), hint=hint)


def _teacher_only_run(run_dir: Path) -> bool:
    """A directory `train-teacher` finished: `distill` continues it without --resume."""
    summary = run_dir / SUMMARY_FILE
    return summary.is_file() and read_json(summary).get("job") == "train-teacher"


class Run:
    """One invocation against one run directory: validate everything, lock, then train phase by phase."""

    def __init__(self, recipe: Recipe, job: str, *, file: str | None = None, out: str | Path | None = None,
                 resume: bool = False, force: bool = False, device: str | None = None,
                 reporter: Reporter | None = None, teacher_result: dict[str, Any] | None = None):
        self.recipe, self.job, self.file = recipe, job, file
        self.known_teacher = teacher_result  # accuracies of a given checkpoint, measured once by the caller
        self.run_dir = run_dir_for(recipe, out)
        self.device = resolve_device(device or recipe.device)
        self.dist = distributed.init_from_env(self.device)  # under torchrun: join, train on cuda:LOCAL_RANK
        self.device = self.dist.device
        self._check_sync_batchnorm(file)
        # rank 0 reports; the Python API without a reporter gets a bar on a terminal, else `logging`
        self.reporter = (reporter or default_reporter()) if self.dist.is_main() else SilentReporter()
        teacher_state = check_resources(recipe, file)
        if recipe.logging.tensorboard:
            require_tensorboard()
        continues_teacher = job == "distill" and not (resume or force) and _teacher_only_run(self.run_dir)
        self.resume, self.force = resume or continues_teacher, force
        check_run_dir(self.run_dir, resume=self.resume, force=force)
        if self.resume:  # the student's keys may change while only the teacher exists
            refuse_changes(self.run_dir, recipe, IGNORED_ON_RESUME | ({"student", "distill"}
                                                                       if continues_teacher else set()))
        self.rewrite_recipe = not resume
        self.data = load_data(recipe.data, file=file)
        t, s = recipe.teacher, recipe.student
        self.teacher_ckpt = Path(t.checkpoint) if t.checkpoint else None
        self.teacher_state, hint = teacher_state or (None, None)
        self.teacher_net = make_net(t, self.data, t.train.seed, "teacher", spec_hint=hint)
        self.student_init = make_net(s, self.data, recipe.distill.seed, "student")
        if job == "distill":
            self._check_method(file)
        self.results: dict[str, Any] = {}
        self.started = time.perf_counter()

    def _check_method(self, file: str | None) -> None:
        method = METHODS.get(self.recipe.distill.method)
        teacher = self.teacher_net if method.uses_teacher else None
        if self.recipe.distill.teacher_cache != "off":
            check_cacheable(method, file)
            if self.recipe.data.augment_style() == "timm":
                raise BadInput("the teacher cache replays stored pad-crop views; timm-style views cannot be replayed",
                               file=file, key="distill.teacher_cache",
                               hint="set distill.teacher_cache = \"off\", or data.augment.style = \"pad_crop\"")
        try:
            note = method.check(self.student_init, teacher, self.recipe.method_config())
        except BadInput as err:
            err.file = err.file or file
            raise
        if note:
            self.reporter.note(note)

    def _check_sync_batchnorm(self, file: str | None) -> None:
        if self.dist.world == 1 or self.device.type == "cuda":
            return
        for key, cfg in (("teacher.train", self.recipe.teacher.train), ("distill", self.recipe.distill)):
            if cfg.sync_batchnorm:
                raise BadInput("sync_batchnorm needs CUDA (torch's SyncBatchNorm does not run on CPU)", file=file,
                               key=f"{key}.sync_batchnorm", hint="set it to false for CPU data-parallel runs")

    def __enter__(self) -> "Run":
        self.lock = None
        distributed.on_main(self._claim)  # data-parallel: rank 0 locks and writes; its error stops every rank
        return self

    def _claim(self) -> None:
        self.lock = RunLock(self.run_dir).__enter__()
        check_run_dir(self.run_dir, resume=self.resume, force=self.force)
        if self.force:
            clear_run_dir(self.run_dir)
        if self.rewrite_recipe:
            write_text(self.run_dir / RECIPE_FILE, recipe_to_toml(self.recipe))

    def __exit__(self, *exc) -> None:
        close = getattr(self.reporter, "close", None)  # a live bar must not outlive the run, however it ended
        if close is not None:
            close()
        if self.lock is not None:
            self.lock.__exit__(*exc)

    def train(self, name: str, method: str, student: Net, teacher: Net | None, cfg: TrainConfig,
              method_cfg=None) -> dict[str, Any]:
        m = make_method(method, student, teacher, cfg, method_cfg, self.data)
        artifact = {"reference": "ce_reference"}.get(name, name)
        phase = Phase(name, m, cfg, artifact, extra={"method": method})
        self.results[name] = Trainer(phase, self.data, self.recipe.data.augment, self.run_dir, self.device,
                                     self.reporter, tensorboard=self.recipe.logging.tensorboard).run()
        return self.results[name]

    def teacher(self) -> Net:
        """The teacher from `teacher.checkpoint`, hub weights as they are, this run directory, or trained now."""
        t, net, ckpt = self.recipe.teacher, self.teacher_net, self.teacher_ckpt
        if ckpt is None and t.finetune:
            self.train("teacher", "ce", net, None, t.train)
            self._record_teacher_digest(self.run_dir / "teacher.safetensors")
            return net
        if ckpt is not None:
            load_weights(net, ckpt, key="teacher.checkpoint", state=self.teacher_state)
        net.place(self.device)
        self.results["teacher"] = dict(self.known_teacher or dict(
            phase="teacher", model=net.spec.name, params=param_count(net),
            val_acc=net_accuracy(net, self.data.val, self.device),
            test_acc=net_accuracy(net, self.data.test, self.device) if self.data.test is not None else None,
            wall_s=0.0, artifact=str(ckpt or "pretrained")))
        if ckpt is not None:
            self._record_teacher_digest(ckpt)
        return net

    def _record_teacher_digest(self, weights: Path) -> None:
        """The teacher's weights digest in the summary: `compare` refuses to mix students of two teachers."""
        if self.dist.is_main() and weights.is_file():
            self.results["teacher"]["sha256"] = file_sha256(weights)

    def student(self) -> Net:
        """A fresh copy of the seeded initial student, so every student phase starts from the same weights."""
        return copy.deepcopy(self.student_init)

    def summary(self) -> dict[str, Any]:
        d = self.data
        summary = dict(job=self.job, recipe=self.recipe.name, method=self.recipe.distill.method,
                       run_dir=str(self.run_dir), device=str(self.device),
                       data=dict(name=d.name, identity=d.identity, train=len(d.train), val=len(d.val),
                                 test=len(d.test) if d.test is not None else 0, classes=d.class_names),
                       **self.results, wall_s=time.perf_counter() - self.started,
                       manifest=manifest(recipe_hash(self.recipe), self.device))
        if self.dist.is_main():  # data-parallel: one writer
            write_json(self.run_dir / SUMMARY_FILE, summary)
            plot_curves(self.run_dir)
        return summary


def teacher_of_run(run_dir: str | Path) -> tuple[Path, dict[str, Any] | None]:
    """`--teacher RUN_DIR`: its teacher.safetensors and the accuracies its summary.json measured (if any)."""
    run_dir = Path(run_dir)
    ckpt = (run_dir / "teacher.safetensors").resolve()
    if not ckpt.is_file():
        raise BadInput("no teacher.safetensors in this run directory", file=str(run_dir), key="--teacher",
                       hint="pass a run directory that `train-teacher` or `distill` wrote")
    summary = run_dir / SUMMARY_FILE
    return ckpt, (read_json(summary).get("teacher") if summary.is_file() else None)


def train_teacher(recipe: Recipe, *, file: str | None = None, out: str | Path | None = None, resume: bool = False,
                  force: bool = False, device: str | None = None, reporter: Reporter | None = None
                  ) -> dict[str, Any]:
    """Train the recipe's teacher into `out` (default runs/<name>); returns what summary.json holds."""
    with Run(recipe, "train-teacher", file=file, out=out, resume=resume, force=force, device=device,
             reporter=reporter) as run:
        run.teacher()
        return run.summary()


def distill(recipe: Recipe, *, file: str | None = None, out: str | Path | None = None, resume: bool = False,
            force: bool = False, device: str | None = None, teacher: str | Path | None = None,
            reporter: Reporter | None = None, teacher_result: dict[str, Any] | None = None) -> dict[str, Any]:
    """Teacher (trained unless given), optional CE-only reference, then the distilled student.

    `teacher` is a run directory whose teacher.safetensors is used as is (the recipe's teacher.checkpoint);
    `device` overrides the recipe's; `reporter` defaults to a bar on a terminal, else `logging`.
    """
    if teacher is not None:
        ckpt, teacher_result = teacher_of_run(teacher)
        recipe = recipe.model_copy(update={"teacher": recipe.teacher.model_copy(
            update={"checkpoint": str(ckpt), "pretrained": False})})
    with Run(recipe, "distill", file=file, out=out, resume=resume, force=force, device=device, reporter=reporter,
             teacher_result=teacher_result) as run:
        trained = run.teacher()
        d = recipe.distill
        if d.ce_reference:
            run.train("reference", "ce", run.student(), None, d)
        run.train("student", d.method, run.student(), trained, d, recipe.method_config())
        return run.summary()


def evaluate_run(run_dir: str | Path, *, device: str | None = None) -> dict[str, Any]:
    """Accuracy of every model a run directory holds, on validation and test splits (`device`: the recipe's)."""
    run_dir = Path(run_dir)
    recipe_path = run_dir / RECIPE_FILE
    if not recipe_path.is_file():
        raise BadInput("not a run directory (no recipe.toml)", file=str(run_dir))
    recipe = validate_recipe(read_toml(recipe_path), str(recipe_path))
    dev = resolve_device(device or recipe.device)
    data = load_data(recipe.data, file=str(recipe_path))
    out: dict[str, Any] = {}
    for name in ("teacher", "ce_reference", "student"):
        path = run_dir / f"{name}.safetensors"
        if path.is_file():
            net = load_net(path).place(dev)
            out[name] = dict(model=net.spec.name, params=param_count(net),
                             val_acc=net_accuracy(net, data.val, dev),
                             test_acc=net_accuracy(net, data.test, dev) if data.test is not None else None)
    if not out:
        raise BadInput("run directory holds no trained model (*.safetensors)", file=str(run_dir))
    return out
