r"""Neural-collapse (NC) and deep-neural-collapse (DNC) metrics, per layer.

Modules: :mod:`.metrics` (features in memory, the report, ``fd.collapse_metrics``), :mod:`.streaming`
(two passes over batches, reducible over ranks), :mod:`.modules` (any ``nn.Module`` through hooks).

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
  Han & Donoho; pseudo-inverse with relative cut-off ``pinv_rtol``; rounding below 0 is clipped). ``nc1_rank`` is the number of
  directions of :math:`\Sigma_B` that the pseudo-inverse keeps: where it drops during training, NC1
  jumps by the within-class variance along the lost direction (not by collapse); ``nc1_trace_ratio``
  is :math:`\operatorname{tr}\Sigma_W/\operatorname{tr}\Sigma_B`, which has no such jump.
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

from ..models import LayeredModel
from .metrics import (
    CollapseReport,
    feature_metrics,
    layered_collapse_metrics,
    numerical_rank,
    weight_metrics,
)
from .modules import module_collapse_metrics, module_feature_statistics
from .streaming import FeatureStatistics, streaming_feature_metrics

__all__ = [
    "CollapseReport",
    "FeatureStatistics",
    "collapse_metrics",
    "feature_metrics",
    "module_collapse_metrics",
    "module_feature_statistics",
    "numerical_rank",
    "streaming_feature_metrics",
    "weight_metrics",
]


def collapse_metrics(
    model,
    data=None,
    layers=None,
    *,
    num_classes: int | None = None,
    rank_rtol: float = 1e-3,
    pinv_rtol: float = 1e-10,
) -> CollapseReport:
    """All NC/DNC metrics of ``model`` at every layer (see the module docstring).

    A :class:`~fastdnc.models.DeepUFM` / :class:`~fastdnc.models.MLPHead` holds its data:
    ``collapse_metrics(model)``. Any other classifier: ``collapse_metrics(net, (X, y), layers=[...])``
    measures the features entering each layer and the output (:func:`module_collapse_metrics`).

    >>> import fastdnc as fd
    >>> rep = fd.collapse_metrics(fd.DeepUFM(4, 5, 12, 3))
    >>> len(rep.layers), len(rep.weights), rep.layers[0]["nc1"] > 0.1
    (4, 3, True)
    """
    if not isinstance(model, LayeredModel):
        if data is None:
            raise ValueError(
                f"collapse_metrics of a {type(model).__name__} needs its data: "
                "fd.collapse_metrics(model, (X, y), layers=[...])"
            )
        return module_collapse_metrics(
            model, data, layers, num_classes=num_classes, rank_rtol=rank_rtol, pinv_rtol=pinv_rtol
        )
    if data is not None or layers is not None:
        raise ValueError(f"a {type(model).__name__} holds its own data: call fd.collapse_metrics(model)")
    return layered_collapse_metrics(model, rank_rtol, pinv_rtol)
