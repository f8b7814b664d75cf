r"""Deep unconstrained feature models (UFMs) and MLP heads on fixed features.

Both models are the same layered map on a feature matrix :math:`H_1 \in \mathbb{R}^{d_1 \times N}`
whose **columns are samples**:

.. math::

    H_2 = W_1 H_1 + b_1, \qquad H_{l+1} = W_l\,\sigma(H_l) + b_l \;(l \ge 2), \qquad Z = H_{L+1},

with :math:`\sigma` the identity (``"linear"``) or ReLU (``"relu"``). :math:`H_1` itself is never
activated. The *input* of layer :math:`l` is :math:`\tilde h_1 = H_1` and
:math:`\tilde h_l = \sigma(H_l)` for :math:`l \ge 2`; the *pre-activations* are :math:`H_l`.
Layer indices follow the paper: ``layer=l`` means :math:`W_l`, ``model.weights[l-1]``, with
:math:`W_l` of shape ``(d_out, d_in)``. ReLU'(0) = 0 everywhere (PyTorch's convention).

The loss is a fit term plus weight decay,

.. math::

    \mathcal{L} = \underbrace{\tfrac{1}{2N}\|Z - Y\|_F^2}_{\text{MSE}}
    \;\text{or}\; \underbrace{\tfrac1N\textstyle\sum_i -\log \operatorname{softmax}(z_i)_{y_i}}_{\text{CE}}
    \;+\; \sum_l \tfrac{\lambda_l}{2}\|W_l\|_F^2 + \tfrac{\lambda_H}{2}\|H_1\|_F^2,

where :math:`Y` is the one-hot label matrix (K × N). Biases (MLP heads only) are not decayed.

* :class:`DeepUFM`: :math:`H_1` is a free parameter (the unconstrained features), columns in class
  order (sample ``i`` of class ``c`` is column ``c * n + i``), no biases.
* :class:`MLPHead`: :math:`H_1 = X` is a fixed input (e.g. a backbone's features), any labels,
  optional biases.

Initialisation: every trainable entry is drawn i.i.d. from :math:`\mathcal N(0, \sigma_0^2)` with
:math:`\sigma_0 = 1/\sqrt{d}` (``init_std`` overrides it), from a ``torch.Generator`` seeded with
``seed`` in the order :math:`W_1, \dots, W_L, H_1`, so a seed fixes the model on every device.
Biases start at zero.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ._checks import (
    check_decay,
    check_float_dtype,
    check_positive_int,
    check_tensor,
    per_layer,
)
from ._memory import require_memory

ACTIVATIONS = ("linear", "relu")
LOSSES = ("mse", "ce")


@dataclass
class ForwardStates:
    """All intermediate matrices of one forward pass (columns are samples).

    Attributes:
        preactivations: :math:`[H_1, H_2, \\dots, H_{L+1}]`; ``H_{L+1} = Z``.
        inputs: :math:`[\\tilde h_1, \\dots, \\tilde h_L]`, the input of each layer.
        output: :math:`Z` (K × N).
    """

    preactivations: list[torch.Tensor]
    inputs: list[torch.Tensor]

    @property
    def output(self) -> torch.Tensor:
        return self.preactivations[-1]


@dataclass
class LossAndGradients:
    """Loss terms (0-d tensors) and gradients in the order of ``model.trainable_blocks()``."""

    loss: torch.Tensor
    fit: torch.Tensor
    reg: torch.Tensor
    gradients: list[torch.Tensor]
    states: ForwardStates


def _activate(x: torch.Tensor, activation: str) -> torch.Tensor:
    return torch.relu(x) if activation == "relu" else x


def forward_states(
    weights: Sequence[torch.Tensor],
    biases: Sequence[torch.Tensor] | None,
    features: torch.Tensor,
    activation: str,
) -> ForwardStates:
    """Pure forward pass: the single implementation used by the models, the oracles and
    the analytic gradients."""
    pre = [features]
    inputs = [features]
    h = features
    for l, w in enumerate(weights):
        z = w @ h
        if biases is not None:
            z = z + biases[l][:, None]
        pre.append(z)
        if l + 1 < len(weights):
            h = _activate(z, activation)
            inputs.append(h)
    return ForwardStates(pre, inputs)


def fit_loss_of(output: torch.Tensor, targets: torch.Tensor, labels: torch.Tensor, loss: str) -> torch.Tensor:
    """Fit term of the loss for logits ``output`` (K × N), one-hot ``targets`` and ``labels``."""
    n = output.shape[1]
    if loss == "mse":
        return 0.5 * (output - targets).square().sum() / n
    return -(torch.log_softmax(output, dim=0) * targets).sum() / n


def _require_model_memory(name: str, dims: Sequence[int], n: int, k: int, dtype: torch.dtype,
                          device: torch.device) -> None:
    """Refuse a model whose parameters, features, labels and targets cannot fit (twice: the
    initialisation draws them before moving them to ``device``)."""
    itemsize = torch.empty(0, dtype=dtype).element_size()
    entries = sum(dims[l + 1] * dims[l] for l in range(len(dims) - 1)) + dims[0] * n + k * n
    require_memory(2 * entries * itemsize + 8 * n, f"a {name} with layer widths {list(dims)} and N={n} samples",
                   device, instead="a smaller width, depth or number of samples, or float32")


class LayeredModel(nn.Module):
    """Common machinery of :class:`DeepUFM` and :class:`MLPHead` (see the module docstring)."""

    weights: nn.ParameterList
    biases: nn.ParameterList | None
    labels: torch.Tensor
    targets: torch.Tensor

    def _setup(
        self,
        *,
        num_classes: int,
        dims: Sequence[int],
        labels: torch.Tensor,
        activation: str,
        loss: str,
        weight_decay: float | Sequence[float],
        feature_decay: float,
        bias: bool,
        generator: torch.Generator,
        init_std: float,
        dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose one of {ACTIVATIONS}")
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}; choose one of {LOSSES}")
        check_float_dtype(dtype)
        _require_model_memory(type(self).__name__, dims, labels.numel(), num_classes, dtype, device)
        self.num_classes = num_classes
        self.activation = activation
        self.loss_type = loss
        self.depth = len(dims) - 1
        self.weight_decay = per_layer(weight_decay, self.depth, "weight_decay")
        self.feature_decay = check_decay(feature_decay, "feature_decay")
        init_std = check_decay(init_std, "init_std")
        self.weights = nn.ParameterList(
            nn.Parameter(
                (torch.randn(dims[l + 1], dims[l], generator=generator, dtype=dtype) * init_std).to(device)
            )
            for l in range(self.depth)
        )
        self.biases = (
            nn.ParameterList(nn.Parameter(torch.zeros(dims[l + 1], dtype=dtype, device=device)) for l in range(self.depth))
            if bias
            else None
        )
        labels = labels.to(device=device, dtype=torch.long)
        self.register_buffer("labels", labels)
        self.register_buffer(
            "targets", torch.nn.functional.one_hot(labels, num_classes).T.to(dtype).contiguous()
        )

    # ------------------------------------------------------------------ structure
    @property
    def features(self) -> torch.Tensor:
        """:math:`H_1` (d_1 × N): a parameter (UFM) or a fixed buffer (MLP head)."""
        return self._features

    @property
    def num_samples(self) -> int:
        return int(self.labels.shape[0])

    @property
    def dtype(self) -> torch.dtype:
        return self.weights[0].dtype

    @property
    def device(self) -> torch.device:
        return self.weights[0].device

    @property
    def features_trainable(self) -> bool:
        return isinstance(self.features, nn.Parameter)

    def parameter_blocks(self, include_features: bool = False) -> list[tuple[str, torch.Tensor]]:
        """The parameters in the flat-vector order of the package.

        Order: ``W_1, b_1, W_2, b_2, ..., W_L, b_L`` (biases only if present), then ``H_1`` when
        ``include_features`` (and the features are trainable). Each block is flattened row-major
        (``reshape(-1)``).
        """
        blocks: list[tuple[str, torch.Tensor]] = []
        for l, w in enumerate(self.weights, start=1):
            blocks.append((f"W_{l}", w))
            if self.biases is not None:
                blocks.append((f"b_{l}", self.biases[l - 1]))
        if include_features:
            if not self.features_trainable:
                raise ValueError("this model's features are a fixed input, not a parameter")
            blocks.append(("H_1", self.features))
        return blocks

    def trainable_blocks(self) -> list[tuple[str, torch.Tensor]]:
        """All trained parameters, in the order of :meth:`parameter_blocks` with features."""
        return self.parameter_blocks(include_features=self.features_trainable)

    def check(self) -> None:
        """Raise a clear error if the parameters have drifted into mixed dtypes, devices or NaN."""
        ref = self.weights[0]
        tensors = [t for _, t in self.parameter_blocks()] + [self.features]
        names = [n for n, _ in self.parameter_blocks()] + ["H_1"]
        for name, t in zip(names, tensors):
            if t.dtype != ref.dtype:
                raise TypeError(f"{name} has dtype {t.dtype} but W_1 has {ref.dtype}: mixed dtypes")
            if t.device != ref.device:
                raise ValueError(f"{name} is on {t.device} but W_1 is on {ref.device}")
            check_tensor(t, name)

    # ------------------------------------------------------------------ forward
    def states(self) -> ForwardStates:
        """Forward pass with every intermediate matrix (see :class:`ForwardStates`)."""
        ws, bs = self._tensors()
        return forward_states(ws, bs, self.features, self.activation)

    def forward(self) -> torch.Tensor:
        """The output :math:`Z` (K × N)."""
        return self.states().output

    def output(self) -> torch.Tensor:
        return self.forward()

    def layer_inputs(self) -> list[torch.Tensor]:
        """:math:`[\\tilde h_1, \\dots, \\tilde h_L]`: the (post-activation) input of every layer."""
        return self.states().inputs

    def preactivations(self) -> list[torch.Tensor]:
        """:math:`[H_1, \\dots, H_{L+1}]`; :math:`H_{L+1} = Z`."""
        return self.states().preactivations

    def class_means(self, layer: int) -> torch.Tensor:
        """Class means of the input of ``layer`` (1..L), or of the output Z for ``layer = L+1``.

        Returns :math:`\\bar H_l = [\\mu_1, \\dots, \\mu_K]` of shape (d_l, K).
        """
        if not 1 <= layer <= self.depth + 1:
            raise ValueError(f"layer must be in 1..{self.depth + 1} (L+1 = output), got {layer}")
        st = self.states()
        h = st.output if layer == self.depth + 1 else st.inputs[layer - 1]
        return class_means(h, self.targets)

    # ------------------------------------------------------------------ loss
    def fit_loss(self) -> torch.Tensor:
        """The fit term alone (MSE or CE, mean over the N samples)."""
        return fit_loss_of(self.forward(), self.targets, self.labels, self.loss_type)

    def reg_loss(self) -> torch.Tensor:
        """:math:`\\sum_l \\lambda_l/2\\,\\|W_l\\|^2 + \\lambda_H/2\\,\\|H_1\\|^2` (λ_H only if trainable)."""
        reg = sum(0.5 * lam * w.square().sum() for lam, w in zip(self.weight_decay, self.weights))
        if self.features_trainable and self.feature_decay:
            reg = reg + 0.5 * self.feature_decay * self.features.square().sum()
        return torch.as_tensor(reg, dtype=self.dtype, device=self.device)

    def loss(self) -> torch.Tensor:
        """Fit term plus weight (and feature) decay."""
        return self.fit_loss() + self.reg_loss()

    def functional_loss(
        self, params: Sequence[torch.Tensor], include_features: bool = False, decay: bool = True
    ) -> torch.Tensor:
        """The loss as a pure function of the blocks of :meth:`parameter_blocks`.

        ``params`` replaces, in order, the tensors of ``parameter_blocks(include_features)``; the
        others are read from the model. Used by the autograd oracles (torch.func).
        """
        names = [n for n, _ in self.parameter_blocks(include_features)]
        if len(params) != len(names):
            raise ValueError(f"expected {len(names)} tensors ({', '.join(names)}), got {len(params)}")
        by_name = dict(zip(names, params))
        weights = [by_name[f"W_{l}"] for l in range(1, self.depth + 1)]
        biases = None if self.biases is None else [by_name[f"b_{l}"] for l in range(1, self.depth + 1)]
        features = by_name.get("H_1", self.features.detach())
        out = forward_states(weights, biases, features, self.activation).output
        value = fit_loss_of(out, self.targets, self.labels, self.loss_type)
        if decay:
            for lam, w in zip(self.weight_decay, weights):
                value = value + 0.5 * lam * w.square().sum()
            if self.features_trainable:
                value = value + 0.5 * self.feature_decay * features.square().sum()
        return value

    def output_gradient(
        self, output: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Fit loss and its gradient with respect to Z: :math:`(Z-Y)/N` (MSE) or
        :math:`(\\operatorname{softmax}(Z)-Y)/N` (CE), N being the number of columns of ``output``."""
        targets = self.targets if targets is None else targets
        n = output.shape[1]
        if self.loss_type == "mse":
            r = output - targets
            return 0.5 * r.square().sum() / n, r / n
        logp = torch.log_softmax(output, dim=0)
        return -(logp * targets).sum() / n, (logp.exp() - targets) / n

    def _tensors(self) -> tuple[list[torch.Tensor], list[torch.Tensor] | None]:
        """Weights and biases as plain lists (``ParameterList.__getitem__`` is slow on hot paths)."""
        ws = list(self.weights._parameters.values())
        bs = None if self.biases is None else list(self.biases._parameters.values())
        return ws, bs

    @torch.no_grad()
    def loss_and_gradients(self, decay: bool = True, columns: torch.Tensor | None = None) -> LossAndGradients:
        """Loss terms and their exact gradients by hand-written backpropagation.

        No autograd graph is built, which makes a training step a handful of matmuls (the decay
        term is fused into the weight-gradient GEMM). The result equals autograd's gradient
        (tested); gradients follow :meth:`trainable_blocks`. ``columns`` (an index tensor)
        restricts the fit term to a mini-batch of samples (its mean is then over the batch); the
        decay terms always cover every parameter.
        """
        ws, bs = self._tensors()
        feats = self.features
        if columns is None:
            st = forward_states(ws, bs, feats, self.activation)
            fit, g = self.output_gradient(st.output)
        else:
            st = forward_states(ws, bs, feats[:, columns], self.activation)
            fit, g = self.output_gradient(st.output, self.targets[:, columns])
        lams = self.weight_decay if decay else [0.0] * self.depth
        relu = self.activation == "relu"
        grads: list[torch.Tensor] = []
        for l in range(self.depth - 1, -1, -1):
            # dL/dW_l = G h_l^T + λ_l W_l in one GEMM
            gw = torch.addmm(ws[l], g, st.inputs[l].T, beta=lams[l]) if lams[l] else g @ st.inputs[l].T
            grads.append(gw)
            if bs is not None:
                grads.append(g.sum(dim=1))
            if l > 0:
                g = ws[l].T @ g
                if relu:
                    g = g * (st.preactivations[l] > 0)
        if bs is not None:  # collected as (..., W_l, b_l) backwards: reverse pairwise
            grads = [t for pair in reversed(list(zip(grads[::2], grads[1::2]))) for t in pair]
        else:
            grads.reverse()
        lam_h = self.feature_decay if decay else 0.0
        if self.features_trainable:
            if columns is None:
                gf = torch.addmm(feats, ws[0].T, g, beta=lam_h) if lam_h else ws[0].T @ g
            else:
                gf = torch.zeros_like(feats).index_add_(1, columns, ws[0].T @ g)
                if lam_h:
                    gf.add_(feats, alpha=lam_h)
            grads.append(gf)
        if decay:
            blocks = ws + ([feats] if self.features_trainable else [])
            coef = torch.tensor(lams + ([lam_h] if self.features_trainable else []), dtype=fit.dtype,
                                device=fit.device)
            reg = 0.5 * torch.dot(coef, torch.stack(torch._foreach_norm(blocks)).square())
        else:
            reg = torch.zeros((), dtype=fit.dtype, device=fit.device)
        return LossAndGradients(fit + reg, fit, reg, grads, st)

    def checkpoint_config(self) -> dict:
        """What a checkpoint records of the model and compares on resume (besides the shapes of the
        state dict): class, layer widths, K, activation, loss, decays, biases and dtype."""
        return {"class": type(self).__name__, "dims": [self.features.shape[0]] + [w.shape[0] for w in self.weights],
                "num_classes": self.num_classes, "activation": self.activation, "loss": self.loss_type,
                "weight_decay": self.weight_decay, "feature_decay": self.feature_decay,
                "bias": self.biases is not None, "dtype": str(self.dtype).replace("torch.", "")}

    def extra_repr(self) -> str:
        dims = [self.features.shape[0]] + [w.shape[0] for w in self.weights]
        return (f"dims={dims}, N={self.num_samples}, K={self.num_classes}, activation={self.activation}, "
                f"loss={self.loss_type}, weight_decay={self.weight_decay}, feature_decay={self.feature_decay}, "
                f"bias={self.biases is not None}, dtype={self.dtype}")


def class_means(h: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Class means (d × K) of the columns of ``h`` (d × N) for one-hot ``targets`` (K × N)."""
    counts = targets.sum(dim=1)
    if bool((counts == 0).any()):
        raise ValueError("every class needs at least one sample to have a mean")
    return (h @ targets.T) / counts


def _generator(seed: int) -> torch.Generator:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {seed!r}")
    return torch.Generator().manual_seed(seed)


class DeepUFM(LayeredModel):
    """Deep unconstrained feature model (linear or ReLU, MSE or CE) with free features ``H_1``.

    Shapes: ``H_1`` (width × N), ``W_1..W_{L-1}`` (width × width), ``W_L`` (K × width), with
    ``N = num_classes * n_per_class`` and columns in class order. See the module docstring for the
    map, the loss, the initialisation and the conventions.

    Args:
        num_classes: K ≥ 2.
        n_per_class: n ≥ 1 samples per class.
        width: d ≥ K.
        depth: L ≥ 1 weight matrices.
        activation: ``"linear"`` or ``"relu"``.
        loss: ``"mse"`` or ``"ce"``.
        weight_decay: λ_W, one float or a list of L floats (λ_1..λ_L).
        feature_decay: λ_H; ``None`` means the same as ``weight_decay`` (which must then be a
            single value).
        seed: seed of the initialisation.
        dtype: torch.float32 or torch.float64.
        device: where the parameters live.
        init_std: standard deviation of the initial entries (default 1/sqrt(width)).

    >>> m = DeepUFM(num_classes=4, n_per_class=5, width=12, depth=4)
    >>> m.features.shape, m.weights[-1].shape, m.labels[:6].tolist()
    (torch.Size([12, 20]), torch.Size([4, 12]), [0, 0, 0, 0, 0, 1])
    """

    def __init__(
        self,
        num_classes: int,
        n_per_class: int,
        width: int,
        depth: int,
        activation: str = "linear",
        loss: str = "mse",
        weight_decay: float | Sequence[float] = 5e-3,
        feature_decay: float | None = None,
        seed: int = 0,
        dtype: torch.dtype = torch.float64,
        device: str | torch.device = "cpu",
        init_std: float | None = None,
    ) -> None:
        super().__init__()
        k = check_positive_int(num_classes, "num_classes", 2)
        n = check_positive_int(n_per_class, "n_per_class")
        d = check_positive_int(width, "width")
        depth = check_positive_int(depth, "depth")
        if d < k:
            raise ValueError(f"width d={d} must be >= num_classes K={k} (the UFM needs d >= K)")
        if feature_decay is None:
            lams = per_layer(weight_decay, depth, "weight_decay")
            if len(set(lams)) > 1:
                raise ValueError("feature_decay=None means 'the same as weight_decay', which is ambiguous "
                                 "for per-layer weight decays: pass feature_decay explicitly")
            feature_decay = lams[0]
        device = torch.device(device)
        _require_model_memory(type(self).__name__, [d] * depth + [k], k * n, k, check_float_dtype(dtype), device)
        self.n_per_class = n
        self.width = d
        gen = _generator(seed)
        std = 1.0 / d**0.5 if init_std is None else init_std
        labels = torch.arange(k).repeat_interleave(n)
        self._setup(num_classes=k, dims=[d] * depth + [k], labels=labels, activation=activation, loss=loss,
                    weight_decay=weight_decay, feature_decay=feature_decay, bias=False, generator=gen,
                    init_std=std, dtype=dtype, device=device)
        self._features = nn.Parameter((torch.randn(d, k * n, generator=gen, dtype=dtype) * std).to(device))


class MLPHead(LayeredModel):
    """An MLP on fixed input features ``X`` (d_in × N, columns are samples) with class labels.

    ``W_1`` is (width × d_in), ``W_2..W_{L-1}`` (width × width), ``W_L`` (K × width); ``width`` may
    also be a list of the L − 1 hidden widths. It shares the
    forward map, losses, conventions and analytic gradients of :class:`DeepUFM`; ``X`` plays the
    role of ``H_1`` but is not trained (``feature_decay`` does not apply). Biases are optional and
    not decayed.
    """

    def __init__(
        self,
        inputs: torch.Tensor,
        labels: torch.Tensor,
        width: int | Sequence[int],
        depth: int,
        num_classes: int | None = None,
        activation: str = "relu",
        loss: str = "mse",
        weight_decay: float | Sequence[float] = 5e-3,
        bias: bool = False,
        seed: int = 0,
        dtype: torch.dtype | None = None,
        device: str | torch.device | None = None,
        init_std: float | None = None,
    ) -> None:
        super().__init__()
        check_tensor(inputs, "inputs", ndim=2)
        check_tensor(labels, "labels", ndim=1, finite=False)
        if labels.dtype.is_floating_point or labels.dtype == torch.bool:
            raise TypeError(f"labels must be an integer tensor, got {labels.dtype}")
        if inputs.shape[1] != labels.shape[0]:
            raise ValueError(f"inputs has {inputs.shape[1]} columns (samples) but labels has {labels.shape[0]} "
                             "entries; inputs must be (d_in, N)")
        dtype = inputs.dtype if dtype is None else dtype
        check_float_dtype(dtype)
        if inputs.dtype != dtype:
            raise TypeError(f"inputs has dtype {inputs.dtype} but dtype={dtype} was requested: mixed dtypes")
        if labels.numel() and int(labels.min()) < 0:
            raise ValueError("labels must be >= 0")
        k = int(labels.max()) + 1 if num_classes is None else check_positive_int(num_classes, "num_classes", 2)
        if labels.numel() and int(labels.max()) >= k:
            raise ValueError(f"labels go up to {int(labels.max())} but num_classes={k}")
        depth = check_positive_int(depth, "depth")
        widths = [width] * (depth - 1) if isinstance(width, int) else list(width)
        if len(widths) != depth - 1:
            raise ValueError(f"width must be an int or a list of depth-1={depth - 1} hidden widths, got {width!r}")
        widths = [check_positive_int(w, "width") for w in widths]
        d = widths[0] if widths else check_positive_int(width if isinstance(width, int) else 1, "width")
        device = inputs.device if device is None else torch.device(device)
        self.width = d
        gen = _generator(seed)
        std = 1.0 / d**0.5 if init_std is None else init_std
        dims = [inputs.shape[0]] + widths + [k]
        self._setup(num_classes=k, dims=dims, labels=labels, activation=activation, loss=loss,
                    weight_decay=weight_decay, feature_decay=0.0, bias=bias, generator=gen, init_std=std,
                    dtype=dtype, device=device)
        self.register_buffer("_features", inputs.to(device).contiguous())
