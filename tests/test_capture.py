"""Forward hooks on any model: the call order, the default layers of the DNC lens (the trailing
linear head) and the labels of a batch's target."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fastdnc.batches import read_batches
from fastdnc.capture import call_order, captured_passes, labels_of, trailing_linear_head


class TinyResNet(nn.Module):
    """A conv trunk with a residual block, average pooling and an ``fc`` (torchvision's layout)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.block, self.pool, self.fc = (
            nn.Conv2d(1, 4, 3),
            nn.Conv2d(4, 4, 3, padding=1),
            nn.AdaptiveAvgPool2d(1),
            nn.Linear(4, 3),
        )

    def forward(self, x):
        h = torch.relu(self.conv(x))
        h = h + torch.relu(self.block(h))
        return self.fc(torch.flatten(self.pool(h), 1))


@pytest.mark.parametrize(
    "model, shape, head",
    [
        (TinyResNet(), (2, 1, 6, 6), ["fc"]),
        (
            nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Dropout(0.1), nn.Linear(8, 3)),
            (2, 1, 4, 4),
            ["1", "4"],
        ),
        (nn.Sequential(nn.Linear(4, 5), nn.GELU(), nn.Linear(5, 3)), (2, 4), ["0", "2"]),
        (nn.Sequential(nn.Linear(4, 5), nn.LayerNorm(5), nn.Linear(5, 3)), (2, 4), ["2"]),
    ],
    ids=["resnet-fc", "classifier-sequential", "mlp", "layernorm-stops-the-head"],
)
def test_the_trailing_linear_head(model, shape, head):
    x = torch.randn(*shape)
    assert trailing_linear_head(model, (x,)) == head
    order = call_order(model, (x,))
    assert order[-1] == head[-1] and len(order) == len(set(order))


def test_a_model_that_does_not_end_in_linear_layers_is_refused():
    with pytest.raises(ValueError, match="does not end in nn.Linear layers"):
        trailing_linear_head(
            nn.Sequential(nn.Linear(3, 3), nn.Softmax(1), nn.Identity(), nn.LayerNorm(3)), (torch.randn(2, 3),)
        )


def test_captured_inputs_and_outputs_are_the_modules_own():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3))
    x, y = torch.randn(6, 4), torch.arange(6) % 3
    batches = read_batches([(x[:4], y[:4]), (x[4:], y[4:])])
    seen = list(captured_passes(model, batches, [("0", "output"), ("2", "input")]))
    assert len(seen) == 2
    feats, target, out = seen[0]
    torch.testing.assert_close(feats[("0", "output")], model[0](x[:4]))
    torch.testing.assert_close(feats[("2", "input")], torch.relu(model[0](x[:4])))
    torch.testing.assert_close(out, model(x[:4]))


def test_labels_of_targets():
    assert labels_of(torch.tensor([2, 0, 1]), 3).tolist() == [2, 0, 1]
    assert labels_of(torch.eye(3)[[1, 2]], 3).tolist() == [1, 2]
    with pytest.raises(ValueError, match="outside 0..2"):
        labels_of(torch.tensor([3]), 3)
    with pytest.raises(ValueError, match="needs class indices"):
        labels_of(torch.randn(4, 2), 3)
