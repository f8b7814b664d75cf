"""Real networks layer by layer: ``fastdnc reproduce --preset real --dataset digits|mnist1d|mnist|cifar10``.

Trains an MLP (``model="mlp"``: the input, then L fully connected layers of width d) or a backbone
with a fully connected head (``"cnn"`` or ``"resnet20"``, :mod:`fastdnc.networks`; λ_W on the head,
λ_H on the backbone's output features) with the package's trainer (progress, checkpoints, resume),
then analyses every head layer on the frozen features in float64 through the package's one
analysis path, :mod:`fastdnc.analysis` (a :class:`~fastdnc.analysis.LayeredSource`, or a
:class:`~fastdnc.analysis.ShardedSource` under torchrun): the exact spectrum of every layer Hessian
with the outlier count beside the theory's expectation, f_cc', κ_cc', the gradient overlaps and the
NC metrics, and the top, outliers, overlaps and SLQ density of the full head Hessian.

For the MLP the "head" is the whole network and its input is the (standardised) data.
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .. import _comm, plots
from ..analysis import Analysis, LayeredSource, ShardedSource, analyze_source
from ..analysis.report import figures
from ..data import DataError, load_dataset, standardize
from ..distributed import shard_indices
from ..io import atomic_write_json, atomic_write_text
from ..models import MLPHead, forward_states
from ..networks import BackboneHead, ConvBackbone, ResNet20
from ..spectral.exact import DENSE_LIMIT
from ..training import train
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
    dense_limit: int = DENSE_LIMIT

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {MODELS}, got {self.model!r}")


def build(cfg: RealConfig, distributed: bool = False):
    """The data set and the untrained model of ``cfg`` (float32 for training); ``distributed``: the
    model holds this rank's shard of the samples (the same initial weights on every rank)."""
    data = load_dataset(cfg.dataset, cfg.data_dir, n_per_class=cfg.n_per_class, seed=cfg.seed, dtype=torch.float32)
    idx = shard_indices(data.num_samples) if distributed else slice(None)
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
        progress=progress and _comm.rank() == 0,
        log_at=max(cfg.steps // 100, 1),
        distributed=distributed,
    )
    head = model if isinstance(model, MLPHead) else model.head()
    head64 = as_float64(head)
    source = ShardedSource(head64) if distributed else LayeredSource(head64)
    label = name if progress and _comm.rank() == 0 else None
    analysis = analyze_source(source, dense_limit=cfg.dense_limit, label=label)
    test_accuracy, test_samples = held_out_accuracy(cfg, model)
    hits = torch.tensor(
        [float((head64.output().argmax(0) == head64.labels).sum()), float(head64.num_samples)], dtype=torch.float64
    )
    if distributed:
        _comm.all_reduce_(hits, "counting correct predictions")
    accuracy = float(hits[0] / hits[1])
    figs = _figures(name, cfg, history, analysis, out) if _comm.rank() == 0 else {}
    return {
        "config": asdict(cfg),
        "samples": data.num_samples,
        "num_classes": head64.num_classes,
        "ranks": _comm.world_size() if distributed else 1,
        "data_source": data.name,
        "train_accuracy": accuracy,
        "test_accuracy": test_accuracy,
        "test_samples": test_samples,
        "train_seconds": history.last("wall_time"),
        "final_loss": history.last("loss"),
        "analysis": analysis.to_dict(),
        "figures": figs,
    }


def as_float64(head: MLPHead) -> MLPHead:
    """The same head in float64 (analysis precision); the trained one is left as it is."""
    return copy.deepcopy(head).double()


def _figures(name: str, cfg: RealConfig, history, analysis: Analysis, out: Path) -> dict[str, str]:
    """The training curve and the analysis' figures (layer spectra with the measured outliers as
    spikes, the f_cc' heat maps, the head Hessian's density), prefixed by the run's name."""
    loss = plots.loss_figure(history, None, f"{cfg.dataset} {cfg.model}: training")
    return {"loss": Path(plots.save(loss, out / f"{name}_loss.png")).name, **figures(analysis, out, f"{name}_")}


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
        _comm.init()
    res = run(cfg, out, progress, distributed)
    res["wall_seconds"] = time.perf_counter() - t0
    if _comm.rank() > 0:
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
