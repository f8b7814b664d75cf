"""The sample-space Gram route (:mod:`fastdnc.curvature.gram`) against dense autograd GGNs in
float64: eigenvalues to 1e-10 relative, mapped-back eigenvectors by their residuals, for layer
blocks, full GGNs of UFMs and MLP heads, fused GGNOperators, MSE and CE, with and without the
grouping of identical samples."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import fastdnc as fd
from fastdnc import theory
from fastdnc.curvature import oracles as R
from fastdnc.curvature.gram import GramOperator, gram_route

TOL = 1e-10


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


def check_gram_route(op, dense: torch.Tensor, top: int = 3) -> None:
    """Eigenvalues equal to the dense ones; the top eigenvectors orthonormal with tiny residuals."""
    expected = torch.linalg.eigvalsh(dense)
    assert _rel(op.eigvalsh(method="gram"), expected) <= TOL
    values, vecs = op.eigh(method="gram")
    assert values.shape == (op.size,) and _rel(values, expected) <= TOL
    k = min(top, vecs.rank)
    if k == 0:  # a zero block (every ReLU below it dead): nothing to map back
        assert float(expected.max() - expected.min()) <= 1e-12  # every eigenvalue is the shift
        return
    v, lam = vecs.top(k), values.flip(0)[:k]
    assert float((dense @ v - v * lam).norm()) <= TOL * float(expected.abs().max()) * k
    assert float((v.T @ v - torch.eye(k, dtype=v.dtype)).abs().max()) <= 1e-9
    assert torch.allclose(vecs[:, [op.size - 1]], v[:, :1])


@settings(max_examples=25, deadline=None)
@given(
    k=st.integers(2, 4),
    n=st.integers(1, 4),
    width=st.integers(2, 7),
    depth=st.integers(2, 4),
    activation=st.sampled_from(["linear", "relu"]),
    loss=st.sampled_from(["mse", "ce"]),
    seed=st.integers(0, 1000),
)
def test_layer_blocks_and_full_ggns_of_random_ufms(k, n, width, depth, activation, loss, seed):
    m = fd.DeepUFM(k, n, max(width, k), depth, activation=activation, loss=loss, seed=seed)
    for layer in range(1, depth + 1):
        op = fd.layer_hessian(m, layer, decay=True)
        if isinstance(op, GramOperator):  # the Gauss–Newton blocks (linear MSE is Kronecker)
            check_gram_route(op, R.dense_layer_hessian(m, layer, decay=True))
    for features in (False, True):
        op = fd.ggn(m, include_features=features, decay=True)
        check_gram_route(op, R.dense_ggn(m, include_features=features, decay=True))


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("loss", ["mse", "ce"])
def test_mlp_heads_with_and_without_bias(bias, loss):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(5, 11, generator=g, dtype=torch.float64)
    head = fd.MLPHead(x, torch.arange(11) % 3, 4, 3, loss=loss, bias=bias, seed=1)
    op = fd.ggn(head, decay=False)
    check_gram_route(op, R.dense_ggn(head, decay=False))


@pytest.mark.parametrize(
    "loss",
    [
        nn.CrossEntropyLoss(),
        nn.CrossEntropyLoss(label_smoothing=0.2),
        nn.MSELoss(reduction="sum"),
        nn.BCEWithLogitsLoss(),
    ],
    ids=["ce", "smoothed", "mse-sum", "bce"],
)
def test_fused_ggn_operators_with_reordered_params(loss):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3)).double()
    x = torch.randn(7, 4, dtype=torch.float64)
    y = torch.randint(0, 3, (7,)) if isinstance(loss, nn.CrossEntropyLoss) else torch.rand(7, 3, dtype=torch.float64)
    op = fd.GGNOperator(model, loss, [(x[:4], y[:4]), (x[4:], y[4:])], params=list(model.parameters())[::-1])
    assert op.fused
    check_gram_route(op, op.to_dense())


@pytest.mark.parametrize("activation", ["linear", "relu"])
def test_identical_samples_are_grouped_exactly(activation):
    m = theory.optimum_model(4, 30, 16, 3, 5e-3, activation=activation)
    for op in (fd.ggn(m, decay=True), fd.layer_hessian(m, 2) if activation == "relu" else fd.ggn(m, decay=False)):
        gram, plain = op.sample_gram(), op.sample_gram(group=False)
        assert plain.dim == 4 * 30 * 4 and gram.dim == 16 and gram.multiplicity.tolist() == [30] * 4
        check_gram_route(op, op.to_dense())


def test_grouping_never_merges_samples_that_differ():
    m = fd.DeepUFM(3, 4, 5, 3, activation="relu", seed=0)
    assert fd.ggn(m).sample_gram().multiplicity is None


def test_auto_takes_the_cheaper_route_and_refusals_name_the_reason():
    m = theory.optimum_model(4, 30, 16, 3, 5e-3, activation="relu")
    op = fd.layer_hessian(m, 2)  # P = 256 < N·K = 480, but 16 after grouping
    assert op.gram_size() == 480 and gram_route(op, "auto") is not None
    fresh = fd.layer_hessian(fd.DeepUFM(4, 30, 16, 3, activation="relu", seed=0), 2)
    assert gram_route(fresh, "auto") is None and gram_route(fresh, "gram") is not None
    head = fd.MLPHead(torch.randn(5, 9, dtype=torch.float64), torch.arange(9) % 3, 4, 3, bias=True)
    with pytest.raises(ValueError, match="decay differs between blocks"):
        fd.ggn(head, decay=True).eigvalsh(method="gram")
    with pytest.raises(ValueError, match="residual term"):
        fd.hessian(m).eigh(method="gram")
    with pytest.raises(ValueError, match="method must be"):
        op.eigh(method="fast")


def test_null_space_eigenvectors_are_refused():
    m = fd.DeepUFM(3, 2, 6, 3, activation="relu", seed=0)
    op = fd.ggn(m, decay=False)
    _, vecs = op.eigh(method="gram")
    assert vecs.rank < op.size
    with pytest.raises(ValueError, match="null space"):
        vecs.columns([0])


@pytest.mark.parametrize(("activation", "loss"), [("relu", "mse"), ("relu", "ce"), ("linear", "ce")])
def test_papyan_within_class_term_in_sample_space(activation, loss):
    """The within-class eigenvalues from the centred sample-space Gram equal the dense ones (no
    P × P eigendecomposition, so no 8192-parameter limit)."""
    from fastdnc.curvature import papyan_split

    m = fd.DeepUFM(3, 4, 6, 3, activation=activation, loss=loss, seed=1)
    fd.train(m, 300, 0.1, progress=False)
    for layer in (1, 2, 3):
        split = papyan_split(m, layer)
        dense = torch.linalg.eigvalsh(split.within.to_dense()).flip(0)
        gram = split.within_eigenvalues().flip(0)
        k = min(dense.numel(), gram.numel())
        assert _rel(gram[:k], dense[:k]) <= TOL
        if dense.numel() > k:
            assert float(dense[k:].abs().max()) <= 1e-12 * float(dense.abs().max())


@pytest.mark.parametrize("shape", [(4, 5, 12, 4), (4, 5, 12, 3), (4, 5, 8, 4), (3, 4, 10, 5)])
@pytest.mark.parametrize("noise", [0.0, 3e-17, 1e-15])
def test_grouping_survives_rounding_and_bounds_what_it_moves(shape, noise):
    """Within-class samples that differ by rounding (1e-17 after a product of layers, depending on the
    BLAS) are one sample; the eigenvalues move by at most ``grouping_bound``; a difference the data
    resolves (1e-6) keeps samples apart."""
    from fastdnc.curvature.gram import GramBlock, SampleGram

    k = shape[0]
    exact = fd.ggn(fd.theory.optimum_model(*shape, 5e-3)).sample_gram(group=False)
    g = torch.Generator().manual_seed(0)

    def jitter(t, size):
        return t * (1 + size * torch.randn(t.shape, generator=g, dtype=t.dtype))

    blocks = [GramBlock(jitter(b.roots, noise), jitter(b.inputs, noise)) for b in exact.blocks]
    grouped = SampleGram(blocks, exact.scale, exact.shift)
    assert grouped.multiplicity is not None and grouped.multiplicity.tolist() == [shape[1]] * k
    ungrouped = SampleGram(blocks, exact.scale, exact.shift, group=False)
    a, b = grouped.eigh(vectors=False)[0], ungrouped.eigh(vectors=False)[0]
    assert float((a - b).abs().max()) <= grouped.grouping_bound + 1e-12 * float(b.abs().max())
    assert (grouped.grouping_bound == 0.0) == (noise == 0.0)
    apart = SampleGram([GramBlock(jitter(b.roots, 1e-6), b.inputs) for b in exact.blocks], exact.scale, exact.shift)
    assert apart.multiplicity is None  # every sample kept


def test_the_readme_grouping_example():
    GN = fd.ggn(fd.theory.optimum_model(4, 5, 12, 4, 5e-3))
    assert GN.sample_gram().multiplicity.tolist() == [5, 5, 5, 5]


def test_the_gram_route_is_the_gram_operators_own():
    """The operator base knows no Gram: only a GramOperator has one, and gram_route asks it; the base's
    former ``sample_gram``/``gram_size`` answer None with a DeprecationWarning, and the kernel's former
    name ``dispatch.sample_gram`` still accumulates, with one."""
    from fastdnc.curvature.operator import DenseOperator
    from fastdnc.kernels import dispatch

    dense = DenseOperator(torch.eye(4, dtype=torch.float64))
    for former in (dense.sample_gram, dense.gram_size):
        with pytest.warns(DeprecationWarning, match="DenseOperator has no sample-space Gram: only a GramOperator"):
            assert former() is None
    roots, out = torch.ones(3, 2, 4, dtype=torch.float64), torch.zeros(6, 6, dtype=torch.float64)
    with pytest.warns(DeprecationWarning, match="former name of dispatch.gn_gram"):
        dispatch.sample_gram(roots, torch.eye(3, dtype=torch.float64), 1.0, out)
    torch.testing.assert_close(
        out, dispatch.gn_gram(roots, torch.eye(3, dtype=torch.float64), 1.0, torch.zeros(6, 6, dtype=torch.float64))
    )
    assert gram_route(dense, "auto") is None and gram_route(dense, "dense") is None
    with pytest.raises(ValueError, match="DenseOperator has no sample-space Gram: only Gauss–Newton operators"):
        gram_route(dense, "gram")
    with pytest.raises(ValueError, match="method must be 'auto', 'dense' or 'gram', got 'fast'"):
        dense.eigvalsh(method="fast")
    gn = fd.layer_hessian(fd.DeepUFM(3, 4, 5, 3, activation="relu", seed=0), 2)
    assert isinstance(gn, GramOperator) and gram_route(gn, "dense") is None
    torch.testing.assert_close(gn.eigvalsh(method="gram"), gn.eigvalsh(method="dense"), rtol=1e-10, atol=1e-12)
