"""fastdnc: curvature, spectra and deep neural collapse of deep unconstrained feature models.

Public API (re-exports only, imported on first use: ``import fastdnc`` and ``fastdnc --help`` do
not import torch). Conventions: layers are numbered as in the paper (``layer=l`` is
``W_l = model.weights[l-1]``), flat vectors are the row-major vec of each block, concatenated in
the order ``W_1..W_L`` (biases after their weight, for MLP heads), then ``H_1``.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# name -> (submodule, attribute; None for the submodule itself)
_EXPORTS: dict[str, tuple[str, str | None]] = {
    "Analysis": ("analysis", "Analysis"),
    "BatchedGaussNewton": ("curvature", "BatchedGaussNewton"),
    "Tracker": ("analysis", "Tracker"),
    "analysis": ("analysis", None),
    "analyze": ("analysis", "analyze"),
    "alignment": ("alignment", None),
    "CollapseReport": ("collapse", "CollapseReport"),
    "CurvatureOperator": ("curvature", "CurvatureOperator"),
    "Factor": ("curvature", "Factor"),
    "GGNOperator": ("curvature", "GGNOperator"),
    "HessianOperator": ("curvature", "HessianOperator"),
    "KroneckerOperator": ("curvature", "KroneckerOperator"),
    "KroneckerSum": ("curvature", "KroneckerSum"),
    "curvature": ("curvature", None),
    "feature_hessian": ("curvature", "feature_hessian"),
    "ggn": ("curvature", "ggn"),
    "hessian": ("curvature", "hessian"),
    "kernels": ("kernels", None),
    "layer_hessian": ("curvature", "layer_hessian"),
    "DeepUFM": ("models", "DeepUFM"),
    "History": ("training", "History"),
    "MLPHead": ("models", "MLPHead"),
    "NonFiniteError": ("training", "NonFiniteError"),
    "collapse_metrics": ("collapse", "collapse_metrics"),
    "load_checkpoint": ("training", "load_checkpoint"),
    "theory": ("theory", None),
    "train": ("training", "train"),
    "gradient_overlap": ("spectral", "gradient_overlap"),
    "hutchinson_trace": ("spectral", "hutchinson_trace"),
    "hutchpp_trace": ("spectral", "hutchpp_trace"),
    "lanczos": ("spectral", "lanczos"),
    "top_eigenpairs": ("spectral", "top_eigenpairs"),
    "outliers": ("spectral", "outliers"),
    "spectral": ("spectral", None),
    "spectral_density": ("spectral", "spectral_density"),
    "subspace_overlap": ("spectral", "subspace_overlap"),
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'fastdnc' has no attribute {name!r}")
    module, attr = _EXPORTS[name]
    value = importlib.import_module(f".{module}", __name__)
    value = value if attr is None else getattr(value, attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
