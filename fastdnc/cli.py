"""Command line: ``fastdnc reproduce | train`` (``fastdnc <command> --help`` for each)."""

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


def _cmd_reproduce(a: argparse.Namespace) -> int:
    from .experiments import reproduce

    res = reproduce(a.preset, a.out, progress=not a.quiet)
    if not a.quiet:
        lin = res["linear_ufm"]["measured"]
        print(f"linear UFM: loss gap to theory {lin['loss_gap']:.2e}, singular values rel. error "
              f"{lin['singular_value_rel_error']:.2e}")
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
    p.add_argument("--preset", choices=["quick", "paper"], default="quick",
                   help="quick: minutes on 2 CPU cores (default); paper: paper-scale settings, hours")
    p.add_argument("--out", default="fastdnc-results", help="output folder (default fastdnc-results)")
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
