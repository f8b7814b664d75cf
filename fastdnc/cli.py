"""Command line: ``fastdnc reproduce | train | spectrum | bench`` (``fastdnc <command> --help``)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
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
    g.add_argument("--threads", type=int, default=None,
                   help="intra-op threads (default: one for small models, which would only wait for each other on a "
                        "busy machine, else torch's setting)")


# Arguments that do not change what a run computes: everything else in config.json must match.
_RUN_NEUTRAL = ("command", "func", "out", "quiet", "debug", "no_resume", "steps", "checkpoint_every", "threads")


def _device(name: str):
    """``--device`` as a torch.device that exists here, or a ValueError saying what to use."""
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"--device {name!r} is not a device: use cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"--device {name!r}: only cpu and cuda are supported")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {name}: CUDA is not available here (no GPU, or a CPU build of torch); "
                             "use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def _output_folder(path: str, flag: str = "--out") -> Path:
    """``path`` as a folder that exists or can be created: not a file, not under a file."""
    out = Path(path)
    for p in [out, *out.parents]:
        if p.exists():
            if not p.is_dir():
                raise ValueError(f"{flag} {out} is {'a file' if p == out else f'under {p}, which is a file'}: "
                                 "give a folder")
            if not os.access(p, os.W_OK | os.X_OK):
                raise ValueError(f"{flag} {out}: {p} is not writable")
            break
    return out


def _make_folder(out: Path, flag: str = "--out") -> bool:
    """Create ``out`` (and its parents); returns whether it was created. One clear error if not."""
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"{flag} {out}: cannot create the folder ({e.strerror or e})") from None
    return created


def _read_json(path: Path, what: str) -> dict:
    from .io import check_regular_file

    check_regular_file(path, what)
    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{what} {path} is not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{what} {path} is not a JSON object")
    return data


def _run_config(a: argparse.Namespace) -> dict:
    return {k: v for k, v in sorted(vars(a).items()) if k not in ("func", "command")}


def _check_same_run(out: Path, cfg: dict) -> None:
    """Refuse to continue the run in ``out`` with another configuration (the fields are named)."""
    path = out / "config.json"
    if not path.exists():
        return
    saved = _read_json(path, "run configuration")
    diffs = [f"{k}: {saved[k]!r} → {v!r}" for k, v in cfg.items()
             if k not in _RUN_NEUTRAL and k in saved and saved[k] != v]
    if diffs:
        raise ValueError(f"{out} holds a run with another configuration ({'; '.join(diffs)}); continue it with the "
                         "same settings, use another --out, or pass --no-resume to start afresh there (its "
                         "checkpoint and history are replaced)")


def _cmd_train(a: argparse.Namespace) -> int:
    import torch

    from .collapse import collapse_metrics
    from .io import atomic_write_json
    from .models import DeepUFM
    from .train import check_training, checkpoint_step, train

    if a.steps < 0:
        raise ValueError(f"--steps must be >= 0, got {a.steps}")
    if a.checkpoint_every is not None and a.checkpoint_every <= 0:
        raise ValueError(f"--checkpoint-every must be >= 1, got {a.checkpoint_every}")
    # every setting is checked before anything is written (a rejected command changes nothing)
    check_training(a.steps, a.lr, optimizer=a.optimizer, momentum=a.momentum, batch_size=a.batch_size,
                   schedule=a.schedule, checkpoint_every=a.checkpoint_every, threads=a.threads)
    device = _device(a.device)
    wd = a.weight_decay[0] if len(a.weight_decay) == 1 else a.weight_decay
    model = DeepUFM(a.classes, a.n_per_class, a.width, a.depth, activation=a.activation, loss=a.loss,
                    weight_decay=wd, feature_decay=a.feature_decay, seed=a.seed, dtype=getattr(torch, a.dtype),
                    device=device)
    out = _output_folder(a.out)
    cfg, checkpoint = _run_config(a), out / "checkpoint.pt"
    if not a.no_resume:
        _check_same_run(out, cfg)
        done = checkpoint_step(checkpoint) if checkpoint.exists() else 0
        if done >= a.steps and done > 0:
            if not a.quiet:
                print(f"{out} has already trained {done} steps (--steps {a.steps}): nothing to do; pass a larger "
                      "--steps to continue it")
            return 0
    created = _make_folder(out)
    try:
        atomic_write_json(out / "config.json", cfg)
        t0 = time.perf_counter()
        history = train(model, a.steps, a.lr, optimizer=a.optimizer, momentum=a.momentum, batch_size=a.batch_size,
                        schedule=a.schedule, collapse=True, checkpoint=checkpoint,
                        checkpoint_every=a.checkpoint_every, resume=not a.no_resume, seed=a.seed,
                        progress=False if a.quiet else None, threads=a.threads)
    except BaseException:
        if created and not checkpoint.exists():  # a failed first command leaves nothing behind but a good checkpoint
            shutil.rmtree(out, ignore_errors=True)
        raise
    seconds = time.perf_counter() - t0
    history.save(out / "history.json")
    atomic_write_json(out / "metrics.json", {"final_loss": model.loss().item(), "train_seconds": seconds,
                                             "collapse": collapse_metrics(model).to_dict()})
    if not a.quiet:
        start, end = history.start_step, history.end_step
        resumed = f"resumed from step {start}, " if start else ""
        print(f"{resumed}trained {end - start} steps (to step {end}) in {seconds:.1f} s; final loss "
              f"{model.loss().item():.10g}")
        print(f"wrote {out / 'checkpoint.pt'}, {out / 'history.json'}, {out / 'metrics.json'}")
    return 0


_MODEL_KEYS = ("classes", "n_per_class", "width", "depth", "activation", "loss", "weight_decay", "feature_decay",
               "seed", "dtype", "device")


def _model_from_run(run: Path):
    import torch

    from .models import DeepUFM
    from .train import load_checkpoint

    cfg_path, ck = run / "config.json", run / "checkpoint.pt"
    for p in (cfg_path, ck):
        if not p.exists():
            raise FileNotFoundError(f"{p} is missing: point --run at a folder written by 'fastdnc train'")
    c = _read_json(cfg_path, "run configuration")
    missing = [k for k in _MODEL_KEYS if k not in c]
    if missing or not isinstance(c["weight_decay"], list) or c["dtype"] not in ("float32", "float64"):
        raise ValueError(f"{cfg_path} is not a 'fastdnc train' configuration (missing or wrong: "
                         f"{', '.join(missing) or 'weight_decay/dtype'})")
    wd = c["weight_decay"][0] if len(c["weight_decay"]) == 1 else c["weight_decay"]
    model = DeepUFM(c["classes"], c["n_per_class"], c["width"], c["depth"], activation=c["activation"], loss=c["loss"],
                    weight_decay=wd, feature_decay=c["feature_decay"], seed=c["seed"], dtype=getattr(torch, c["dtype"]),
                    device=_device(c["device"]))
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

    _output_folder(a.out)
    if a.doc is not None:
        _output_folder(str(Path(a.doc).parent), "--doc")
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


def _add_debug(p: argparse.ArgumentParser) -> None:
    p.add_argument("--debug", action="store_true", help="show the full traceback of an error")


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
    _add_debug(p)
    p.set_defaults(func=_cmd_reproduce)

    p = sub.add_parser("train", help="train a deep UFM and write its history and checkpoint",
                       description="Train a deep UFM; writes OUT/checkpoint.pt (resumable), OUT/history.json "
                                   "and OUT/metrics.json (final per-layer collapse metrics).")
    _add_model_args(p)
    _add_train_args(p)
    p.add_argument("--out", default="fastdnc-train", help="output folder (default fastdnc-train)")
    p.add_argument("--quiet", action="store_true")
    _add_debug(p)
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
    _add_debug(p)
    p.set_defaults(func=_cmd_spectrum)

    p = sub.add_parser("bench", help="run every benchmark side by side and write docs/benchmarks.md",
                       description="Run benchmarks/run_all.py (about 10 minutes on 2 cores; the peers extra adds the "
                                   "curvlinops, BackPACK, PyHessian and hessian-eigenthings columns).")
    p.add_argument("--out", default="docs/benchmarks.md")
    _add_debug(p)
    p.set_defaults(func=_cmd_bench)
    return parser


def _one_line(e: BaseException) -> str:
    """One line for an error a user can cause; unexpected ones keep their type and ask for --debug."""
    from .distributed import DistributedError
    from .kernels.dispatch import BackendUnavailable

    if isinstance(e, OSError) and e.strerror:
        text = f"{e.strerror}: {e.filename}" if e.filename else e.strerror
    elif isinstance(e, MemoryError):
        text = str(e) or "out of memory"
        if not str(e):
            text += " (use a smaller problem, float32, or a machine with more memory)"
    elif isinstance(e, (ValueError, TypeError, OSError, FloatingPointError, DistributedError, BackendUnavailable)):
        text = str(e) or type(e).__name__
    else:
        text = f"{type(e).__name__}: {e} (unexpected: rerun with --debug for the traceback, and please report it)"
    return " ".join(text.split())


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("\ninterrupted: rerun the same command to resume from the last checkpoint", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - every failure a user can cause is one line (--debug: the traceback)
        if getattr(args, "debug", False):
            raise
        print(f"fastdnc {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
