"""Print fp32 ONNX parity for every model family with both exporters (figures for the README).

    .venv/bin/python tools/export_matrix.py [--img-size 32] [--images 359]

Each model is built untrained (parity is about the graph, not the weights), exported with the
TorchScript-based and the dynamo exporter, and compared with torch on the digits test images.
"""
from __future__ import annotations

import argparse
import time

import torch

from lfcc_deploy.data import load_data
from lfcc_deploy.export.common import ort_session, run_session, batch_list, stack_inputs
from lfcc_deploy.export.config import ExportConfig
from lfcc_deploy.export.onnx_fp32 import EXPORTERS, export_onnx
from lfcc_deploy.export.parity import measure
from lfcc_deploy.models import ModelSpec, build_net, resolve_kwargs
from lfcc_deploy.preprocess import Preprocess
from lfcc_deploy.data_config import DataConfig

FAMILIES = {
    "CNN (ResNet-18)": ("resnet18", {}),
    "CNN (MobileNetV2)": ("mobilenetv2_100", {}),
    "CNN (ConvNeXt-atto)": ("convnext_atto", {}),
    "ViT (tiny)": ("vit_tiny_patch16_224", {}),
    "DeiT (tiny)": ("deit_tiny_patch16_224", {}),
    "Swin (mini)": ("swin_tiny_patch4_window7_224", dict(embed_dim=48, depths=[2, 2, 2], num_heads=[3, 6, 12])),
    "MLP-Mixer (S)": ("mixer_s16_224", {}),
    "ResMLP-12": ("resmlp_12_224", {}),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--img-size", type=int, default=32)
    ap.add_argument("--images", type=int, default=359)
    args = ap.parse_args()
    data = load_data(DataConfig(name="digits", img_size=args.img_size, channels=1))
    print(f"{'family':<22}{'model':<30}{'exporter':<13}{'export s':>9}{'max |Δlogit|':>14}{'top-1 agree':>12}")
    for family, (name, kwargs) in FAMILIES.items():
        spec = ModelSpec(name, 10, 1, args.img_size, list(data.mean), list(data.std),
                         resolve_kwargs(name, args.img_size, kwargs, pretrained=False))
        torch.manual_seed(0)
        net = build_net(spec).eval()
        with torch.no_grad():  # Mixer/ResMLP zero-init their heads: all-zero logits would prove nothing
            for p in net.parameters():
                p.normal_(0, 0.02) if not p.any() else None
        x, _ = stack_inputs(data.test, Preprocess.of(spec), args.images)
        with torch.no_grad():
            ref = net.model(x).numpy()
        for exporter in EXPORTERS:
            t0 = time.perf_counter()
            try:
                proto, _ = export_onnx(net.model, x[:2], ExportConfig(), exporter, {})
            except Exception as err:  # a row, not a crash
                print(f"{family:<22}{name:<30}{exporter:<13}  failed: {str(err).splitlines()[0][:60]}")
                continue
            secs = time.perf_counter() - t0
            got = run_session(ort_session(proto.SerializeToString()), batch_list(x, 256))
            m = measure(ref, got, ref.argmax(1))
            print(f"{family:<22}{name:<30}{exporter:<13}{secs:>9.1f}{m['max_abs_logit']:>14.2e}"
                  f"{100 * m['top1_agreement']:>11.2f}%")


if __name__ == "__main__":
    main()
