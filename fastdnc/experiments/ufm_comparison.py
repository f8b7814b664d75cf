"""The theory-versus-measurement rows of a trained UFM (docs/theory.md §3): the loss, every layer
Hessian's outliers, rank, eigenvector fidelity f, gradient coefficients κ and overlap, Papyan's
split, the weights' singular values and balancedness, and the top of the full Hessian.

A row is ``{"quantity", "theory", "measured", "error", "note", "verdict"}``; ``error`` is relative
(or ``None`` for a count); :func:`explain` sets the verdict and the reason of a row that differs."""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING

import torch

from .. import theory
from ..alignment import balancedness
from ..analysis import LayeredSource, analyze_layer
from ..analysis.report import gap_text
from ..curvature import oracles
from ..curvature.full import hessian
from ..curvature.papyan import papyan_split
from ..models import DeepUFM
from ..spectral import gradient_overlap, lanczos
from ..spectral.exact import DENSE_LIMIT

if TYPE_CHECKING:
    from .ufm import UFMConfig


AGREEMENT_TOL = 1e-3  # a row agrees with the theory when its relative error is at most this


def explain(table: list[dict], final_loss: float, reference_loss: float, what: str) -> list[dict]:
    """Give every row beyond :data:`AGREEMENT_TOL` without a note the reason that the run's loss shows:
    training went below the DNC point's loss (``reference_loss``; that point is then not the
    minimiser and its predictions do not apply), stayed above it (not converged to it), or agrees
    with it (then the gap is not explained by convergence, and the note says so)."""
    gap = (final_loss - reference_loss) / reference_loss
    if gap < -AGREEMENT_TOL:
        reason = f"expected: training found a loss {-gap:.1%} below {what}, so that point is not the minimiser here"
    elif gap > AGREEMENT_TOL:
        reason = f"not converged to {what}: the loss is still {gap:.1%} above it"
    else:
        reason = f"unexplained: the loss agrees with {what} to {abs(gap):.1e}, so this is not a convergence gap"
    for r in table:
        r["verdict"] = verdict(r)
        if r["verdict"] == "differs" and not r["note"]:
            r["note"] = reason
    return table


def verdict(r: dict) -> str:
    """``"agrees"`` (error at most :data:`AGREEMENT_TOL`, or a count equal to the theory's),
    ``"differs"``, or ``"not compared"`` (a count row whose theory is not a number)."""
    if r["error"] is not None:
        return "agrees" if r["error"] <= AGREEMENT_TOL else "differs"
    if isinstance(r["theory"], (int, float)) and isinstance(r["measured"], (int, float)):
        return "agrees" if r["theory"] == r["measured"] else "differs"
    return "not compared"


def row(quantity: str, predicted, measured, error: float | None, note: str = "") -> dict:
    """One comparison; ``error`` is made non-negative (NaN, a failed measurement, stays NaN)."""
    err = None if error is None else abs(float(error))
    return {"quantity": quantity, "theory": predicted, "measured": measured, "error": err, "note": note}


def spectrum_rows(levels: list[theory.SpectrumLevel], ev: torch.Tensor, what: str) -> list[dict]:
    """Measured eigenvalues assigned to predicted levels in sorted order (levels by value)."""
    rows, i = [], 0
    for lv in sorted(levels, key=lambda x: -x.value):
        block = ev[i : i + lv.multiplicity]
        i += lv.multiplicity
        if block.numel() == 0:
            break
        zero = lv.value == 0
        err = float((block - lv.value).abs().max()) / (float(ev.abs().max()) if zero else abs(lv.value))
        rows.append(
            row(
                f"{what}: {lv.origin} (×{lv.multiplicity})",
                lv.value,
                f"{float(block.min()):.6g} … {float(block.max()):.6g}",
                err,
                "error relative to λ_max" if zero else "",
            )
        )
    return rows


def full_spectrum(model: DeepUFM, include_features: bool, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues (descending; all of them when dense, else the top ``count``) and the
    eigenvectors of the top ``count``, from one decomposition."""
    H = hessian(model, include_features=include_features)
    if H.size <= DENSE_LIMIT:
        vals, vecs = H.eigh()
        return vals.flip(0), vecs.flip(1)[:, :count]
    res = lanczos(H, k=min(count, H.size), which="LA")
    return res.eigenvalues, res.eigenvectors


def loss_rows(cfg: UFMConfig, model: DeepUFM, opt: theory.Optimum, ce_point) -> list[dict]:
    """The final loss against the closed form (MSE) or the CE DNC critical point, and the logit scale."""
    k, rows = cfg.num_classes, []
    linear_mse = cfg.activation == "linear" and cfg.loss == "mse"
    final_loss = float(model.loss())
    if cfg.loss == "mse":
        note = ""
        if not linear_mse:
            note = "the best DNC point's loss (Thm 8); " + (
                "training went below it: not a DNC point"
                if final_loss < opt.optimal_loss * (1 - 1e-9)
                else "training is above it"
            )
        rows.append(
            row(
                "loss" if linear_mse else "loss at the disjoint-support DNC point (§3.7)",
                opt.optimal_loss,
                final_loss,
                abs(final_loss - opt.optimal_loss) / opt.optimal_loss,
                note,
            )
        )
    if ce_point is not None:
        z = model.output().detach()
        zbar = (z @ model.targets.T) / cfg.n_per_class  # class means of the logits (K × K)
        alpha = float(zbar.diagonal().mean() - (zbar.sum() - zbar.diagonal().sum()) / (k * (k - 1)))
        rows.append(
            row(
                "loss at the CE DNC critical point (§3.6)",
                ce_point.loss,
                final_loss,
                abs(final_loss - ce_point.loss) / ce_point.loss,
                "training found a lower loss: the DNC point is not the minimiser here"
                if final_loss < ce_point.loss * (1 - 1e-6)
                else "",
            )
        )
        rows.append(
            row("logit scale α (Z = αS⊗1ᵀ)", ce_point.alpha, alpha, abs(alpha - ce_point.alpha) / ce_point.alpha)
        )
    return rows


def _layer_measurements(model: DeepUFM, l: int) -> tuple[dict, torch.Tensor, torch.Tensor, torch.Tensor]:
    """W_l through the package's one analysis path (:func:`fastdnc.analysis.analyze_layer`): its whole
    spectrum (descending), outliers beside the theory's count, rank, f, κ and gradient overlap."""
    k = model.num_classes
    res, _ = analyze_layer(LayeredSource(model), l - 1)
    ev = torch.tensor(res.eigenvalues, dtype=model.dtype)
    info = {
        "top": res.eigenvalues[: k * k],
        "outliers": res.outliers,
        "expected_outliers": res.expected.count,
        "gap_ratio": res.gap_ratio,
        "null_space": res.null_space,
        "f": res.f,
        "kappa": res.kappa,
        "overlap_top_k2": res.overlap_top_k2,
        "rank": int((ev.abs() > 1e-8 * ev.abs().max()).sum()),
    }
    return info, ev, torch.tensor(res.f), torch.tensor(res.kappa)


def layer_rows(cfg: UFMConfig, model: DeepUFM, opt: theory.Optimum, ce_point) -> tuple[list[dict], list[dict]]:
    """Per layer: the K² outliers, rank, f_cc', κ and gradient overlap against docs/theory.md §3.1–3.7."""
    k, rows, layers = cfg.num_classes, [], []
    linear_mse = cfg.activation == "linear" and cfg.loss == "mse"
    eye = torch.eye(k, dtype=torch.bool)
    for l in range(1, cfg.depth + 1):
        info, ev, f, kappa = _layer_measurements(model, l)
        layers.append(info)
        tag = f"W_{l}"
        if linear_mse:
            ell = opt.layer_outliers[l - 1]
            rows.append(
                row(
                    f"{tag}: K² outliers ℓ_l (§3.1)",
                    ell,
                    f"{min(info['top']):.8g} … {max(info['top']):.8g}",
                    max(abs(x - ell) for x in info["top"]) / ell,
                )
            )
            rows.append(row(f"{tag}: rank of the fit Hessian", k * k, info["rank"], None, "numerical, rtol 1e-8"))
        if ce_point is not None and cfg.activation == "linear":
            rows += spectrum_rows(ce_point.layer_spectrum(l), ev, f"{tag} CE levels (§3.6)")
        if cfg.activation == "relu":
            want = info["expected_outliers"]
            rows.append(
                row(
                    f"{tag}: outliers separated from the bulk (§3.7–3.8, δ = 0)",
                    want,
                    info["outliers"],
                    abs(info["outliers"] - want) / want,
                    gap_text(info["gap_ratio"], info["null_space"]),
                )
            )
        if cfg.loss == "mse":
            fmin = float(f.min() if linear_mse else f[eye].min())
            rows.append(row(f"{tag}: f_cc' (min over the {'K²' if linear_mse else 'K'} pairs)", 1.0, fmin, 1 - fmin))
            rows.append(
                row(
                    f"{tag}: κ_cc (mean) / max κ_cc' (§3.3)",
                    f"{1 / k:.6g} / 0",
                    f"{float(kappa[eye].mean()):.6g} / {float(kappa[~eye].max()):.3g}",
                    max(abs(float(kappa[eye].mean()) - 1 / k) * k, float(kappa[~eye].max())),
                )
            )
            rows.append(
                row(
                    f"{tag}: Gur-Ari overlap of g̃ with the top K²",
                    1.0,
                    info["overlap_top_k2"],
                    1 - info["overlap_top_k2"],
                )
            )
    if linear_mse:
        rows += _papyan_rows(model)
    return rows, layers


def _papyan_rows(model: DeepUFM) -> list[dict]:
    """The ranks of Papyan's class / cross-class / within-class split of every layer (§3.2)."""
    k, rows = model.num_classes, []
    for l in range(1, model.depth + 1):
        ranks = papyan_split(model, l).ranks(rtol=1e-6)
        rows.append(
            row(
                f"W_{l}: Papyan ranks class / cross / within (§3.2)",
                f"{k} / {k * (k - 1)} / 0",
                f"{ranks['class']} / {ranks['cross']} / {ranks['within']}",
                None,
                "rtol 1e-6",
            )
        )
    return rows


def weight_rows(cfg: UFMConfig, model: DeepUFM, opt: theory.Optimum, report) -> tuple[list[dict], list, list[float]]:
    """Top-K singular values of every W_l (§3.4) and the balancedness of linear models."""
    k, rows = cfg.num_classes, []
    svs = [r["singular_values"] for r in report.weights]
    if cfg.loss == "mse":
        for l, (sv, s) in enumerate(zip(svs, opt.singular_values), start=1):
            rows.append(
                row(
                    f"W_{l}: top-K singular values s_l (§3.4)",
                    s,
                    f"{min(sv[:k]):.8g} … {max(sv[:k]):.8g}",
                    max(abs(x - s) for x in sv[:k]) / s,
                )
            )
    bal = balancedness(model)
    if cfg.activation == "linear":
        rows.append(
            row("balancedness λ_lW_lᵀW_l = λ_{l−1}W_{l−1}W_{l−1}ᵀ (max rel. residual)", 0.0, max(bal), max(bal))
        )
    return rows, svs, bal


def full_hessian_rows(cfg: UFMConfig, model: DeepUFM, opt: theory.Optimum) -> tuple[list[dict], dict]:
    """The top of the full Hessian (with and without H_1) against §3.5, and the gradient's overlap."""
    rows: list[dict] = []
    full: dict = {}
    k = cfg.num_classes
    for inc in (False, True):
        levels = theory.full_hessian_spectrum(opt, cfg.width, inc)
        ev, vecs = full_spectrum(model, inc, k * k + 8)
        what = "full Hessian" + (" with H_1" if inc else "")
        rows += spectrum_rows(levels, ev, what)
        ov = gradient_overlap(oracles.fit_gradient(model, inc), vecs[:, : k * k])
        rows.append(row(f"{what}: overlap of the fit gradient with the top K²", 1.0, ov, 1 - ov))
        full["with_H1" if inc else "weights"] = {"eigenvalues": ev.tolist(), "levels": [asdict(x) for x in levels]}
    return rows, full
