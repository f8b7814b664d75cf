r"""The DNC lens: ``fd.analyze(model, data, loss_fn, layers=None)``.

Per analysed layer (default: the trailing linear head, :func:`fastdnc.capture.trailing_linear_head`):

* the exact fit-term layer Hessian (:func:`fastdnc.layer_hessian`; its ``structure`` says whether it
  is the batched Gauss–Newton block, that block plus the residual, or the generic operator) and its
  spectrum: all eigenvalues where that is exact and cheap, else the top K² + ``extra`` by Lanczos
  (:func:`fastdnc.spectral.exact.spectrum`, one dense limit for the package);
* the outlier count at the largest gap among the top K² + K, beside the theory's expectation for the
  loss, the activation and the layer's position (:func:`fastdnc.theory.expected_outliers`);
* :math:`f_{cc'}` and :math:`\kappa_{cc'}` of the class-mean pairs
  :math:`\mu_c^{(l+1)}\otimes\mu_{c'}^{(l)}` (docs/theory.md §5), and the fit gradient's overlap with the
  top-K and top-K² eigenspaces;
* the NC metrics of the features entering the layer.

For the whole model (``model_curvature=True``): the Hessian's top K² + ``extra`` (Lanczos, at
``tol``), its outliers, the gradient's overlap with its top K and K², and its SLQ density.

Each stage prints one line with its time on stderr (``progress``); every spectral call refuses with
an estimate what would not fit in memory.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import torch
from torch import nn

from .._threads import intra_op_threads, threads_for
from ..models import LayeredModel
from ..spectral import gradient_overlap, outliers, spectral_density
from ..spectral.exact import DENSE_LIMIT, spectrum
from ..stages import Stages
from ..theory.expectations import expected_outliers
from .result import Analysis, LayerAnalysis, ModelCurvature
from .sources import LayeredSource, LayerSource, ModuleSource

TOL = 1e-4  # Lanczos tolerance of the analyses: eigenvalues to ~1e-8 relative (errors go as residual²)


def analyze(
    model: nn.Module,
    data=None,
    loss_fn: Callable | None = None,
    layers: Sequence[nn.Module | str] | None = None,
    *,
    model_curvature: bool = True,
    density: bool = True,
    extra: int = 10,
    dense_limit: int = DENSE_LIMIT,
    tol: float = TOL,
    progress: bool = True,
    threads: int | None = None,
) -> Analysis:
    """The DNC lens on ``model`` (see the module docstring): any ``nn.Module`` classifier with its
    ``data`` (a batch ``(X, y)`` or an iterable of batches) and ``loss_fn`` (the fit term, mean
    reduction as in training), or a :class:`~fastdnc.models.DeepUFM` / :class:`~fastdnc.models.MLPHead`
    alone. The model is analysed in evaluation mode and left in the mode it had.

    >>> import torch, fastdnc as fd
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> net = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)).double()
    >>> x, y = torch.randn(30, 5, dtype=torch.float64), torch.arange(30) % 3
    >>> res = fd.analyze(net, (x, y), torch.nn.CrossEntropyLoss(), model_curvature=False, progress=False)
    >>> [(l.name, l.outliers <= 12) for l in res.layers]
    [('0', True), ('2', True)]
    """
    was = model.training
    model.eval()
    try:
        source: LayerSource
        if isinstance(model, LayeredModel):
            if data is not None or loss_fn is not None or layers is not None:
                raise ValueError(f"a {type(model).__name__} holds its data and loss: call fd.analyze(model)")
            source = LayeredSource(model)
        else:
            if data is None or loss_fn is None:
                raise ValueError(
                    f"fd.analyze of a {type(model).__name__} needs its data and loss: "
                    "fd.analyze(model, (X, y), torch.nn.CrossEntropyLoss())"
                )
            source = ModuleSource(model, data, loss_fn, layers)
        options = dict(model_curvature=model_curvature, density=density, extra=extra, dense_limit=dense_limit, tol=tol)
        with intra_op_threads(threads_for(_gemm_flops(model), threads)):
            return analyze_source(source, label="analyze" if progress else None, **options)  # type: ignore[arg-type]
    finally:
        model.train(was)


def _gemm_flops(model: nn.Module) -> float:
    """The largest weight's 2·m·n times a batch of 256: the size of the analysis' GEMMs, for the
    thread count (one thread for small heads on a busy machine, :mod:`fastdnc._threads`)."""
    sizes = [p.numel() for p in model.parameters()]
    return 2.0 * max(sizes, default=0) * 256


def analyze_source(
    source: LayerSource,
    *,
    model_curvature: bool = True,
    density: bool = True,
    extra: int = 10,
    dense_limit: int = DENSE_LIMIT,
    tol: float = TOL,
    starts: dict[str, torch.Tensor] | None = None,
    label: str | None = None,
) -> Analysis:
    """:func:`analyze` of any :class:`~fastdnc.analysis.sources.LayerSource`. ``starts`` maps a layer
    name (or ``"model"``) to a warm-start block for its Lanczos run (the previous record's
    eigenvectors in a :class:`~fastdnc.analysis.Tracker`); the top eigenvectors found are returned in
    ``Analysis.vectors`` for the next one."""
    t0 = time.perf_counter()
    starts = starts or {}
    stage = Stages(label or "", len(source.names) + (1 + int(density) if model_curvature else 0), label is not None)
    layers, vectors = [], {}
    for i, name in enumerate(source.names):
        with stage(f"layer {name}: Hessian spectrum, f, κ, overlaps"):
            result, top = analyze_layer(source, i, extra, dense_limit, tol, starts.get(name))
        layers.append(result)
        vectors[name] = top
    curvature = None
    if model_curvature:
        curvature, top = _model_curvature(source, extra, tol, starts.get("model"), stage, density)
        vectors["model"] = top
    return Analysis(
        source.description,
        source.num_classes,
        source.loss,
        source.num_samples,
        layers,
        curvature,
        source.output_metrics(),
        time.perf_counter() - t0,
        vectors=vectors,
    )


@torch.no_grad()
def analyze_layer(
    source: LayerSource, i: int, extra: int = 10, dense_limit: int = DENSE_LIMIT, tol: float = TOL, start=None
) -> tuple[LayerAnalysis, torch.Tensor]:
    """One layer through the lens (see the module docstring) and its top eigenvectors."""
    op = source.hessian(i)
    k = source.num_classes
    spec = spectrum(op, top=min(k * k + extra, op.size), dense_limit=dense_limit, start=start, tol=tol)
    ev = spec.eigenvalues
    split = outliers(ev, max_count=max(1, min(k * k + k, ev.numel() - 1)))
    expected = expected_outliers(source.loss, source.activation(i), source.is_last(i), k)
    out_means, in_means = source.class_means(i)
    pairs = torch.einsum("ac,bd->abcd", out_means, in_means).reshape(-1, k * k).to(op.dtype)
    hv = op @ pairs
    num, den = (pairs * hv).sum(0).square(), pairs.square().sum(0) * hv.square().sum(0)
    f = torch.where(den > 0, num / den.clamp_min(torch.finfo(op.dtype).tiny), torch.zeros_like(num)).reshape(k, k)
    g = source.gradient(i).reshape(-1).to(op.dtype)
    gden = g.square().sum() * pairs.square().sum(0)
    kappa = ((g @ pairs).square() / gden.clamp_min(torch.finfo(op.dtype).tiny)).reshape(k, k)
    vecs = spec.vectors
    p, q = out_means.shape[0], in_means.shape[0]
    result = LayerAnalysis(
        name=source.names[i],
        index=i + 1,
        shape=(p, q),
        structure=getattr(op, "structure", _structure_of(op)),
        spectrum=spec.method,
        complete=spec.complete,
        eigenvalues=ev.tolist(),
        outliers=split.count,
        gap_ratio=split.gap_ratio,
        null_space=split.null_space,
        expected=expected,
        f=f.tolist(),
        kappa=kappa.tolist(),
        overlap_top_k=_overlap(g, vecs, k),
        overlap_top_k2=_overlap(g, vecs, k * k),
        collapse=source.input_metrics(i),
        products=spec.products,
    )
    return result, vecs[:, : min(vecs.shape[1], k * k + 2)].clone()


def _structure_of(op) -> str:
    name = type(op).__name__
    return {
        "KroneckerOperator": "Kronecker product (linear MSE: exact factors)",
        "BatchedGaussNewton": "batched Gauss-Newton (exact: the layers above are piecewise linear)",
    }.get(name, name)


def _overlap(g: torch.Tensor, vecs: torch.Tensor, m: int) -> float:
    m = min(m, vecs.shape[1])
    if m == 0 or float(g.square().sum()) == 0.0:
        return float("nan")
    return gradient_overlap(g, vecs[:, :m])


def _model_curvature(
    source: LayerSource, extra: int, tol: float, start, stage: Stages, density: bool
) -> tuple[ModelCurvature, torch.Tensor]:
    full = source.full_hessian()
    k = source.num_classes
    top = min(k * k + extra, full.size)
    # every eigenvalue when the top is a large part of a small spectrum (where Lanczos converges slowly)
    exact = full.size <= min(DENSE_LIMIT, 4 * top)
    with stage(f"whole model Hessian ({full.size} parameters): top {top} ({'exact' if exact else 'Lanczos'})"):
        res = spectrum(full, top, dense_limit=full.size if exact else 0, start=start, tol=tol)
        g = source.full_gradient().to(full.dtype)
    split = outliers(res.eigenvalues[:top], max_count=max(1, min(k * k + k, top - 1)))
    grid, dens, slq = [], [], 0
    if density:
        with stage("whole model Hessian: spectral density (SLQ)"):
            d = spectral_density(full, num_probes=4, steps=60)
            grid, dens, slq = d.grid.tolist(), d.density.tolist(), 4 * 60
    curvature = ModelCurvature(
        parameters=full.size,
        eigenvalues=res.eigenvalues[:top].tolist(),
        outliers=split.count,
        gap_ratio=split.gap_ratio,
        null_space=split.null_space,
        overlap_top_k=_overlap(g, res.vectors, k),
        overlap_top_k2=_overlap(g, res.vectors, k * k),
        density_grid=grid,
        density=dens,
        products=res.products,
        density_products=slq,
    )
    return curvature, res.vectors[:, : min(top, k * k + 2)].clone()
