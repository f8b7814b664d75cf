"""The deep unconstrained feature model: free features H_1 in class order."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .._checks import (
    check_float_dtype,
    check_positive_int,
    check_seed,
    per_layer,
)
from .layered import LayeredModel, require_model_memory


def seeded_generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(check_seed(seed))


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
                raise ValueError(
                    "feature_decay=None means 'the same as weight_decay', which is ambiguous "
                    "for per-layer weight decays: pass feature_decay explicitly"
                )
            feature_decay = lams[0]
        device = torch.device(device)
        require_model_memory(type(self).__name__, [d] * depth + [k], k * n, k, check_float_dtype(dtype), device)
        self.n_per_class = n
        self.width = d
        gen = seeded_generator(seed)
        std = 1.0 / d**0.5 if init_std is None else init_std
        labels = torch.arange(k).repeat_interleave(n)
        self._setup(
            num_classes=k,
            dims=[d] * depth + [k],
            labels=labels,
            activation=activation,
            loss=loss,
            weight_decay=weight_decay,
            feature_decay=feature_decay,
            bias=False,
            generator=gen,
            init_std=std,
            dtype=dtype,
            device=device,
        )
        self._features = nn.Parameter((torch.randn(d, k * n, generator=gen, dtype=dtype) * std).to(device))
