"""Command line: ``fastdnc reproduce | train | spectrum | bench`` (``fastdnc <command> --help``)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from . import __version__


def _add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model (deep UFM)")
    g.add_argument("--classes", type=int, default=4, help="K, number of classes (default 4)")
    g.add_argument("--n-per-class", type=int, default=5, help="n, samples per class (default 5)")
    g.add_argument("--width", type=int, default=12, help="d, width (default 12)")
    g.add_argument("--depth", type=int, default=4, help="L, number of weight matrices (default 4)")
    g.add_argument("--activation", choices=["linear", "relu"], default="linear")
    g.add_argument("--loss", choices=["mse", "ce"], default="mse")
    g.add_argument("--weight-decay", type=float, nargs="+", default=[5e-3],
                   help="λ_W: one value, or L values λ_1..λ_L (default 5e-3)")
    g.add_argument("--feature-decay", type=float, default=None, help="λ_H (default: the weight decay)")
    g.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    g.add_argument("--device", default="cpu")
    g.add_argument("--seed", type=int, default=0)


def _add_train_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("training")
    g.add_argument("--steps", type=int, default=20_000)
    g.add_argument("--lr", type=float, default=0.1)
    g.add_argument("--optimizer", choices=["gd", "sgd", "adam"], default="gd")
    g.add_argument("--momentum", type=float, default=0.9, help="for sgd")
    g.add_argument("--batch-size", type=int, default=None, help="mini-batch size for sgd/adam (default: full)")
    g.add_argument("--schedule", choices=["constant", "cosine", "linear", "step", "exponential"], default="constant")
    g.add_argument("--checkpoint-every", type=int, default=None)
    g.add_argument("--no-resume", action="store_true", help="start afresh even if OUT/checkpoint.pt exists")


def _cmd_train(a: argparse.Namespace) -> int:
    import torch

    from .collapse import collapse_metrics
    from .io import atomic_write_json
    from .models import DeepUFM
    from .train import train

    wd = a.weight_decay[0] if len(a.weight_decay) == 1 else a.weight_decay
    model = DeepUFM(a.classes, a.n_per_class, a.width, a.depth, activation=a.activation, loss=a.loss,
                    weight_decay=wd, feature_decay=a.feature_decay, seed=a.seed, dtype=getattr(torch, a.dtype),
                    device=a.device)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "config.json", {k: v for k, v in vars(a).items() if k != "func"})
    t0 = time.perf_counter()
    history = train(model, a.steps, a.lr, optimizer=a.optimizer, momentum=a.momentum, batch_size=a.batch_size,
                    schedule=a.schedule, collapse=True, checkpoint=out / "checkpoint.pt",
                    checkpoint_every=a.checkpoint_every, resume=not a.no_resume, seed=a.seed,
                    progress=False if a.quiet else None)
    seconds = time.perf_counter() - t0
    history.save(out / "history.json")
    atomic_write_json(out / "metrics.json", {"final_loss": model.loss().item(), "train_seconds": seconds,
                                             "collapse": collapse_metrics(model).to_dict()})
    if not a.quiet:
        print(f"trained {a.steps} steps in {seconds:.1f} s; final loss {model.loss().item():.10g}")
        print(f"wrote {out / 'checkpoint.pt'}, {out / 'history.json'}, {out / 'metrics.json'}")
    return 0


def _model_from_run(run: Path):
    import json

    import torch

    from .models import DeepUFM
    from .train import load_checkpoint

    cfg_path, ck = run / "config.json", run / "checkpoint.pt"
    for p in (cfg_path, ck):
        if not p.exists():
            raise FileNotFoundError(f"{p} is missing: point --run at a folder written by 'fastdnc train'")
    c = json.loads(cfg_path.read_text())
    wd = c["weight_decay"][0] if len(c["weight_decay"]) == 1 else c["weight_decay"]
    model = DeepUFM(c["classes"], c["n_per_class"], c["width"], c["depth"], activation=c["activation"], loss=c["loss"],
                    weight_decay=wd, feature_decay=c["feature_decay"], seed=c["seed"], dtype=getattr(torch, c["dtype"]),
                    device=c["device"])
    step, _ = load_checkpoint(ck, model)
    return model, step


def _cmd_spectrum(a: argparse.Namespace) -> int:
    from . import plots
    from .curvature import KroneckerOperator, feature_hessian, hessian, layer_hessian
    from .curvature.reference import fit_gradient
    from .io import atomic_write_json
    from .spectral import gradient_overlap, lanczos, outliers

    run = Path(a.run)
    model, step = _model_from_run(run)
    if a.distributed:
        from . import distributed as D

        D.init()
        model = D.shard_model(model)
        layer_hessian = D.sharded_layer_hessian  # noqa: F811 - the sharded versions, same signatures
        hessian = D.sharded_hessian  # noqa: F811
        fit_gradient = D.sharded_fit_gradient  # noqa: F811
        a.quiet = a.quiet or D.rank() > 0
    full = hessian(model, include_features=a.features, decay=False)  # first: bad options fail before any work
    k2 = model.num_classes**2
    layers, spectra, labels = [], [], []
    for layer in range(1, model.depth + 1):
        op = layer_hessian(model, layer)
        if isinstance(op, KroneckerOperator) or op.size <= a.max_dense:
            ev, how = op.eigvalsh(), "exact (all eigenvalues)"
        else:
            ev, how = lanczos(op, k=min(op.size, a.k)).eigenvalues, f"lanczos top {a.k}"
        out = outliers(ev, max_count=min(ev.numel() - 1, 2 * k2))
        layers.append({"layer": layer, "method": how, "size": op.size, "outliers": out.count, "gap_ratio": out.gap_ratio,
                       "top": sorted(ev.tolist(), reverse=True)[: 2 * k2]})
        spectra.append(ev.tolist())
        labels.append(f"Hess_{layer}: {how}")
    res = lanczos(full, k=min(full.size, a.k))
    grad = fit_gradient(model, include_features=a.features)
    top = res.eigenvectors[:, : min(k2, res.eigenvectors.shape[1])]
    result = {
        "step": step,
        "layers": layers,
        "full_hessian": {"eigenvalues": res.eigenvalues.tolist(), "residuals": res.residuals.tolist(),
                         "converged": res.converged, "outliers": outliers(res.eigenvalues).count,
                         f"gradient_overlap_top_{top.shape[1]}": gradient_overlap(grad, top)},
    }
    if a.features:
        result["feature_hessian_trace"] = float(feature_hessian(model).trace())
    if a.distributed and D.rank() > 0:
        return 0
    atomic_write_json(run / "spectrum.json", result)
    plots.save(plots.spectra_figure(spectra, labels, k2, f"layer Hessian spectra at step {step}"), run / "spectrum.png")
    if not a.quiet:
        for row in layers:
            print(f"layer {row['layer']}: {row['outliers']} outliers (K² = {k2}), gap ×{row['gap_ratio']:.3g}, {row['method']}")
        print(f"full Hessian top {res.eigenvalues.numel()}: {result['full_hessian']['outliers']} outliers; "
              f"gradient overlap with the top {top.shape[1]}: "
              f"{result['full_hessian'][f'gradient_overlap_top_{top.shape[1]}']:.6f}")
        print(f"wrote {run / 'spectrum.json'} and {run / 'spectrum.png'}")
    return 0


def _cmd_bench(a: argparse.Namespace) -> int:
    import subprocess

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "run_all.py"
    if not script.exists():
        raise FileNotFoundError(f"{script} is missing: the benchmarks ship with the source tree (git clone), "
                                "not with an installed wheel")
    return subprocess.call([sys.executable, str(script), "--out", a.out])


def _rank() -> int:
    from .distributed import rank

    return rank()


def _cmd_reproduce(a: argparse.Namespace) -> int:
    from .experiments import reproduce

    if a.preset == "real":
        from .experiments.real import reproduce_real

        res = reproduce_real(a.dataset, a.out, data_dir=a.data_dir, n_per_class=a.n_per_class, model=a.model,
                             steps=a.steps, width=a.width, depth=a.depth, progress=not a.quiet,
                             distributed=a.distributed)
        if not a.quiet and _rank() == 0:
            print(f"train accuracy {res['train_accuracy']:.2%}; outliers per head layer "
                  f"{[l['outlier_count'] for l in res['analysis']['layers']]} (K = {res['num_classes']}); "
                  f"wrote {Path(a.out) / 'report.md'}")
        return 0
    res = reproduce(a.preset, a.out, progress=not a.quiet, doc=a.doc)
    if not a.quiet:
        for name, exp in res["experiments"].items():
            errs = [r["error"] for r in exp["table"] if r["error"] is not None]
            print(f"{name}: {len(exp['table'])} theory-vs-measurement rows, largest error "
                  f"{max(errs) if errs else float('nan'):.2e}")
        print(f"wrote {Path(a.out) / 'report.md'} and results.json in {res['wall_seconds']:.1f} s")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastdnc",
        description="Curvature, spectra and deep neural collapse of deep unconstrained feature models.",
    )
    parser.add_argument("--version", action="version", version=f"fastdnc {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="command")

    p = sub.add_parser("reproduce", help="run a preset of the paper's experiments and write a report",
                       description="Train the preset's models and write PNG figures, report.md and results.json. "
                                   "Reruns resume from the checkpoints in OUT.")
    p.add_argument("--preset", choices=["quick", "paper", "real"], default="quick",
                   help="quick: minutes on 2 CPU cores (default); paper: paper-scale settings, about 16 minutes; real: a "
                        "network on real data (--dataset), analysed layer by layer")
    p.add_argument("--dataset", choices=["digits", "mnist1d", "mnist", "cifar10"], default="digits",
                   help="real preset: digits and mnist1d need no files; mnist and cifar10 read --data-dir")
    p.add_argument("--data-dir", default=None,
                   help="ROOT with MNIST/raw/ or cifar-10-batches-py/ (torchvision's layout); never downloads")
    p.add_argument("--n-per-class", type=int, default=None, help="real preset: class-balanced subsample")
    p.add_argument("--model", choices=["mlp", "cnn", "resnet20"], default=None,
                   help="real preset: network (default: mlp, cnn for cifar10)")
    p.add_argument("--steps", type=int, default=None, help="real preset: training steps (default per data set)")
    p.add_argument("--width", type=int, default=None, help="real preset: head width d (default 64)")
    p.add_argument("--depth", type=int, default=None, help="real preset: head layers L (default 4; 3 for cifar10)")
    p.add_argument("--distributed", action="store_true",
                   help="real preset under torchrun: data-parallel training and sharded analysis (gloo)")
    p.add_argument("--out", default="fastdnc-results", help="output folder (default fastdnc-results)")
    p.add_argument("--doc", default=None,
                   help="also write this markdown page (e.g. docs/theory-vs-measurement.md), figures beside it")
    p.add_argument("--quiet", action="store_true", help="no progress bars or summary")
    p.set_defaults(func=_cmd_reproduce)

    p = sub.add_parser("train", help="train a deep UFM and write its history and checkpoint",
                       description="Train a deep UFM; writes OUT/checkpoint.pt (resumable), OUT/history.json "
                                   "and OUT/metrics.json (final per-layer collapse metrics).")
    _add_model_args(p)
    _add_train_args(p)
    p.add_argument("--out", default="fastdnc-train", help="output folder (default fastdnc-train)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("spectrum", help="layer and full-Hessian spectra of a trained run",
                       description="Load RUN/checkpoint.pt (written by 'fastdnc train') and write RUN/spectrum.json "
                                   "and RUN/spectrum.png: every layer Hessian's spectrum (exact from the Kronecker "
                                   "factors, from the assembled Gauss-Newton block, or by Lanczos), outlier counts "
                                   "against K², and the top of the full Hessian with the gradient's overlap.")
    p.add_argument("--run", "--run-dir", dest="run", required=True,
                   help="folder of a 'fastdnc train' run (spell it --run-dir under torchrun, which claims --run)")
    p.add_argument("-k", type=int, default=40, help="eigenpairs of the full Hessian (default 40)")
    p.add_argument("--features", action="store_true", help="include H_1 in the full Hessian")
    p.add_argument("--max-dense", type=int, default=5000, help="largest layer block assembled explicitly")
    p.add_argument("--distributed", action="store_true",
                   help="under torchrun: shard the samples over the ranks (gloo); rank 0 writes the results")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_spectrum)

    p = sub.add_parser("bench", help="run every benchmark side by side and write docs/benchmarks.md",
                       description="Run benchmarks/run_all.py (about 10 minutes on 2 cores; the peers extra adds the "
                                   "curvlinops, BackPACK, PyHessian and hessian-eigenthings columns).")
    p.add_argument("--out", default="docs/benchmarks.md")
    p.set_defaults(func=_cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return args.func(args)
    except (ValueError, TypeError, FileNotFoundError, FloatingPointError) as e:
        print(f"fastdnc {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: rerun the same command to resume from the last checkpoint", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
