"""The loss and layer zoo: every ``torch.nn`` loss that takes (output, target), in its
configurations, and every common layer, against autograd double backward (float64, 1e-10).

The referee is plain autograd: Hessian- and GGN-vector products by double backward
(``double_backward.autograd_products``, checked against finite differences). Losses with more than two arguments (``GaussianNLLLoss``'s variance, ``CTCLoss``'s
lengths, the ranking and triplet losses' second and third inputs) do not fit ``loss_fn(model(X),
y)``; they are out of scope for a drop-in operator of that signature.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from double_backward import autograd_products, rel
from torch import nn

import fastdnc as fd

K = 3


def _targets(kind: str, n: int, g: torch.Generator):
    if kind == "class":
        return torch.randint(0, K, (n,), generator=g)
    if kind == "prob":
        return torch.softmax(torch.randn(n, K, generator=g, dtype=torch.float64), 1)
    if kind == "unit":
        return torch.rand(n, K, generator=g, dtype=torch.float64)
    if kind == "sign":
        return torch.randint(0, 2, (n, K), generator=g).double() * 2 - 1
    if kind == "count":
        return torch.poisson(torch.full((n, K), 2.0, dtype=torch.float64), generator=g)
    if kind == "multilabel":
        t = torch.full((n, K), -1, dtype=torch.long)
        t[:, 0] = torch.randint(0, K, (n,), generator=g)
        return t
    return torch.randn(n, K, generator=g, dtype=torch.float64)


W = torch.tensor([0.3, 1.0, 2.0], dtype=torch.float64)
# (loss, target kind, final layer of the model)
LOSSES = [
    (nn.MSELoss(), "real", None),
    (nn.L1Loss(), "real", None),
    (nn.HuberLoss(delta=0.7), "real", None),
    (nn.SmoothL1Loss(beta=0.5), "real", None),
    (nn.CrossEntropyLoss(), "class", None),
    (nn.CrossEntropyLoss(weight=W), "class", None),
    (nn.CrossEntropyLoss(label_smoothing=0.15), "class", None),
    (nn.CrossEntropyLoss(ignore_index=1), "class", None),
    (nn.CrossEntropyLoss(weight=W, label_smoothing=0.1), "class", None),
    (nn.CrossEntropyLoss(), "prob", None),  # class probabilities as targets
    (nn.NLLLoss(), "class", nn.LogSoftmax(dim=1)),
    (nn.NLLLoss(weight=W, ignore_index=2), "class", nn.LogSoftmax(dim=1)),
    (nn.KLDivLoss(reduction="batchmean"), "prob", nn.LogSoftmax(dim=1)),
    (nn.KLDivLoss(reduction="sum", log_target=True), "logprob", nn.LogSoftmax(dim=1)),
    (nn.BCELoss(), "unit", nn.Sigmoid()),
    (nn.BCELoss(weight=W), "unit", nn.Sigmoid()),
    (nn.BCEWithLogitsLoss(), "unit", None),
    (nn.BCEWithLogitsLoss(pos_weight=W), "unit", None),
    (nn.PoissonNLLLoss(), "count", None),
    (nn.PoissonNLLLoss(log_input=False, full=True), "count", nn.Softplus()),
    (nn.SoftMarginLoss(), "sign", None),
    (nn.MultiLabelSoftMarginLoss(weight=W), "unit", None),
    (nn.HingeEmbeddingLoss(margin=0.5), "sign", None),
]
# PyTorch has no derivative of these losses' backward: no Hessian can be taken through them
NOT_TWICE_DIFFERENTIABLE = [
    (nn.MultiMarginLoss(), "class"),
    (nn.MultiMarginLoss(p=2, margin=0.5, weight=W), "class"),
    (nn.MultiLabelMarginLoss(), "multilabel"),
]


def _case(loss, kind, final, relu):
    g = torch.Generator().manual_seed(11)
    torch.manual_seed(12)
    layers = [nn.Linear(4, 6), nn.ReLU() if relu else nn.Tanh(), nn.Linear(6, K)] + ([final] if final else [])
    model = nn.Sequential(*layers).double()
    x = torch.randn(9, 4, generator=g, dtype=torch.float64)
    y = (
        torch.log_softmax(torch.randn(9, K, generator=g, dtype=torch.float64), 1)
        if kind == "logprob"
        else _targets(kind, 9, g)
    )
    return model, x, y


def _reference(model, loss, batches, params, v):
    """Σ_b (n_b/N) (or 1 for sums) of the double-backward products of each batch."""
    n = sum(x.shape[0] for x, _ in batches)
    hv = ggnv = 0
    for x, y in batches:
        h, gg, _ = autograd_products(model, loss, x, y, params, v)
        w = x.shape[0] / n if loss.reduction != "sum" else 1.0
        hv, ggnv = hv + w * h, ggnv + w * gg
    return hv, ggnv


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("relu", [True, False], ids=["relu", "tanh"])
@pytest.mark.parametrize("loss, kind, final", LOSSES, ids=[repr(c[0]) for c in LOSSES])
def test_every_loss_against_autograd(loss, kind, final, relu, reduction):
    loss = type(loss)(
        **{
            **{k: getattr(loss, k) for k in _init_args(loss)},
            "reduction": reduction if loss.reduction in ("mean", "sum") else loss.reduction,
        }
    )
    model, x, y = _case(loss, kind, final, relu)
    batches = [(x[:4], y[:4]), (x[4:], y[4:])]
    params = list(model.parameters())
    v = torch.randn(sum(p.numel() for p in params), generator=torch.Generator().manual_seed(13), dtype=torch.float64)
    hv, ggnv = _reference(model, loss, batches, params, v)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for cls, ref in ((fd.HessianOperator, hv), (fd.GGNOperator, ggnv)):
            got = cls(model, loss, batches) @ v
            assert float((got - ref).norm()) <= 1e-10 * max(1.0, float(ref.norm())), (cls.__name__, rel(got, ref))


@pytest.mark.parametrize("loss, kind", NOT_TWICE_DIFFERENTIABLE, ids=[repr(c[0]) for c in NOT_TWICE_DIFFERENTIABLE])
def test_losses_pytorch_cannot_differentiate_twice_are_refused_clearly(loss, kind):
    model, x, y = _case(loss, kind, None, True)
    for cls in (fd.HessianOperator, fd.GGNOperator):
        with pytest.raises(NotImplementedError, match=f"PyTorch cannot differentiate {type(loss).__name__} twice"):
            cls(model, loss, (x, y)) @ torch.ones(sum(p.numel() for p in model.parameters()), dtype=torch.float64)


def _init_args(loss) -> list[str]:
    import inspect

    names = [
        p for p in inspect.signature(type(loss).__init__).parameters if p not in ("self", "size_average", "reduce")
    ]
    return [n for n in names if hasattr(loss, n)]


class Residual(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.f = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, d))

    def forward(self, x):
        return x + self.f(x)


class Recurrent(nn.Module):
    def __init__(self, cell):
        super().__init__()
        self.r, self.h = cell(3, 4, batch_first=True), nn.Linear(4, K)

    def forward(self, x):
        return self.h(self.r(x)[0][:, -1])


class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.h = nn.MultiheadAttention(8, 2, batch_first=True), nn.Linear(8, K)

    def forward(self, x):
        return self.h(self.a(x, x, x, need_weights=False)[0].mean(1))


class Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(7, 5)
        self.mid = nn.Linear(5, 5)
        self.out = nn.Linear(5, 7, bias=False)
        self.out.weight = self.emb.weight  # the language-model tie

    def forward(self, t):
        return self.out(torch.tanh(self.mid(self.emb(t))).mean(1))


def _layers():
    g = torch.Generator().manual_seed(21)
    img = torch.randn(6, 2, 6, 6, generator=g, dtype=torch.float64)
    seq = torch.randn(6, 5, 3, generator=g, dtype=torch.float64)
    vec = torch.randn(6, 8, generator=g, dtype=torch.float64)
    tok = torch.randint(0, 7, (6, 4), generator=g)
    cases = {
        "conv1d": (nn.Sequential(nn.Conv1d(3, 4, 2), nn.Tanh(), nn.Flatten(), nn.Linear(16, K)), seq.transpose(1, 2)),
        "conv2d+bn-eval+pool": (
            nn.Sequential(
                nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(12, K)
            ),
            img,
        ),
        "layernorm": (nn.Sequential(nn.Linear(8, 6), nn.LayerNorm(6), nn.Tanh(), nn.Linear(6, K)), vec),
        "groupnorm": (
            nn.Sequential(nn.Conv2d(2, 4, 3), nn.GroupNorm(2, 4), nn.SiLU(), nn.Flatten(), nn.Linear(64, K)),
            img,
        ),
        "dropout-p0-and-eval": (
            nn.Sequential(nn.Linear(8, 6), nn.Dropout(0.0), nn.ELU(), nn.Dropout(0.3).eval(), nn.Linear(6, K)),
            vec,
        ),
        "residual": (nn.Sequential(Residual(8), nn.Linear(8, K)), vec),
        "embedding+tied": (Tied(), tok),
        "multihead-attention": (Attention(), torch.randn(6, 4, 8, generator=g, dtype=torch.float64)),
        "rnn": (Recurrent(nn.RNN), seq),
        "gru": (Recurrent(nn.GRU), seq),
        "lstm": (Recurrent(nn.LSTM), seq),
    }
    return cases


@pytest.mark.parametrize("name", list(_layers()))
def test_every_common_layer_against_autograd(name):
    torch.manual_seed(22)
    model, x = _layers()[name]
    model = model.double().eval() if name.startswith("conv2d+bn") else model.double()
    k = 7 if name == "embedding+tied" else K
    y = torch.randint(0, k, (x.shape[0],), generator=torch.Generator().manual_seed(23))
    loss = nn.CrossEntropyLoss()
    params = list(model.parameters())
    if name == "layernorm":  # frozen parameters and a subset: only the first Linear's weight and the norm's bias
        model[0].bias.requires_grad_(False)
        params = [model[1].bias, model[0].weight]
    v = torch.randn(sum(p.numel() for p in params), generator=torch.Generator().manual_seed(24), dtype=torch.float64)
    hv, ggnv, _ = autograd_products(model, loss, x, y, params, v)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for cls, ref in ((fd.HessianOperator, hv), (fd.GGNOperator, ggnv)):
            got = cls(model, loss, [(x[:2], y[:2]), (x[2:], y[2:])], params=params) @ v
            # unequal batches against one batch: the full-data mean either way
            assert rel(got, ref) <= 1e-10, (cls.__name__, rel(got, ref))
