"""An MLP head on fixed features (e.g. a backbone's), any labels, optional biases."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .._checks import (
    check_float_dtype,
    check_positive_int,
    check_tensor,
)
from .layered import LayeredModel
from .ufm import seeded_generator


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
            raise ValueError(
                f"inputs has {inputs.shape[1]} columns (samples) but labels has {labels.shape[0]} "
                "entries; inputs must be (d_in, N)"
            )
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
        gen = seeded_generator(seed)
        std = 1.0 / d**0.5 if init_std is None else init_std
        dims = [inputs.shape[0]] + widths + [k]
        self._setup(
            num_classes=k,
            dims=dims,
            labels=labels,
            activation=activation,
            loss=loss,
            weight_decay=weight_decay,
            feature_decay=0.0,
            bias=bias,
            generator=gen,
            init_std=std,
            dtype=dtype,
            device=device,
        )
        self.register_buffer("_features", inputs.to(device).contiguous())
