r"""Measurements of docs/theory.md §5 as training callbacks, logged on the trainer's log-spaced schedule.

:func:`dnc_callback` returns a ``train(callbacks=[...])`` callback that logs, per layer l:

* ``f_diag/l<l>``, ``f_off/l<l>``, ``f_min/l<l>``: the eigenvector fidelities :math:`f_{cc'}` of the
  class-mean pairs against the fit Hessian of W_l (mean over c = c′, mean over c ≠ c′, minimum);
* ``kappa_diag/l<l>``, ``kappa_off/l<l>``: the gradient coefficients :math:`\kappa_{cc'}` (mean over
  c = c′, → 1/K; largest over c ≠ c′, → 0);
* at the steps in ``spectrum_steps``: ``spectrum/l<l>``, every eigenvalue of the fit Hessian of W_l
  (exact: Kronecker eigenvalues for linear MSE, otherwise the explicit Gauss–Newton block).

The per-layer NC metrics, the negative-entry fraction of the pre-activations and the
orthogonal-frame distance come from ``train(collapse=True)``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from ..alignment import eigenvector_fidelity, gradient_coefficients
from ..curvature.layer import layer_hessian
from ..models import LayeredModel


@torch.no_grad()
def layer_spectrum(model: LayeredModel, layer: int) -> torch.Tensor:
    """All eigenvalues (descending) of the fit Hessian of W_layer."""
    return torch.sort(layer_hessian(model, layer).eigvalsh(), descending=True).values


@torch.no_grad()
def alignment_scalars(model: LayeredModel, layer: int) -> dict[str, float]:
    """The f and κ summaries of one layer (see the module docstring)."""
    k = model.num_classes
    eye = torch.eye(k, dtype=torch.bool, device=model.device)
    f = eigenvector_fidelity(model, layer)
    kappa = gradient_coefficients(model, layer)
    return {
        f"f_diag/l{layer}": float(f[eye].mean()),
        f"f_off/l{layer}": float(f[~eye].mean()),
        f"f_min/l{layer}": float(f.min()),
        f"kappa_diag/l{layer}": float(kappa[eye].mean()),
        f"kappa_off/l{layer}": float(kappa[~eye].max()),
    }


def dnc_callback(layers: Sequence[int], spectrum_layers: Sequence[int] = (), spectrum_steps: Iterable[int] = ()):
    """A training callback logging f, κ (every logged step) and layer spectra (at ``spectrum_steps``)."""
    snapshot = {int(s) for s in spectrum_steps}

    def callback(model: LayeredModel, step: int) -> dict:
        out: dict = {}
        for l in layers:
            out.update(alignment_scalars(model, l))
        if step in snapshot:
            for l in spectrum_layers:
                out[f"spectrum/l{l}"] = layer_spectrum(model, l).tolist()
        return out

    return callback
