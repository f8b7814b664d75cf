"""Real networks layer by layer: ``fastdnc reproduce --preset real --dataset digits|mnist1d|mnist|cifar10``.

Trains an MLP (``model="mlp"``: the input, then L fully connected layers of width d) or a backbone
with a fully connected head (``"cnn"`` or ``"resnet20"``, :mod:`fastdnc.networks`; λ_W on the head,
λ_H on the backbone's output features) with the package's trainer (progress, checkpoints, resume),
then analyses every head layer on the frozen features in float64:

* the exact spectrum of every layer Hessian (dense through the batched Gauss–Newton assembly up to
  ``dense_limit`` parameters, else the top by Lanczos), with the outlier count next to K and K²;
* f_cc' and κ_cc' of the class-mean pairs, and the per-layer NC metrics;
* the top of the full head Hessian, the Gur-Ari overlap of the fit gradient with its top K², and
  its SLQ density.

For the MLP the "head" is the whole network and its input is the (standardised) data.
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .. import distributed as D
from .. import plots
from ..alignment import eigenvector_fidelity, gradient_coefficients
from ..collapse import streaming_feature_metrics
from ..curvature import oracles
from ..curvature.full import hessian
from ..curvature.layer import layer_hessian
from ..data import DataError, load_dataset, standardize
from ..io import atomic_write_json, atomic_write_text
from ..models import MLPHead, forward_states
from ..networks import BackboneHead, ConvBackbone, ResNet20
from ..spectral import gradient_overlap, lanczos, outliers, spectral_density
from ..stages import Stages
from ..train import train
from .real_report import report

MODELS = ("mlp", "cnn", "resnet20")


@dataclass
class RealConfig:
    """One real-data run (defaults: the digits MLP, the embedded real-data default)."""

    dataset: str = "digits"
    data_dir: str | None = None
    n_per_class: int | None = None
    model: str = "mlp"
    width: int = 64
    depth: int = 4
    activation: str = "relu"
    loss: str = "mse"
    weight_decay: float = 5e-3
    feature_decay: float = 1e-6
    optimizer: str = "adam"
    lr: float = 1e-3
    steps: int = 3000
    batch_size: int | None = None
    seed: int = 0
    dense_limit: int = 6000

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {MODELS}, got {self.model!r}")


def build(cfg: RealConfig, distributed: bool = False):
    """The data set and the untrained model of ``cfg`` (float32 for training); ``distributed``: the
    model holds this rank's shard of the samples (the same initial weights on every rank)."""
    data = load_dataset(cfg.dataset, cfg.data_dir, n_per_class=cfg.n_per_class, seed=cfg.seed, dtype=torch.float32)
    idx = D.shard_indices(data.num_samples) if distributed else slice(None)
    torch.manual_seed(cfg.seed)
    model: MLPHead | BackboneHead
    if cfg.model == "mlp":
        model = MLPHead(
            data.flat()[:, idx].contiguous(),
            data.labels[idx],
            cfg.width,
            cfg.depth,
            num_classes=data.num_classes,
            activation=cfg.activation,
            loss=cfg.loss,
            weight_decay=cfg.weight_decay,
            seed=cfg.seed,
        )
        return data, model
    images = (data.inputs if data.inputs.ndim == 4 else data.inputs[:, None, None, :])[idx]
    backbone = ConvBackbone(images.shape[1], cfg.width) if cfg.model == "cnn" else ResNet20(images.shape[1])
    backbone = backbone.to(images.dtype)
    model = BackboneHead(
        backbone,
        images,
        data.labels[idx],
        data.num_classes,
        cfg.width,
        cfg.depth,
        cfg.activation,
        cfg.loss,
        cfg.weight_decay,
        cfg.feature_decay,
        seed=cfg.seed,
    )
    return data, model


@torch.no_grad()
def held_out_accuracy(cfg: RealConfig, model) -> tuple[float | None, int]:
    """Accuracy of the trained ``model`` on the data set's held-out split (the MNIST or CIFAR-10
    test files, the offline sample's stratified test part, the digits' and MNIST-1D's test parts),
    standardised with the training samples' statistics, and its size; ``(None, 0)`` when a local
    folder has no test files (the report says so)."""
    train_raw = load_dataset(cfg.dataset, cfg.data_dir, n_per_class=cfg.n_per_class, seed=cfg.seed, standardise=False)
    try:
        raw = load_dataset(cfg.dataset, cfg.data_dir, split="test", seed=cfg.seed, standardise=False)
    except DataError:
        return None, 0
    test = standardize(raw, reference=train_raw)
    if isinstance(model, MLPHead):
        h1, weights, biases = test.flat().to(model.dtype), model.weights, model.biases
    else:
        was = model.backbone.training
        model.backbone.eval()
        images = test.inputs if test.inputs.ndim == 4 else test.inputs[:, None, None, :]
        h1 = model.backbone(images.to(next(model.backbone.parameters()).dtype)).T
        model.backbone.train(was)
        weights, biases = model.weights, model.biases
    z = forward_states(list(weights), None if biases is None else list(biases), h1, model.activation).output
    return float((z.argmax(0) == test.labels).double().mean()), test.num_samples


def run(cfg: RealConfig, out: Path, progress: bool = True, distributed: bool = False) -> dict:
    """Train, analyse, write the figures under ``out`` and return the JSON-ready results.

    ``distributed`` (under torchrun): data-parallel training and sharded analysis; every rank
    returns the same results and rank 0 writes the files."""
    out.mkdir(parents=True, exist_ok=True)
    data, model = build(cfg, distributed)
    name = f"real_{cfg.dataset}_{cfg.model}"
    history = train(
        model,
        cfg.steps,
        cfg.lr,
        optimizer=cfg.optimizer,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        checkpoint=out / f"{name}.ckpt",
        label=name,
        progress=progress and D.rank() == 0,
        log_at=max(cfg.steps // 100, 1),
        distributed=distributed,
    )
    head = model if isinstance(model, MLPHead) else model.head()
    head64 = _as_float64(head)
    t0 = time.perf_counter()
    analysis = analyze_head(head64, cfg.dense_limit, distributed, label=name if progress and D.rank() == 0 else None)
    analysis["seconds"] = time.perf_counter() - t0
    test_accuracy, test_samples = held_out_accuracy(cfg, model)
    hits = torch.tensor(
        [float((head64.output().argmax(0) == head64.labels).sum()), float(head64.num_samples)], dtype=torch.float64
    )
    if distributed:
        D.all_reduce_(hits, "counting correct predictions")
    accuracy = float(hits[0] / hits[1])
    figs = _figures(name, cfg, history, analysis, head64.num_classes, out) if D.rank() == 0 else {}
    return {
        "config": asdict(cfg),
        "samples": data.num_samples,
        "num_classes": head64.num_classes,
        "ranks": D.world_size() if distributed else 1,
        "data_source": data.name,
        "train_accuracy": accuracy,
        "test_accuracy": test_accuracy,
        "test_samples": test_samples,
        "train_seconds": history.last("wall_time"),
        "final_loss": history.last("loss"),
        "analysis": analysis,
        "figures": figs,
    }


def _as_float64(head: MLPHead) -> MLPHead:
    """The same head in float64 (analysis precision); the trained one is left as it is."""
    return copy.deepcopy(head).double()


@torch.no_grad()
def analyze_head(head: MLPHead, dense_limit: int = 6000, distributed: bool = False, label: str | None = None) -> dict:
    """Layer spectra, outlier counts against K and K², f, κ, NC metrics and the full head Hessian.

    ``distributed``: ``head`` holds this rank's shard; every quantity is over all ranks' samples
    (sharded operators, reduced class means and gradients, streaming NC metrics). ``label``: print
    each stage and its time to stderr under that name (silent when None)."""
    stage = Stages(label or "", head.depth + 2, label is not None)
    k = head.num_classes
    eye = torch.eye(k, dtype=torch.bool)
    st = head.states()
    feats = st.inputs + [st.output]
    pred = st.output.argmax(0)
    nc = [
        streaming_feature_metrics(
            lambda h=h, p=p: [(h, head.labels, pred, p)], k, reduce=None if distributed else (lambda t, what="": t)
        )
        for h, p in zip(feats, st.preactivations)
    ]
    layers = []
    for l in range(1, head.depth + 1):
        if distributed:
            H = D.sharded_layer_hessian(head, l)
            means = (D.global_class_means(head, l + 1), D.global_class_means(head, l))
            grad = D.sharded_layer_fit_gradient(head, l)
        else:
            H, means, grad = layer_hessian(head, l), None, None
        with stage(f"layer {l} Hessian ({H.size} parameters)"):
            if H.size <= dense_limit:
                ev, how = torch.sort(H.eigvalsh(), descending=True).values, "exact (dense)"
            else:
                ev, how = lanczos(H, k=min(k * k + 20, H.size)).eigenvalues, f"top {k * k + 20} (Lanczos)"
            out = outliers(ev, max_count=min(k * k + k, ev.numel() - 1))
            f, kappa = eigenvector_fidelity(head, l, H, means), gradient_coefficients(head, l, grad, means)
        layers.append(
            {
                "layer": l,
                "parameters": H.size,
                "spectrum": how,
                "eigenvalues": ev.tolist(),
                "outlier_count": out.count,
                "gap_ratio": out.gap_ratio,
                "f_same": float(f[eye].mean()),
                "f_cross": float(f[~eye].mean()),
                "kappa_same": float(kappa[eye].mean()),
                "kappa_cross_max": float(kappa[~eye].max()),
                "nc1_input": nc[l - 1]["nc1"],
            }
        )
    full = D.sharded_hessian(head) if distributed else hessian(head)
    with stage(f"full head Hessian, top {min(k * k + 10, full.size)} (Lanczos)"):
        top = lanczos(full, k=min(k * k + 10, full.size))
    g = D.sharded_fit_gradient(head) if distributed else oracles.fit_gradient(head)
    with stage("full head Hessian, spectral density (SLQ)"):
        dens = spectral_density(full, num_probes=4, steps=60)
    return {
        "layers": layers,
        "full_top": top.eigenvalues.tolist(),
        "full_outliers": outliers(top.eigenvalues, max_count=min(k * k + k, top.eigenvalues.numel() - 1)).count,
        "full_overlap_top_k2": gradient_overlap(g, top.eigenvectors[:, : k * k]),
        "full_overlap_top_k": gradient_overlap(g, top.eigenvectors[:, :k]),
        "density": {"grid": dens.grid.tolist(), "density": dens.density.tolist()},
        "nc1_output": nc[-1]["nc1"],
        "collapse": nc,
    }


def _figures(name: str, cfg: RealConfig, history, analysis: dict, k: int, out: Path) -> dict[str, str]:
    layers = analysis["layers"]
    figs = {
        "loss": plots.loss_figure(history, None, f"{cfg.dataset} {cfg.model}: training"),
        "spectra": plots.spectra_figure(
            [l["eigenvalues"] for l in layers],
            [f"W_{l['layer']} ({l['spectrum']})" for l in layers],
            [l["outlier_count"] for l in layers],
            f"{cfg.dataset} {cfg.model}: layer Hessians (measured outliers as spikes)",
            spike_label=f"{{n}} outlier{{s}} (K = {k}, K² = {k * k})",
            sizes=[l["parameters"] for l in layers],
        ),
        "density": plots.density_figure(
            analysis["density"]["grid"],
            analysis["density"]["density"],
            analysis["full_top"][: analysis["full_outliers"]],
            f"{cfg.dataset} {cfg.model}: full head Hessian (SLQ) and its outliers (K = {k}, K² = {k * k})",
        ),
    }
    return {key: Path(plots.save(fig, out / f"{name}_{key}.png")).name for key, fig in figs.items()}


DEFAULTS: dict[str, dict] = {
    "digits": {},
    "mnist1d": {"steps": 4000},
    "mnist": {"n_per_class": 5000, "steps": 1000},
    "cifar10": {
        "model": "cnn",
        "n_per_class": 500,
        "depth": 3,
        "optimizer": "sgd",
        "lr": 0.05,
        "batch_size": 250,
        "steps": 2000,
    },
}


def reproduce_real(
    dataset: str = "digits",
    out: str | Path = "fastdnc-results",
    *,
    data_dir: str | None = None,
    n_per_class: int | None = None,
    model: str | None = None,
    steps: int | None = None,
    width: int | None = None,
    depth: int | None = None,
    progress: bool = True,
    distributed: bool = False,
) -> dict:
    """``fastdnc reproduce --preset real``: one data set's run, ``report.md`` and ``results.json``."""
    if dataset not in DEFAULTS:
        raise ValueError(f"unknown data set {dataset!r}; choose one of {sorted(DEFAULTS)}")
    kw = dict(DEFAULTS[dataset])
    if dataset == "mnist" and data_dir is None:  # the offline sample: all of its 400 training digits per class
        kw.pop("n_per_class", None)
    given = (("n_per_class", n_per_class), ("model", model), ("steps", steps), ("width", width), ("depth", depth))
    kw.update({k: v for k, v in given if v is not None})
    cfg = RealConfig(dataset=dataset, data_dir=data_dir, **kw)
    out = Path(out)
    t0 = time.perf_counter()
    if distributed:
        D.init()
    res = run(cfg, out, progress, distributed)
    res["wall_seconds"] = time.perf_counter() - t0
    if D.rank() > 0:
        return res
    atomic_write_json(out / "results.json", {"preset": "real", "experiments": {dataset: res}})
    base = f"reproduce --preset real --dataset {dataset}" + (f" --data-dir {data_dir}" if data_dir else "")
    cmd = (
        f"torchrun --nproc-per-node {res['ranks']} -m fastdnc {base} --distributed"
        if res["ranks"] > 1
        else f"fastdnc {base}"
    )
    atomic_write_text(out / "report.md", report(res, dataset, f"{cmd} --out {out}"))
    return res
