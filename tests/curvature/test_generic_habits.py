"""The drop-in operators follow the user's model exactly (issue: parameter order, live weights,
reused modules, custom losses, data formats): fused path, generic path and a dense autograd oracle
agree to 1e-10 in float64 on random models, or the operator refuses."""

from __future__ import annotations

import warnings

import pytest
import torch
from double_backward import autograd_products, rel
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.func import functional_call, hessian, jacrev

import fastdnc as fd
from fastdnc.curvature import NonDeterministicError


def dense(model, loss, x, y, params, ggn=False, call=None):
    """The dense Hessian (or GGN) over ``params`` in their order, the others held fixed."""
    ids = {id(p): n for n, p in model.named_parameters()}
    names = [ids[id(p)] for p in params]
    shapes = [p.shape for p in params]
    theta = torch.cat([p.detach().reshape(-1) for p in params])
    call = call or (lambda d: functional_call(model, d, (x,)))

    def unflat(t):
        d, i = {}, 0
        for n, s in zip(names, shapes):
            d[n] = t[i : i + s.numel()].reshape(s)
            i += s.numel()
        return d

    if not ggn:
        return hessian(lambda t: loss(call(unflat(t)), y))(theta)
    z = call(unflat(theta))
    j = jacrev(lambda t: call(unflat(t)))(theta).reshape(z.numel(), -1)
    h = hessian(lambda zz: loss(zz.reshape(z.shape), y))(z.reshape(-1))
    return j.T @ h @ j


def sequential_call(model, x):
    """An independent forward of a Linear/activation Sequential with substituted parameters (by
    object, so reused modules and tied weights see them everywhere): ``call`` for :func:`dense`."""
    live = dict(model.named_parameters())

    def call(d):
        swap = {id(live[n]): t for n, t in d.items()}
        z = x
        for m in model:
            if isinstance(m, nn.Linear):
                z = z @ swap.get(id(m.weight), m.weight).T
                if m.bias is not None:
                    z = z + swap.get(id(m.bias), m.bias)
            else:
                z = m(z)
        return z

    return call


@st.composite
def sequentials(draw):
    """A random Linear/ReLU Sequential, maybe with a reused module (a square hidden layer twice),
    random data, an MSE or CE loss, and a random subset of its parameters in random order."""
    torch.manual_seed(draw(st.integers(0, 10_000)))
    d_in, width, k = draw(st.integers(2, 4)), draw(st.integers(2, 4)), draw(st.integers(2, 3))
    bias = draw(st.booleans())
    act = nn.ReLU() if draw(st.booleans()) else nn.Identity()
    first, out = nn.Linear(d_in, width, bias=bias), nn.Linear(width, k, bias=bias)
    hidden = nn.Linear(width, width, bias=bias)
    reuse = draw(st.sampled_from(["none", "module", "tied"]))
    if reuse == "module":
        layers = [first, act, hidden, nn.ReLU(), hidden, nn.ReLU(), out]
    elif reuse == "tied":
        other = nn.Linear(width, width, bias=bias)
        other.weight = hidden.weight  # one Parameter in two layers
        layers = [first, act, hidden, nn.ReLU(), other, nn.ReLU(), out]
    else:
        layers = [first, act, hidden, nn.ReLU(), out] if draw(st.booleans()) else [first, act, out]
    model = nn.Sequential(*layers).double()
    n = draw(st.integers(2, 7))
    x = torch.randn(n, d_in, dtype=torch.float64)
    loss = draw(
        st.sampled_from(
            [nn.MSELoss(), nn.MSELoss(reduction="sum"), nn.CrossEntropyLoss(), nn.CrossEntropyLoss(reduction="sum")]
        )
    )
    y = torch.randint(0, k, (n,)) if isinstance(loss, nn.CrossEntropyLoss) else torch.randn(n, k, dtype=torch.float64)
    params = list(model.parameters())
    order = draw(st.permutations(range(len(params))))
    keep = draw(st.integers(1, len(params)))
    chosen = [params[i] for i in order[:keep]] if draw(st.booleans()) else [params[i] for i in order]
    return model, loss, x, y, chosen, reuse


@settings(max_examples=40, deadline=None)
@given(sequentials(), st.booleans())
def test_random_sequentials_params_orders_and_reuse_are_exact(case, ggn):
    model, loss, x, y, params, reuse = case
    before = [id(p) for p in model.parameters()]
    ref = dense(model, loss, x, y, params, ggn=ggn, call=sequential_call(model, x))
    v = torch.randn(ref.shape[0], 3, dtype=torch.float64)
    cls = fd.GGNOperator if ggn else fd.HessianOperator
    batches = [(x[:1], y[:1]), (x[1:], y[1:])]
    auto, generic = cls(model, loss, batches, params=params), cls(model, loss, batches, params=params, fused=False)
    if reuse != "none":
        assert not auto.fused  # reused modules and tied weights take the generic path
    want = ref @ v
    assert rel(auto @ v, want) <= 1e-10 and rel(generic @ v, want) <= 1e-10
    assert [id(p) for p in model.parameters()] == before  # the model is left as it was
    assert all(isinstance(p, nn.Parameter) for p in model.parameters())


@pytest.mark.parametrize("fused", [None, False])
@pytest.mark.parametrize("ggn", [False, True])
def test_weights_first_then_biases(fused, ggn):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3)).double()
    x, y = torch.randn(9, 4, dtype=torch.float64), torch.randint(0, 3, (9,))
    params = [model[0].weight, model[2].weight, model[0].bias, model[2].bias]
    op = (fd.GGNOperator if ggn else fd.HessianOperator)(
        model, nn.CrossEntropyLoss(), (x, y), params=params, fused=fused
    )
    assert op.fused == (fused is None)
    ref = dense(model, nn.CrossEntropyLoss(), x, y, params, ggn=ggn)
    v = torch.randn(ref.shape[0], 2, dtype=torch.float64)
    assert rel(op @ v, ref @ v) <= 1e-10


@pytest.mark.parametrize("fused", [None, False])
@pytest.mark.parametrize("given_params", [False, True])
def test_an_optimiser_step_between_build_and_use_is_seen(fused, given_params):
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3)).double()
    x, y = torch.randn(12, 4, dtype=torch.float64), torch.randn(12, 3, dtype=torch.float64)
    loss = nn.MSELoss()
    op = fd.HessianOperator(model, loss, (x, y), params=list(model.parameters()) if given_params else None, fused=fused)
    v = torch.randn(op.size, dtype=torch.float64)
    before = op @ v
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(3):
        opt.zero_grad()
        loss(model(x), y).backward()
        opt.step()
    ref = dense(model, loss, x, y, list(model.parameters())) @ v
    after = op @ v
    assert rel(after, ref) <= 1e-10 and rel(before, ref) > 1e-3  # the live answer, not the stale one
    with torch.no_grad():
        model[0].weight.data = model[0].weight.data * 2  # new storage, no version bump
    assert rel(op @ v, dense(model, loss, x, y, list(model.parameters())) @ v) <= 1e-10


def test_a_replaced_parameter_is_followed_or_refused():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).double()
    x, y = torch.randn(6, 3, dtype=torch.float64), torch.randn(6, 2, dtype=torch.float64)
    op = fd.HessianOperator(model, nn.MSELoss(), (x, y))
    model[2].weight = nn.Parameter(torch.randn(2, 4, dtype=torch.float64))
    v = torch.randn(op.size, dtype=torch.float64)
    assert rel(op @ v, dense(model, nn.MSELoss(), x, y, list(model.parameters())) @ v) <= 1e-10
    model[2].weight = nn.Parameter(torch.randn(3, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="changed shape since the operator was built"):
        op @ v


def test_custom_losses_sum_mean_or_refused():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    x, y = torch.randn(8, 3, dtype=torch.float64), torch.randn(8, 2, dtype=torch.float64)
    batches = [(x[:5], y[:5]), (x[5:], y[5:])]
    summed = lambda z, t: ((z - t) ** 2).sum()  # noqa: E731
    averaged = lambda z, t: ((z - t) ** 2).sum(1).mean()  # noqa: E731
    v = torch.randn(sum(p.numel() for p in model.parameters()), dtype=torch.float64)
    params = list(model.parameters())
    op = fd.HessianOperator(model, summed, batches)
    assert op.reduction == "sum" and rel(op @ v, dense(model, summed, x, y, params) @ v) <= 1e-10
    op = fd.HessianOperator(model, averaged, batches)
    assert op.reduction == "mean" and rel(op @ v, dense(model, averaged, x, y, params) @ v) <= 1e-10
    assert fd.HessianOperator(model, summed, batches, reduction="sum").reduction == "sum"
    with pytest.raises(ValueError, match="cannot tell whether loss_fn averages or sums"):
        fd.HessianOperator(model, lambda z, t: 0.0 * z.sum(), batches)  # a zero loss: both fit
    with pytest.raises(ValueError, match="cannot tell whether loss_fn averages or sums"):
        fd.HessianOperator(model, lambda z, t: z.sum() ** 2, batches)  # couples the samples: neither fits
    with pytest.raises(ValueError, match="loss_fn.reduction is 'mean' but reduction='sum'"):
        fd.HessianOperator(model, nn.MSELoss(), batches, reduction="sum")
    with pytest.raises(ValueError, match="reduction must be 'mean' or 'sum'"):
        fd.HessianOperator(model, summed, batches, reduction="batchmean")


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(3, 2), nn.Linear(2, 2)

    def forward(self, u, w):
        return torch.tanh(self.a(u)) + self.b(w)


def test_data_formats():
    torch.manual_seed(4)
    model = TwoInputs().double()
    u, w, y = (
        torch.randn(7, 3, dtype=torch.float64),
        torch.randn(7, 2, dtype=torch.float64),
        torch.randn(7, 2, dtype=torch.float64),
    )
    loss = nn.MSELoss()
    params = list(model.parameters())
    ref = dense(model, loss, None, y, params, call=lambda d: functional_call(model, d, (u, w)))
    v = torch.randn(ref.shape[0], dtype=torch.float64)
    want = ref @ v
    forms = {
        "positional": [((u, w), y)],
        "list batch": [[[u, w], y]],
        "keywords": [({"u": u, "w": w}, y)],
        "split keywords": [({"u": u[:3], "w": w[:3]}, y[:3]), ({"u": u[3:], "w": w[3:]}, y[3:])],
        "bare pair": ((u, w), y),
    }
    for name, data in forms.items():
        assert rel(fd.HessianOperator(model, loss, data) @ v, want) <= 1e-10, name
    with pytest.warns(UserWarning, match="ignored"):
        op = fd.HessianOperator(model, loss, [((u, w), y, torch.arange(7))])  # (X, y, indices)
    assert rel(op @ v, want) <= 1e-10
    sizes = fd.HessianOperator(
        model,
        loss,
        [({"u": u[:3], "w": w[:3]}, y[:3]), ({"u": u[3:], "w": w[3:]}, y[3:])],
        batch_size_fn=lambda X: X["u"].shape[0],
    )
    assert rel(sizes @ v, want) <= 1e-10


def test_single_input_formats_and_empty_data():
    torch.manual_seed(5)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).double()
    x, y = torch.randn(6, 3, dtype=torch.float64), torch.randint(0, 2, (6,))
    loss = nn.CrossEntropyLoss()
    want = dense(model, loss, x, y, list(model.parameters()))
    v = torch.randn(want.shape[0], dtype=torch.float64)
    for data in ([x, y], [[x, y]], [(x[:0], y[:0]), (x, y)]):  # an empty batch is dropped
        op = fd.HessianOperator(model, loss, data)
        assert op.fused and rel(op @ v, want @ v) <= 1e-10
    with pytest.raises(ValueError, match="no samples"):
        fd.HessianOperator(model, loss, [(x[:0], y[:0])])
    with pytest.raises(TypeError, match="batch 0 is not"):
        fd.HessianOperator(model, loss, [("x", y)])
    with pytest.raises(ValueError, match="pass batch_size_fn"):
        fd.HessianOperator(TwoInputs().double(), nn.MSELoss(), [((x, x[:2, :2]), y)])


def test_random_models_are_refused_by_default():
    model = nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.5), nn.Linear(4, 2)).double().train()
    data = (torch.randn(20, 3, dtype=torch.float64), torch.randn(20, 2, dtype=torch.float64))
    with pytest.raises(NonDeterministicError, match="dropout"):
        fd.HessianOperator(model, nn.MSELoss(), data)
    with pytest.raises(NonDeterministicError):
        fd.GGNOperator(model, nn.MSELoss(), data)
    fd.HessianOperator(model.eval(), nn.MSELoss(), data)  # eval mode: fine


def dense_batches(model, loss, batches, params, ggn=False, reduction="mean"):
    """The operator's definition: Σ_b (n_b/N) (dense matrix of batch b) for a mean, Σ_b for a sum."""
    n = sum(x.shape[0] for x, _ in batches)
    return sum(
        (x.shape[0] / n if reduction == "mean" else 1.0) * dense(model, loss, x, y, params, ggn=ggn) for x, y in batches
    )


W3 = torch.tensor([0.2, 1.0, 3.0], dtype=torch.float64)
LOSS_CASES = [  # (loss, fused: True, or the reason it is not)
    (nn.CrossEntropyLoss(weight=W3), True),
    (nn.CrossEntropyLoss(weight=W3, reduction="sum"), True),
    (nn.CrossEntropyLoss(label_smoothing=0.1), True),
    (nn.CrossEntropyLoss(ignore_index=1), True),
    (nn.CrossEntropyLoss(ignore_index=-100, weight=W3), True),
    (nn.CrossEntropyLoss(label_smoothing=0.2, ignore_index=2), True),
    (nn.CrossEntropyLoss(weight=W3, label_smoothing=0.1), "both class weights and label smoothing"),
    (nn.BCEWithLogitsLoss(), True),
    (nn.BCEWithLogitsLoss(reduction="sum"), True),
    (nn.BCEWithLogitsLoss(pos_weight=torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)), "pos_weight"),
    (nn.MSELoss(reduction="sum"), True),
    (nn.HuberLoss(delta=0.5), True),
    (nn.HuberLoss(reduction="sum"), True),
    (nn.SmoothL1Loss(), "the loss is SmoothL1Loss, not one of"),
]


@pytest.mark.parametrize("loss, fused", LOSS_CASES, ids=lambda c: repr(c) if not isinstance(c, (bool, str)) else "")
def test_loss_options_are_fused_exactly_or_take_the_generic_path(loss, fused):
    """Class weights, label smoothing and ignore_index (with unequal batches: torch reduces each
    batch by its own weight sum) are exact on the fused path; what it cannot do goes generic."""
    torch.manual_seed(6)
    model = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3)).double()
    x = torch.randn(11, 4, dtype=torch.float64)
    if isinstance(loss, nn.CrossEntropyLoss):
        y = torch.randint(0, 3, (11,))
        y[0] = y[5] = loss.ignore_index if loss.ignore_index >= 0 else -100
    elif isinstance(loss, nn.BCEWithLogitsLoss):
        y = torch.rand(11, 3, dtype=torch.float64)
    else:
        y = torch.randn(11, 3, dtype=torch.float64)
    batches = [(x[:4], y[:4]), (x[4:], y[4:])]
    params = list(model.parameters())
    for ggn in (False, True):
        cls = fd.GGNOperator if ggn else fd.HessianOperator
        op = cls(model, loss, batches)
        assert op.fused == (fused is True), op.fused_reason
        if fused is not True:
            assert fused in op.fused_reason
            with pytest.raises(ValueError, match=fused):
                cls(model, loss, batches, fused=True)
        ref = dense_batches(model, loss, batches, params, ggn=ggn, reduction=loss.reduction)
        v = torch.randn(ref.shape[0], 2, dtype=torch.float64)
        assert rel(op @ v, ref @ v) <= 1e-10


@pytest.mark.parametrize("loss", [nn.NLLLoss(), nn.NLLLoss(weight=W3, ignore_index=0)], ids=["plain", "weighted"])
def test_nll_after_log_softmax_hessian_and_ggn(loss):
    """The Hessian is fused (it is the cross-entropy of the logits); the GGN is taken at the
    log-probabilities, where NLL is linear: zero, as torch.func and curvlinops define it."""
    torch.manual_seed(7)
    model = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3), nn.LogSoftmax(dim=1)).double()
    x, y = torch.randn(8, 4, dtype=torch.float64), torch.randint(0, 3, (8,))
    params = list(model.parameters())
    for ggn in (False, True):
        op = (fd.GGNOperator if ggn else fd.HessianOperator)(model, loss, (x, y))
        assert op.fused == (not ggn)
        ref = dense(model, loss, x, y, params, ggn=ggn)
        v = torch.randn(ref.shape[0], 2, dtype=torch.float64)
        assert float((op @ v - ref @ v).norm()) <= 1e-10 * max(1.0, float((ref @ v).norm()))


def test_batch_statistics_are_refused_with_the_way_out():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2)).double()
    data = (torch.randn(10, 3, dtype=torch.float64), torch.randint(0, 2, (10,)))
    with pytest.raises(ValueError, match=r"BatchNorm1d '1' is in training mode.*model.eval\(\)"):
        fd.HessianOperator(model, nn.CrossEntropyLoss(), data)
    model.eval()
    op = fd.HessianOperator(model, nn.CrossEntropyLoss(), data)
    ref = dense(model, nn.CrossEntropyLoss(), data[0], data[1], list(model.parameters()))
    v = torch.randn(ref.shape[0], dtype=torch.float64)
    assert rel(op @ v, ref @ v) <= 1e-10


class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(11, 16)
        self.enc = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, batch_first=True), 2, enable_nested_tensor=False
        )
        self.head = nn.Linear(16, 3)

    def forward(self, tokens):
        return self.head(self.enc(self.embed(tokens)).mean(1))


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_transformer_encoder_in_train_and_eval_mode(train):
    """Works in both modes (math attention, no fast path) and agrees with double backward, with
    finite differences as the referee. (``torch.func.hessian``, jacfwd over jacrev, is off by about
    2% on this model: docs/drop-in.md.)"""
    torch.manual_seed(8)
    model = Encoder().double().train(train)
    tokens, y = torch.randint(0, 11, (5, 6)), torch.randint(0, 3, (5,))
    loss = nn.CrossEntropyLoss()
    params = [p for n, p in model.named_parameters() if not n.startswith("embed")]
    v = torch.randn(sum(p.numel() for p in params), dtype=torch.float64)
    hv, ggnv, fdiff = autograd_products(model, loss, tokens, y, params, v)
    assert rel(fdiff, hv) <= 1e-7  # the referee agrees with double backward
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for mode in ("forward-over-reverse", "reverse-over-reverse"):
            op = fd.HessianOperator(model, loss, (tokens, y), params=params, mode=mode)
            assert rel(op @ v, hv) <= 1e-10, mode
        assert rel(fd.GGNOperator(model, loss, (tokens, y), params=params) @ v, ggnv) <= 1e-10


def layernorm_mlp():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.LayerNorm(8), nn.Tanh(), nn.Linear(8, 3)).double()
    return model, torch.randn(16, 5, dtype=torch.float64), torch.randint(0, 3, (16,))


@pytest.mark.skipif(
    __import__("importlib").util.find_spec("curvlinops") is None, reason="curvlinops (peers extra) not installed"
)
def test_layernorm_where_curvlinops_differs_finite_differences_referee():
    """Where fastdnc and curvlinops disagree (a LayerNorm model), finite differences of the gradient
    side with fastdnc and double backward; the measured curvlinops error is in docs/drop-in.md
    (``python benchmarks/referee.py``)."""
    from curvlinops import HessianLinearOperator

    model, x, y = layernorm_mlp()
    loss = nn.CrossEntropyLoss()
    params = list(model.parameters())
    v = torch.randn(sum(p.numel() for p in params), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    hv, _, fdiff = autograd_products(model, loss, x, y, params, v)
    ours = fd.HessianOperator(model, loss, (x, y)) @ v
    assert rel(ours, hv) <= 1e-10 and rel(ours, fdiff) <= 1e-7
    theirs = HessianLinearOperator(model, loss, params, [(x, y)], check_deterministic=False) @ v
    assert rel(theirs, fdiff) > 1e3 * rel(ours, fdiff) or rel(theirs, fdiff) <= 1e-7  # whichever it is, it is shown
