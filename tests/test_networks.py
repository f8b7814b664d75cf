"""Backbone + head networks: training through the package's trainer, and the head's exact curvature."""

from __future__ import annotations

import pytest
import torch

import fastdnc as fd
from fastdnc.curvature import oracles as R
from fastdnc.data import load_dataset
from fastdnc.networks import BackboneHead, ConvBackbone, ResNet20


def tiny(backbone_cls, **kw):
    g = torch.Generator().manual_seed(0)
    images = torch.randn(12, 1, 8, 8, generator=g)
    labels = torch.arange(3).repeat_interleave(4)
    torch.manual_seed(0)
    backbone = backbone_cls(1, **kw)
    return BackboneHead(backbone, images, labels, 3, width=5, depth=3, weight_decay=1e-2, feature_decay=1e-3)


@pytest.mark.parametrize("backbone", [ConvBackbone, ResNet20], ids=["cnn", "resnet20"])
def test_backbone_head_trains_and_checkpoints(tmp_path, backbone):
    model = tiny(backbone)
    before = float(model.loss().detach())
    hist = fd.train(model, 30, 0.05, optimizer="adam", checkpoint=tmp_path / "ck.pt", progress=False)
    assert hist.last("loss") < before
    # resume from the finished checkpoint: the data are not stored in it, the weights are
    again = tiny(backbone)
    fd.train(again, 30, 0.05, optimizer="adam", checkpoint=tmp_path / "ck.pt", progress=False)
    for a, b in zip(model.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)
    # mini-batches go through loss(columns)
    fd.train(tiny(backbone), 5, 0.01, optimizer="sgd", batch_size=4, progress=False)


@pytest.mark.parametrize("backbone", [ConvBackbone, ResNet20], ids=["cnn", "resnet20"])
def test_full_batch_values_and_gradients_in_chunks_are_exact(monkeypatch, backbone):
    """The trainer evaluates a large full batch chunk by chunk (Σ_b (n_b/N) loss(b)): the same loss and
    gradient as one pass (float64); a backbone with batch statistics is never chunked."""
    from fastdnc.training.loop import local_loss_and_grads

    model = tiny(backbone).double()
    monkeypatch.setattr(BackboneHead, "FULL_BATCH_CHUNK", 5)  # 12 samples: chunks of 5, 5, 2
    chunks = model.full_batch_chunks()
    assert (chunks is None) == (backbone is ResNet20)
    params = [p for p in model.parameters() if p.requires_grad]
    loss, _, _, grads = local_loss_and_grads(model, "batch", params, None)
    whole = model.loss()
    torch.testing.assert_close(loss, whole.detach(), rtol=1e-13, atol=0)
    for g, ref in zip(grads, torch.autograd.grad(whole, params), strict=True):
        torch.testing.assert_close(g, ref, rtol=1e-12, atol=1e-14)


def test_head_layer_hessians_match_autograd():
    model = tiny(ConvBackbone, features=6, channels=4)
    fd.train(model, 20, 0.05, optimizer="adam", progress=False)
    head = model.head()
    assert head.features.shape == (6, 12)
    z = head.output()
    torch.testing.assert_close(z.T, _logits(model))
    for layer in range(1, head.depth + 1):
        got = fd.layer_hessian(head, layer).to_dense()
        ref = R.dense_layer_hessian(head, layer)
        assert float((got - ref).abs().max()) <= 1e-10 * float(ref.abs().max())
    full = fd.hessian(head).to_dense()
    assert float((full - R.dense_hessian(head)).abs().max()) <= 1e-10 * float(full.abs().max())


def _logits(model):
    model.backbone.eval()
    with torch.no_grad():
        h = model.backbone(model.images)
        for l, w in enumerate(model.weights):
            h = h @ w.T
            if l + 1 < len(model.weights):
                h = torch.relu(h)
    return h


def test_digits_mlp_layer_hessians_match_autograd_on_a_subset():
    data = load_dataset("digits", n_per_class=3)
    head = fd.MLPHead(data.flat(), data.labels, 7, 3, activation="relu", loss="ce", bias=True)
    fd.train(head, 50, 1e-2, optimizer="adam", progress=False)
    for layer in range(1, 4):
        got = fd.layer_hessian(head, layer).to_dense()
        ref = R.dense_layer_hessian(head, layer)
        assert float((got - ref).abs().max()) <= 1e-10 * float(ref.abs().max())
