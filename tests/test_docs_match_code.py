"""Docstrings that describe a computation say what the code computes."""
from __future__ import annotations

import statistics

import pytest

from lfcc_deploy import predict
from lfcc_deploy.bench import regression


def test_regression_is_the_median_of_paired_ratios_as_documented(monkeypatch):
    new_ms, old_ms = iter([9, 9, 4, 1, 2]), iter([9, 9, 1, 2, 4])  # two warm-up/probe blocks each, then pairs
    new, old = object(), object()
    monkeypatch.setattr(regression, "_block", lambda fn, sync, calls: next(new_ms if fn is new else old_ms))
    m = regression.interleaved_ratio(new, old, lambda: None, seconds=0, min_rounds=3)
    ratios = [4 / 1, 1 / 2, 2 / 4]
    assert m["ratio"] == pytest.approx(statistics.median(ratios)) == 0.5
    assert statistics.median([4, 1, 2]) / statistics.median([1, 2, 4]) == 1  # what "ratio of medians" would give
    assert "median of the per-round new/old ratios" in " ".join(regression.__doc__.split())


def test_predict_doc_names_the_path_bench_e2e_takes():
    doc = " ".join(predict.__doc__.split())
    assert "the same code path the bench's end-to-end mode times" not in doc
    assert "file decoding is not part of any benchmark" in doc
