"""fastdnc: curvature, spectra and deep neural collapse of deep unconstrained feature models.

Public API (re-exports only). Conventions: layers are numbered as in the paper (``layer=l`` is
``W_l = model.weights[l-1]``), flat vectors are the row-major vec of each block, concatenated in
the order ``W_1..W_L`` (biases after their weight, for MLP heads), then ``H_1``.
"""

from . import alignment, analysis, curvature, kernels, spectral, theory
from .analysis import Analysis, Tracker, analyze
from .collapse import CollapseReport, collapse_metrics
from .curvature import (
    BatchedGaussNewton,
    CurvatureOperator,
    Factor,
    GGNOperator,
    HessianOperator,
    KroneckerOperator,
    KroneckerSum,
    feature_hessian,
    ggn,
    hessian,
    layer_hessian,
)
from .models import DeepUFM, MLPHead
from .spectral import (
    gradient_overlap,
    hutchinson_trace,
    hutchpp_trace,
    lanczos,
    outliers,
    spectral_density,
    subspace_overlap,
    top_eigenpairs,
)
from .train import History, NonFiniteError, load_checkpoint, train

__all__ = [
    "Analysis",
    "BatchedGaussNewton",
    "Tracker",
    "analysis",
    "analyze",
    "alignment",
    "CollapseReport",
    "CurvatureOperator",
    "Factor",
    "GGNOperator",
    "HessianOperator",
    "KroneckerOperator",
    "KroneckerSum",
    "curvature",
    "feature_hessian",
    "ggn",
    "hessian",
    "kernels",
    "layer_hessian",
    "DeepUFM",
    "History",
    "MLPHead",
    "NonFiniteError",
    "collapse_metrics",
    "load_checkpoint",
    "theory",
    "train",
    "gradient_overlap",
    "hutchinson_trace",
    "hutchpp_trace",
    "lanczos",
    "top_eigenpairs",
    "outliers",
    "spectral",
    "spectral_density",
    "subspace_overlap",
]
__version__ = "0.1.0"
