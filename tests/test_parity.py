"""fp32 parity in Polygraphy's form, |Δ| ≤ atol + rtol·|reference|: honest exports pass at any logit
scale, a wrong graph still fails."""
from __future__ import annotations

import numpy as np
import torch
from test_export import run_dir_with

from lfcc_deploy.export.config import ExportConfig
from lfcc_deploy.export.formats import export_format
from lfcc_deploy.export.job import Exporter, run_recipe
from lfcc_deploy.export.parity import compare
from lfcc_deploy.export.steps import export_checked
from lfcc_deploy.models import load_net, save_net


def test_fp32_export_passes_with_logits_scaled_100x(tmp_path):
    run = run_dir_with(tmp_path, "mobilenetv2_050", {}, img_size=32)
    net = load_net(run / "student.safetensors")
    with torch.no_grad():
        for p in net.model.get_classifier().parameters():
            p.mul_(100)
    save_net(net, run / "student.safetensors")
    recipe, file = run_recipe(run, ["export.parity_images=256"])
    job = Exporter(run, recipe, file, "student", lambda _: None)
    assert np.abs(job.reference).max() > 100  # the scale the absolute limit alone cannot take
    result, entry = export_checked(job, export_format("onnx", "fp32"))
    assert entry["passed"], entry["broken"]
    assert result is not None and (run / "export" / "student.onnx").is_file()


def test_relative_part_scales_with_the_logit_and_wrong_logits_fail():
    rng = np.random.default_rng(0)
    ref = rng.normal(0, 1000, (64, 10)).astype(np.float32)
    labels = ref.argmax(1)
    tol = ExportConfig().fp32
    rounding = ref * (1 + 5e-4 * rng.choice([-1, 1], ref.shape))  # relative error the tolerance allows
    assert compare(ref, rounding.astype(np.float32), labels, tol)["passed"]
    wrong = ref.copy()
    wrong[0, 0] += 1e-3 * abs(ref[0, 0]) + 0.01  # one logit just beyond atol + rtol·|logit|
    entry = compare(ref, wrong, labels, tol)
    assert not entry["passed"] and "beyond" in entry["broken"][0]
