r"""Measurements of docs/theory.md §5 as training callbacks, logged on the trainer's log-spaced schedule.

:func:`dnc_callback` returns a ``train(callbacks=[...])`` callback that logs, per layer l:

* ``f_same/l<l>``, ``f_cross/l<l>``, ``f_min/l<l>``: the eigenvector fidelities :math:`f_{cc'}` of the
  class-mean pairs against the fit Hessian of W_l (mean over c = c′, mean over c ≠ c′, minimum);
* ``kappa_same/l<l>``, ``kappa_cross_max/l<l>``: the gradient coefficients :math:`\kappa_{cc'}` (mean
  over c = c′, → 1/K; largest over c ≠ c′, → 0);

the keys of :func:`fastdnc.alignment.alignment_summary`. Histories of older runs named them
``f_diag``, ``f_off``, ``kappa_diag`` and ``kappa_off``; :func:`upgrade_history` renames them.
* at the steps in ``spectrum_steps``: ``spectrum/l<l>``, every eigenvalue of the fit Hessian of W_l
  (exact: Kronecker eigenvalues for linear MSE, otherwise the explicit Gauss–Newton block).

The per-layer NC metrics, the negative-entry fraction of the pre-activations and the
orthogonal-frame distance come from ``train(collapse=True)``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from ..alignment import alignment_summary, eigenvector_fidelity, gradient_coefficients
from ..curvature.layer import layer_hessian
from ..models import LayeredModel
from ..training import History

# the keys of runs written before the package's one vocabulary (alignment_summary)
OLD_KEYS = {"f_diag": "f_same", "f_off": "f_cross", "kappa_diag": "kappa_same", "kappa_off": "kappa_cross_max"}


@torch.no_grad()
def layer_spectrum(model: LayeredModel, layer: int) -> torch.Tensor:
    """All eigenvalues (descending) of the fit Hessian of W_layer."""
    return torch.sort(layer_hessian(model, layer).eigvalsh(), descending=True).values


@torch.no_grad()
def alignment_scalars(model: LayeredModel, layer: int) -> dict[str, float]:
    """The f and κ summaries of one layer (see the module docstring)."""
    summary = alignment_summary(eigenvector_fidelity(model, layer), gradient_coefficients(model, layer))
    return {f"{key}/l{layer}": value for key, value in summary.items()}


def upgrade_history(history: History) -> History:
    """Rename an older run's alignment keys (:data:`OLD_KEYS`) in place; where a resumed run logged
    both names, the two columns are merged (each step has one of them)."""
    for key in [k for k in history.keys() if k.split("/")[0] in OLD_KEYS]:
        base, _, layer = key.partition("/")
        new, old = f"{OLD_KEYS[base]}/{layer}", history.records.pop(key)
        column = history.records.setdefault(new, [None] * len(history))
        history.records[new] = [o if n is None else n for n, o in zip(column, old, strict=True)]
    return history


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
