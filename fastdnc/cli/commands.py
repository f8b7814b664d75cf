"""The commands ``train``, ``spectrum``, ``bench`` and ``reproduce``: each takes the parsed arguments
and returns the exit status; every error a user can cause is raised as an exception that
:func:`fastdnc.cli.main` prints as one line."""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from .run_folder import (
    check_same_run,
    checked_device,
    make_folder,
    model_from_run,
    output_folder,
    run_config,
)


def _model_from_args(a: argparse.Namespace):
    """The DeepUFM the arguments describe, after every training setting is checked (a rejected
    command writes nothing)."""
    import torch

    from ..models import DeepUFM
    from ..train import check_training

    if a.steps < 0:
        raise ValueError(f"--steps must be >= 0, got {a.steps}")
    if a.checkpoint_every is not None and a.checkpoint_every <= 0:
        raise ValueError(f"--checkpoint-every must be >= 1, got {a.checkpoint_every}")
    check_training(
        a.steps,
        a.lr,
        optimizer=a.optimizer,
        momentum=a.momentum,
        batch_size=a.batch_size,
        schedule=a.schedule,
        checkpoint_every=a.checkpoint_every,
        threads=a.threads,
    )
    wd = a.weight_decay[0] if len(a.weight_decay) == 1 else a.weight_decay
    return DeepUFM(
        a.classes,
        a.n_per_class,
        a.width,
        a.depth,
        activation=a.activation,
        loss=a.loss,
        weight_decay=wd,
        feature_decay=a.feature_decay,
        seed=a.seed,
        dtype=getattr(torch, a.dtype),
        device=checked_device(a.device),
    )


def _already_done(a: argparse.Namespace, out: Path, cfg: dict, checkpoint: Path) -> bool:
    """Whether ``out`` holds this run trained at least ``--steps`` (a no-op rerun says so)."""
    from ..train import checkpoint_step

    if a.no_resume:
        return False
    check_same_run(out, cfg)
    done = checkpoint_step(checkpoint) if checkpoint.exists() else 0
    if done >= a.steps and done > 0:
        if not a.quiet:
            print(
                f"{out} has already trained {done} steps (--steps {a.steps}): nothing to do; pass a larger "
                "--steps to continue it"
            )
        return True
    return False


def cmd_train(a: argparse.Namespace) -> int:
    from ..collapse import collapse_metrics
    from ..io import atomic_write_json
    from ..train import train

    model = _model_from_args(a)
    out = output_folder(a.out)
    cfg, checkpoint = run_config(a), out / "checkpoint.pt"
    if _already_done(a, out, cfg, checkpoint):
        return 0
    created = make_folder(out)
    try:
        atomic_write_json(out / "config.json", cfg)
        t0 = time.perf_counter()
        history = train(
            model,
            a.steps,
            a.lr,
            optimizer=a.optimizer,
            momentum=a.momentum,
            batch_size=a.batch_size,
            schedule=a.schedule,
            collapse=True,
            checkpoint=checkpoint,
            checkpoint_every=a.checkpoint_every,
            resume=not a.no_resume,
            seed=a.seed,
            progress=False if a.quiet else None,
            threads=a.threads,
        )
    except BaseException:
        if created and not checkpoint.exists():  # a failed first command leaves nothing behind but a good checkpoint
            shutil.rmtree(out, ignore_errors=True)
        raise
    seconds = time.perf_counter() - t0
    history.save(out / "history.json")
    atomic_write_json(
        out / "metrics.json",
        {"final_loss": model.loss().item(), "train_seconds": seconds, "collapse": collapse_metrics(model).to_dict()},
    )
    if not a.quiet:
        start, end = history.start_step, history.end_step
        resumed = f"resumed from step {start}, " if start else ""
        print(
            f"{resumed}trained {end - start} steps (to step {end}) in {seconds:.1f} s; final loss "
            f"{model.loss().item():.10g}"
        )
        print(f"wrote {out / 'checkpoint.pt'}, {out / 'history.json'}, {out / 'metrics.json'}")
    return 0


def _layer_spectra(model, layer_hessian, a: argparse.Namespace) -> tuple[list[dict], list[list[float]], list[str]]:
    """Every layer Hessian's spectrum: exact from the Kronecker factors or the assembled block up to
    ``--max-dense``, else the top ``-k`` by Lanczos; with its outlier count and gap."""
    from ..curvature import KroneckerOperator
    from ..spectral import lanczos, outliers

    k2 = model.num_classes**2
    layers, spectra, labels = [], [], []
    for layer in range(1, model.depth + 1):
        op = layer_hessian(model, layer)
        if isinstance(op, KroneckerOperator) or op.size <= a.max_dense:
            ev, how = op.eigvalsh(), "exact (all eigenvalues)"
        else:
            ev, how = lanczos(op, k=min(op.size, a.k)).eigenvalues, f"lanczos top {a.k}"
        out = outliers(ev, max_count=min(ev.numel() - 1, 2 * k2))
        layers.append(
            {
                "layer": layer,
                "method": how,
                "size": op.size,
                "outliers": out.count,
                "gap_ratio": out.gap_ratio,
                "top": sorted(ev.tolist(), reverse=True)[: 2 * k2],
            }
        )
        spectra.append(ev.tolist())
        labels.append(f"Hess_{layer}: {how}")
    return layers, spectra, labels


def _gap(ratio: float) -> str:
    """The outlier gap as a ratio, or what an infinite one means: the rest is the null space."""
    return "the rest is the null space (no bulk)" if ratio == float("inf") else f"gap ×{ratio:.3g}"


def _print_spectrum(result: dict, k2: int, run: Path) -> None:
    full = result["full_hessian"]
    overlap = next(key for key in full if key.startswith("gradient_overlap_top_"))
    for row in result["layers"]:
        print(
            f"layer {row['layer']}: {row['outliers']} outliers (K² = {k2}), {_gap(row['gap_ratio'])}, {row['method']}"
        )
    print(
        f"full Hessian top {len(full['eigenvalues'])}: {full['outliers']} outliers; gradient overlap with the top "
        f"{overlap.rsplit('_', 1)[1]}: {full[overlap]:.6f}"
    )
    print(f"wrote {run / 'spectrum.json'} and {run / 'spectrum.png'}")


def cmd_spectrum(a: argparse.Namespace) -> int:
    from .. import plots
    from ..curvature import feature_hessian, hessian, layer_hessian
    from ..curvature.oracles import fit_gradient
    from ..io import atomic_write_json
    from ..spectral import gradient_overlap, lanczos, outliers

    run = Path(a.run)
    model, step = model_from_run(run)
    if a.distributed:
        from .. import distributed as D

        D.init()
        model = D.shard_model(model)
        # the sharded versions, same signatures
        layer_hessian, hessian, fit_gradient = D.sharded_layer_hessian, D.sharded_hessian, D.sharded_fit_gradient  # type: ignore[assignment]
        a.quiet = a.quiet or D.rank() > 0
    full = hessian(model, include_features=a.features, decay=False)  # first: bad options fail before any work
    k2 = model.num_classes**2
    layers, spectra, labels = _layer_spectra(model, layer_hessian, a)
    res = lanczos(full, k=min(full.size, a.k))
    grad = fit_gradient(model, include_features=a.features)
    top = res.eigenvectors[:, : min(k2, res.eigenvectors.shape[1])]
    result = {
        "step": step,
        "layers": layers,
        "full_hessian": {
            "eigenvalues": res.eigenvalues.tolist(),
            "residuals": res.residuals.tolist(),
            "converged": res.converged,
            "outliers": outliers(res.eigenvalues).count,
            f"gradient_overlap_top_{top.shape[1]}": gradient_overlap(grad, top),
        },
    }
    if a.features:
        result["feature_hessian_trace"] = float(feature_hessian(model).trace())
    if a.distributed and D.rank() > 0:
        return 0
    atomic_write_json(run / "spectrum.json", result)
    counts = [row["outliers"] for row in layers]
    fig = plots.spectra_figure(
        spectra,
        labels,
        counts,
        f"layer Hessian spectra at step {step}",
        spike_label=f"{{n}} outlier{{s}} (K² = {k2})",
        sizes=[row["size"] for row in layers],
    )
    plots.save(fig, run / "spectrum.png")
    if not a.quiet:
        _print_spectrum(result, k2, run)
    return 0


def cmd_bench(a: argparse.Namespace) -> int:
    import subprocess

    script = Path(__file__).resolve().parents[2] / "benchmarks" / "run_all.py"
    if not script.exists():
        raise FileNotFoundError(
            f"{script} is missing: the benchmarks ship with the source tree (git clone), not with an installed wheel"
        )
    return subprocess.call([sys.executable, str(script), "--out", a.out])


def _rank() -> int:
    from .._comm import rank

    return rank()


def cmd_reproduce(a: argparse.Namespace) -> int:
    from ..experiments import reproduce
    from ..experiments.ufm_comparison import AGREEMENT_TOL

    output_folder(a.out)
    if a.doc is not None:
        output_folder(str(Path(a.doc).parent), "--doc")
    if a.preset == "real":
        from ..experiments.real import reproduce_real
        from ..experiments.real_report import regime

        res = reproduce_real(
            a.dataset,
            a.out,
            data_dir=a.data_dir,
            n_per_class=a.n_per_class,
            model=a.model,
            steps=a.steps,
            width=a.width,
            depth=a.depth,
            progress=not a.quiet,
            distributed=a.distributed,
        )
        if not a.quiet and _rank() == 0:
            print(
                f"{res['data_source']}: train accuracy {res['train_accuracy']:.2%}, held-out "
                + (
                    f"{res['test_accuracy']:.2%} ({res['test_samples']} samples)"
                    if res["test_accuracy"] is not None
                    else "not available (no test files)"
                )
                + "; outliers per head layer "
                f"{[l['outlier_count'] for l in res['analysis']['layers']]} (K = {res['num_classes']}); "
                f"wrote {Path(a.out) / 'report.md'}"
            )
            print(regime(res).replace("**", ""))
        return 0
    res = reproduce(a.preset, a.out, progress=not a.quiet, doc=a.doc, background_figures=True)
    if not a.quiet:
        for name, exp in res["experiments"].items():
            compared = [r for r in exp["table"] if r["error"] is not None]
            beyond = [r for r in compared if not r["error"] <= AGREEMENT_TOL]
            line = f"{name}: {len(compared) - len(beyond)} of {len(compared)} compared rows within {AGREEMENT_TOL:g}"
            if beyond:
                worst = max(beyond, key=lambda r: r["error"])
                line += f"; {len(beyond)} beyond (largest {worst['error']:.2e}: {worst['note']})"
            print(line)
        print(f"wrote {Path(a.out) / 'report.md'} and results.json in {res['wall_seconds']:.1f} s")
    return 0
