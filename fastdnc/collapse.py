r"""Neural-collapse (NC) and deep-neural-collapse (DNC) metrics, per layer.

Conventions (pinned here, once, and tested; other codes differ on each of them):

* Features are matrices :math:`h \in \mathbb{R}^{d \times N}` whose **columns are samples**. The
  features of layer :math:`l` are its input :math:`\tilde h_l` (post-activation; :math:`\tilde h_1
  = H_1`); "layer L+1" is the output :math:`Z`.
* Class means :math:`\mu_c` are averages over the samples of class c; :math:`\bar H = [\mu_1..\mu_K]`
  (uncentred). The global mean :math:`\mu_G` is the **mean of the class means** (equal to the
  sample mean for balanced classes, and not biased by class sizes otherwise).
* :math:`\Sigma_W = \frac1N\sum_i (h_i-\mu_{y_i})(h_i-\mu_{y_i})^\top`,
  :math:`\Sigma_B = \frac1K\sum_c (\mu_c-\mu_G)(\mu_c-\mu_G)^\top`.
* **NC1** :math:`= \operatorname{tr}(\Sigma_W\Sigma_B^\dagger)/K` (**with** the 1/K of Papyan,
  Han & Donoho; pseudo-inverse with relative cut-off ``pinv_rtol``; rounding below 0 is clipped). ``nc1_trace_ratio`` is
  :math:`\operatorname{tr}\Sigma_W/\operatorname{tr}\Sigma_B`.
* **Orthogonal-frame distance** (the DNC geometry of MSE UFMs and of ReLU layers):
  :math:`\|\bar H^\top\bar H/\|\bar H^\top\bar H\|_F - I_K/\sqrt K\|_F` on **uncentred** means.
* **Simplex-ETF distance** (the CE / NC2 geometry): the same with the centred means
  :math:`\tilde M = \bar H - \mu_G 1^\top` and the target :math:`(I_K - 11^\top/K)/\sqrt{K-1}`.
* **Equinorm**: the coefficient of variation (std/mean, population std) of the centred mean norms
  :math:`\|\mu_c-\mu_G\|`; ``equinorm_uncentred`` uses :math:`\|\mu_c\|`.
* **Equiangularity**: the population std of the off-diagonal cosines of the centred means;
  ``max_angle`` is :math:`\operatorname{avg}_{c\ne c'}|\cos + 1/(K-1)|` (Papyan's second measure).
* **DNC3** (weights aligned with the class means) for :math:`W_l`:
  :math:`1 - \|W_l P_l\|_F^2/\|W_l\|_F^2`, with :math:`P_l` the orthogonal projector onto the
  span of the uncentred input class means :math:`\mu_c^{(l)}`; 0 iff every row of :math:`W_l`
  lies in that span. **NC3** self-duality of the last layer:
  :math:`\|W_L^\top/\|W_L\|_F - \bar H_L/\|\bar H_L\|_F\|_F^2` with uncentred means (the MSE UFM
  optimum :math:`W_L \propto \bar H_L^\top`) and ``nc3_centred`` with centred means (Papyan).
* **NCC agreement** (NC4 at ``layer = L``): the fraction of samples whose nearest class mean (in
  Euclidean distance) at that layer is the class the network predicts (argmax of Z).
* **Negative fraction**: :math:`\#\{(H_l)_{ij} < -\tau\}/(dN)` with :math:`\tau = 10^{-6}` on the
  **pre-activation** :math:`H_l` of the layer (:math:`H_1` for layer 1, Z for layer L+1).
* **Numerical rank**: the number of singular values :math:`> \text{rank\_rtol}\cdot\sigma_{\max}`
  (default :math:`10^{-3}`, loose on purpose: trained bulk directions decay like
  :math:`e^{-\eta\lambda t}`, not to machine precision).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ._comm import all_reduce_
from .models import LayeredModel, class_means


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
    out: dict[str, float | list[float]] = {
        "nc1": max(0.0, float(torch.trace(sigma_w @ torch.linalg.pinv(sigma_b, rtol=pinv_rtol, hermitian=True)) / k)),
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

    def to_dict(self) -> dict:
        return {"layers": self.layers, "weights": self.weights, "nc3": self.nc3, "nc3_centred": self.nc3_centred}

    def scalars(self) -> dict[str, float]:
        """Flat ``{"<metric>/l<l>": value}`` of the scalar metrics (for histories and plots)."""
        flat: dict[str, float] = {"nc3": self.nc3, "nc3_centred": self.nc3_centred}
        for l, row in enumerate(self.layers, start=1):
            flat.update({f"{k}/l{l}": float(v) for k, v in row.items() if not isinstance(v, list)})
        for l, row in enumerate(self.weights, start=1):
            flat.update({f"weight_{k}/l{l}": float(v) for k, v in row.items() if not isinstance(v, list)})
        return flat


@torch.no_grad()
def collapse_metrics(model: LayeredModel, rank_rtol: float = 1e-3, pinv_rtol: float = 1e-10) -> CollapseReport:
    """All NC/DNC metrics of ``model`` at every layer (see the module docstring).

    >>> import fastdnc as fd
    >>> rep = fd.collapse_metrics(fd.DeepUFM(4, 5, 12, 3))
    >>> len(rep.layers), len(rep.weights), rep.layers[0]["nc1"] > 0.1
    (4, 3, True)
    """
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
    w_last = model.weights[-1]
    m_last = class_means(feats[-2], model.targets)
    for attr, m in (("nc3", m_last), ("nc3_centred", m_last - m_last.mean(dim=1, keepdim=True))):
        wn, mn = torch.linalg.matrix_norm(w_last), torch.linalg.matrix_norm(m)
        if wn > 0 and mn > 0:
            setattr(report, attr, float(torch.linalg.matrix_norm(w_last.T / wn - m / mn) ** 2))
    return report


@torch.no_grad()
def streaming_feature_metrics(
    batches,
    num_classes: int,
    *,
    rank_rtol: float = 1e-3,
    pinv_rtol: float = 1e-10,
    negative_tol: float = 1e-6,
    reduce=None,
) -> dict[str, float | list[float]]:
    """:func:`feature_metrics` of a data set seen in batches, never held in memory at once.

    ``batches`` is a callable returning a fresh iterable of ``(h, labels[, predictions[,
    preactivation]])`` with h (d × b): it is called twice. Pass 1 accumulates the per-class counts
    and sums, pass 2 the within-class scatter around the means (numerically stable, unlike
    second moments minus squared means), the NCC agreement and the negative count. ``reduce``
    sums the accumulators over processes (default: :func:`fastdnc.distributed.all_reduce_` when a
    process group is running), so each rank passes its own shard and all get the same result.
    """
    if reduce is None:
        reduce = all_reduce_
    counts = sums = None
    for batch in batches():
        h, labels = batch[0].to(torch.float64), batch[1]
        if sums is None:
            sums = torch.zeros(h.shape[0], num_classes, dtype=torch.float64, device=h.device)
            counts = torch.zeros(num_classes, dtype=torch.float64, device=h.device)
        sums.index_add_(1, labels, h)
        counts += torch.bincount(labels, minlength=num_classes).to(counts)
    if sums is None:
        raise ValueError("streaming_feature_metrics: the batches were empty")
    reduce(sums, "reducing class sums")
    reduce(counts, "reducing class counts")
    if counts is None or sums is None:
        raise ValueError("streaming_feature_metrics: the batches were empty")
    if bool((counts == 0).any()):
        raise ValueError(f"class(es) {torch.nonzero(torch.eq(counts, 0)).flatten().tolist()} have no samples")
    means = sums / counts
    scatter = torch.zeros(means.shape[0], means.shape[0], dtype=torch.float64, device=means.device)
    tallies = torch.zeros(4, dtype=torch.float64, device=means.device)  # ncc hits, ncc total, negatives, entries
    for batch in batches():
        h, labels = batch[0].to(torch.float64), batch[1]
        within = h - means[:, labels]
        scatter.addmm_(within, within.T)
        if len(batch) > 2 and batch[2] is not None:
            dist = torch.cdist(h.T.unsqueeze(0), means.T.unsqueeze(0)).squeeze(0)
            tallies[0] += float((dist.argmin(dim=1) == batch[2]).sum())
            tallies[1] += h.shape[1]
        if len(batch) > 3 and batch[3] is not None:
            tallies[2] += float((batch[3] < -negative_tol).sum())
            tallies[3] += batch[3].numel()
    reduce(scatter, "reducing the within-class scatter")
    reduce(tallies, "reducing the NCC and negative counts")
    out = _moment_metrics(means, scatter / counts.sum(), pinv_rtol)
    sv = torch.linalg.svdvals(means)
    out["mean_singular_values"] = sv.tolist()
    out["mean_rank"] = numerical_rank(sv, rank_rtol)
    if tallies[1] > 0:
        out["ncc_agreement"] = float(tallies[0] / tallies[1])
    if tallies[3] > 0:
        out["negative_fraction"] = float(tallies[2] / tallies[3])
    return out
