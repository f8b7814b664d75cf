"""One synthetic deep-UFM experiment (linear or ReLU, MSE or CE): train, measure, compare with theory.

The paper's figures, per model: (a) the loss and its gap to the closed form; (b) per-layer collapse
metrics; for ReLU, the negative-entry fraction of the pre-activations and the orthogonal-frame
distance (Fig. 3); (c) the eigenvector fidelities f_cc' and gradient coefficients κ_cc' over
training (Figs. 1 and 4); (d) histograms of the spectrum of the layer Hessian over training with the
the expected outliers in red (Figs. 2 and 5); (e) the weight spectra against s_l; (f) for the linear MSE
model, the full-Hessian spectrum (weights only and with H_1) against the closed-form table.

At the end, a theory-versus-measurement table: every prediction that applies to the model, the
measured value and the error. Checkpoints in ``out`` let an interrupted run resume.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from .. import plots, theory
from ..collapse import collapse_metrics
from ..models import DeepUFM
from ..stages import Stages
from ..theory.expectations import expected_outliers
from ..training import log_steps, train
from .measurements import dnc_callback, upgrade_history
from .ufm_comparison import explain, full_hessian_rows, layer_rows, loss_rows, weight_rows

COLLAPSE_PANELS = (
    ("nc1", r"NC1 = tr($\Sigma_W\Sigma_B^{\dagger}$)/K"),
    ("orthogonal_frame_distance", "orthogonal-frame distance"),
    ("etf_distance", "simplex-ETF distance"),
    ("negative_fraction", "fraction of pre-activations < −1e−6", "linear"),
    ("equinorm", "equinorm (CV of norms)"),
    ("weight_dnc3", "DNC3: 1 − ‖W P_μ‖²/‖W‖²"),
)
ALIGNMENT_PANELS = (
    ("f_same", "f_cc (same class)"),
    ("f_cross", "f_cc' (c ≠ c')"),
    ("kappa_same", "κ_cc (1/K at DNC)"),
    ("kappa_cross_max", "max κ_cc' (c ≠ c') (0 at DNC)"),
)


@dataclass
class UFMConfig:
    """One experiment. ``layer`` is the layer whose Hessian spectrum is drawn (default: the middle)."""

    name: str = "linear_mse"
    activation: str = "linear"
    loss: str = "mse"
    num_classes: int = 4
    n_per_class: int = 5
    width: int = 12
    depth: int = 4
    weight_decay: float = 5e-3
    lr: float = 0.1
    steps: int = 20_000
    seed: int = 0
    dtype: str = "float64"
    layer: int | None = None
    snapshots: int = 4
    title: str = field(default="")

    def __post_init__(self) -> None:
        self.layer = self.layer or max(1, (self.depth + 1) // 2)
        self.title = self.title or (
            f"deep {self.activation} UFM ({self.loss.upper()}, K={self.num_classes}, L={self.depth}, d={self.width})"
        )


def run(
    cfg: UFMConfig,
    out: Path,
    progress: bool = True,
    label: str | None = None,
    figures: plots.FigureWriter | None = None,
) -> dict:
    """Train the model of ``cfg``, write its figures under ``out`` and return the JSON-ready results
    (``label`` names the progress bar, default the experiment's name; ``figures`` draws them, by
    default here and now)."""
    out.mkdir(parents=True, exist_ok=True)
    model = DeepUFM(
        cfg.num_classes,
        cfg.n_per_class,
        cfg.width,
        cfg.depth,
        activation=cfg.activation,
        loss=cfg.loss,
        weight_decay=cfg.weight_decay,
        seed=cfg.seed,
        dtype=getattr(torch, cfg.dtype),
    )
    steps = log_steps(cfg.steps)
    snaps = sorted({steps[round(i * (len(steps) - 1) / max(cfg.snapshots - 1, 1))] for i in range(cfg.snapshots)})
    cb = dnc_callback(range(1, cfg.depth + 1), [cfg.layer or 1], snaps)  # set by __post_init__
    history = upgrade_history(
        train(
            model,
            cfg.steps,
            cfg.lr,
            collapse=True,
            callbacks=[cb],
            checkpoint=out / f"{cfg.name}.ckpt",
            label=label or cfg.name,
            progress=progress,
        )
    )
    history.save(out / f"{cfg.name}_history.json")
    with torch.no_grad():
        stages = Stages(label or cfg.name, 4 if _has_full_table(cfg) else 3, progress)
        return _results(cfg, model, history, snaps, out, stages, figures or plots.FigureWriter())


def _has_full_table(cfg: UFMConfig) -> bool:
    """The closed-form full-Hessian table (docs/theory.md §3.5) exists for the linear MSE model only."""
    return cfg.activation == "linear" and cfg.loss == "mse"


def _results(
    cfg: UFMConfig, model: DeepUFM, history, snaps: list[int], out: Path, stage: Stages, writer: plots.FigureWriter
) -> dict:
    opt = theory.optimum(cfg.num_classes, cfg.n_per_class, cfg.depth, cfg.weight_decay)
    ce_point = (
        theory.ce_critical_point(cfg.num_classes, cfg.n_per_class, cfg.depth, cfg.weight_decay)
        if cfg.loss == "ce"
        else None
    )
    report = collapse_metrics(model)
    with stage("layer Hessians against theory"):
        per_layer, layers = layer_rows(cfg, model, opt, ce_point)
    with stage("weights and balancedness"):
        per_weight, svs, bal = weight_rows(cfg, model, opt, report)
    full_rows: list[dict] = []
    full: dict = {}
    if _has_full_table(cfg):
        with stage("full Hessian against the closed-form table"):
            full_rows, full = full_hessian_rows(cfg, model, opt)
    with stage("figures (drawn in the background)" if writer.background else "figures"):
        reference = (ce_point.loss, "CE DNC critical point") if ce_point else (opt.optimal_loss, _reference_name(cfg))
        figures = _figures(cfg, history, snaps, svs, opt, full, reference, report, out, writer)
    return {
        "config": asdict(cfg),
        "theory": {"optimum": opt.to_dict(), "ce_point": ce_point.to_dict() if ce_point else None},
        "measured": {
            "final_loss": float(model.loss()),
            "layers": layers,
            "balancedness": bal,
            "collapse": report.to_dict(),
            "full_hessian": full,
        },
        "table": explain(
            loss_rows(cfg, model, opt, ce_point) + per_layer + per_weight + full_rows,
            float(model.loss()),
            ce_point.loss if ce_point else opt.optimal_loss,
            "the CE DNC critical point"
            if ce_point
            else "the DNC optimum"
            if _has_full_table(cfg)
            else "the best DNC point",
        ),
        "train_seconds": history.last("wall_time"),
        "resumed_from": history.start_step,
        "analysis_seconds": sum(stage.seconds.values()),
        "figures": figures,
    }


def _reference_name(cfg: UFMConfig) -> str:
    return "closed-form optimum" if _has_full_table(cfg) else "best DNC point"


# the output's simplex-ETF distance above which a run is not at a DNC point (its figures say so)
OFF_DNC = 1e-2


def _figures(
    cfg, history, snaps, svs, opt, full, reference, report, out: Path, writer: plots.FigureWriter
) -> dict[str, str]:
    """Draw the experiment's figures with ``writer`` (perhaps in the background); their file names."""
    name, k = cfg.name, cfg.num_classes
    etf = report.layers[-1]["etf_distance"]
    off = (
        f"This run is not at a DNC point (the output's simplex-ETF distance ends at {etf:.2f}), so f and κ need "
        "not reach their DNC values (f = 1, κ_cc = 1/K, κ_cc' = 0)."
        if etf > OFF_DNC
        else None
    )
    want = expected_outliers(cfg.loss, cfg.activation, cfg.layer == cfg.depth, k)
    jobs: dict[str, tuple] = {
        "loss": ("loss_figure", history, reference[0], cfg.title, reference[1]),
        "collapse": (
            "metrics_figure",
            history,
            [panel for panel in COLLAPSE_PANELS if cfg.activation == "relu" or panel[0] != "negative_fraction"],
            cfg.depth,
            f"{cfg.title}: collapse per layer",
        ),
        "alignment": (
            "metrics_figure",
            history,
            ALIGNMENT_PANELS,
            cfg.depth,
            f"{cfg.title}: eigenvector fidelity f and gradient coefficients κ",
            off,
        ),
        "spectra": (
            "spectra_figure",
            [history[f"spectrum/l{cfg.layer}"][history.steps.index(s)] for s in snaps],
            [f"step {s}" for s in snaps],
            want.count,
            f"{cfg.title}: spectrum of the fit Hessian of W_{cfg.layer}",
            "top {n}: the outliers expected at DNC, " + want.reason.split(" (")[0],
        ),
        "singular_values": (
            "singular_values_figure",
            svs,
            opt.singular_values if cfg.loss == "mse" else None,
            f"{cfg.title}: singular values of the weights",
        ),
    }
    if full:
        levels = [
            (label, data["eigenvalues"], [(lv["value"], lv["multiplicity"]) for lv in data["levels"]])
            for label, data in (("weights only", full["weights"]), ("with H_1", full["with_H1"]))
        ]
        jobs["full_hessian"] = ("levels_figure", levels, f"{cfg.title}: full Hessian against the closed-form table")
    return {key: writer.draw(out / f"{name}_{key}.png", *job) for key, job in jobs.items()}


def markdown(res: dict, figure_dir: str | None = None) -> str:
    """The report section of one experiment (figures linked from ``figure_dir``, default beside it)."""
    cfg = res["config"]
    lines = [
        f"## {cfg['title']}",
        "",
        f"K={cfg['num_classes']}, n={cfg['n_per_class']}, d={cfg['width']}, L={cfg['depth']}, "
        f"λ={cfg['weight_decay']}, full-batch GD, lr={cfg['lr']}, {cfg['steps']} steps, {cfg['dtype']} "
        f"({res['train_seconds']:.1f} s with every metric logged).",
        "",
        "| quantity | theory | measured | error | verdict |",
        "|---|---|---|---|---|",
    ]
    for r in res["table"]:
        err = "—" if r["error"] is None else f"{r['error']:.2e}"
        said = r["verdict"] + (f": {r['note']}" if r["note"] else "")
        lines.append(f"| {r['quantity']} | {_fmt(r['theory'])} | {_fmt(r['measured'])} | {err} | {said} |")
    lines.append("")
    for key, fname in res["figures"].items():
        lines += [f"![{key}]({fname if figure_dir is None else f'{figure_dir}/{fname}'})", ""]
    return "\n".join(lines)


def _fmt(x) -> str:
    if isinstance(x, float):
        return f"{x:.10g}" if math.isfinite(x) else str(x)
    return str(x)
