r"""The comparisons that fastdnc's benchmarks time: each :class:`Case` holds fastdnc's product and every
baseline that computes the same thing, side by side, with what a reader needs to judge the numbers
(flops and bytes of fastdnc's product, the error of each implementation against the referee).

Groups (the ``group`` of a case; the pytest-benchmark suite under ``benchmarks/`` uses them as its
benchmark groups):

* ``layer``: the exact layer Hessian of a ReLU deep UFM (a batched Gauss–Newton block) times a
  vector, against autograd's double backward (fresh graph and cached graph), ``torch.func``
  (forward over reverse) and curvlinops when installed. Regime: flop-bound GEMMs with the layer
  inputs; the cached graph does the same GEMMs, so the gain comes from the structure (no graph,
  no per-sample loop), not from a faster GEMM.
* ``full``: the full Hessian of a ReLU deep UFM (the analytic R-op) times a vector, against the same
  baselines on all weights. Regime: flop-bound, close to the matmul roofline; the gain over the
  cached graph is bounded by the GEMM count (about 1.3× at most).
* ``spectrum``: the top-k eigenvalues of that full Hessian by :func:`fastdnc.top_eigenpairs`
  (warm-started from the exact GGN top) against ARPACK (``scipy.sparse.linalg.eigsh``) on the same
  operator; the product count is the figure of merit (a warm start needs at least k products).
* ``train``: training steps of a deep UFM by :func:`fastdnc.train` against ``loss().backward()``
  with ``torch.optim.SGD``.
* ``kernels``: the Gauss–Newton per-sample core on each CPU backend against its torch reference.
* ``zoo``: the drop-in :class:`~fastdnc.curvature.HessianOperator` of a plain ``nn.Sequential``
  ReLU MLP with cross-entropy times a vector, against autograd's double backward (fresh
  and cached graph), ``torch.func`` and curvlinops. Regime: flop-bound like ``full``; parity with the
  cached graph is the bound.
* ``distributed``: the full Hessian product of the ``full`` case's ReLU UFM with its samples sharded
  over two gloo processes of one thread each (:mod:`fastdnc.bench.world`: this process is rank 0;
  one all_reduce of P floats per product), against the unsharded product in this process on one
  thread (the strong-scaling baseline) and on every usable core. Regime: flop-bound GEMMs split
  over the ranks, plus the all_reduce.
* ``real``: the layer Hessian of a head layer of a torch MLP trained on the embedded digits (1,797
  real 8 × 8 images) by :func:`fastdnc.layer_hessian` (the structured Gauss–Newton block: the layers
  above are piecewise linear) times a vector, against the same model's ``fd.HessianOperator``
  restricted to that weight and against autograd on the weight alone.

Sizes: ``"tiny"`` (CI runs every body once), ``"quick"`` (``fastdnc bench --quick``, about two
minutes in all) and ``"full"`` (``make bench``).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from ..curvature import oracles
from ..curvature.operator import CurvatureOperator
from ..kernels import dispatch
from ..models import DeepUFM
from ..spectral.top import top_eigenpairs

SIZES = ("tiny", "quick", "full")
GROUPS = ("layer", "full", "spectrum", "train", "kernels", "zoo", "real", "distributed")
#: a testing hook: ``GROUP=FACTOR`` runs fastdnc's product of that group FACTOR times per call, so
#: that ``fastdnc bench --compare`` can be shown to catch a slowdown (never set it otherwise)
SLOWDOWN_ENV = "FASTDNC_BENCH_SLOWDOWN"

#: (K, n per class, width d, depth L) of the deep UFMs, by size (products) and for the spectrum and
#: training cases, which run many products per call
UFM = {"tiny": (3, 4, 8, 3), "quick": (10, 50, 128, 4), "full": (10, 200, 512, 6)}
UFM_MANY = {"tiny": (3, 4, 8, 3), "quick": (10, 50, 128, 4), "full": (10, 100, 256, 4)}
TRAIN_STEPS = {"tiny": 3, "quick": 50, "full": 200}
TOP_K = {"tiny": 3, "quick": 20, "full": 20}
#: (N, K', p) of the Gauss–Newton core kernel
CORE = {"tiny": (7, 3, 5), "quick": (400, 10, 64), "full": (2000, 10, 512)}
#: (samples, inputs, hidden width) of the drop-in MLP (10 classes)
ZOO = {"tiny": (16, 12, 8), "quick": (512, 256, 256), "full": (1024, 784, 512)}
#: (digits used, hidden width, training epochs) of the real-data head
REAL = {"tiny": (60, 8, 0), "quick": (1797, 64, 20), "full": (1797, 256, 40)}


@dataclass
class Case:
    """One comparison: ``implementations`` maps a name (``"fastdnc"`` first) to a call returning its
    result (or the reason it is unavailable, a str); ``reference`` names the referee of the errors;
    ``flops`` are those of fastdnc's call (0 where a flop rate means nothing, e.g. an eigensolve)."""

    group: str
    name: str
    shape: str
    dtype: torch.dtype
    flops: float
    bytes: float
    implementations: dict[str, Callable[[], object] | str]
    reference: str
    products: dict[str, Callable[[], int]] = field(default_factory=dict)
    #: what releases the case's resources (the other processes of a distributed case)
    close: Callable[[], None] = lambda: None
    #: a fixed number of timed rounds for a case whose one call takes seconds: the suite then skips
    #: pytest-benchmark's calibration call (``None``: calibrated rounds)
    rounds: int | None = None

    @property
    def key(self) -> str:
        return f"{self.group}/{self.name}"

    def info(self) -> dict:
        """What the suite puts in each benchmark's ``extra_info``."""
        return {
            "group": self.group,
            "case": self.name,
            "shape": self.shape,
            "dtype": str(self.dtype).replace("torch.", ""),
            "flops": self.flops,
            "bytes": self.bytes,
        }


def relative_error(result: object, reference: object) -> float:
    """max |a − b| / max |b| of two results (tensors, or eigenvalue lists)."""
    a, b = (torch.as_tensor(r).detach().to(torch.float64) for r in (result, reference))
    scale = float(b.abs().max()) if b.numel() else 0.0
    return float((a.reshape(b.shape) - b).abs().max()) / (scale or 1.0)


def _slowed(group: str, fn: Callable[[], object]) -> Callable[[], object]:
    spec = dict(item.split("=") for item in os.environ.get(SLOWDOWN_ENV, "").split(",") if "=" in item)
    times = int(spec.get(group, 1))
    if times <= 1:
        return fn

    def slow() -> object:
        for _ in range(times - 1):
            fn()
        return fn()

    return slow


def _ufm(size: str, dtype: torch.dtype, shapes: dict = UFM) -> DeepUFM:
    k, n, d, depth = shapes[size]
    return DeepUFM(k, n, d, depth, activation="relu", dtype=dtype, seed=0)


def _as_sequential(m: DeepUFM) -> tuple[nn.Sequential, torch.Tensor, torch.Tensor]:
    """The UFM as an nn.Sequential on inputs H_1ᵀ (samples as rows), for curvlinops."""
    layers: list[nn.Module] = []
    for i, w in enumerate(m.weights):
        if i > 0:
            layers.append(nn.ReLU())
        lin = nn.Linear(w.shape[1], w.shape[0], bias=False).to(w.dtype)
        lin.weight.data.copy_(w.detach())
        layers.append(lin)
    return nn.Sequential(*layers), m.features.detach().T.contiguous(), m.targets.T.contiguous()


def _curvlinops(m: DeepUFM, params_of: Callable[[nn.Sequential], list], v: torch.Tensor) -> Callable[[], object] | str:
    """curvlinops' Hessian product on the same network, scaled to the UFM's fit term + decay (MSELoss
    with reduction="sum" is 2N times the fit term ½‖Z − Y‖²/N)."""
    try:
        from curvlinops import HessianLinearOperator
    except ImportError:
        return "curvlinops is not installed (pip install fastdnc[peers])"
    seq, x, y = _as_sequential(m)
    params = params_of(seq)
    op = HessianLinearOperator(seq, nn.MSELoss(reduction="sum"), params, [(x, y)], check_deterministic=False)
    lam, n = m.weight_decay[0], m.num_samples
    return lambda: op @ v / (2 * n) + lam * v


def layer_case(size: str, dtype: torch.dtype = torch.float64) -> Case:
    m = _ufm(size, dtype)
    layer = m.depth // 2
    op = _layer_operator(m, layer)
    f, w = oracles.block_loss(m, f"W_{layer}", decay=True)
    v = torch.randn(w.shape, dtype=dtype, generator=torch.Generator().manual_seed(1)).to(dtype)
    k, n, d, depth = UFM[size]
    return Case(
        "layer",
        f"ReLU UFM layer Hessian × vector, (K, n, d, L) = ({k}, {n}, {d}, {depth}), l = {layer}",
        f"W_{layer}: {tuple(m.weights[layer - 1].shape)}",
        dtype,
        # the two GEMMs with the layer inputs (V X, then G Xᵀ) and the per-sample core B_i(B_iᵀu_i)
        2 * op.gemm_flops() + 4.0 * m.num_samples * m.num_classes * m.weights[layer - 1].shape[0],
        _bytes(m, dtype),
        {
            "fastdnc": _slowed("layer", lambda: (op @ v.reshape(-1)).reshape(w.shape)),
            **_autograd(f, w, v),
            "curvlinops": _reshaped(
                _curvlinops(
                    m, lambda seq: [[x for x in seq if isinstance(x, nn.Linear)][layer - 1].weight], v.reshape(-1)
                ),
                w.shape,
            ),
        },
        "autograd (fresh graph)",
    )


def _autograd(f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, v: torch.Tensor) -> dict[str, Callable]:
    """The Hessian of ``f`` at the vector ``x`` times ``v`` by double backward (a fresh graph per
    product, and one graph kept for every product as PyHessian does) and by ``torch.func``'s forward
    over reverse."""
    kept = x.clone().requires_grad_(True)
    with torch.enable_grad():
        (cached,) = torch.autograd.grad(f(kept), kept, create_graph=True)

    def fresh() -> torch.Tensor:
        y = x.clone().requires_grad_(True)
        with torch.enable_grad():
            (g,) = torch.autograd.grad(f(y), y, create_graph=True)
            return torch.autograd.grad(g, y, v)[0]

    return {
        "autograd (fresh graph)": fresh,
        "autograd (cached graph)": lambda: torch.autograd.grad(cached, kept, v, retain_graph=True)[0],
        "torch.func": lambda: torch.func.jvp(torch.func.grad(f), (x,), (v,))[1],
    }


def _layer_operator(m: DeepUFM, layer: int) -> CurvatureOperator:
    from ..curvature.layer import layer_hessian

    return layer_hessian(m, layer, decay=True)


def _reshaped(fn: Callable[[], object] | str, shape: torch.Size) -> Callable[[], object] | str:
    return fn if isinstance(fn, str) else (lambda: torch.as_tensor(fn()).reshape(shape))


def _bytes(m: DeepUFM, dtype: torch.dtype) -> float:
    """The weights and the activations a product reads once."""
    size = torch.empty(0, dtype=dtype).element_size()
    return float(size * (sum(w.numel() for w in m.weights) + sum(w.shape[1] for w in m.weights) * m.num_samples))


def rop_flops(m: DeepUFM, include_features: bool = False) -> int:
    """GEMM flops of one analytic R-op product of the full Hessian (``LayeredHessian``): per layer the
    tangent Ẇh (+ Wḣ), the output Ġhᵀ (+ Gḣᵀ) and, except below W_1 without H_1, WᵀĠ + ẆᵀG."""
    total = 0
    for l, w in enumerate(m.tensors()[0]):
        gemm = 2 * w.shape[0] * w.shape[1] * m.num_samples
        has_hdot = l > 0 or include_features
        total += gemm * (1 + has_hdot) * 2 + (2 * gemm if has_hdot else 0)
    return total


def full_case(size: str, dtype: torch.dtype = torch.float64) -> Case:
    from ..curvature.full import hessian

    m = _ufm(size, dtype)
    op = hessian(m)
    v = torch.randn(op.size, dtype=dtype, generator=torch.Generator().manual_seed(2)).to(dtype)
    f, theta = oracles.flat_loss(m, False, True)
    k, n, d, depth = UFM[size]
    return Case(
        "full",
        f"ReLU UFM full Hessian × vector, (K, n, d, L) = ({k}, {n}, {d}, {depth})",
        f"P = {op.size}",
        dtype,
        float(rop_flops(m)),
        _bytes(m, dtype),
        {
            "fastdnc": _slowed("full", lambda: op @ v),
            **_autograd(f, theta, v),
            "curvlinops": _curvlinops(m, lambda seq: list(seq.parameters()), v),
        },
        "autograd (fresh graph)",
    )


def spectrum_case(size: str, dtype: torch.dtype = torch.float64) -> Case:
    from scipy.sparse.linalg import LinearOperator, eigsh

    from ..curvature.full import hessian

    m, k = _ufm(size, dtype, UFM_MANY), TOP_K[size]
    op = hessian(m)
    counts = {"fastdnc": 0, "scipy eigsh": 0}

    def ours() -> torch.Tensor:
        res = top_eigenpairs(m, k, tol=1e-8)
        counts["fastdnc"] = res.num_matvecs
        return res.eigenvalues

    lin = op.to_scipy()

    def arpack() -> torch.Tensor:
        seen = [0]

        def mv(x):
            seen[0] += 1 if x.ndim == 1 else x.shape[1]
            return lin.matvec(x) if x.ndim == 1 else lin.matmat(x)

        wrapped = LinearOperator(lin.shape, matvec=mv, matmat=mv, dtype=lin.dtype)
        vals = eigsh(wrapped, k=k, which="LA", tol=1e-8, return_eigenvectors=False)
        counts["scipy eigsh"] = seen[0]
        return torch.sort(torch.as_tensor(vals), descending=True).values

    kk, n, d, depth = UFM_MANY[size]
    return Case(
        "spectrum",
        f"top {k} of the ReLU UFM full Hessian, (K, n, d, L) = ({kk}, {n}, {d}, {depth})",
        f"P = {op.size}, k = {k}",
        dtype,
        0.0,  # a whole eigensolve: its figure of merit is the product count, not a flop rate
        _bytes(m, dtype),
        {"fastdnc": _slowed("spectrum", ours), "scipy eigsh": arpack},
        "scipy eigsh",
        {name: functools.partial(counts.__getitem__, name) for name in counts},
        rounds=3,
    )


def train_case(size: str, dtype: torch.dtype = torch.float64) -> Case:
    from ..training import train

    steps = TRAIN_STEPS[size]

    def ours() -> torch.Tensor:
        m = _ufm(size, dtype, UFM_MANY)
        train(m, steps, 0.05, progress=False, log_at=[])
        return torch.cat([w.detach().reshape(-1) for w in m.weights])

    def autograd_loop() -> torch.Tensor:
        m = _ufm(size, dtype, UFM_MANY)
        params = [p for p in m.parameters() if p.requires_grad]
        opt = torch.optim.SGD(params, lr=0.05)
        for _ in range(steps):
            opt.zero_grad()
            m.loss().backward()
            opt.step()
        return torch.cat([w.detach().reshape(-1) for w in m.weights])

    m = _ufm(size, dtype, UFM_MANY)
    k, n, d, depth = UFM_MANY[size]
    flops = 3.0 * sum(2 * w.numel() * m.num_samples for w in m.weights) * steps  # forward + 2 backward GEMMs
    return Case(
        "train",
        f"{steps} full-batch GD steps of a ReLU UFM, (K, n, d, L) = ({k}, {n}, {d}, {depth})",
        f"{steps} steps",
        dtype,
        flops,
        _bytes(m, dtype) * steps,
        {"fastdnc": _slowed("train", ours), "autograd + torch.optim.SGD": autograd_loop},
        "autograd + torch.optim.SGD",
        rounds=3,
    )


def kernel_case(size: str, dtype: torch.dtype = torch.float64) -> Case:
    from ..kernels import reference

    n, kk, p = CORE[size]
    g = torch.Generator().manual_seed(3)
    roots = torch.randn(n, kk, p, generator=g, dtype=torch.float64).to(dtype)
    u = torch.randn(4, n, p, generator=g, dtype=torch.float64).to(dtype)
    impls: dict[str, Callable[[], object] | str] = {
        "fastdnc": _slowed("kernels", lambda: dispatch.gn_sample_core(roots, u))
    }
    for backend in ("cpp", "torch"):
        impls[f"backend {backend}"] = functools.partial(dispatch.gn_sample_core, roots, u, backend=backend)
    impls["torch reference (einsum)"] = lambda: reference.gn_sample_core(roots, u)
    return Case(
        "kernels",
        f"Gauss–Newton per-sample core B_i(B_iᵀu_i), (N, K', p) = ({n}, {kk}, {p}), 4 vectors",
        f"({n}, {kk}, {p})",
        dtype,
        4 * 4.0 * n * kk * p,
        float(roots.element_size() * (roots.numel() + 2 * u.numel())),
        impls,
        "torch reference (einsum)",
    )


def _linear_rop_flops(model: nn.Module, n: int) -> float:
    """GEMM flops of one R-op product through the ``nn.Linear`` layers of ``model`` on ``n`` samples
    (the count of :func:`rop_flops`: the first layer has no input tangent)."""
    total = 0.0
    for i, lin in enumerate(m for m in model.modules() if isinstance(m, nn.Linear)):
        gemm = 2.0 * lin.in_features * lin.out_features * n
        total += gemm * (1 + (i > 0)) * 2 + (2 * gemm if i > 0 else 0)
    return total


def _flat_loss(model: nn.Module, loss_fn: nn.Module, x: torch.Tensor, y: torch.Tensor, params: dict) -> Callable:
    """``loss_fn(model(x), y)`` as a function of the flat vector of ``params`` (name → tensor), the
    model's other parameters held fixed: what autograd and torch.func differentiate."""
    names, shapes = list(params), [t.shape for t in params.values()]
    sizes = [t.numel() for t in params.values()]

    def f(flat: torch.Tensor) -> torch.Tensor:
        parts = dict(zip(names, (p.reshape(s) for p, s in zip(torch.split(flat, sizes), shapes))))
        return loss_fn(torch.func.functional_call(model, parts, (x,)), y)

    return f


def _flat(params: dict) -> torch.Tensor:
    return torch.cat([t.detach().reshape(-1) for t in params.values()])


def zoo_case(size: str, dtype: torch.dtype = torch.float64) -> Case:
    from ..curvature import HessianOperator

    n, d_in, h = ZOO[size]
    g = torch.Generator().manual_seed(4)
    torch.manual_seed(4)
    model = nn.Sequential(nn.Linear(d_in, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(), nn.Linear(h, 10)).to(dtype)
    x, y = torch.randn(n, d_in, generator=g).to(dtype), torch.randint(0, 10, (n,), generator=g)
    loss_fn = nn.CrossEntropyLoss()
    params = dict(model.named_parameters())
    op = HessianOperator(model, loss_fn, (x, y))
    v = torch.randn(op.size, generator=g).to(dtype)
    try:
        from curvlinops import HessianLinearOperator

        peer = HessianLinearOperator(model, loss_fn, list(params.values()), [(x, y)], check_deterministic=False)
        curvlinops: Callable[[], object] | str = lambda: peer @ v  # noqa: E731
    except ImportError:
        curvlinops = "curvlinops is not installed (pip install fastdnc[peers])"
    return Case(
        "zoo",
        f"drop-in HessianOperator × vector, nn.Sequential ReLU MLP {d_in}-{h}-{h}-10, {n} samples, cross-entropy",
        f"P = {op.size}",
        dtype,
        _linear_rop_flops(model, n),
        float(x.element_size() * (op.size + n * (d_in + 2 * h + 10))),
        {
            "fastdnc": _slowed("zoo", lambda: op @ v),
            **_autograd(_flat_loss(model, loss_fn, x, y, params), _flat(params), v),
            "curvlinops": curvlinops,
        },
        "autograd (fresh graph)",
    )


def real_case(size: str, dtype: torch.dtype = torch.float64) -> Case:
    from ..curvature import HessianOperator
    from ..curvature.layer import layer_hessian
    from ..data import load_dataset

    n, h, epochs = REAL[size]
    data = load_dataset("digits")
    x, y = data.inputs.reshape(data.num_samples, -1)[:n].to(dtype), data.labels[:n]
    torch.manual_seed(5)
    model = nn.Sequential(nn.Linear(x.shape[1], h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(), nn.Linear(h, 10)).to(dtype)
    loss_fn = nn.CrossEntropyLoss()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(epochs):  # full-batch Adam: a head that fits the digits, as a user's trained one
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
    layer = model[2]
    assert isinstance(layer, nn.Linear)
    op = layer_hessian(model, layer, data=(x, y), loss_fn=loss_fn)
    restricted = HessianOperator(model, loss_fn, (x, y), params=[layer.weight])
    v = torch.randn(op.size, generator=torch.Generator().manual_seed(6), dtype=torch.float64).to(dtype)
    params = {"2.weight": layer.weight}
    return Case(
        "real",
        f"layer Hessian × vector of the {h} × {h} hidden layer of a ReLU MLP trained on {n} digits",
        f"P = {op.size}, N = {n}",
        dtype,
        # the two GEMMs with the layer inputs and the per-sample core (10 outputs)
        2 * 2.0 * h * h * n + 4.0 * n * 10 * h,
        float(x.element_size() * (op.size + 2 * n * h)),
        {
            "fastdnc": _slowed("real", lambda: op @ v),
            "fd.HessianOperator (restricted)": lambda: restricted @ v,
            **_autograd(_flat_loss(model, loss_fn, x, y, params), _flat(params), v),
        },
        "autograd (fresh graph)",
    )


def _sharded_product(size: str, dtype: torch.dtype) -> Callable[[], object]:
    """This rank's sharded full-Hessian product of the ``full`` case's UFM (run on every rank)."""
    from ..distributed import shard_model, sharded_hessian

    op = sharded_hessian(shard_model(_ufm(size, dtype)))
    v = torch.randn(op.size, dtype=dtype, generator=torch.Generator().manual_seed(2)).to(dtype)
    return lambda: op @ v


def distributed_case(size: str, dtype: torch.dtype = torch.float64, world: int = 2) -> Case:
    from .._threads import fixed_threads, usable_cores
    from ..curvature.full import hessian
    from .world import World

    m = _ufm(size, dtype)
    op = hessian(m)
    v = torch.randn(op.size, dtype=dtype, generator=torch.Generator().manual_seed(2)).to(dtype)
    ranks = World(functools.partial(_sharded_product, size, dtype), world=world, threads=1)

    def alone(threads: int) -> Callable[[], object]:
        def product() -> torch.Tensor:
            with fixed_threads(threads):
                return op @ v

        return product

    k, n, d, depth = UFM[size]
    return Case(
        "distributed",
        f"ReLU UFM full Hessian × vector, samples sharded over {world} gloo processes of 1 thread, "
        f"(K, n, d, L) = ({k}, {n}, {d}, {depth})",
        f"P = {op.size}, N = {m.num_samples} over {world} ranks",
        dtype,
        float(rop_flops(m)),
        _bytes(m, dtype),
        {
            "fastdnc": _slowed("distributed", ranks),
            "1 process, 1 thread": alone(1),
            "1 process, all cores": alone(usable_cores()),
        },
        "1 process, 1 thread",
        close=ranks.close,
    )


BUILDERS: dict[str, Callable[..., Case]] = {
    "layer": layer_case,
    "full": full_case,
    "spectrum": spectrum_case,
    "train": train_case,
    "kernels": kernel_case,
    "zoo": zoo_case,
    "real": real_case,
    "distributed": distributed_case,
}
