"""Pure-torch reference implementations of every kernel (same signatures as the launchers).

They run on any device and dtype, define what the kernels compute, and are the baseline the
compiled kernels are tested and benchmarked against.
"""

from __future__ import annotations

import torch


def two_sided_product(output_factor: torch.Tensor, v: torch.Tensor, input_factor: torch.Tensor) -> torch.Tensor:
    """Batched two-sided product :math:`Y_j = O\\,V_j\\,I`.

    With the row-major vec, :math:`(O \\otimes I)\\,\\mathrm{vec}(V) = \\mathrm{vec}(O V I^\\top)`, so for
    symmetric factors this is the product of the Kronecker operator ``output_factor ⊗ input_factor``
    with each of the ``batch`` matrices ``V_j``.

    Args:
        output_factor: O, (p × p), acting on the output side (rows of V).
        v: (batch, p, q).
        input_factor: I, (q × q), acting on the input side (columns of V).

    Returns:
        (batch, p, q).
    """
    return torch.matmul(torch.matmul(output_factor, v), input_factor)
