r"""Closed forms of the deep UFM at deep neural collapse (docs/theory.md §3), against which every
measurement of :mod:`fastdnc.experiments` is compared.

Modules: :mod:`.optimum` (the global optimum of the deep linear MSE UFM, its derivation, λ* and a
UFM placed at it, §3.0), :mod:`.spectra` (predicted Hessian spectra, §3.5 and §3.7), :mod:`.ce`
(the cross-entropy DNC critical point, §3.6), :mod:`.expectations` (outlier counts of layer
Hessians at DNC by loss, activation and position, §3.8).
"""

from .ce import CECriticalPoint, ce_critical_model, ce_critical_point
from .expectations import Expectation, expected_outliers
from .optimum import Optimum, optimum, optimum_model
from .spectra import SpectrumLevel, full_hessian_spectrum, relu_layer_outliers

__all__ = [
    "CECriticalPoint",
    "Expectation",
    "Optimum",
    "SpectrumLevel",
    "ce_critical_model",
    "ce_critical_point",
    "expected_outliers",
    "full_hessian_spectrum",
    "optimum",
    "optimum_model",
    "relu_layer_outliers",
]
