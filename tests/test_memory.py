"""Work that cannot fit is refused before it allocates, with the estimate and a way out."""

from __future__ import annotations

import pytest
import torch

import fastdnc as fd
from fastdnc import _memory
from fastdnc.curvature.operator import DenseOperator


@pytest.fixture
def tiny_machine(monkeypatch):
    """A machine with 1 MiB available."""
    monkeypatch.setattr(_memory, "available_bytes", lambda device="cpu": 2**20)


def _refused(call, *needles):
    with pytest.raises(_memory.InsufficientMemoryError) as info:
        call()
    msg = str(info.value)
    for needle in ("needs ~", "this machine has 1 MiB available", "instead", *needles):
        assert needle in msg, msg
    return msg


def test_available_memory_is_known_here():
    have = _memory.available_bytes()
    assert isinstance(have, int) and have > 2**26


@pytest.mark.parametrize("method", ["to_dense", "eigh", "eigvalsh"])
def test_dense_fallbacks_are_refused(tiny_machine, method):
    op = DenseOperator(torch.eye(400))
    op.to_dense = lambda chunk=1024: pytest.fail("allocated before the check")  # noqa: ARG005
    base = fd.curvature.operator.CurvatureOperator
    msg = _refused(lambda: getattr(base, method)(op), f"{method} of a 400 × 400 operator")
    assert "lanczos" in msg


def test_the_estimate_is_the_measured_peak_not_the_output(tiny_machine):
    op = DenseOperator(torch.eye(150))  # 150² float64 = 0.17 MiB; to_dense's peak (×5) fits, eigh's (×6) does not
    assert fd.curvature.operator.CurvatureOperator.to_dense(op).shape == (150, 150)
    _refused(lambda: fd.curvature.operator.CurvatureOperator.eigh(op), "eigh of a 150 × 150")


def test_structured_operators_are_refused_too(tiny_machine):
    relu = fd.DeepUFM(3, 20, 30, 3, activation="relu")
    gn = fd.layer_hessian(relu, 2)  # batched Gauss-Newton block, P = 900
    for call in (gn.to_dense, lambda: gn.eigh(method="dense"), lambda: gn.eigvalsh(method="dense")):
        _refused(call, "900 × 900")
    vals, _ = gn.eigh()  # auto: the 180 × 180 sample-space Gram fits where the 900 × 900 block does not
    assert vals.numel() == 900
    kron = fd.layer_hessian(fd.DeepUFM(3, 20, 30, 3), 2)
    _refused(kron.to_dense, "900 × 900")
    vals, vecs = kron.eigh()  # exact from the factors: allowed
    assert vals.numel() == 900
    _refused(vecs.to_dense, "forming all eigenvectors")


def test_models_and_training_are_refused(tiny_machine, monkeypatch):
    _refused(lambda: fd.DeepUFM(4, 500, 200, 4), "a DeepUFM with layer widths [200, 200, 200, 200, 4]", "float32")
    monkeypatch.setattr(_memory, "available_bytes", lambda device="cpu": 2**20 + 64 * 2**10)
    model = fd.DeepUFM(3, 100, 60, 3)  # fits, but training it (gradients, states) does not
    _refused(lambda: fd.train(model, 5, 0.1, optimizer="adam", progress=False), "training DeepUFM")


def test_real_memory_refuses_an_impossible_model():
    with pytest.raises(MemoryError, match=r"needs ~\d+\.\d GiB, this machine has"):
        fd.DeepUFM(4, 5, 10**6, 4)


def test_slow_dense_eigendecompositions_warn_with_a_time():
    with pytest.warns(_memory.SlowComputationWarning, match=r"order 6000 takes about \d+ (s|min)"):
        _memory.require_dense(6000, 8, "cpu", "eigh", 0.0, eig="vectors")  # peak 0: the memory check passes
    assert _memory.dense_eigh_seconds(6000, True) > _memory.dense_eigh_seconds(6000, False) > 0
