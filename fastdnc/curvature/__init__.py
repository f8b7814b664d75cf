"""Curvature operators and their autograd oracles (:mod:`fastdnc.curvature.reference`)."""

from . import reference

__all__ = ["reference"]
