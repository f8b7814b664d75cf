"""``fastdnc bench --quick`` (fastdnc.bench.quick) on tiny shapes: every case runs, every error
against its referee is small, and the table names the device, the roofline and each baseline."""

from __future__ import annotations

import pytest
import torch

from fastdnc.bench import cases, quick


def test_the_table_on_tiny_shapes_names_every_group_and_baseline():
    text = quick.table(size="tiny", min_time=0.002)
    assert text.startswith("fastdnc bench --quick on ") and "thread" in text and "GPU: " in text
    assert "matmul roofline (one 1024² torch.matmul): float64" in text and "memory bandwidth (one 256 MiB copy)" in text
    for group in cases.GROUPS:
        assert (f"| {group} | " in text) == (group in quick.QUICK_GROUPS)
    assert "autograd (cached graph): " in text and "scipy eigsh: " in text and "products" in text


@pytest.mark.parametrize("group", cases.GROUPS)
def test_every_implementation_agrees_with_the_referee(group):
    case = cases.BUILDERS[group]("tiny")
    try:
        got = quick.measure(case, min_time=0.001)
    finally:
        case.close()
    assert set(got) == set(case.implementations)
    for name, m in got.items():
        if "failed" in m:
            assert name not in ("fastdnc", case.reference), m
            continue
        assert m["error"] <= (1e-6 if group == "spectrum" else 1e-10), (name, m)
    assert (case.flops > 0) == (group != "spectrum") and case.bytes > 0 and case.dtype == torch.float64
