"""The NC / DNC metrics of features held in memory and the per-layer :class:`CollapseReport` of a
DeepUFM or MLPHead (the conventions are pinned in :mod:`fastdnc.collapse`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ..models import LayeredModel, class_means


def _offdiag(x: torch.Tensor) -> torch.Tensor:
    k = x.shape[0]
    return x[~torch.eye(k, dtype=torch.bool, device=x.device)]


def _normalised_gram_distance(means: torch.Tensor, target: torch.Tensor) -> float:
    gram = means.T @ means
    norm = torch.linalg.matrix_norm(gram)
    if norm == 0:
        return math.nan
    return float(torch.linalg.matrix_norm(gram / norm - target))


def _cv(x: torch.Tensor) -> float:
    m = x.mean()
    return float(x.std(unbiased=False) / m) if m > 0 else math.nan


def numerical_rank(singular_values: torch.Tensor, rtol: float) -> int:
    """Number of singular values above ``rtol`` times the largest."""
    if singular_values.numel() == 0 or singular_values[0] == 0:
        return 0
    return int((singular_values > rtol * singular_values[0]).sum())


def _moment_metrics(means: torch.Tensor, sigma_w: torch.Tensor, pinv_rtol: float) -> dict[str, float | list[float]]:
    """The metrics that need only the class means (d × K) and Σ_W (shared by the in-memory and the
    streaming versions)."""
    k = means.shape[1]
    mu_g = means.mean(dim=1, keepdim=True)
    centred = means - mu_g
    sigma_b = centred @ centred.T / k
    eye = torch.eye(k, dtype=means.dtype, device=means.device)
    between = torch.linalg.eigvalsh(sigma_b)
    out: dict[str, float | list[float]] = {
        "nc1": max(0.0, float(torch.trace(sigma_w @ torch.linalg.pinv(sigma_b, rtol=pinv_rtol, hermitian=True)) / k)),
        # the directions of Σ_B that its pseudo-inverse keeps: NC1 jumps where this drops
        "nc1_rank": int((between > pinv_rtol * between.max().clamp_min(0)).sum()),
        "nc1_trace_ratio": float(torch.trace(sigma_w) / torch.trace(sigma_b)),
        "orthogonal_frame_distance": _normalised_gram_distance(means, eye / math.sqrt(k)),
        "etf_distance": _normalised_gram_distance(centred, (eye - 1.0 / k) / math.sqrt(k - 1)),
    }
    norms = torch.linalg.vector_norm(centred, dim=0)
    out["equinorm"] = _cv(norms)
    out["equinorm_uncentred"] = _cv(torch.linalg.vector_norm(means, dim=0))
    unit = centred / norms.clamp_min(torch.finfo(means.dtype).tiny)
    cos = _offdiag(unit.T @ unit)
    out["equiangularity"] = float(cos.std(unbiased=False))
    out["max_angle"] = float((cos + 1.0 / (k - 1)).abs().mean())
    return out


@torch.no_grad()
def feature_metrics(
    h: torch.Tensor,
    targets: torch.Tensor,
    *,
    predictions: torch.Tensor | None = None,
    preactivation: torch.Tensor | None = None,
    rank_rtol: float = 1e-3,
    pinv_rtol: float = 1e-10,
    negative_tol: float = 1e-6,
) -> dict[str, float | list[float]]:
    """NC metrics of one feature matrix ``h`` (d × N) with one-hot ``targets`` (K × N).

    ``predictions`` (N,) enables the NCC agreement; ``preactivation`` the negative fraction.
    See the module docstring for every definition.
    """
    k, n = targets.shape
    means = class_means(h, targets)  # d × K
    labels = targets.argmax(dim=0)
    within = h - means[:, labels]
    out = _moment_metrics(means, within @ within.T / n, pinv_rtol)
    sv = torch.linalg.svdvals(means)
    out["mean_singular_values"] = sv.tolist()
    out["mean_rank"] = numerical_rank(sv, rank_rtol)
    if predictions is not None:
        dist = torch.cdist(h.T.unsqueeze(0), means.T.unsqueeze(0)).squeeze(0)  # N × K
        out["ncc_agreement"] = float((dist.argmin(dim=1) == predictions).double().mean())
    if preactivation is not None:
        out["negative_fraction"] = float((preactivation < -negative_tol).double().mean())
    return out


@torch.no_grad()
def weight_metrics(weight: torch.Tensor, input_means: torch.Tensor, rank_rtol: float = 1e-3) -> dict:
    """Singular values, numerical rank and DNC3 alignment of one weight ``W_l`` (d_out × d_in)
    with the uncentred class means of its input (d_in × K)."""
    sv = torch.linalg.svdvals(weight)
    q, r = torch.linalg.qr(input_means)
    keep = r.diagonal().abs() > 1e-12 * r.diagonal().abs().max().clamp_min(1e-300)
    q = q[:, keep]
    total = weight.square().sum()
    captured = (weight @ q).square().sum()
    return {
        "singular_values": sv.tolist(),
        "rank": numerical_rank(sv, rank_rtol),
        "dnc3": float(1 - captured / total) if total > 0 else math.nan,
    }


@dataclass
class CollapseReport:
    """Per-layer metrics: ``layers[l-1]`` for the input of layer l (l = 1..L+1, L+1 = output Z),
    ``weights[l-1]`` for W_l, and the last-layer NC3 values."""

    layers: list[dict] = field(default_factory=list)
    weights: list[dict] = field(default_factory=list)
    nc3: float = math.nan
    nc3_centred: float = math.nan
    names: list[str] | None = None  # the modules whose inputs ``layers`` describe (any nn.Module)

    def to_dict(self) -> dict:
        out = {"layers": self.layers, "weights": self.weights, "nc3": self.nc3, "nc3_centred": self.nc3_centred}
        if self.names is not None:
            out["names"] = self.names
        return out

    def scalars(self) -> dict[str, float]:
        """Flat ``{"<metric>/l<l>": value}`` of the scalar metrics (for histories and plots)."""
        flat: dict[str, float] = {"nc3": self.nc3, "nc3_centred": self.nc3_centred}
        for l, row in enumerate(self.layers, start=1):
            flat.update({f"{k}/l{l}": float(v) for k, v in row.items() if not isinstance(v, list)})
        for l, row in enumerate(self.weights, start=1):
            flat.update({f"weight_{k}/l{l}": float(v) for k, v in row.items() if not isinstance(v, list)})
        return flat


@torch.no_grad()
def layered_collapse_metrics(model: LayeredModel, rank_rtol: float, pinv_rtol: float) -> CollapseReport:
    model.check()
    st = model.states()
    predictions = st.output.argmax(dim=0)
    report = CollapseReport()
    feats = st.inputs + [st.output]
    for l, h in enumerate(feats, start=1):
        report.layers.append(
            feature_metrics(
                h,
                model.targets,
                predictions=predictions,
                preactivation=st.preactivations[l - 1],
                rank_rtol=rank_rtol,
                pinv_rtol=pinv_rtol,
            )
        )
    for l, w in enumerate(model.weights, start=1):
        report.weights.append(weight_metrics(w, class_means(feats[l - 1], model.targets), rank_rtol))
    _set_nc3(report, model.weights[-1], class_means(feats[-2], model.targets))
    return report


def _set_nc3(report: CollapseReport, w_last: torch.Tensor, m_last: torch.Tensor) -> None:
    """NC3 self-duality of the last layer with its uncentred and centred input class means."""
    for attr, m in (("nc3", m_last), ("nc3_centred", m_last - m_last.mean(dim=1, keepdim=True))):
        wn, mn = torch.linalg.matrix_norm(w_last), torch.linalg.matrix_norm(m)
        if wn > 0 and mn > 0:
            setattr(report, attr, float(torch.linalg.matrix_norm(w_last.T / wn - m / mn) ** 2))
