"""Teacher cache: the frozen teacher's outputs for K fixed augmented views of every training image,
computed once, so distillation skips the teacher forward on every step.

A cache that ignores augmentation trains on the wrong targets (one KD library removed its cache
for that reason). Here each view's augmentation parameters are stored beside the outputs, the
student is fed exactly that view, and the cache is keyed by everything that changes its content:
teacher weights, data identity, the training subset, image size, channels and normalisation,
augmentation settings, the view seeds, the method's stages and filters, K and the storage dtype.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from . import distributed
from .sources import Source, _generator, apply_augment, augment_params
from .errors import BadInput
from .losses import METHODS, Method
from .data_config import Augment

FORMAT = 1
DTYPES = {"float16": torch.float16, "float32": torch.float32}


@dataclass
class TeacherCache:
    """params: K×N×3 int16 (dy, dx, flip) of each view; logits: K×N×classes; feats: one K×N×F per stage."""

    key: str
    params: torch.Tensor
    logits: torch.Tensor
    feats: list[torch.Tensor]

    @property
    def views(self) -> int:
        return self.params.shape[0]

    def pick_views(self, seed: int, epoch: int) -> torch.Tensor:
        """One view per image for this epoch, seeded: a resumed run draws the same views."""
        n = self.params.shape[1]
        return torch.randint(self.views, (n,), generator=_generator("cache-view-pick", seed, epoch))

    def batch(self, x: torch.Tensor, idx: torch.Tensor, views: torch.Tensor, aug: Augment):
        """The augmented batch the cached targets were computed on, and those targets (float32)."""
        v, i = views[idx].long(), idx.long()
        x = apply_augment(x, aug, self.params[v, i])
        vn, inn = v.numpy(), i.numpy()

        def take(t) -> torch.Tensor:  # torch tensors (memory) or memory-mapped numpy arrays (disk)
            rows = torch.from_numpy(np.asarray(t[vn, inn])) if isinstance(t, np.ndarray) else t[v, i]
            return rows.to(x.device, torch.float32, non_blocking=True)
        return x, (take(self.logits), [take(f) for f in self.feats])


def _teacher_hash(method: Method) -> str:
    h = hashlib.sha256()
    for k, v in sorted(method.teacher.model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())  # 0-d too
    return h.hexdigest()


def check_cacheable(cls: type[Method], file: str | None = None) -> None:
    """The one rule for `teacher_cache`: only methods that declare `cacheable` may use one."""
    if cls.cacheable:
        return
    ok = [name for name, c in METHODS.items() if c.cacheable]
    name = next((n for n, c in METHODS.items() if c is cls), cls.__name__.lower())
    raise BadInput(f"method {name!r} cannot use a teacher cache", file=file, key="distill.teacher_cache",
                   hint=f"use method {' or '.join(ok)}, or teacher_cache = \"off\"")


def cache_key(method: Method, identity: str, subset: torch.Tensor, aug: Augment, views: int, seed: int,
              dtype: str) -> str:
    """Everything that changes what the cache holds; a different key means rebuild, never reuse."""
    spec = method.teacher.spec
    parts = dict(format=FORMAT, method=type(distributed.unwrap(method)).__name__, fingerprint=method.cache_fingerprint(),
                 teacher=_teacher_hash(method), data=identity,
                 subset=hashlib.sha256(subset.numpy().tobytes()).hexdigest(),
                 img_size=spec.img_size, channels=spec.in_chans, mean=spec.mean, std=spec.std,
                 augment=aug.model_dump(exclude={"style", "timm"}), views=views, view_seed=seed, dtype=dtype)
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _probe(method: Method, source: Source, batch: int, device: torch.device) -> tuple[list[int], float]:
    """Output widths and seconds per image of the teacher, from one real batch."""
    x, _ = next(source.batches(batch, device=device, train=False))
    method.teacher_targets(x)  # warm-up
    t0 = time.perf_counter()
    logits, feats = method.teacher_targets(x)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return [logits.shape[1]] + [f.shape[1] for f in feats], (time.perf_counter() - t0) / len(x)


def _free_bytes(mode: str, where: Path) -> int:
    if mode == "disk":
        where.mkdir(parents=True, exist_ok=True)
        return shutil.disk_usage(where).free
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def prepare_cache(method: Method, source: Source, subset: torch.Tensor, identity: str, aug: Augment,
                  *, mode: str, views: int, seed: int, dtype: str, run_dir: Path, device: torch.device,
                  batch: int = 256, say: Callable[[str], None] = lambda _: None) -> TeacherCache:
    """Load the cache from the run directory when its key matches (disk mode), else build it."""
    check_cacheable(type(distributed.unwrap(method)))
    key = cache_key(method, identity, subset, aug, views, seed, dtype)
    folder = run_dir / "cache" / f"teacher-{key}"
    if mode == "disk" and distributed.current().world > 1:  # rank 0 builds and writes, every rank maps it
        distributed.on_main(lambda: _build_or_reuse(method, source, aug, mode, views, seed, dtype, run_dir,
                                                    device, batch, key, folder, say))
        return _load(folder, key)
    return _build_or_reuse(method, source, aug, mode, views, seed, dtype, run_dir, device, batch, key, folder, say)


def _build_or_reuse(method, source, aug, mode, views, seed, dtype, run_dir, device, batch, key, folder, say):
    if mode == "disk" and (folder / "meta.json").is_file():
        say(f"teacher cache: reusing {folder} (key {key})")
        return _load(folder, key)
    widths, per_image = _probe(method, source, min(batch, len(source)), device)
    n, width = len(source), sum(widths)
    size = views * n * (width * (2 if dtype == "float16" else 4) + 6)
    say(f"teacher cache ({mode}): {views} views × {n} images × {width} values ({widths[0]} logits + "
        f"{' + '.join(map(str, widths[1:])) or '0'} features) in {dtype} = {size / 1e6:.1f} MB; "
        f"about {views * n * per_image:.0f} s to build")
    free = _free_bytes(mode, run_dir / "cache")
    if size > 0.8 * free:
        raise BadInput(f"the teacher cache needs {size / 1e9:.2f} GB but only {free / 1e9:.2f} GB is free "
                       f"({'disk' if mode == 'disk' else 'memory'})", key="distill.cache_views",
                       hint="lower distill.cache_views, use teacher_cache = \"disk\", or turn the cache off")
    started = time.perf_counter()
    cache = _build(method, source, aug, views, seed, DTYPES[dtype], device, batch, key)
    say(f"teacher cache built in {time.perf_counter() - started:.1f} s")
    if mode == "disk":
        _save(cache, folder)
    return cache


@torch.no_grad()
def _build(method: Method, source: Source, aug: Augment, views: int, seed: int, dtype: torch.dtype,
           device: torch.device, batch: int, key: str) -> TeacherCache:
    n = len(source)
    params = torch.stack([augment_params(n, aug, _generator("cache-view", seed, k)) for k in range(views)])
    logits, feats = None, None
    for k in range(views):
        start = 0
        for x, _ in source.batches(batch, device=device, train=False):
            idx = torch.arange(start, start + len(x))
            t_logits, t_feats = method.teacher_targets(apply_augment(x, aug, params[k, idx]))
            if logits is None:
                logits = torch.empty(views, n, t_logits.shape[1], dtype=dtype)
                feats = [torch.empty(views, n, f.shape[1], dtype=dtype) for f in t_feats]
            logits[k, idx] = t_logits.to("cpu", dtype)
            for store, f in zip(feats, t_feats):
                store[k, idx] = f.to("cpu", dtype)
            start += len(x)
    return TeacherCache(key, params, logits, feats)


def _save(cache: TeacherCache, folder: Path) -> None:
    """numpy files in a temp folder renamed into place: a killed build leaves no half cache."""
    for stale in folder.parent.glob(folder.name + ".tmp-*"):  # left by a build that was killed
        shutil.rmtree(stale, ignore_errors=True)
    tmp = folder.with_name(folder.name + f".tmp-{os.getpid()}")
    tmp.mkdir(parents=True)
    arrays = {"params": cache.params, "logits": cache.logits, **{f"feat{i}": f for i, f in enumerate(cache.feats)}}
    for name, t in arrays.items():
        np.save(tmp / f"{name}.npy", t.numpy())
    (tmp / "meta.json").write_text(json.dumps(dict(key=cache.key, format=FORMAT, stages=len(cache.feats))))
    try:
        os.replace(tmp, folder)
    except OSError:  # another process (a data-parallel rank) renamed the same cache into place first
        shutil.rmtree(tmp, ignore_errors=True)
        if not (folder / "meta.json").is_file():
            raise


def _load(folder: Path, key: str) -> TeacherCache:
    """Memory-mapped: rows are read from disk as batches need them."""
    meta = json.loads((folder / "meta.json").read_text())
    if meta.get("key") != key or meta.get("format") != FORMAT:
        raise BadInput("teacher cache does not match its folder name", file=str(folder),
                       hint="delete the folder; it will be rebuilt")
    load = lambda name: np.load(folder / f"{name}.npy", mmap_mode="r")  # noqa: E731
    return TeacherCache(key, torch.from_numpy(np.array(load("params"))), load("logits"),
                        [load(f"feat{i}") for i in range(meta["stages"])])
