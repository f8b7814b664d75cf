"""``fastdnc reproduce``: run a preset's experiments and write figures, ``report.md`` and
``results.json`` (all written atomically; reruns resume from the checkpoints in the folder).

Presets:

* ``quick`` (≤ 3 minutes on 2 CPU cores): the deep linear and ReLU UFMs with MSE and CE at
  K = 4 (16 outliers), small widths and short runs. The linear MSE model reaches the optimum to
  ~1e-6; the ReLU ones are in early training (their outliers separate, they do not equalise).
  ``linear_ce_deep`` (L = 4, n = 5, d = 12) is a case where gradient descent finds a lower loss
  than the CE DNC critical point.
* ``paper``: paper-scale settings: K = 4, and version 1's K = 3, d = 60, n = 40, L = 5, λ = 1e-2
  (spectra at layer 3), with the ReLU model at d = 65 (layer 4) and 3·10⁵ steps. About 16 minutes on 2 cores;
  it checkpoints every experiment and resumes.
"""

from __future__ import annotations

import math
import os
import platform
import time
from pathlib import Path

import torch

from .. import plots
from .._text import plural
from ..io import atomic_write_bytes, atomic_write_json, atomic_write_text
from . import ufm
from .real_paper import real_section
from .ufm import UFMConfig
from .ufm_comparison import AGREEMENT_TOL

PRESETS: dict[str, list[UFMConfig]] = {
    "quick": [
        UFMConfig("linear_mse", "linear", "mse", 4, 5, 12, 4, 5e-3, 0.1, 40_000),
        UFMConfig("relu_mse", "relu", "mse", 4, 5, 32, 4, 5e-3, 0.1, 20_000),
        UFMConfig("linear_ce", "linear", "ce", 4, 5, 12, 3, 5e-3, 0.5, 20_000),
        UFMConfig("relu_ce", "relu", "ce", 4, 5, 32, 3, 5e-3, 0.5, 20_000),
        UFMConfig("linear_ce_deep", "linear", "ce", 4, 5, 12, 4, 5e-3, 0.5, 20_000),
    ],
    "paper": [
        UFMConfig("linear_mse_k4", "linear", "mse", 4, 10, 32, 4, 5e-3, 0.1, 100_000),
        UFMConfig("linear_mse_v1", "linear", "mse", 3, 40, 60, 5, 1e-2, 0.1, 200_000, layer=3),
        UFMConfig("relu_mse_v1", "relu", "mse", 3, 40, 65, 5, 1e-2, 0.1, 300_000, layer=4),
        UFMConfig("linear_ce_k4", "linear", "ce", 4, 10, 32, 3, 5e-3, 0.5, 100_000),
        UFMConfig("linear_ce_k4_deep", "linear", "ce", 4, 10, 32, 4, 5e-3, 0.5, 100_000),
        UFMConfig("relu_ce_k4", "relu", "ce", 4, 10, 64, 3, 5e-3, 0.5, 300_000),
    ],
}


DOC_INTRO = """Where measurement and theory agree, and where they do not (every number is in the tables below):

* **Deep linear UFM (MSE)**: gradient descent reaches the closed-form optimum of docs/theory.md §3.0. The
  layer-wise predictions of §3.1–3.4 (the K² equal outliers ℓ_l, ranks, f_cc' = 1, κ = 1/K on the
  diagonal and 0 off it, Gur-Ari overlap 1, the Papyan ranks, the weight spectra, balancedness)
  and the full-Hessian table of §3.5, with and without H_1, are compared row by row; the summary
  above gives each run's largest error. The full Hessian's slowest directions converge last (the
  2λ and 0 levels: the rescaling and rotation symmetries of the factorisation, and the symmetric
  Gauss–Newton stack), so a run stopped early shows its largest errors there. At analytically
  constructed optima every level matches to 1e-10 (tests/test_theory.py).
* **Deep ReLU UFM (MSE)**: the outliers separate from the bulk (gap ratios in the tables) but **do
  not equalise**, and f_cc, κ and the singular values stay visibly off their DNC values. The
  disjoint-support DNC point has the linear optimum's loss (Thm 8 concerns DNC solutions), and
  training can go **below** it: the trained ReLU network is then not at a DNC point at all. At
  the constructed disjoint-support point the predictions of §3.7 (K outliers ℓ_l, and K(K−1) at
  ℓ_lδ^{2(L−l)}) hold to 1e-10 for every δ.
* **Cross-entropy**: linear CE models land on the CE DNC critical point (α, the loss and the
  three-level layer spectra of §3.6) in most settings, but not in all: with L = 4,
  n = 5, d = 12 (``linear_ce_deep`` in the quick preset) gradient descent finds a **lower** loss,
  so that point is not the minimiser there and the three levels do not appear. ReLU CE models are
  compared with the same point for reference only.
"""


def summary(results: dict) -> list[str]:
    """The page's summary, computed from its tables' verdicts: per experiment the rows compared, how
    many agree (error within :data:`AGREEMENT_TOL`, or an equal count), and every row that differs
    with its note (why it is expected, if known)."""
    lines = ["## Summary (computed from the tables below)", ""]
    differs = []
    for name, res in results["experiments"].items():
        rows = [r for r in res["table"] if r["verdict"] != "not compared"]
        bad = [r for r in rows if r["verdict"] == "differs"]
        errors = [r["error"] for r in rows if r["error"] is not None and math.isfinite(r["error"])]
        largest = f" (largest relative error {max(errors):.2g})" if errors else ""
        lines.append(f"* `{name}`: {len(rows) - len(bad)} of {plural(len(rows), 'compared row')} agree{largest}.")
        differs += [(name, r) for r in bad]
    if differs:
        lines += ["", f"Rows that differ (beyond {AGREEMENT_TOL:g}, or a different count; then the row's note):", ""]
        lines += [
            f"* `{name}` {r['quantity']}: "
            + ("count" if r["error"] is None else f"{r['error']:.3g}")
            + (f" ({r['note']})" if r["note"] else " (no note)")
            for name, r in differs
        ]
    return [*lines, ""]


def write_doc(results: dict, out: Path, doc: Path) -> None:
    """The theory-versus-measurement page: the intro above and every experiment's table, with its
    figures copied to ``<doc stem>_figures/`` beside the page."""
    figs = doc.parent / f"{doc.stem}_figures"
    figs.mkdir(parents=True, exist_ok=True)
    sections = []
    for res in results["experiments"].values():
        for name in res["figures"].values():
            atomic_write_bytes(figs / name, (out / name).read_bytes())
        sections.append(ufm.markdown(res, figure_dir=figs.name))
    cmd = f"fastdnc reproduce --preset {results['preset']} --out {out} --doc {doc}"
    text = [
        f"# Theory versus measurement (preset `{results['preset']}`)",
        "",
        f"Generated by `{cmd}` on {results['environment']['threads']} CPU threads (torch "
        f"{results['environment']['torch']}): training "
        f"{sum(r['train_seconds'] for r in results['experiments'].values()):.0f} s in all (cumulative over "
        f"resumed sessions), this session {results['wall_seconds']:.0f} s with the analysis."
        + ("" if results["preset"] == "paper" else " The `paper` preset was not run for this page."),
        "",
        *summary(results),
        DOC_INTRO,
        *sections,
    ]
    kept = real_section(doc.read_text()) if doc.exists() else ""  # the real-paper run's section stays
    atomic_write_text(doc, "\n".join(text) + (f"\n{kept}\n" if kept else ""))


def reproduce(
    preset: str = "quick",
    out: str | Path = "fastdnc-results",
    progress: bool = True,
    doc: str | Path | None = None,
    background_figures: bool = False,
) -> dict:
    """Run every experiment of ``preset`` and write the report to ``out`` (and the page ``doc``).

    ``background_figures``: draw each experiment's figures in a worker process while the next one
    trains (what the command line does). It starts a fresh interpreter (multiprocessing's spawn),
    which re-imports the calling script: call it from a script only under
    ``if __name__ == "__main__":``."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    results: dict = {
        "preset": preset,
        "environment": {
            "torch": torch.__version__,
            "python": platform.python_version(),
            "threads": torch.get_num_threads(),
            "machine": platform.machine(),
        },
        "experiments": {},
    }
    # figures are drawn by a worker process on another core while the next model trains
    with plots.FigureWriter(workers=1 if background_figures and (os.cpu_count() or 1) > 1 else 0) as figures:
        for i, cfg in enumerate(PRESETS[preset], 1):
            results["experiments"][cfg.name] = ufm.run(
                cfg, out, progress=progress, label=f"{cfg.name} {i}/{len(PRESETS[preset])}", figures=figures
            )
            atomic_write_json(out / "results.json", results)  # partial results survive an interruption
    results["wall_seconds"] = time.perf_counter() - t0
    atomic_write_json(out / "results.json", results)
    report = [
        f"# fastdnc reproduce: preset `{preset}`",
        "",
        f"Generated by `fastdnc reproduce --preset {preset} --out {out}` in {results['wall_seconds']:.1f} s "
        f"(torch {torch.__version__}, {plural(torch.get_num_threads(), 'thread')}). Raw numbers: `results.json`."
        + resumed_note(results["experiments"]),
        "Theory: docs/theory-vs-measurement.md and docs/theory.md §3; errors are relative unless the theory value is 0.",
        "",
    ]
    report += [ufm.markdown(res) for res in results["experiments"].values()]
    atomic_write_text(out / "report.md", "\n".join(report))
    if doc is not None:
        write_doc(results, out, Path(doc))
    return results


def resumed_note(experiments: dict) -> str:
    """A sentence for the header when this run resumed experiments from their checkpoints: which,
    from what step, and the training time over every run (the header's time is this run's)."""
    resumed = [f"{name} from step {r['resumed_from']}" for name, r in experiments.items() if r.get("resumed_from")]
    if not resumed:
        return ""
    total = sum(r["train_seconds"] for r in experiments.values())
    return (
        f" This run resumed {', '.join(resumed)} from the checkpoints in the folder; training took "
        f"{total:.1f} s over all runs, analysis {sum(r.get('analysis_seconds', 0.0) for r in experiments.values()):.1f} s in this one."
    )
