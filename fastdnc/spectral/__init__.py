"""Spectral toolkit: Lanczos (cold or warm-started), SLQ density, trace estimators, outliers and overlaps."""

from .density import SpectralDensity, spectral_density
from .lanczos import ConvergenceWarning, LanczosResult, PrecisionWarning, lanczos
from .overlap import Outliers, gradient_overlap, outliers, subspace_overlap
from .top import top_eigenpairs
from .trace import TraceEstimate, hutchinson_trace, hutchpp_trace

__all__ = [
    "ConvergenceWarning",
    "LanczosResult",
    "Outliers",
    "PrecisionWarning",
    "SpectralDensity",
    "TraceEstimate",
    "gradient_overlap",
    "hutchinson_trace",
    "hutchpp_trace",
    "lanczos",
    "outliers",
    "spectral_density",
    "subspace_overlap",
    "top_eigenpairs",
]
