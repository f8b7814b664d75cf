"""Symmetric test matrices with known spectra (clustered, degenerate, with outliers), shared by the
spectral tests."""

from __future__ import annotations

import torch


def with_spectrum(evals: list[float], seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(len(evals), len(evals), generator=g, dtype=torch.float64))
    return q @ torch.diag(torch.tensor(evals, dtype=torch.float64)) @ q.T


SPECTRA = {
    "outliers+bulk": [10.0] * 16 + torch.linspace(0, 1, 384).tolist(),
    "clustered": [5.0, 5.0 + 1e-7, 5.0 + 2e-7, 4.0, 4.0 - 1e-6] + torch.linspace(-1, 1, 195).tolist(),
    "degenerate-both-ends": [3.0] * 9 + [-2.0] * 7 + torch.linspace(-0.5, 0.5, 184).tolist(),
    "indefinite": torch.linspace(-3, 7, 300).tolist(),
}
