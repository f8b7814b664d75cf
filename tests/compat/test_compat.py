"""The one-line swaps against the peers themselves (peers extra): same call, same types, the same
numbers within the peer's own accuracy; signatures as the installed peer's."""

from __future__ import annotations

import importlib.util
import inspect
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from fastdnc.compat import curvlinops as c_curvlinops
from fastdnc.compat import hessian_eigenthings as c_eigenthings
from fastdnc.compat import pyhessian as c_pyhessian


def installed(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def models():
    """(name, model, batches, peers that support it): MLP, CNN with BatchNorm in eval mode, transformer."""
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    xm, ym = torch.randn(24, 6, generator=g, dtype=torch.float64), torch.randint(0, 3, (24,), generator=g)
    cnn = (
        nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(12, 3))
        .double()
        .eval()
    )
    xc, yc = torch.randn(20, 1, 6, 6, generator=g, dtype=torch.float64), torch.randint(0, 3, (20,), generator=g)
    enc = (
        nn.Sequential(
            nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True), nn.Flatten(), nn.Linear(32, 3)
        )
        .double()
        .eval()
    )
    xt, yt = torch.randn(10, 4, 8, generator=g, dtype=torch.float64), torch.randint(0, 3, (10,), generator=g)
    split = lambda x, y, k: [(x[:k], y[:k]), (x[k:], y[k:])]  # noqa: E731
    return [
        ("mlp", mlp, split(xm, ym, 10), {"curvlinops", "pyhessian", "eigenthings"}),
        ("cnn", cnn, split(xc, yc, 8), {"curvlinops", "pyhessian", "eigenthings"}),
        ("transformer", enc, split(xt, yt, 4), {"pyhessian", "eigenthings"}),
    ]  # curvlinops: flash attention


MODELS = models()


def dense_hessian(model, batches):
    """Hessian of the size-weighted mean loss by double backward, row by row (the referee)."""
    from fastdnc.curvature.functional import autodiff_friendly_attention

    params = [p for p in model.parameters() if p.requires_grad]
    n = sum(x.shape[0] for x, _ in batches)
    with autodiff_friendly_attention():
        loss = sum(x.shape[0] / n * nn.CrossEntropyLoss()(model(x), y) for x, y in batches)
        g = torch.cat([t.reshape(-1) for t in torch.autograd.grad(loss, params, create_graph=True)])
        rows = [
            torch.cat(
                [t.reshape(-1) for t in torch.autograd.grad(g[i], params, retain_graph=True, materialize_grads=True)]
            )
            for i in range(g.numel())
        ]
    return torch.stack(rows)


@pytest.mark.skipif(not installed("curvlinops"), reason="curvlinops (peers extra) not installed")
@pytest.mark.parametrize(
    "name, model, batches, peers",
    [m for m in MODELS if "curvlinops" in m[3]],
    ids=[m[0] for m in MODELS if "curvlinops" in m[3]],
)
def test_curvlinops_swap(name, model, batches, peers):
    import curvlinops

    params = list(model.parameters())
    v = torch.randn(sum(p.numel() for p in params), 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for ours_cls, theirs_cls in (
        (c_curvlinops.HessianLinearOperator, curvlinops.HessianLinearOperator),
        (c_curvlinops.GGNLinearOperator, curvlinops.GGNLinearOperator),
    ):
        for loss in (nn.CrossEntropyLoss(), nn.CrossEntropyLoss(reduction="sum")):
            ours, theirs = ours_cls(model, loss, params, batches), theirs_cls(model, loss, params, batches)
            ref = theirs @ v
            assert float((ours @ v - ref).norm() / ref.norm()) <= 1e-10
            # the same call forms: parameter lists, scipy, block-diagonal
            blocks = [t.reshape(p.shape) for t, p in zip(torch.split(v[:, 0], [p.numel() for p in params]), params)]
            for a, b in zip(ours @ blocks, theirs @ blocks):
                assert float((a - b).norm()) <= 1e-10 * max(1.0, float(b.norm()))
            x = np.random.default_rng(0).standard_normal(ours.shape[0])
            np.testing.assert_allclose(ours.to_scipy() @ x, theirs.to_scipy() @ x, rtol=1e-9, atol=1e-12)
        sizes = [2, len(params) - 2]
        if theirs.SUPPORTS_BLOCKS:
            ours = ours_cls(model, nn.CrossEntropyLoss(), params, batches, block_sizes=sizes)
            theirs = theirs_cls(model, nn.CrossEntropyLoss(), params, batches, block_sizes=sizes)
            assert float((ours @ v - theirs @ v).norm() / (theirs @ v).norm()) <= 1e-10
        else:
            with pytest.raises(ValueError, match="does not support blocking"):
                ours_cls(model, nn.CrossEntropyLoss(), params, batches, block_sizes=sizes)
    n = sum(x.shape[0] for x, _ in batches)
    ours = c_curvlinops.HessianLinearOperator(model, nn.CrossEntropyLoss(), params, batches, num_data=2 * n)
    theirs = curvlinops.HessianLinearOperator(model, nn.CrossEntropyLoss(), params, batches, num_data=2 * n)
    assert float((ours @ v - theirs @ v).norm() / (theirs @ v).norm()) <= 1e-10


@pytest.mark.skipif(not installed("pyhessian"), reason="pyhessian (peers extra) not installed")
@pytest.mark.parametrize("name, model, batches, peers", MODELS, ids=[m[0] for m in MODELS])
def test_pyhessian_swap(name, model, batches, peers):
    from pyhessian import hessian as peer

    from fastdnc.curvature.functional import autodiff_friendly_attention

    with warnings.catch_warnings(), autodiff_friendly_attention():
        warnings.simplefilter("ignore")
        theirs = peer(model, nn.CrossEntropyLoss(), dataloader=batches, cuda=False)
        torch.manual_seed(3)
        their_vals, their_vecs = theirs.eigenvalues(maxIter=200, tol=1e-6, top_n=2)
        their_trace = theirs.trace(maxIter=300, tol=1e-4)
    ours = c_pyhessian.hessian(model, nn.CrossEntropyLoss(), dataloader=batches, cuda=False)
    vals, vecs = ours.eigenvalues(top_n=2)
    assert isinstance(vals, list) and isinstance(vecs, list) and len(vecs[0]) == len(ours.params)
    assert all(a.shape == p.shape for a, p in zip(vecs[0], ours.params))
    exact = torch.linalg.eigvalsh(dense_hessian(model, batches))
    top = exact[torch.argsort(exact.abs(), descending=True)[:2]].tolist()
    np.testing.assert_allclose(vals, top, rtol=1e-8)  # ours: exact
    assert abs(their_vals[0] - top[0]) <= 1e-2 * abs(top[0])  # the peer's power iteration, to its tolerance
    tr = ours.trace()
    assert isinstance(tr, list) and abs(tr[0] - float(exact.sum())) <= 1e-9 * float(exact.abs().sum())
    se = np.std(their_trace) / np.sqrt(len(their_trace))
    assert abs(np.mean(their_trace) - tr[0]) <= 4 * se + 1e-9  # Hutchinson samples around the exact trace
    nodes, weights = ours.density(iter=len(exact), n_v=2)  # as many steps as parameters: exact quadrature
    assert len(nodes) == 2 and all(abs(sum(w) - 1) < 1e-10 for w in weights)
    for run in nodes:
        assert min(float((exact - t).abs().min()) for t in run) < 1e-8
        assert max(float((exact - t).abs().min()) for t in run) < 1e-6 * float(exact.abs().max())


@pytest.mark.skipif(not installed("hessian_eigenthings"), reason="hessian-eigenthings (peers extra) not installed")
@pytest.mark.parametrize("name, model, batches, peers", MODELS, ids=[m[0] for m in MODELS])
def test_hessian_eigenthings_swap(name, model, batches, peers):
    import hessian_eigenthings as he

    from fastdnc.curvature.functional import autodiff_friendly_attention

    vals, vecs = c_eigenthings.compute_hessian_eigenthings(
        model, batches, nn.CrossEntropyLoss(), num_eigenthings=3, mode="lanczos"
    )
    assert isinstance(vals, np.ndarray) and vecs.shape == (3, sum(p.numel() for p in model.parameters()))
    assert list(np.abs(vals)) == sorted(np.abs(vals), reverse=True)
    exact = torch.linalg.eigvalsh(dense_hessian(model, batches))
    top = exact[torch.argsort(exact.abs(), descending=True)[:3]].numpy()
    np.testing.assert_allclose(vals, top, rtol=1e-8)
    h = dense_hessian(model, batches).numpy()
    for lam, vec in zip(vals, vecs):
        assert np.linalg.norm(h @ vec - lam * vec) <= 1e-7 * abs(vals[0])
    power_vals, _ = c_eigenthings.compute_hessian_eigenthings(model, batches, nn.CrossEntropyLoss(), 3)
    np.testing.assert_allclose(power_vals, vals, rtol=1e-10)
    if not hasattr(he, "HessianOperator"):
        return
    # the installed 1.x API, where its semantics are ours: equal batches (it averages batch losses
    # with equal weights) and reorthogonalised Lanczos run to the operator's size (without, it returns
    # ghost copies of the top eigenvalue)
    x, y = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
    half = x.shape[0] // 2
    equal = [(x[:half], y[:half]), (x[half : 2 * half], y[half : 2 * half])]
    vals, _ = c_eigenthings.compute_hessian_eigenthings(model, equal, nn.CrossEntropyLoss(), num_eigenthings=3)
    with warnings.catch_warnings(), autodiff_friendly_attention():
        warnings.simplefilter("ignore")
        op = he.HessianOperator(model, equal, he.supervised_loss(nn.CrossEntropyLoss()))
        res = he.lanczos(
            op,
            k=3,
            which="LM",
            tol=1e-8,
            seed=0,
            reorthogonalize=True,
            max_iter=min(80, sum(p.numel() for p in model.parameters())),
        )
    theirs = sorted(res.eigenvalues.tolist(), key=abs, reverse=True)
    np.testing.assert_allclose(vals, theirs, rtol=1e-6)


CLASSIC_EIGENTHINGS = (
    "(model, dataloader, loss, num_eigenthings=10, full_dataset=True, mode='power_iter', "
    "device='cuda', fp16=False, max_possible_gpu_samples=65536, **kwargs)"
)


def _params(sig: inspect.Signature) -> list[tuple[str, object]]:
    return [(n, p.default) for n, p in sig.parameters.items() if n != "self"]


@pytest.mark.skipif(not installed("curvlinops"), reason="curvlinops (peers extra) not installed")
def test_curvlinops_signatures():
    import curvlinops

    for name in ("HessianLinearOperator", "GGNLinearOperator"):
        assert _params(inspect.signature(getattr(c_curvlinops, name))) == _params(
            inspect.signature(getattr(curvlinops, name).__init__)
        )


@pytest.mark.skipif(not installed("pyhessian"), reason="pyhessian (peers extra) not installed")
def test_pyhessian_signatures():
    from pyhessian import hessian as peer

    for name in ("__init__", "eigenvalues", "trace", "density"):
        assert _params(inspect.signature(getattr(c_pyhessian.hessian, name))) == _params(
            inspect.signature(getattr(peer, name))
        ), name


def test_hessian_eigenthings_classic_signature():
    """The classic function (hessian-eigenthings 0.x); the installed 1.x has replaced it."""
    assert str(inspect.signature(c_eigenthings.compute_hessian_eigenthings)).startswith("(model") and _params(
        inspect.signature(c_eigenthings.compute_hessian_eigenthings)
    ) == _params(inspect.Signature.from_callable(eval(f"lambda {CLASSIC_EIGENTHINGS[1:-1]}: None")))  # noqa: S307


@pytest.mark.skipif(not installed("hessian_eigenthings"), reason="hessian-eigenthings (peers extra) not installed")
def test_the_installed_hessian_eigenthings_is_compared():
    """0.x: the same signature as the classic function; 1.x (no such function): its operator and
    Lanczos, which the swap test above compares with."""
    import hessian_eigenthings as he

    if hasattr(he, "compute_hessian_eigenthings"):
        assert _params(inspect.signature(c_eigenthings.compute_hessian_eigenthings)) == _params(
            inspect.signature(he.compute_hessian_eigenthings)
        )
    else:
        assert callable(he.HessianOperator) and callable(he.lanczos)
