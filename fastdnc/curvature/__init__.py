"""Curvature operators (one shared base), their kernels' dispatch, and autograd oracles."""

from . import oracles
from .eigenvectors import DenseEigenvectors, EigenvectorView, eigenvector_view
from .full import LayeredHessian, LinearMSEHessian, ggn, hessian
from .gauss_newton import BatchedGaussNewton
from .generic import (
    GGNOperator,
    HessianOperator,
    MissingDerivativeError,
    NonDeterministicError,
)
from .kronecker import Factor, KroneckerEigenvectors, KroneckerOperator, KroneckerSum
from .layer import feature_hessian, layer_hessian
from .low_rank import LowRankOperator
from .operator import CurvatureOperator, DenseOperator
from .papyan import PapyanSplit, papyan_split

__all__ = [
    "BatchedGaussNewton",
    "CurvatureOperator",
    "DenseEigenvectors",
    "DenseOperator",
    "EigenvectorView",
    "Factor",
    "KroneckerEigenvectors",
    "KroneckerOperator",
    "KroneckerSum",
    "GGNOperator",
    "HessianOperator",
    "LayeredHessian",
    "MissingDerivativeError",
    "NonDeterministicError",
    "LinearMSEHessian",
    "LowRankOperator",
    "PapyanSplit",
    "papyan_split",
    "eigenvector_view",
    "feature_hessian",
    "ggn",
    "hessian",
    "layer_hessian",
    "oracles",
]
