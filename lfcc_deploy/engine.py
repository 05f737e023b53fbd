"""The training loop shared by teacher training and every distillation method.

Design points: the loop never syncs with the device between log points (losses,
accuracy and a non-finite flag accumulate on the device); every checkpoint holds
model, optimiser, scheduler, RNG and data position, so `--resume` continues
bit-for-bit; Ctrl-C finishes the current step, checkpoints, then stops.
"""
from __future__ import annotations

import json
import signal
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from . import distributed
from .data import DataBundle
from .data_config import Augment
from .errors import BadInput, Diverged
from .losses import Method, hard_labels
from .metrics_log import TensorBoardLog, write_csv
from .models import Net, load_weights, param_count, save_net
from .optim import autocast, lr_lambda, make_optimizer, train_step
from .recipe import TrainConfig
from .rundir import atomic_write, write_text
from .sources import Source, stratified_subset


class Reporter(Protocol):
    def note(self, text: str) -> None: ...
    def start(self, phase: str, total_steps: int, done_steps: int) -> None: ...
    def progress(self, step: int, stats: dict[str, float]) -> None: ...
    def epoch(self, record: dict[str, Any]) -> None: ...
    def finish(self, result: dict[str, Any]) -> None: ...


@dataclass
class Phase:
    """One training job inside a run directory: `teacher`, `reference` (CE-only student) or `student`."""

    name: str
    method: Method
    cfg: TrainConfig
    artifact: str  # e.g. "student" -> student.safetensors (best) and student_last.safetensors
    extra: dict[str, Any] = field(default_factory=dict)  # recorded in the result (method name, ...)


@torch.inference_mode()
def net_accuracy(net: Net, source: Source, device: torch.device, batch_size: int = 512) -> float:
    was = net.training
    net.eval()
    correct = torch.zeros((), dtype=torch.long, device=device)
    with autocast(device):
        for x, y in source.batches(batch_size, device=device, train=False):
            correct += (net(x).argmax(1) == y).sum()
    net.train(was)
    return correct.item() / max(1, len(source))


@contextmanager
def graceful_interrupt():
    """First Ctrl-C sets a flag the loop checks after each step; a second one stops at once."""
    flag = {"hit": False}
    old = signal.getsignal(signal.SIGINT)

    def handler(signum, frame):
        flag["hit"] = True
        signal.signal(signal.SIGINT, old)

    signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, old)


def _rng_state() -> dict[str, Any]:
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def write_metrics(run_dir: Path, phase: str, history: list[dict]) -> None:
    """metrics.jsonl = other phases' lines + this phase's history as of its checkpoint; metrics.csv the same."""
    if not distributed.is_main():  # data-parallel ranks: rank 0 writes
        return
    path = run_dir / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    keep = [json.loads(ln) for ln in lines if ln.strip() and json.loads(ln).get("phase") != phase]
    write_text(path, "".join(json.dumps(r) + "\n" for r in keep + history))
    write_csv(run_dir, keep + history)


class Trainer:
    """Runs one `Phase` to completion inside `run_dir`, resuming from its checkpoint if present."""

    def __init__(self, phase: Phase, data: DataBundle, augment: Augment | None, run_dir: Path,
                 device: torch.device, reporter: Reporter, checkpoint_minutes: float = 5.0,
                 tensorboard: bool = False):
        self.p, self.data, self.augment, self.tensorboard = phase, data, augment, tensorboard
        self.tb: TensorBoardLog | None = None
        self.run_dir, self.device = Path(run_dir), device
        self.reporter, self.ckpt_every_s = reporter, checkpoint_minutes * 60
        cfg = phase.cfg
        self.dist = distributed.current()  # world 1 unless under torchrun
        self.subset = stratified_subset(data.train.labels, cfg.train_fraction, cfg.seed)
        self.train_src = data.train.subset(self.subset)
        self.cache = None  # a TeacherCache when [distill] teacher_cache is on (built in run())
        self.spe = self.train_src.steps_per_epoch(cfg.batch_size, train=True, world=self.dist.world)
        self.total = cfg.epochs * self.spe
        self.method = phase.method.to(device)
        for net in (self.method.student, self.method.teacher):
            if net is not None:
                net.place(device)
        self.net: Net = self.method.student
        self.method = distributed.wrap(self.method, cfg.sync_batchnorm, self.dist)  # world > 1: DDP (+SyncBN)
        self.opt = make_optimizer(self.method, distributed.scale_lr(cfg, self.dist.world))
        if self.dist.world > 1:
            phase.extra = dict(phase.extra, world_size=self.dist.world, effective_lr=self.opt.defaults["lr"])
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lr_lambda(cfg, self.spe))
        self.ckpt_path = self.run_dir / "checkpoint" / f"{phase.name}.pt"
        self.state: dict[str, Any] = dict(step=0, history=[], best_val=-1.0, best_epoch=-1, wall_s=0.0,
                                          accum=None, done=False, result=None, world=self.dist.world)

    # --- checkpoints -------------------------------------------------------------------------
    def save_checkpoint(self) -> None:
        if not self.dist.is_main():  # every rank holds the same weights; rank 0 writes them
            return
        blob = dict(self.state, model=self.method.trainable_state(), optimizer=self.opt.state_dict(),
                    scheduler=self.sched.state_dict(), rng=_rng_state())
        atomic_write(self.ckpt_path, lambda tmp: torch.save(blob, tmp))

    def load_checkpoint(self) -> None:
        blob = torch.load(self.ckpt_path, map_location="cpu", weights_only=True)
        self.method.load_trainable_state(blob.pop("model"))
        self.opt.load_state_dict(blob.pop("optimizer"))
        self.sched.load_state_dict(blob.pop("scheduler"))
        _set_rng_state(blob.pop("rng"))
        if not blob["done"] and blob.get("world", 1) != self.dist.world:
            raise BadInput(f"checkpoint was written by {blob.get('world', 1)} process(es), this run has "
                           f"{self.dist.world}", file=str(self.ckpt_path),
                           hint="resume with the same torchrun --nproc-per-node (data shards depend on it)")
        if not self.dist.is_main():
            blob["accum"] = None  # the saved partial-epoch counts are rank 0's; other ranks restart theirs
        self.state.update(blob)

    # --- loop ----------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        if self.ckpt_path.exists():
            self.load_checkpoint()
            if self.state["done"]:
                load_weights(self.net, self.run_dir / f"{self.p.artifact}.safetensors")
                return self.state["result"]
        else:
            torch.manual_seed(self.p.cfg.seed)
        write_metrics(self.run_dir, self.p.name, self.state["history"])
        self._prepare_cache()
        self._compile()
        self.reporter.start(self.p.name, self.total, self.state["step"])
        self.tb = TensorBoardLog(self.run_dir, self.p.name) if self.tensorboard and self.dist.is_main() else None
        try:
            with graceful_interrupt() as interrupt:
                while self.state["step"] < self.total:
                    self._epoch(interrupt)
            return self._finish()
        finally:
            if self.tb is not None:
                self.tb.close()

    def _prepare_cache(self) -> None:
        mode = getattr(self.p.cfg, "teacher_cache", "off")
        if mode == "off" or self.method.teacher is None:
            return
        from .cache import prepare_cache
        cfg = self.p.cfg
        self.cache = prepare_cache(self.method, self.train_src, self.subset, self.data.identity,
                                   self.augment, mode=mode, views=cfg.cache_views, seed=cfg.seed,
                                   dtype=cfg.cache_dtype, run_dir=self.run_dir, device=self.device,
                                   say=self.reporter.note)

    def _compile(self) -> None:
        """`compile = true`: the trained model's forward through torch.compile, in place so state_dict
        keys (checkpoints, safetensors) do not change; a graph dynamo cannot take runs eagerly."""
        if not getattr(self.p.cfg, "compile", False):
            return
        import torch._dynamo
        torch._dynamo.config.suppress_errors = True
        self.net.model.compile(dynamic=False)
        self.reporter.note(f"{self.p.name}: torch.compile on (the first steps include compilation)")

    def _batches(self, epoch: int, start: int):
        """(x, y, cached teacher targets or None) for this epoch from step `start`. With a cache the
        student sees exactly the stored view of each image, and no teacher forward runs."""
        cfg = self.p.cfg
        common = dict(device=self.device, train=True, seed=cfg.seed, epoch=epoch, start_step=start,
                      shard=self.dist.shard)
        if self.cache is None:
            for x, y in self.train_src.batches(cfg.batch_size, augment=self.augment, **common):
                yield x, y, None
            return
        views = self.cache.pick_views(cfg.seed, epoch)
        for x, y, idx in self.train_src.batches(cfg.batch_size, augment=None, with_index=True, **common):
            x, targets = self.cache.batch(x, idx, views, self.augment)
            yield x, y, targets

    def _new_accum(self) -> dict[str, torch.Tensor]:
        z = lambda dt=torch.float32: torch.zeros((), dtype=dt, device=self.device)  # noqa: E731
        # "steps" counts this epoch's steps on the device, so flagging a bad step needs no host copy
        return {"loss": z(), "correct": z(torch.long), "seen": z(torch.long), "steps": z(torch.long),
                "bad_step": z(torch.long) - 1}

    def _epoch(self, interrupt: dict) -> None:
        cfg, st = self.p.cfg, self.state
        epoch, start = divmod(st["step"], self.spe)
        acc = self._new_accum()
        if st["accum"]:
            acc.update({k: v.to(self.device) for k, v in st["accum"].items()})
        restored = acc["seen"].clone()  # images of this epoch trained before a resume: not timed here
        t0 = epoch_t0 = last_ckpt = time.perf_counter()
        tick = (t0, st["step"])
        self.method.train()
        for x, y, targets in self._batches(epoch, start):
            self.method.set_progress(st["step"], self.spe, self.total)
            logits, losses, loss = train_step(self.method, self.opt, x, y, self.device, cfg.grad_clip, targets)
            self.sched.step()
            acc["bad_step"] = torch.where((acc["bad_step"] < 0) & ~torch.isfinite(loss),
                                          acc["steps"] + epoch * self.spe, acc["bad_step"])
            acc["steps"] += 1
            acc["loss"] += loss.detach().float() * len(y)
            acc["correct"] += (logits.detach().argmax(1) == hard_labels(y)).sum()
            acc["seen"] += len(y)
            for k, v in losses.items():
                acc[f"loss_{k}"] = acc.get(f"loss_{k}", 0) + v.detach().float() * len(y)
            st["step"] += 1
            at_end = st["step"] % self.spe == 0
            if at_end or st["step"] % cfg.log_every == 0 or interrupt["hit"]:
                self._check_finite(acc)
                now = time.perf_counter()
                seen = acc["seen"].item()
                self.reporter.progress(st["step"], dict(
                    loss=acc["loss"].item() / max(1, seen), acc=acc["correct"].item() / max(1, seen),
                    ips=(st["step"] - tick[1]) * cfg.batch_size / max(1e-9, now - tick[0])))
                tick = (now, st["step"])
                # the epoch's last step: _end_epoch validates, saves and checkpoints first, so a
                # checkpoint never holds a finished epoch that was not recorded
                if not at_end and (interrupt["hit"] or (self.ckpt_every_s and now - last_ckpt > self.ckpt_every_s)):
                    st["wall_s"] += now - t0
                    t0, last_ckpt = now, now
                    st["accum"] = {k: v.cpu() for k, v in acc.items()}
                    self.save_checkpoint()
                    if interrupt["hit"]:
                        raise KeyboardInterrupt
        st["wall_s"] += time.perf_counter() - t0
        self._end_epoch(epoch, acc, acc["seen"] - restored, time.perf_counter() - epoch_t0)
        if interrupt["hit"]:
            raise KeyboardInterrupt

    def _check_finite(self, acc: dict[str, torch.Tensor]) -> None:
        bad = int(acc["bad_step"].item())
        if bad >= 0:
            raise Diverged(f"non-finite loss at step {bad} of {self.p.name} training; stopped",
                           file=str(self.ckpt_path if self.ckpt_path.exists() else self.run_dir),
                           hint="the last good checkpoint is kept; lower the lr or set grad_clip, then --resume")

    def _end_epoch(self, epoch: int, acc: dict, timed_seen: torch.Tensor, epoch_s: float) -> None:
        """`timed_seen`: images trained in this process's `epoch_s` (after a resume, not the restored ones)."""
        st, main = self.state, self.dist.is_main()
        # data-parallel: the epoch's record covers every rank's shard; rank 0 validates for all
        if self.dist.world > 1:  # same key order on every rank, so the collectives pair up
            acc = {k: acc[k] if k in ("steps", "bad_step") else distributed.reduce_sum(acc[k]) for k in sorted(acc)}
            timed_seen = distributed.reduce_sum(timed_seen)
        seen = max(1, acc["seen"].item())
        val = self.dist.broadcast_object(net_accuracy(self.net, self.data.val, self.device) if main else None)
        record = dict(phase=self.p.name, epoch=epoch + 1, step=st["step"], lr=self.sched.get_last_lr()[0],
                      train_loss=acc["loss"].item() / seen, train_acc=acc["correct"].item() / seen,
                      val_acc=val, epoch_s=epoch_s, images_per_s=timed_seen.item() / max(epoch_s, 1e-9),
                      **{k: v.item() / seen for k, v in acc.items() if k.startswith("loss_")})
        st["history"].append(record)
        st["accum"] = None
        if main:
            save_net(self.net, self.run_dir / f"{self.p.artifact}_last.safetensors")
        if val > st["best_val"]:
            st["best_val"], st["best_epoch"] = val, epoch + 1
            if main:
                save_net(self.net, self.run_dir / f"{self.p.artifact}.safetensors")
        self.save_checkpoint()
        write_metrics(self.run_dir, self.p.name, st["history"])
        if self.tb is not None:
            self.tb.epoch(record)
        self.reporter.epoch(record)

    def _finish(self) -> dict[str, Any]:
        st = self.state
        best = self.run_dir / f"{self.p.artifact}.safetensors"
        self.dist.barrier()  # data-parallel: rank 0 has written the best weights every rank loads
        load_weights(self.net, best)
        test = self.data.test
        result = dict(phase=self.p.name, model=self.net.spec.name, params=param_count(self.net),
                      val_acc=net_accuracy(self.net, self.data.val, self.device),
                      test_acc=net_accuracy(self.net, test, self.device) if test is not None else None,
                      best_epoch=st["best_epoch"], epochs=self.p.cfg.epochs, steps=st["step"],
                      train_images=len(self.train_src), wall_s=st["wall_s"],
                      s_per_epoch=st["wall_s"] / self.p.cfg.epochs, artifact=best.name, **self.p.extra)
        st["done"], st["result"] = True, result
        self.save_checkpoint()
        self.reporter.finish(result)
        return result
