"""One synthetic deep-UFM experiment (linear or ReLU, MSE or CE): train, measure, compare with theory.

The paper's figures, per model: (a) the loss and its gap to the closed form; (b) per-layer collapse
metrics; for ReLU, the negative-entry fraction of the pre-activations and the orthogonal-frame
distance (Fig. 3); (c) the eigenvector fidelities f_cc' and gradient coefficients κ_cc' over
training (Figs. 1 and 4); (d) histograms of the spectrum of the layer Hessian over training with the
top K² drawn as spikes (Figs. 2 and 5); (e) the weight spectra against s_l; (f) for the linear MSE
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
from ..alignment import balancedness, eigenvector_fidelity, gradient_coefficients
from ..collapse import collapse_metrics
from ..curvature import reference
from ..curvature.full import hessian
from ..curvature.layer import layer_hessian
from ..curvature.papyan import papyan_split
from ..models import DeepUFM
from ..spectral import gradient_overlap, lanczos, outliers
from ..train import log_steps, train
from .measurements import dnc_callback

COLLAPSE_PANELS = (
    ("nc1", "NC1 = tr(Σ_W Σ_B^†)/K"),
    ("orthogonal_frame_distance", "orthogonal-frame distance"),
    ("etf_distance", "simplex-ETF distance"),
    ("negative_fraction", "fraction of pre-activations < −1e−6"),
    ("equinorm", "equinorm (CV of norms)"),
    ("weight_dnc3", "DNC3: 1 − ‖W P_μ‖²/‖W‖²"),
)
ALIGNMENT_PANELS = (
    ("f_diag", "f_cc (same class)"),
    ("f_off", "f_cc' (c ≠ c')"),
    ("kappa_diag", "κ_cc (→ 1/K)"),
    ("kappa_off", "max κ_cc' (c ≠ c') (→ 0)"),
)
DENSE_LIMIT = 4096  # full-Hessian spectra are exact (dense) up to this many parameters, else Lanczos


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
        self.title = self.title or f"deep {self.activation} UFM ({self.loss.upper()})"


def run(cfg: UFMConfig, out: Path, progress: bool = True, label: str | None = None) -> dict:
    """Train the model of ``cfg``, write its figures under ``out`` and return the JSON-ready results
    (``label`` names the progress bar, default the experiment's name)."""
    out.mkdir(parents=True, exist_ok=True)
    model = DeepUFM(cfg.num_classes, cfg.n_per_class, cfg.width, cfg.depth, activation=cfg.activation, loss=cfg.loss,
                    weight_decay=cfg.weight_decay, seed=cfg.seed, dtype=getattr(torch, cfg.dtype))
    steps = log_steps(cfg.steps)
    snaps = sorted({steps[round(i * (len(steps) - 1) / max(cfg.snapshots - 1, 1))] for i in range(cfg.snapshots)})
    cb = dnc_callback(range(1, cfg.depth + 1), [cfg.layer], snaps)
    history = train(model, cfg.steps, cfg.lr, collapse=True, callbacks=[cb], checkpoint=out / f"{cfg.name}.ckpt",
                    label=label or cfg.name,
                    progress=progress)
    history.save(out / f"{cfg.name}_history.json")
    with torch.no_grad():
        return _results(cfg, model, history, snaps, out)


def _row(quantity: str, predicted, measured, error: float | None, note: str = "") -> dict:
    return {"quantity": quantity, "theory": predicted, "measured": measured, "error": error, "note": note}


def _spectrum_rows(levels: list[theory.SpectrumLevel], ev: torch.Tensor, what: str) -> list[dict]:
    """Measured eigenvalues assigned to predicted levels in sorted order (levels by value)."""
    rows, i = [], 0
    for lv in sorted(levels, key=lambda x: -x.value):
        block = ev[i : i + lv.multiplicity]
        i += lv.multiplicity
        if block.numel() == 0:
            break
        zero = lv.value == 0
        err = float((block - lv.value).abs().max()) / (float(ev.abs().max()) if zero else abs(lv.value))
        rows.append(_row(f"{what}: {lv.origin} (×{lv.multiplicity})", lv.value,
                         f"{float(block.min()):.6g} … {float(block.max()):.6g}", err,
                         "error relative to λ_max" if zero else ""))
    return rows


def _full_spectrum(model: DeepUFM, include_features: bool, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues (descending; all of them when dense, else the top ``count``) and the
    eigenvectors of the top ``count``, from one decomposition."""
    H = hessian(model, include_features=include_features)
    if H.size <= DENSE_LIMIT:
        vals, vecs = H.eigh()
        return vals.flip(0), vecs.flip(1)[:, :count]
    res = lanczos(H, k=min(count, H.size), which="LA")
    return res.eigenvalues, res.eigenvectors


def _results(cfg: UFMConfig, model: DeepUFM, history, snaps: list[int], out: Path) -> dict:
    k, depth = cfg.num_classes, cfg.depth
    rows: list[dict] = []
    linear_mse = cfg.activation == "linear" and cfg.loss == "mse"
    opt = theory.optimum(k, cfg.n_per_class, depth, cfg.weight_decay)
    final_loss = float(model.loss())
    if cfg.loss == "mse":
        note = ""
        if not linear_mse:
            note = ("the best DNC point's loss (Thm 8); "
                    + ("training went below it: not a DNC point" if final_loss < opt.optimal_loss * (1 - 1e-9)
                       else "training is above it"))
        rows.append(_row("loss" if linear_mse else "loss at the disjoint-support DNC point (§3.7)", opt.optimal_loss,
                         final_loss, abs(final_loss - opt.optimal_loss) / opt.optimal_loss, note))
    ce_point = theory.ce_critical_point(k, cfg.n_per_class, depth, cfg.weight_decay) if cfg.loss == "ce" else None
    if ce_point is not None:
        z = model.output().detach()
        zbar = (z @ model.targets.T) / cfg.n_per_class  # class means of the logits (K × K)
        alpha = float(zbar.diagonal().mean() - (zbar.sum() - zbar.diagonal().sum()) / (k * (k - 1)))
        rows.append(_row("loss at the CE DNC critical point (§3.6)", ce_point.loss, final_loss,
                         abs(final_loss - ce_point.loss) / ce_point.loss,
                         "training found a lower loss: the DNC point is not the minimiser here"
                         if final_loss < ce_point.loss * (1 - 1e-6) else ""))
        rows.append(_row("logit scale α (Z = αS⊗1ᵀ)", ce_point.alpha, alpha, abs(alpha - ce_point.alpha) / ce_point.alpha))

    layers = []
    for l in range(1, depth + 1):
        H = layer_hessian(model, l)
        vals, vecs = torch.linalg.eigh(H.to_dense())
        ev, vecs = vals.flip(0), vecs.flip(1)
        g = reference.layer_fit_gradient(model, l)
        f = eigenvector_fidelity(model, l, H)
        kappa = gradient_coefficients(model, l)
        eye = torch.eye(k, dtype=torch.bool)
        out_l = outliers(ev, max_count=k * k)
        info = {
            "top": ev[: k * k].tolist(),
            "outlier_count": out_l.count,
            "gap_ratio": out_l.gap_ratio,
            "f": f.tolist(),
            "kappa": kappa.tolist(),
            "overlap_top_k2": gradient_overlap(g, vecs[:, : k * k]),
            "rank": int((ev.abs() > 1e-8 * ev.abs().max()).sum()),
        }
        layers.append(info)
        tag = f"W_{l}"
        if linear_mse:
            ell = opt.layer_outliers[l - 1]
            rows.append(_row(f"{tag}: K² outliers ℓ_l (§3.1)", ell,
                             f"{min(info['top']):.8g} … {max(info['top']):.8g}",
                             max(abs(x - ell) for x in info["top"]) / ell))
            rows.append(_row(f"{tag}: rank of the fit Hessian", k * k, info["rank"], None, "numerical, rtol 1e-8"))
        if ce_point is not None and cfg.activation == "linear":
            rows += _spectrum_rows(ce_point.layer_spectrum(l), ev, f"{tag} CE levels (§3.6)")
        if cfg.activation == "relu":
            rows.append(_row(f"{tag}: outliers separated from the bulk", "K² (l = L), K (l < L, δ = 0)",
                             info["outlier_count"], None, f"gap ratio {info['gap_ratio']:.3g}"))
        if cfg.loss == "mse":
            rows.append(_row(f"{tag}: f_cc' (min over the {'K²' if linear_mse else 'K'} pairs)", 1.0,
                             float(f.min() if linear_mse else f[eye].min()),
                             1 - float(f.min() if linear_mse else f[eye].min())))
            rows.append(_row(f"{tag}: κ_cc (mean) / max κ_cc' (§3.3)", f"{1 / k:.6g} / 0",
                             f"{float(kappa[eye].mean()):.6g} / {float(kappa[~eye].max()):.3g}",
                             max(abs(float(kappa[eye].mean()) - 1 / k) * k, float(kappa[~eye].max()))))
            rows.append(_row(f"{tag}: Gur-Ari overlap of g̃ with the top K²", 1.0, info["overlap_top_k2"],
                             1 - info["overlap_top_k2"]))
    if linear_mse:
        for l in range(1, depth + 1):
            split = papyan_split(model, l)
            ranks = split.ranks(rtol=1e-6)
            rows.append(_row(f"W_{l}: Papyan ranks class / cross / within (§3.2)", f"{k} / {k * (k - 1)} / 0",
                             f"{ranks['class']} / {ranks['cross']} / {ranks['within']}", None, "rtol 1e-6"))

    report = collapse_metrics(model)
    svs = [r["singular_values"] for r in report.weights]
    if cfg.loss == "mse":
        for l, (sv, s) in enumerate(zip(svs, opt.singular_values), start=1):
            rows.append(_row(f"W_{l}: top-K singular values s_l (§3.4)", s, f"{min(sv[:k]):.8g} … {max(sv[:k]):.8g}",
                             max(abs(x - s) for x in sv[:k]) / s))
    bal = balancedness(model)
    if cfg.activation == "linear":
        rows.append(_row("balancedness λ_lW_lᵀW_l = λ_{l−1}W_{l−1}W_{l−1}ᵀ (max rel. residual)", 0.0, max(bal),
                         max(bal)))

    full = {}
    if linear_mse:
        for inc in (False, True):
            levels = theory.full_hessian_spectrum(opt, cfg.width, inc)
            ev, vecs = _full_spectrum(model, inc, k * k + 8)
            what = "full Hessian" + (" with H_1" if inc else "")
            rows += _spectrum_rows(levels, ev, what)
            ov = gradient_overlap(reference.fit_gradient(model, inc), vecs[:, : k * k])
            rows.append(_row(f"{what}: overlap of the fit gradient with the top K²", 1.0, ov, 1 - ov))
            full["with_H1" if inc else "weights"] = {"eigenvalues": ev.tolist(), "levels": [asdict(x) for x in levels]}

    figs = _figures(cfg, model, history, snaps, svs, opt, full, out)
    return {
        "config": asdict(cfg),
        "theory": {"optimum": opt.to_dict(), "ce_point": ce_point.to_dict() if ce_point else None},
        "measured": {"final_loss": final_loss, "layers": layers, "balancedness": bal,
                     "collapse": report.to_dict(), "full_hessian": full},
        "table": rows,
        "train_seconds": history.last("wall_time"),
        "figures": figs,
    }


def _figures(cfg, model, history, snaps, svs, opt, full, out: Path) -> dict[str, str]:
    name, k = cfg.name, cfg.num_classes
    figs = {
        "loss": plots.loss_figure(history, opt.optimal_loss if cfg.loss == "mse" else None, cfg.title),
        "collapse": plots.metrics_figure(history, COLLAPSE_PANELS, cfg.depth, f"{cfg.title}: collapse per layer"),
        "alignment": plots.metrics_figure(history, ALIGNMENT_PANELS, cfg.depth,
                                          f"{cfg.title}: eigenvector fidelity f and gradient coefficients κ"),
        "spectra": plots.spectra_figure([history[f"spectrum/l{cfg.layer}"][history.steps.index(s)] for s in snaps],
                                        [f"step {s}" for s in snaps], k * k,
                                        f"{cfg.title}: spectrum of the fit Hessian of W_{cfg.layer}"),
        "singular_values": plots.singular_values_figure(svs, opt.singular_values if cfg.loss == "mse" else None,
                                                        f"{cfg.title}: singular values of the weights"),
    }
    if full:
        figs["full_hessian"] = plots.levels_figure(
            [(label, data["eigenvalues"], [(lv["value"], lv["multiplicity"]) for lv in data["levels"]])
             for label, data in (("weights only", full["weights"]), ("with H_1", full["with_H1"]))],
            f"{cfg.title}: full Hessian against the closed-form table")
    return {key: Path(plots.save(fig, out / f"{name}_{key}.png")).name for key, fig in figs.items()}


def markdown(res: dict, figure_dir: str | None = None) -> str:
    """The report section of one experiment (figures linked from ``figure_dir``, default beside it)."""
    cfg = res["config"]
    lines = [f"## {cfg['title']}", "",
             f"K={cfg['num_classes']}, n={cfg['n_per_class']}, d={cfg['width']}, L={cfg['depth']}, "
             f"λ={cfg['weight_decay']}, full-batch GD, lr={cfg['lr']}, {cfg['steps']} steps, {cfg['dtype']} "
             f"({res['train_seconds']:.1f} s with every metric logged).", "",
             "| quantity | theory | measured | error | note |", "|---|---|---|---|---|"]
    for r in res["table"]:
        err = "" if r["error"] is None else f"{r['error']:.2e}"
        lines.append(f"| {r['quantity']} | {_fmt(r['theory'])} | {_fmt(r['measured'])} | {err} | {r['note']} |")
    lines.append("")
    for key, fname in res["figures"].items():
        lines += [f"![{key}]({fname if figure_dir is None else f'{figure_dir}/{fname}'})", ""]
    return "\n".join(lines)


def _fmt(x) -> str:
    if isinstance(x, float):
        return f"{x:.10g}" if math.isfinite(x) else str(x)
    return str(x)
