r"""Real networks: a convolutional backbone with a fully connected head (the companion-paper template).

:class:`BackboneHead` maps images through a backbone to features :math:`H_1 = \phi(X)` (d × N),
then through a head of L fully connected layers (:math:`W_1` d_h × d, …, :math:`W_L` K × d_h; ReLU or
linear, bias optional) exactly as :class:`~fastdnc.models.MLPHead` does. Its loss is the fit term
plus :math:`\frac{\lambda_W}2\sum_l\|W_l\|^2` on the head and :math:`\frac{\lambda_H}2\|H_1\|_F^2` on
the backbone's output features (the UFM's feature decay; the backbone's own weights are not
decayed). :meth:`BackboneHead.head` freezes the features and returns the head as an
:class:`~fastdnc.models.MLPHead`, on which every curvature operator and metric of the package
works (layer Hessians through the batched Gauss–Newton kernels, the full head Hessian, NC metrics).

Backbones: :class:`ConvBackbone` (a small CNN) and :class:`ResNet20` (He et al.'s CIFAR ResNet-20:
three stages of three basic blocks, 16/32/64 channels, global average pooling; ``width`` scales the
channels). Both end in a global average pool, so they take any image size.
"""

from __future__ import annotations

import torch
from torch import nn

from .models import MLPHead, fit_loss_of, forward_states


class ConvBackbone(nn.Module):
    """conv3×3(c) → ReLU → conv3×3(2c, stride 2) → ReLU → conv3×3(features) → ReLU → global mean."""

    def __init__(self, in_channels: int, features: int = 64, channels: int = 16) -> None:
        super().__init__()
        self.out_features = features
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, channels, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(channels, 2 * channels, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(2 * channels, features, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.b1 = nn.BatchNorm2d(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.b2 = nn.BatchNorm2d(cout)
        self.skip = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            if stride != 1 or cin != cout
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.b1(self.c1(x)))
        return torch.relu(self.b2(self.c2(y)) + self.skip(x))


class ResNet20(nn.Module):
    """CIFAR ResNet-20 (3 stages × 3 basic blocks), ``out_features`` = 4·width (64 by default)."""

    def __init__(self, in_channels: int = 3, width: int = 16, blocks_per_stage: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
        cin = width
        for stage, cout in enumerate((width, 2 * width, 4 * width)):
            for b in range(blocks_per_stage):
                layers.append(_Block(cin, cout, 2 if stage > 0 and b == 0 else 1))
                cin = cout
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.net = nn.Sequential(*layers)
        self.out_features = cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class BackboneHead(nn.Module):
    """A backbone and an L-layer head trained end to end (see the module docstring).

    Args:
        backbone: a module mapping (N, C, H, W) images to (N, d) features, with ``out_features``.
        images, labels: the training set (kept on the module; mini-batches index into it).
        width: hidden width of the head; depth: L weight matrices.
        weight_decay: λ_W on the head; feature_decay: λ_H on the features.

    ``train(model, ...)`` trains it through autograd (full batch, or ``batch_size`` with SGD/Adam).
    """

    accepts_columns = True

    images: torch.Tensor  # buffers (registered in __init__)
    labels: torch.Tensor
    targets: torch.Tensor

    def __init__(
        self,
        backbone: nn.Module,
        images: torch.Tensor,
        labels: torch.Tensor,
        num_classes: int,
        width: int = 64,
        depth: int = 3,
        activation: str = "relu",
        loss: str = "mse",
        weight_decay: float = 5e-3,
        feature_decay: float = 1e-6,
        bias: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        # the data are not part of a checkpoint (the loader recreates them)
        self.register_buffer("images", images, persistent=False)
        self.register_buffer("labels", labels.to(torch.long), persistent=False)
        self.register_buffer(
            "targets", nn.functional.one_hot(self.labels, num_classes).T.to(images.dtype).contiguous(), persistent=False
        )
        self.num_classes, self.activation, self.loss_type = num_classes, activation, loss
        self.width, self.head_depth = width, depth
        self.weight_decay, self.feature_decay = float(weight_decay), float(feature_decay)
        probe = MLPHead(
            torch.zeros(backbone.out_features, 1, dtype=images.dtype),
            torch.zeros(1, dtype=torch.long),
            width,
            depth,
            num_classes=num_classes,
            activation=activation,
            loss=loss,
            weight_decay=weight_decay,
            bias=bias,
            seed=seed,
        )
        self.weights = probe.weights
        self.biases = probe.biases

    @property
    def num_samples(self) -> int:
        return self.labels.shape[0]

    def checkpoint_config(self) -> dict:
        """What a checkpoint records and compares on resume: the head, the decays and the backbone's class."""
        return {
            "class": type(self).__name__,
            "backbone": type(self.backbone).__name__,
            "width": self.width,
            "depth": self.head_depth,
            "num_classes": self.num_classes,
            "activation": self.activation,
            "loss": self.loss_type,
            "weight_decay": self.weight_decay,
            "feature_decay": self.feature_decay,
            "bias": self.biases is not None,
            "dtype": str(self.images.dtype).replace("torch.", ""),
        }

    @property
    def device(self) -> torch.device:
        return self.images.device

    #: samples per chunk of a full-batch evaluation in training (bounded memory)
    FULL_BATCH_CHUNK = 2048

    def full_batch_chunks(self) -> list[torch.Tensor] | None:
        r"""Index chunks over which the full-batch loss is :math:`\sum_b (n_b/N)` ``loss(b)``
        exactly (the trainer accumulates it chunk by chunk); ``None`` for a backbone with batch
        normalisation in training mode (its statistics over a chunk are not those of the batch)."""
        batch_statistics = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
        if self.num_samples <= self.FULL_BATCH_CHUNK or any(
            isinstance(m, batch_statistics) and m.training for m in self.backbone.modules()
        ):
            return None
        return list(torch.arange(self.num_samples, device=self.device).split(self.FULL_BATCH_CHUNK))

    def features(self, columns: torch.Tensor | None = None) -> torch.Tensor:
        """The backbone's output features :math:`H_1` (d × N, or d × batch)."""
        x = self.images if columns is None else self.images[columns]
        return self.backbone(x).T

    def loss(self, columns: torch.Tensor | None = None) -> torch.Tensor:
        """Fit + λ_W/2 Σ‖W_l‖² + λ_H/2 ‖H_1‖² (on a mini-batch, the feature term is scaled by N/batch)."""
        h1 = self.features(columns)
        z = forward_states(
            list(self.weights), None if self.biases is None else list(self.biases), h1, self.activation
        ).output
        cols = slice(None) if columns is None else columns
        fit = fit_loss_of(z, self.targets[:, cols], self.labels[cols], self.loss_type)
        scale = self.num_samples / h1.shape[1]
        reg = 0.5 * self.weight_decay * sum(w.square().sum() for w in self.weights)
        return fit + reg + 0.5 * self.feature_decay * scale * h1.square().sum()

    @torch.no_grad()
    def head(self, columns: torch.Tensor | None = None) -> MLPHead:
        """The head on the frozen features (eval mode), as an :class:`MLPHead` with the same weights;
        ``columns`` (indices): on those samples only."""
        was = self.backbone.training
        self.backbone.eval()
        h1 = self.features(columns).detach().contiguous()
        self.backbone.train(was)
        head = MLPHead(
            h1,
            self.labels if columns is None else self.labels[columns],
            self.width,
            self.head_depth,
            num_classes=self.num_classes,
            activation=self.activation,
            loss=self.loss_type,
            weight_decay=self.weight_decay,
            bias=self.biases is not None,
        )
        for dst, src in zip(head.weights, self.weights):
            dst.copy_(src)
        if self.biases is not None and head.biases is not None:
            for dst, src in zip(head.biases, self.biases):
                dst.copy_(src)
        return head
