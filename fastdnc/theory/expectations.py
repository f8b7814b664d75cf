r"""How many outliers the theory expects in a layer Hessian at deep neural collapse, by loss, activation
and the layer's position (docs/theory.md §3.1, §3.6, §3.7; the table of docs/theory.md §3.8).

At a DNC point the fit-term layer Hessian has rank

==========  ==================  =============================================
loss        activation          outliers (layer l < L / the last layer L)
==========  ==================  =============================================
MSE         linear              K² / K²            (§3.1: μ_c^{(l+1)} ⊗ μ_{c'}^{(l)})
MSE         ReLU (δ = 0)        K / K²             (§3.7: only c = c′ survives below the top)
CE          linear              (K−1)² / (K−1)²    (§3.6: class means span K−1 dimensions)
CE          ReLU (δ = 0)        K / K(K−1)         (each class's softmax Hessian has rank K−1)
==========  ==================  =============================================

The CE / ReLU row follows from the same structure as §3.6–3.7 (per-class terms
:math:`(A_c^\top\rho_cA_c)\otimes\mu_c\mu_c^\top` with orthogonal, disjoint-support means and
:math:`\operatorname{rank}\rho_c = K-1`); ``tests/theory/test_expectations.py`` checks every row on
constructed DNC points. Away from collapse (real networks in training) the counts are what to
compare with, not what to expect.
"""

from __future__ import annotations

from dataclasses import dataclass

LOSSES = ("mse", "ce")
ACTIVATIONS = ("linear", "relu")


@dataclass(frozen=True)
class Expectation:
    """``count`` outliers expected (``None`` where the theory says nothing) and the reason, in words."""

    count: int | None
    reason: str

    def to_dict(self) -> dict:
        return {"count": self.count, "reason": self.reason}


def expected_outliers(loss: str | None, activation: str | None, last: bool, num_classes: int) -> Expectation:
    """The outliers of a layer Hessian at DNC (see the module table); ``last``: the layer that produces
    the output."""
    k = num_classes
    if loss not in LOSSES or activation not in ACTIVATIONS:
        what = f"loss {loss!r}" if loss not in LOSSES else f"activation {activation!r}"
        return Expectation(
            None, f"no DNC prediction for {what} (the theory covers MSE / CE with linear or ReLU layers)"
        )
    if loss == "mse":
        if activation == "linear" or last:
            return Expectation(k * k, "K² (MSE: the class-mean pairs μ_c ⊗ μ_c', §3.1, §3.7)")
        return Expectation(k, "K (MSE, ReLU below the last layer: only c = c' survives, §3.7)")
    if activation == "linear":
        return Expectation((k - 1) ** 2, "(K−1)² (CE, linear: the class means span K−1 dimensions, §3.6)")
    if last:
        return Expectation(
            k * (k - 1), "K(K−1) (CE, ReLU, last layer: each class's softmax Hessian has rank K−1, §3.8)"
        )
    return Expectation(k, "K (CE, ReLU below the last layer: one direction per class, §3.8)")
