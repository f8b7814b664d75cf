r"""Closed forms of the deep UFM at deep neural collapse (theory.md §3).

Modules: :mod:`.optimum` (the deep linear MSE optimum, §3.0), :mod:`.spectra` (predicted Hessian
spectra, §3.5 and §3.7), :mod:`.ce` (the cross-entropy DNC critical point, §3.6).


Global optimum of the deep linear UFM with MSE loss. At every critical point consecutive factors
align and share singular values; at the global minimiser the output is :math:`Z^* = \gamma Y`
where :math:`\gamma` is the **largest** root in :math:`((L-1)/L, 1)` of

.. math::

    \gamma^{L-1}(1-\gamma)^{L+1} = c, \qquad c = K^L N \lambda_H \prod_{l=1}^L \lambda_l
    \quad (= K^{L+1} n \lambda^{L+1} \text{ for one } \lambda).

Derivation (all blocks, per-block λ): with K equal singular values :math:`s_l` of :math:`W_l` and
class means of norm :math:`m_1` in :math:`H_1`, the fit is :math:`(1-\gamma)^2/2` with
:math:`\gamma = m_1\prod_l s_l`; by AM–GM the regulariser is minimised when all
:math:`\lambda_l K s_l^2 = \lambda_H N m_1^2 = t`, giving :math:`t = \gamma(1-\gamma)` at the
stationary point. Hence

* :math:`s_l^2 = \gamma(1-\gamma)/(K\lambda_l)`, :math:`\|\mu^{(1)}\|^2 = \gamma(1-\gamma)/(N\lambda_H)`,
  :math:`\|\mu^{(l+1)}\| = s_l\|\mu^{(l)}\|` (and :math:`\|\mu^{(L+1)}\| = \gamma`);
* optimal loss :math:`(1-\gamma)^2/2 + (L+1)\gamma(1-\gamma)/2`; the zero solution has loss 1/2;
* the non-zero optimum beats zero iff :math:`\gamma > (L-1)/L`, i.e. iff
  :math:`\lambda < \lambda^* = \big((L-1)^{L-1}/(L^{2L}K^{L+1}n)\big)^{1/(L+1)}` for one λ.
  With per-block λ the same holds for :math:`c < c^* = (L-1)^{L-1}/L^{2L}`;
  ``threshold_scale = (c^*/c)^{1/(L+1)}`` is the factor by which all decays can grow before
  the optimum collapses to zero.
"""

from .ce import CECriticalPoint, ce_critical_model, ce_critical_point
from .optimum import Optimum, optimum, optimum_model
from .spectra import SpectrumLevel, full_hessian_spectrum, relu_layer_outliers

__all__ = [
    "CECriticalPoint",
    "Optimum",
    "SpectrumLevel",
    "ce_critical_model",
    "ce_critical_point",
    "full_hessian_spectrum",
    "optimum",
    "optimum_model",
    "relu_layer_outliers",
]
