"""The flat-vector layout of the package: the row-major vec of each parameter block, concatenated
in the operator's block order."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = ["split_flat"]


def split_flat(
    v: torch.Tensor, shapes: Sequence[torch.Size | tuple[int, ...]] | None, *, vectors_first: bool = False
) -> list[torch.Tensor]:
    """Cut a flat vector (P,) or a block of vectors (P, k) into parameter blocks: the one
    implementation of the package's layout (the row-major vec of each block, concatenated).

    Returns views of shape ``s`` (or ``(*s, k)``); with ``vectors_first``, blocks of shape
    ``(k, *s)`` taken from one transposing copy, so that batched GEMMs read contiguous operands.
    ``shapes=None`` (an operator without parameter blocks) is one flat block.
    """
    shapes = [(v.shape[0],)] if shapes is None else shapes
    sizes = [math.prod(s) for s in shapes]
    if v.shape[0] != sum(sizes):
        raise ValueError(f"a flat tensor of {sum(sizes)} rows splits into these blocks, got {v.shape[0]}")
    if vectors_first:
        vt = v.reshape(v.shape[0], -1).T.contiguous()
        return [b.view(-1, *s) for b, s in zip(vt.split(sizes, dim=1), shapes)]
    return [b.reshape(*s, *v.shape[1:]) for b, s in zip(v.split(sizes), shapes)]
