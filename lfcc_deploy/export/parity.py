"""Does the exported model give the answers torch gives? Measured on the real test images.

Element-wise tolerances that suit fp32 fail honest fp16/INT8 artifacts (Polygraphy's lesson),
so each precision has its own `Tolerance`: logits for fp32, accuracy and top-1 agreement for
the reduced precisions.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .config import Tolerance


def measure(reference: np.ndarray, logits: np.ndarray, labels: np.ndarray, rtol: float = 0.0) -> dict[str, Any]:
    """Δlogit statistics, top-1 agreement and both accuracies over the same images.

    `logit_excess`: the largest |Δ| − rtol·|reference| over all logits, which the absolute limit bounds."""
    if reference.shape != logits.shape:
        raise ValueError(f"logit shapes differ: {reference.shape} vs {logits.shape}")
    diff = np.abs(reference.astype(np.float64) - logits.astype(np.float64))
    ref_top, top = reference.argmax(1), logits.argmax(1)
    ref_acc, acc = float((ref_top == labels).mean()), float((top == labels).mean())
    excess = float((diff - rtol * np.abs(reference.astype(np.float64))).max())
    return dict(images=int(len(labels)), max_abs_logit=float(diff.max()), mean_abs_logit=float(diff.mean()),
                logit_excess=excess,
                top1_agreement=float((ref_top == top).mean()), torch_accuracy=ref_acc, accuracy=acc,
                accuracy_drop=ref_acc - acc, finite=bool(np.isfinite(logits).all()))


def judge(entry: dict[str, Any], tol: Tolerance) -> list[str]:
    """The tolerances an entry breaks, each as a readable clause; empty when it passes."""
    broken = []
    if not entry["finite"]:
        broken.append("non-finite logits")
    if tol.max_abs_logit is not None and entry["logit_excess"] > tol.max_abs_logit:
        broken.append(f"|Δlogit| beyond {tol.max_abs_logit:.0e} + {tol.rtol:g}·|logit| "
                      f"(max |Δlogit| {entry['max_abs_logit']:.2e})")
    if entry["top1_agreement"] < tol.min_agreement:
        broken.append(f"top-1 agreement {100 * entry['top1_agreement']:.2f} % < {100 * tol.min_agreement:.2f} %")
    if tol.max_accuracy_drop is not None and entry["accuracy_drop"] > tol.max_accuracy_drop:
        broken.append(f"accuracy drop {100 * entry['accuracy_drop']:.2f} points > "
                      f"{100 * tol.max_accuracy_drop:.2f}")
    return broken


def compare(reference: np.ndarray, logits: np.ndarray, labels: np.ndarray, tol: Tolerance) -> dict[str, Any]:
    """Measure and judge in one: the entry parity.json stores for one precision."""
    return verdict(measure(reference, logits, labels, tol.rtol), tol)


def verdict(entry: dict[str, Any], tol: Tolerance) -> dict[str, Any]:
    """The entry with its tolerance and pass/fail recorded, as parity.json stores it."""
    broken = judge(entry, tol)
    return {**entry, "tolerance": tol.model_dump(exclude_none=True), "passed": not broken, "broken": broken}
