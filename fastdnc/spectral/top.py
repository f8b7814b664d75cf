r"""Top Hessian eigenpairs of a layered model, warm-started from its exact Gauss–Newton spectrum.

The Hessian of a UFM or MLP head is its GGN plus the residual term :math:`\sum_i r_i\nabla^2 z_i`,
which is small near a minimum (and zero at an exact MSE fit). The GGN's top eigenvectors are exact
and cheap through the sample-space Gram (:mod:`fastdnc.curvature.gram`; grouped for collapsed
models), so they are a start block that already spans the Hessian's top eigenspace up to the
residual term: Lanczos then needs a few block steps instead of a cold start.
"""

from __future__ import annotations

from ..curvature.full import ggn, hessian
from ..curvature.gram import gram_route
from ..curvature.operator import CurvatureOperator
from ..models import LayeredModel
from .lanczos import LanczosResult, gram_top, lanczos


def top_eigenpairs(
    model: LayeredModel | CurvatureOperator,
    k: int = 20,
    *,
    include_features: bool = False,
    decay: bool = True,
    **options,
) -> LanczosResult:
    """The k largest eigenpairs, by the cheapest exact route:

    * a :class:`~fastdnc.models.LayeredModel`: of ``fd.hessian(model, include_features, decay)``,
      by :func:`lanczos` started from the exact top k + 2 eigenvectors of ``fd.ggn`` with the same
      arguments; ``num_matvecs`` counts Hessian products only (the GGN's eigenpairs need none);
    * a Gauss–Newton operator with a sample-space Gram smaller than P (after grouping identical
      samples): Lanczos on the Gram, no operator product (:func:`~fastdnc.spectral.lanczos.gram_top`);
    * any other operator: :func:`lanczos`.

    ``options`` go to :func:`lanczos` (``tol``, ``max_matvecs``, …).
    """
    if isinstance(model, CurvatureOperator):
        gram = gram_route(model) if model.symmetric else None
        return gram_top(gram, k, options.get("tol")) if gram is not None else lanczos(model, k, **options)
    if not isinstance(model, LayeredModel):
        raise TypeError(f"top_eigenpairs needs a DeepUFM, an MLPHead or an operator, got {type(model).__name__}")
    start = ggn(model, include_features=include_features, decay=decay)
    return lanczos(hessian(model, include_features=include_features, decay=decay), k, start=start, **options)
