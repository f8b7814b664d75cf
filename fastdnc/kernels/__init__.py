"""Compute kernels behind one dispatcher (:mod:`.dispatch`), with their torch references."""

from .dispatch import BACKENDS, BackendUnavailable, backend_status, two_sided_product

__all__ = ["BACKENDS", "BackendUnavailable", "backend_status", "two_sided_product"]
