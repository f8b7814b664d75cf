"""Lanczos (fastdnc.spectral.lanczos, its basis in krylov.py, warm starts of top.py): known spectra
(clustered, degenerate), arguments, symmetry, warm and mixed-precision starts, tolerances."""

from __future__ import annotations

import pytest
import torch
from known_spectra import SPECTRA, with_spectrum

import fastdnc as fd
from fastdnc.curvature import DenseOperator


@pytest.mark.parametrize("name", SPECTRA)
@pytest.mark.parametrize("which", ["LA", "SA", "BE", "LM"])
def test_lanczos_known_spectra(name, which):
    ev = SPECTRA[name]
    a = with_spectrum(ev)
    k = 12
    res = fd.lanczos(DenseOperator(a), k=k, which=which)
    s = torch.sort(torch.tensor(ev, dtype=torch.float64)).values
    if which == "LA":
        ref = s.flip(0)[:k]
    elif which == "SA":
        ref = s[:k].flip(0)
    elif which == "LM":  # magnitudes only: ±x ties make the signs of the last ones ambiguous
        ref = torch.sort(s.abs(), descending=True).values[:k]
    else:
        ref = torch.cat([s.flip(0)[:6], s[:6].flip(0)])
    assert res.converged
    got = torch.sort(res.eigenvalues.abs(), descending=True).values if which == "LM" else res.eigenvalues
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-8)
    v = res.eigenvectors
    torch.testing.assert_close(v.T @ v, torch.eye(k, dtype=torch.float64), rtol=0, atol=1e-8)
    torch.testing.assert_close(a @ v, v * res.eigenvalues, rtol=0, atol=1e-7)
    assert float(res.residuals.max()) <= 1e-9


def test_lanczos_exhausts_small_spaces_and_rejects_bad_input():
    a = with_spectrum([2.0, 1.0, 1.0, 0.0])
    res = fd.lanczos(a, k=4)
    torch.testing.assert_close(
        res.eigenvalues, torch.tensor([2.0, 1.0, 1.0, 0.0], dtype=torch.float64), atol=1e-12, rtol=0
    )
    with pytest.raises(ValueError, match="which must be"):
        fd.lanczos(a, k=1, which="XX")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(k=5), r"k must be an int in 1\.\.4"),
        (dict(k=0), "k must be an int"),
        (dict(k=2.0), "k must be an int"),
        (dict(k=True), "k must be an int"),
        (dict(k=1, tol=0.0), "tol must be a finite number > 0"),
        (dict(k=1, tol=-1e-8), "tol must be a finite number > 0"),
        (dict(k=1, tol=float("nan")), "tol must be a finite number > 0"),
        (dict(k=1, tol=float("inf")), "tol must be a finite number > 0"),
        (dict(k=1, block_size=0), "block_size must be an int >= 1"),
        (dict(k=1, max_basis=0), "max_basis must be an int >= 1"),
        (dict(k=1, start=torch.zeros(4, dtype=torch.float64)), "zero column"),
        (dict(k=1, start=torch.full((4,), float("nan"), dtype=torch.float64)), "NaN or Inf"),
        (dict(k=1, start=torch.ones(3, dtype=torch.float64)), r"start must have shape \(4,\)"),
        (dict(k=1, start=torch.ones(4, 0, dtype=torch.float64)), r"start must have shape"),
        (dict(k=1, start=[1.0, 2.0, 3.0, 4.0]), "start must be a tensor of shape"),
    ],
)
def test_lanczos_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        fd.lanczos(with_spectrum([2.0, 1.0, 1.0, 0.0]), **kwargs)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_lanczos_refuses_a_non_symmetric_operator(dtype):
    """A non-symmetric matrix used to give a confident wrong top eigenvalue; now the probe refuses it."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(60, 60, generator=gen, dtype=torch.float64)
    ns = (a @ a.T + 0.3 * (a - a.T)).to(dtype)
    with pytest.raises(ValueError, match="not symmetric"):
        fd.lanczos(ns, k=3)
    with pytest.raises(ValueError, match="not symmetric"):
        fd.lanczos(fd.curvature.operator.DenseOperator(ns, symmetric=True), k=3)
    sym = (a @ a.T).to(dtype)
    res = fd.lanczos(sym, k=3)  # the probe accepts rounding-level asymmetry
    ref = torch.linalg.eigvalsh(sym.double()).flip(0)[:3]
    torch.testing.assert_close(res.eigenvalues.double(), ref, rtol=1e-4, atol=0)
    assert res.num_matvecs >= 2
    fd.lanczos(ns, k=3, check_symmetric=False)  # the caller may skip the probe


def test_lanczos_on_a_trained_ufm_finds_the_16_outliers():
    m = fd.DeepUFM(4, 5, 12, 4, seed=0)
    fd.train(m, 20_000, 0.1, progress=False)
    H = fd.hessian(m, decay=False)
    res = fd.lanczos(H, k=20)
    ref = torch.linalg.eigvalsh(H.to_dense()).flip(0)[:20]
    torch.testing.assert_close(res.eigenvalues, ref, rtol=0, atol=1e-8)
    out = fd.outliers(res.eigenvalues)
    assert out.count == 16 and out.gap_ratio > 10
    g = fd.curvature.oracles.fit_gradient(m)
    assert fd.gradient_overlap(g, res.eigenvectors[:, :16]) > 1 - 1e-6


def test_warm_starts_reach_the_cold_result():
    """A tensor start and an operator start (the GGN, exact through its Gram) converge to the cold
    result, verified by float64 residuals ‖Hv − λv‖."""
    m = fd.DeepUFM(4, 5, 12, 4, activation="relu", seed=0)
    fd.train(m, 3000, 0.1, progress=False)
    H = fd.hessian(m, decay=True)
    cold = fd.lanczos(H, k=16)
    block = torch.randn(H.size, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for res in (fd.lanczos(H, k=16, start=block), fd.lanczos(H, k=16, start=fd.ggn(m))):
        assert res.converged
        torch.testing.assert_close(res.eigenvalues, cold.eigenvalues, rtol=0, atol=1e-9)
        v = res.eigenvectors
        assert float((H @ v - v * res.eigenvalues).norm(dim=0).max()) <= 1e-8 * float(cold.eigenvalues.abs().max())
    with pytest.raises(ValueError, match="start or v0"):
        fd.lanczos(H, k=3, start=block, v0=block)
    with pytest.warns(DeprecationWarning, match="former name of start"):
        old = fd.lanczos(H, k=16, v0=block)
    torch.testing.assert_close(old.eigenvalues, fd.lanczos(H, k=16, start=block).eigenvalues, rtol=0, atol=0)
    with pytest.raises(ValueError, match="start must be"):
        fd.lanczos(H, k=3, start=fd.ggn(fd.DeepUFM(3, 2, 4, 2)))


def test_a_well_separated_spectrum_needs_no_probe():
    """Distinct eigenvalues: the adaptive block stays at 2 and no confirmation probe is spent, so the
    products are those of one Krylov sequence (a degenerate top takes more, and gets every copy)."""
    a = with_spectrum(torch.linspace(1, 10, 300).tolist())
    plain = fd.lanczos(a, k=10)
    assert plain.converged
    fixed = fd.lanczos(a, k=10, block_size=4)
    assert plain.num_matvecs < fixed.num_matvecs
    deg = fd.lanczos(with_spectrum([10.0] * 5 + torch.linspace(1, 9, 295).tolist()), k=6)
    assert torch.allclose(deg.eigenvalues[:5], torch.full((5,), 10.0, dtype=torch.float64), atol=1e-9)


def test_reported_residuals_are_true_on_a_rank_deficient_degenerate_operator():
    """The collapsed ReLU UFM's GGN (rank 100 of P = 12928, 10-fold eigenvalues): a plain QR used to
    drop a direction that carried part of another column, and the reported residuals (1e-10) hid
    true ones of 1e-5. The returned pairs must satisfy ‖Gv − λv‖ ≤ tol · scale for real."""
    m = fd.theory.optimum_model(10, 20, 64, 4, 5e-3, activation="relu")
    g = fd.ggn(m, decay=False)
    res = fd.lanczos(g, k=20, tol=1e-8)
    v = res.eigenvectors
    true = (g @ v - v * res.eigenvalues).norm(dim=0)
    assert res.converged and float(true.max()) <= 1e-8 * float(res.eigenvalues.abs().max())
    exact = g.eigvalsh(method="gram").flip(0)[:20]
    torch.testing.assert_close(res.eigenvalues, exact, rtol=0, atol=1e-12)


@pytest.mark.parametrize("tol", [1e-8, 1e-4])
def test_mixed_precision_lanczos_meets_the_float64_tolerance(tol):
    """Products in float32 (an operator of a float32 copy), a float64 basis, a float64
    Rayleigh–Ritz step and, where needed, a warm float64 finish: true float64 residuals ≤ tol."""
    import copy

    m = fd.DeepUFM(4, 5, 12, 4, activation="relu", seed=0)
    fd.train(m, 3000, 0.1, progress=False)
    h = fd.hessian(m, decay=True)
    h32 = fd.hessian(copy.deepcopy(m).to(torch.float32), decay=True)
    res = fd.lanczos(h, k=8, tol=tol, low_precision=h32)
    v = res.eigenvectors
    assert res.converged and res.low_precision_matvecs > 0 and v.dtype == torch.float64
    scale = float(res.eigenvalues.abs().max())
    assert float((h @ v - v * res.eigenvalues).norm(dim=0).max()) <= tol * scale
    ref = torch.linalg.eigvalsh(h.to_dense()).flip(0)[:8]
    assert float((res.eigenvalues - ref).abs().max()) <= 10 * tol * scale
    with pytest.raises(ValueError, match="low_precision must be"):
        fd.lanczos(h, k=3, low_precision=torch.eye(3))


@pytest.mark.parametrize("name", SPECTRA)
def test_warm_and_mixed_lanczos_on_known_spectra(name):
    """Warm starts (a perturbed top block) and float32 products with a float64 finish reach the
    requested tolerance in true float64 residuals on clustered and degenerate spectra too."""
    ev = SPECTRA[name]
    a = with_spectrum(ev)
    k, tol = 12, 1e-9
    ref = torch.sort(torch.tensor(ev, dtype=torch.float64), descending=True).values[:k]
    exact = torch.linalg.eigh(a)[1][:, -(k + 2) :]
    nearby = exact + 1e-3 * torch.randn(exact.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    for res in (
        fd.lanczos(DenseOperator(a), k=k, tol=tol, start=nearby),
        fd.lanczos(DenseOperator(a), k=k, tol=tol, low_precision=DenseOperator(a.float())),
    ):
        v = res.eigenvectors
        assert res.converged and v.dtype == torch.float64
        assert float((a @ v - v * res.eigenvalues).norm(dim=0).max()) <= tol * float(ref.abs().max())
        torch.testing.assert_close(res.eigenvalues, ref, rtol=0, atol=1e-8)


def test_a_tolerance_below_the_products_precision_is_clamped_and_a_budget_stop_says_so():
    """float32 products cannot resolve 1e-10: the tolerance becomes 1e-5 with a warning, and the
    run converges in a few products instead of spending its budget; a run stopped by its budget
    warns in one line with the residual it reached."""
    from fastdnc.spectral import ConvergenceWarning, PrecisionWarning

    g = torch.Generator().manual_seed(0)
    q = torch.linalg.qr(torch.randn(400, 400, generator=g, dtype=torch.float64))[0]
    a64 = (q * torch.linspace(0, 1, 400, dtype=torch.float64) ** 4) @ q.T
    op = DenseOperator(a64.float())
    with pytest.warns(PrecisionWarning, match=r"tol=1e-10 is below what float32 products resolve: clamped to 1e-05"):
        res = fd.lanczos(op, k=5, tol=1e-10)
    assert res.converged and res.num_matvecs < 400
    exact = torch.linalg.eigvalsh(a64)[-5:].flip(0)
    assert float((res.eigenvalues.double() - exact).abs().max()) < 1e-5
    with pytest.warns(ConvergenceWarning, match=r"stopped at its budget of 12 products .* residual \d\.\d\de-\d\d"):
        res = fd.lanczos(DenseOperator(a64), k=5, max_matvecs=12)
    assert not res.converged
