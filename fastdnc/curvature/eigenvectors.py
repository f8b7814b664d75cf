r"""One typed view of exact eigenvectors, whichever route computed them.

``op.eigh()`` returns the eigenvalues in ascending order and the eigenvectors in that order: lazy
:class:`~fastdnc.curvature.kronecker.KroneckerEigenvectors` (:math:`u_a \otimes v_b` from the two
factors), lazy :class:`~fastdnc.curvature.gram.GramEigenvectors` (from the sample-space Gram, only
for the non-null eigenvalues) or a dense (P × P) tensor. :func:`eigenvector_view` puts each behind
the same :class:`EigenvectorView`: ``top(k)`` (P × k, largest eigenvalue first), ``columns(idx)``
(positions in the ascending order), ``vecs[:, idx]``, ``rank`` (how many of the last eigenvalues
have vectors) and ``route`` (how they were computed).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch


@runtime_checkable
class EigenvectorView(Protocol):
    route: str
    rank: int
    shape: tuple[int, int]

    def top(self, k: int) -> torch.Tensor:
        """(P, k): the eigenvectors of the k largest eigenvalues, largest first (k ≤ ``rank``)."""
        ...

    def columns(self, idx: Any) -> torch.Tensor:
        """(P, m): the eigenvectors at positions ``idx`` of the ascending order."""
        ...

    def __getitem__(self, key: Any) -> torch.Tensor: ...


class DenseEigenvectors:
    """Dense eigenvectors (P × P, ascending order) behind the :class:`EigenvectorView` interface."""

    route = "dense"

    def __init__(self, vectors: torch.Tensor) -> None:
        self.vectors = vectors
        self.shape = (vectors.shape[0], vectors.shape[1])
        self.rank = vectors.shape[1]

    def top(self, k: int) -> torch.Tensor:
        if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= self.rank:
            raise ValueError(f"top({k!r}): k must be an int in 0..{self.rank}")
        return self.vectors[:, self.rank - k :].flip(1)

    def columns(self, idx: Any) -> torch.Tensor:
        return self.vectors[:, [idx] if isinstance(idx, int) else idx]

    def __getitem__(self, key: Any) -> torch.Tensor:
        return self.vectors[key]


def eigenvector_view(values: torch.Tensor, vectors: torch.Tensor | EigenvectorView) -> EigenvectorView:
    """The view of what an ``eigh`` returned; a dense tensor is put in the ascending order of ``values``."""
    if isinstance(vectors, torch.Tensor):
        order = torch.argsort(values)
        return DenseEigenvectors(vectors if bool((order == torch.arange(order.numel())).all()) else vectors[:, order])
    if not isinstance(vectors, EigenvectorView):
        raise TypeError(f"not an eigenvector view: {type(vectors).__name__}")
    return vectors
