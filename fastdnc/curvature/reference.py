"""Deprecated alias of :mod:`fastdnc.curvature.oracles` (the autograd oracles), kept for one release.

``fastdnc.curvature.reference`` was renamed so that "reference" means one thing in the package:
the torch references of the kernels (:mod:`fastdnc.kernels.reference`).
"""

import warnings

from .oracles import *  # noqa: F403
from .oracles import __all__  # noqa: F401

warnings.warn(
    "fastdnc.curvature.reference is renamed fastdnc.curvature.oracles; the alias goes in 0.3",
    DeprecationWarning,
    stacklevel=2,
)
