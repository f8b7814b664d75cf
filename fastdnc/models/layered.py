r"""The layered core shared by :class:`~fastdnc.models.DeepUFM` and :class:`~fastdnc.models.MLPHead`:
parameters, forward states, the loss and its exact gradients by hand-written backpropagation,
the per-layer quantities the curvature operators read, and the checkpoint description."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .._checks import (
    check_decay,
    check_float_dtype,
    check_tensor,
    per_layer,
)
from .._memory import require_memory
from .forward import (
    ACTIVATIONS,
    LOSSES,
    ForwardStates,
    LossAndGradients,
    class_means,
    fit_loss_of,
    forward_states,
)


def require_model_memory(
    name: str, dims: Sequence[int], n: int, k: int, dtype: torch.dtype, device: torch.device
) -> None:
    """Refuse a model whose parameters, features, labels and targets cannot fit (twice: the
    initialisation draws them before moving them to ``device``)."""
    itemsize = torch.empty(0, dtype=dtype).element_size()
    entries = sum(dims[l + 1] * dims[l] for l in range(len(dims) - 1)) + dims[0] * n + k * n
    require_memory(
        2 * entries * itemsize + 8 * n,
        f"a {name} with layer widths {list(dims)} and N={n} samples",
        device,
        instead="a smaller width, depth or number of samples, or float32",
    )


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
        require_model_memory(type(self).__name__, dims, labels.numel(), num_classes, dtype, device)
        self.num_classes = num_classes
        self.activation = activation
        self.loss_type = loss
        self.depth = len(dims) - 1
        self.weight_decay = per_layer(weight_decay, self.depth, "weight_decay")
        self.feature_decay = check_decay(feature_decay, "feature_decay")
        init_std = check_decay(init_std, "init_std")
        self.weights = nn.ParameterList(
            nn.Parameter((torch.randn(dims[l + 1], dims[l], generator=generator, dtype=dtype) * init_std).to(device))
            for l in range(self.depth)
        )
        self.biases = (
            nn.ParameterList(
                nn.Parameter(torch.zeros(dims[l + 1], dtype=dtype, device=device)) for l in range(self.depth)
            )
            if bias
            else None
        )
        labels = labels.to(device=device, dtype=torch.long)
        self.register_buffer("labels", labels)
        self.register_buffer("targets", torch.nn.functional.one_hot(labels, num_classes).T.to(dtype).contiguous())

    # ------------------------------------------------------------------ structure
    @property
    def features(self) -> torch.Tensor:
        """:math:`H_1` (d_1 × N): a parameter (UFM) or a fixed buffer (MLP head)."""
        return self._features  # type: ignore[return-value]  # a Parameter or a buffer

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
        ws, bs = self.tensors()
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

    def tensors(self) -> tuple[list[torch.Tensor], list[torch.Tensor] | None]:
        """Weights and biases as plain lists (``ParameterList.__getitem__`` is slow on hot paths)."""
        ws = [p for p in self.weights._parameters.values() if p is not None]
        bs = None if self.biases is None else [p for p in self.biases._parameters.values() if p is not None]
        return list(ws), None if bs is None else list(bs)

    @torch.no_grad()
    def loss_and_gradients(self, decay: bool = True, columns: torch.Tensor | None = None) -> LossAndGradients:
        """Loss terms and their exact gradients by hand-written backpropagation.

        No autograd graph is built, which makes a training step a handful of matmuls (the decay
        term is fused into the weight-gradient GEMM). The result equals autograd's gradient
        (tested); gradients follow :meth:`trainable_blocks`. ``columns`` (an index tensor)
        restricts the fit term to a mini-batch of samples (its mean is then over the batch); the
        decay terms always cover every parameter.
        """
        ws, bs = self.tensors()
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
            coef = torch.tensor(lams + ([lam_h] if self.features_trainable else []), dtype=fit.dtype, device=fit.device)
            reg = 0.5 * torch.dot(coef, torch.stack(torch._foreach_norm(blocks)).square())
        else:
            reg = torch.zeros((), dtype=fit.dtype, device=fit.device)
        return LossAndGradients(fit + reg, fit, reg, grads, st)

    def checkpoint_config(self) -> dict:
        """What a checkpoint records of the model and compares on resume (besides the shapes of the
        state dict): class, layer widths, K, activation, loss, decays, biases and dtype."""
        return {
            "class": type(self).__name__,
            "dims": [self.features.shape[0]] + [w.shape[0] for w in self.weights],
            "num_classes": self.num_classes,
            "activation": self.activation,
            "loss": self.loss_type,
            "weight_decay": self.weight_decay,
            "feature_decay": self.feature_decay,
            "bias": self.biases is not None,
            "dtype": str(self.dtype).replace("torch.", ""),
        }

    def extra_repr(self) -> str:
        dims = [self.features.shape[0]] + [w.shape[0] for w in self.weights]
        return (
            f"dims={dims}, N={self.num_samples}, K={self.num_classes}, activation={self.activation}, "
            f"loss={self.loss_type}, weight_decay={self.weight_decay}, feature_decay={self.feature_decay}, "
            f"bias={self.biases is not None}, dtype={self.dtype}"
        )


def require_layered(model: object, call: str, instead: str) -> None:
    """A TypeError that names the call that can take ``model`` when it is not a DeepUFM / MLPHead."""
    if not isinstance(model, LayeredModel):
        raise TypeError(
            f"{call} takes a DeepUFM or an MLPHead, not a {type(model).__name__}: for any nn.Module use {instead}"
        )
