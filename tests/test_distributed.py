"""Data-parallel training under torchrun, on CPU with gloo and 2 processes, with the LFCC method."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from conftest import tiny_recipe_text
from lfcc_deploy import distributed
from lfcc_deploy.losses.blocks import info_nce
from lfcc_deploy.recipe import load_recipe

ROOT = Path(__file__).resolve().parent.parent
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
WORLD, B, D = 2, 6, 8


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    return dict(env, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")


def _recipe(tmp_path: Path, epochs: int) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(tiny_recipe_text(epochs=epochs, teacher_epochs=1).replace('method = "kd"', 'method = "lfcc"'))
    return path


def _torchrun(*args, **kw):
    cmd = TORCHRUN + ["-m", "lfcc_deploy", *map(str, args)]
    return subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, **kw)


def _finish(proc, timeout=240) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def _embeddings(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (F.normalize(torch.randn(WORLD * B, D, generator=g), dim=1),
            F.normalize(torch.randn(WORLD * B, D, generator=g), dim=1))


def _queue_case() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Labels of the global batch, and a queue (with empty slots) shared by every rank."""
    g = torch.Generator().manual_seed(1)
    queue = F.normalize(torch.randn(7, D, generator=g), dim=1)
    return torch.randint(0, 3, (WORLD * B,), generator=g), queue, torch.tensor([0, 1, 2, -1, 1, -1, 0])


def _nce_worker(rank: int, init: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=WORLD)
    try:
        s_all, t_all = _embeddings(0)
        rows = slice(rank * B, (rank + 1) * B)
        gathered = distributed.gather_with_grad(s_all[rows].clone())
        res: dict = {"gathered": gathered}
        for symmetric in (True, False):
            s = s_all[rows].clone().requires_grad_()
            t = t_all[rows].clone().requires_grad_()
            loss = info_nce(s, t, 0.1, symmetric)
            loss.backward()
            res[symmetric] = dict(loss=loss.detach(), mean=distributed.reduce_mean(loss.detach()),
                                  s_grad=s.grad, t_grad=t.grad)
        labels, queue, queue_labels = _queue_case()
        s = s_all[rows].clone().requires_grad_()
        loss = info_nce(s, t_all[rows], 0.1, True, labels=labels[rows], queue=queue, queue_labels=queue_labels)
        loss.backward()
        res["queue"] = dict(mean=distributed.reduce_mean(loss.detach()), s_grad=s.grad)
        torch.save(res, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_gathered_info_nce_is_the_global_batch_loss_with_gradients(tmp_path):
    """Each rank's InfoNCE over gathered negatives: their mean is the one-process loss on the
    concatenated batch, and the gradient reaching each rank's own rows is that loss's gradient
    (× world, which DDP's averaging divides out)."""
    mp.spawn(_nce_worker, args=(f"file://{tmp_path}/pg", str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    s_all, t_all = _embeddings(0)
    for r in ranks:
        assert torch.equal(r["gathered"], s_all)
    for symmetric in (True, False):
        s, t = s_all.clone().requires_grad_(), t_all.clone().requires_grad_()
        ref = info_nce(s, t, 0.1, symmetric)  # one process: the whole batch at once
        ref.backward()
        parts = [r[symmetric] for r in ranks]
        assert abs(sum(p["loss"].item() for p in parts) / WORLD - ref.item()) < 1e-5
        assert all(abs(p["mean"].item() - ref.item()) < 1e-5 for p in parts)
        assert parts[0]["loss"].item() != parts[1]["loss"].item()  # each rank's own rows
        for rank, p in enumerate(parts):
            rows = slice(rank * B, (rank + 1) * B)
            assert p["s_grad"].abs().sum() > 0 and p["t_grad"].abs().sum() > 0
            torch.testing.assert_close(p["s_grad"] / WORLD, s.grad[rows], atol=1e-6, rtol=1e-5)
            torch.testing.assert_close(p["t_grad"] / WORLD, t.grad[rows], atol=1e-6, rtol=1e-5)
    # queue negatives and same-class dropping: the same global loss and gradients
    labels, queue, queue_labels = _queue_case()
    s = s_all.clone().requires_grad_()
    ref = info_nce(s, t_all, 0.1, True, labels=labels, queue=queue, queue_labels=queue_labels)
    ref.backward()
    for rank, r in enumerate(ranks):
        assert abs(r["queue"]["mean"].item() - ref.item()) < 1e-5
        rows = slice(rank * B, (rank + 1) * B)
        torch.testing.assert_close(r["queue"]["s_grad"] / WORLD, s.grad[rows], atol=1e-6, rtol=1e-5)


def test_single_process_is_untouched_and_lr_rules(tmp_path):
    assert distributed.current().world == 1 and distributed.is_main()
    x = torch.randn(3, 4)
    assert distributed.gather_with_grad(x) is x and distributed.reduce_sum(x) is x
    assert distributed.broadcast_object({"a": 1}) == {"a": 1}
    cfg = load_recipe(_recipe(tmp_path, 1)).distill
    assert distributed.scale_lr(cfg, 1) is cfg
    assert distributed.scale_lr(cfg, 4).lr == pytest.approx(cfg.lr * 4)
    assert distributed.scale_lr(cfg.model_copy(update={"lr_scaling": "sqrt"}), 4).lr == pytest.approx(cfg.lr * 2)
    assert distributed.scale_lr(cfg.model_copy(update={"lr_scaling": "none"}), 4).lr == cfg.lr


def test_torchrun_distill_lfcc_interrupted_then_resumed(tmp_path):
    """2 gloo processes: rank 0 writes one set of outputs, the steps are those of one shard, a run
    killed mid-way resumes under torchrun, and --resume of a finished run is accepted."""
    epochs = 8
    recipe, out = _recipe(tmp_path, epochs), tmp_path / "run"
    ckpt = out / "checkpoint" / "student.pt"
    proc = _torchrun("distill", recipe, "--out", out, "--quiet")
    deadline = time.time() + 180
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)  # torchrun forwards it: both ranks die at once, as in a crash
    code, _, err = _finish(proc)
    assert ckpt.exists(), f"the run never reached its first student checkpoint:\n{err[-3000:]}"
    interrupted = torch.load(ckpt, weights_only=True)
    assert not interrupted["done"] and interrupted["world"] == 2, "finished before it could be interrupted"

    code, stdout, err = _finish(_torchrun("distill", recipe, "--out", out, "--quiet", "--resume"))
    assert code == 0, err[-3000:]
    assert "resuming at step" in err and stdout.count("distilled student (lfcc)") == 1  # rank 0 prints

    summary = json.loads((out / "summary.json").read_text())
    s = summary["student"]
    full, rest = divmod(s["train_images"] // 2, 32)  # one shard: half the images, batch 32 per process
    assert s["steps"] == epochs * (full + (rest > 1)) and s["world_size"] == 2 and s["method"] == "lfcc"
    assert s["effective_lr"] == pytest.approx(2 * 3e-3)  # linear rule
    lines = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    student_epochs = [("student", e) for e in range(1, epochs + 1)]
    assert [(r["phase"], r["epoch"]) for r in lines] == [("teacher", 1)] + student_epochs  # once each, rank 0
    names = sorted(p.name for p in out.iterdir() if ".tmp-" not in p.name)  # a kill can leave a temp file
    assert names == [".lock", "checkpoint", "curves.png", "metrics.jsonl", "recipe.toml", "student.safetensors",
                     "student_last.safetensors", "summary.json", "teacher.safetensors", "teacher_last.safetensors"]
    assert sorted(p.name for p in (out / "checkpoint").iterdir()) == ["student.pt", "teacher.pt"]

    student = (out / "student.safetensors").read_bytes()
    code, _, err = _finish(_torchrun("distill", recipe, "--out", out, "--quiet", "--resume"))
    assert code == 0, err[-3000:]
    assert (out / "student.safetensors").read_bytes() == student


def test_torchrun_bad_input_stops_every_rank_before_writing(tmp_path):
    recipe, out = _recipe(tmp_path, 1), tmp_path / "run"
    code, _, err = _finish(_torchrun("distill", recipe, "--out", out, "--quiet",
                                     "--set", "distill.sync_batchnorm=true"), timeout=120)
    assert code != 0
    assert err.count("sync_batchnorm needs CUDA") == 2  # the same one-line error on both ranks
    assert err.count("exitcode  : 2") == 2  # both ranks exit with the bad-input code, no traceback of theirs
    assert err.count("Traceback") <= 1  # only torchrun's own report of the failed children
    assert not out.exists()
