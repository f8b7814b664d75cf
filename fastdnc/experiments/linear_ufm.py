"""Deep linear UFM (MSE): training to the global optimum, measured against theory.md §3.0.

Figures: the loss and its gap to the closed-form optimum, the per-layer collapse metrics over
training, and the singular values of every W_l against the predicted :math:`s_l`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .. import plots
from ..collapse import collapse_metrics
from ..models import DeepUFM
from ..theory import optimum
from ..train import train

COLLAPSE_PANELS = (
    ("nc1", "NC1 = tr(Σ_W Σ_B^†)/K"),
    ("nc1_trace_ratio", "tr Σ_W / tr Σ_B"),
    ("orthogonal_frame_distance", "orthogonal-frame distance"),
    ("equinorm", "equinorm (CV of norms)"),
    ("equiangularity", "equiangularity (std of cosines)"),
    ("weight_dnc3", "DNC3: 1 − ‖W P_μ‖²/‖W‖²"),
)


@dataclass
class LinearUFMConfig:
    num_classes: int = 4
    n_per_class: int = 5
    width: int = 12
    depth: int = 4
    weight_decay: float = 5e-3
    lr: float = 0.1
    steps: int = 20_000
    seed: int = 0
    dtype: str = "float64"


def run(cfg: LinearUFMConfig, out: Path, progress: bool = True) -> dict:
    """Train the deep linear UFM of ``cfg`` and write its figures under ``out``.

    Returns the JSON-ready results (theory, measurements and their errors). A checkpoint in
    ``out`` lets an interrupted run resume.
    """
    out.mkdir(parents=True, exist_ok=True)
    model = DeepUFM(cfg.num_classes, cfg.n_per_class, cfg.width, cfg.depth, activation="linear", loss="mse",
                    weight_decay=cfg.weight_decay, seed=cfg.seed, dtype=getattr(torch, cfg.dtype))
    opt = optimum(cfg.num_classes, cfg.n_per_class, cfg.depth, cfg.weight_decay)
    history = train(model, cfg.steps, cfg.lr, collapse=True, checkpoint=out / "linear_ufm.ckpt", progress=progress)
    seconds = history.last("wall_time")  # cumulative over resumed runs
    history.save(out / "linear_ufm_history.json")

    with torch.no_grad():
        return _results(cfg, model, opt, history, seconds, out)


def _results(cfg: LinearUFMConfig, model: DeepUFM, opt, history, seconds: float, out: Path) -> dict:
    report = collapse_metrics(model)
    k = cfg.num_classes
    top_sv = [r["singular_values"][:k] for r in report.weights]
    sv_err = max(abs(s - p) / p for row, p in zip(top_sv, opt.singular_values) for s in row)
    norms = [float(torch.linalg.vector_norm(model.class_means(l), dim=0).mean()) for l in range(1, cfg.depth + 2)]
    norm_err = max(abs(a - b) / b for a, b in zip(norms, opt.class_mean_norms))
    final_loss = float(model.loss())
    figs = {
        "loss": plots.save(plots.loss_figure(history, opt.optimal_loss, "deep linear UFM (MSE)"), out / "linear_ufm_loss.png"),
        "collapse": plots.save(
            plots.metrics_figure(history, COLLAPSE_PANELS, cfg.depth, "deep linear UFM: collapse per layer"),
            out / "linear_ufm_collapse.png"),
        "singular_values": plots.save(
            plots.singular_values_figure([r["singular_values"] for r in report.weights], opt.singular_values,
                                         "singular values of the weights at the end of training"),
            out / "linear_ufm_singular_values.png"),
    }
    return {
        "config": asdict(cfg),
        "theory": opt.to_dict(),
        "measured": {
            "final_loss": final_loss,
            "loss_gap": final_loss - opt.optimal_loss,
            "top_singular_values": top_sv,
            "singular_value_rel_error": sv_err,
            "class_mean_norms": norms,
            "class_mean_norm_rel_error": norm_err,
            "weight_ranks": [r["rank"] for r in report.weights],
            "collapse": report.to_dict(),
        },
        "train_seconds": seconds,
        "steps_per_second": cfg.steps / seconds if seconds > 0 else float("nan"),
        "figures": {k: Path(v).name for k, v in figs.items()},
    }


def markdown(res: dict) -> str:
    """The report section of one run."""
    th, me, cfg = res["theory"], res["measured"], res["config"]
    lines = [
        "## Deep linear UFM (MSE)",
        "",
        f"K={cfg['num_classes']}, n={cfg['n_per_class']}, d={cfg['width']}, L={cfg['depth']}, "
        f"λ={cfg['weight_decay']}, full-batch GD, lr={cfg['lr']}, {cfg['steps']} steps, {cfg['dtype']} "
        f"({res['train_seconds']:.1f} s, {res['steps_per_second']:.0f} steps/s with per-layer metrics logged).",
        "",
        "| quantity | theory (§3.0) | measured | error |",
        "|---|---|---|---|",
        f"| loss | {th['optimal_loss']:.12g} | {me['final_loss']:.12g} | {me['loss_gap']:.2e} |",
        f"| γ (Z = γY) | {th['gamma']:.10g} | {me['class_mean_norms'][-1]:.10g} | "
        f"{abs(me['class_mean_norms'][-1] - th['gamma']):.2e} |",
        f"| top-K singular values s_l | {th['singular_values'][0]:.10g} | "
        f"{min(min(r) for r in me['top_singular_values']):.10g} … {max(max(r) for r in me['top_singular_values']):.10g} "
        f"| {me['singular_value_rel_error']:.2e} (rel.) |",
        f"| class-mean norms ‖μ^(l)‖ | {', '.join(f'{x:.4g}' for x in th['class_mean_norms'])} | "
        f"{', '.join(f'{x:.4g}' for x in me['class_mean_norms'])} | {me['class_mean_norm_rel_error']:.2e} (rel.) |",
        f"| rank of W_l (rtol 1e-3) | {cfg['num_classes']} | {', '.join(map(str, me['weight_ranks']))} | |",
        "",
        "Collapse metrics at the end of training (input of each layer; L+1 is the output Z):",
        "",
        "| layer | NC1 | orth. frame dist. | ETF dist. | equinorm | equiangularity | NCC agreement |",
        "|---|---|---|---|---|---|---|",
    ]
    for l, row in enumerate(me["collapse"]["layers"], start=1):
        lines.append(f"| {l} | {row['nc1']:.2e} | {row['orthogonal_frame_distance']:.2e} | {row['etf_distance']:.2e} | "
                     f"{row['equinorm']:.2e} | {row['equiangularity']:.2e} | {row['ncc_agreement']:.3f} |")
    lines += ["", "| W_l | DNC3 | rank |", "|---|---|---|"]
    for l, row in enumerate(me["collapse"]["weights"], start=1):
        lines.append(f"| {l} | {row['dnc3']:.2e} | {row['rank']} |")
    f = res["figures"]
    lines += ["", f"![loss]({f['loss']})", "", f"![collapse]({f['collapse']})", "",
              f"![singular values]({f['singular_values']})", ""]
    return "\n".join(lines)
