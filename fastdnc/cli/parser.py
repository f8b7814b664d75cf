"""The argument parser of ``fastdnc``: one sub-parser per command, with the shared model and
training argument groups."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from .. import __version__
from . import analyze, commands


def _measured(page: str, pattern: str, fallback: str) -> str:
    """The first group of ``pattern`` in the generated ``docs/<page>`` of a source checkout, or
    ``fallback`` (an installed package has no docs)."""
    try:
        text = (Path(__file__).resolve().parents[2] / "docs" / page).read_text()
    except OSError:
        return fallback
    found = re.search(pattern, text, re.M)
    return found.group(1) if found else fallback


def quick_time() -> str:
    """The quick preset's measured wall time, read from docs/benchmarks.md."""
    pattern = r"--preset quick` \(fresh folder\) \| wall time[^\n]*\n[^\n]*\n\| alone \| ([0-9.]+ s) \|"
    found = _measured("benchmarks.md", pattern, "")
    return f"{found} on 2 CPU cores, measured by `make bench`" if found else "about a minute on 2 CPU cores"


def bench_time() -> str:
    """How long ``make bench`` took, read from docs/benchmarks.md."""
    found = _measured("benchmarks.md", r"`make bench` took ([0-9.]+) min on this machine", "")
    return f"{found} minutes on 2 CPU cores, measured by its last run" if found else "about half an hour on 2 CPU cores"


def paper_time() -> str:
    """The paper preset's measured wall time, read from docs/theory-vs-measurement.md."""
    found = _measured("theory-vs-measurement.md", r"this session ([0-9]+) s with the analysis", "")
    return f"{int(found) / 60:.0f} minutes on 2 CPU cores from scratch" if found else "about a quarter of an hour"


def real_paper_time() -> str:
    """The real-paper preset's measured wall time, read from docs/theory-vs-measurement.md."""
    found = _measured("theory-vs-measurement.md", r"real-paper[^\n]*` in ([0-9]+) s on", "")
    return f"{int(found) / 60:.0f} minutes on 2 CPU cores from scratch" if found else "about 20 minutes on 2 CPU cores"


THREADS_HELP = (
    "intra-op threads for every operation (default: chosen by problem size, one thread for small work, "
    "which would only wait for each other on a busy machine; at most the cores this process may use)"
)


def _add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model (deep UFM)")
    g.add_argument("--classes", type=int, default=4, help="K, number of classes (default 4)")
    g.add_argument("--n-per-class", type=int, default=5, help="n, samples per class (default 5)")
    g.add_argument("--width", type=int, default=12, help="d, width (default 12)")
    g.add_argument("--depth", type=int, default=4, help="L, number of weight matrices (default 4)")
    g.add_argument("--activation", choices=["linear", "relu"], default="linear", help="σ (default linear)")
    g.add_argument("--loss", choices=["mse", "ce"], default="mse", help="fit term (default mse)")
    g.add_argument(
        "--weight-decay",
        type=float,
        nargs="+",
        default=[5e-3],
        help="λ_W: one value, or L values λ_1..λ_L (default 5e-3)",
    )
    g.add_argument("--feature-decay", type=float, default=None, help="λ_H (default: the weight decay)")
    g.add_argument("--dtype", choices=["float64", "float32"], default="float64", help="(default float64)")
    g.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    g.add_argument("--seed", type=int, default=0, help="initialisation and sampler seed (default 0)")


def _add_train_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("training")
    g.add_argument(
        "--steps",
        type=int,
        default=20_000,
        help="total steps (default 20000); rerun with a larger --steps to continue a run from its checkpoint",
    )
    g.add_argument("--lr", type=float, default=0.1, help="learning rate (default 0.1)")
    g.add_argument("--optimizer", choices=["gd", "sgd", "adam"], default="gd", help="(default gd: full-batch)")
    g.add_argument("--momentum", type=float, default=0.9, help="for sgd")
    g.add_argument("--batch-size", type=int, default=None, help="mini-batch size for sgd/adam (default: full)")
    g.add_argument(
        "--schedule",
        choices=["constant", "cosine", "linear", "step", "exponential"],
        default="constant",
        help="learning-rate schedule (default constant)",
    )
    g.add_argument("--checkpoint-every", type=int, default=None, help="steps between checkpoints (default steps/20)")
    g.add_argument("--no-resume", action="store_true", help="start afresh even if OUT/checkpoint.pt exists")
    g.add_argument(
        "--threads",
        type=int,
        default=None,
        help="intra-op threads (default: one for small models, which would only wait for each other on a "
        "busy machine, else torch's setting)",
    )


def _add_debug(p: argparse.ArgumentParser) -> None:
    p.add_argument("--debug", action="store_true", help="show the full traceback of an error")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastdnc",
        description="Curvature, spectra and deep neural collapse of deep unconstrained feature models.",
    )
    parser.add_argument("--version", action="version", version=f"fastdnc {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="command")
    for add in (_add_reproduce, _add_train, _add_spectrum, _add_analyze, _add_bench):
        add(sub)
    return parser


def _add_reproduce(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "reproduce",
        help="run a preset of the paper's experiments and write a report",
        description="Train the preset's models and write PNG figures, report.md and results.json. "
        "Reruns resume from the checkpoints in OUT.",
    )
    p.add_argument(
        "--preset",
        choices=["quick", "paper", "real", "real-paper"],
        default="quick",
        help=f"quick: {quick_time()} (default); paper: paper-scale settings, {paper_time()}; real: a "
        "network on real data (--dataset), analysed layer by layer; real-paper: the paper's MNIST experiment "
        f"(5,000 digits per class, CNN + 3-layer head, the DNC lens over training; --data-dir from `make data`), "
        f"{real_paper_time()}",
    )
    p.add_argument(
        "--dataset",
        choices=["digits", "mnist1d", "mnist", "cifar10"],
        default="digits",
        help="real preset: digits and mnist1d need no files; mnist and cifar10 read --data-dir",
    )
    p.add_argument(
        "--data-dir",
        default=None,
        help="ROOT with MNIST/raw/ or cifar-10-batches-py/ (torchvision's layout), or with mnist.pkl.gz "
        "(`make data`); never downloads",
    )
    p.add_argument("--n-per-class", type=int, default=None, help="real preset: class-balanced subsample")
    p.add_argument(
        "--model",
        choices=["mlp", "cnn", "resnet20"],
        default=None,
        help="real preset: network (default: mlp, cnn for cifar10)",
    )
    p.add_argument("--steps", type=int, default=None, help="real preset: training steps (default per data set)")
    p.add_argument("--width", type=int, default=None, help="real preset: head width d (default 64)")
    p.add_argument("--depth", type=int, default=None, help="real preset: head layers L (default 4; 3 for cifar10)")
    p.add_argument(
        "--distributed",
        action="store_true",
        help="real preset under torchrun: data-parallel training and sharded analysis (gloo)",
    )
    p.add_argument("--out", default="fastdnc-results", help="output folder (default fastdnc-results)")
    p.add_argument("--threads", type=int, default=None, help=THREADS_HELP)
    p.add_argument(
        "--doc",
        default=None,
        help="also write this markdown page (e.g. docs/theory-vs-measurement.md), figures beside it",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars or summary")
    _add_debug(p)
    p.set_defaults(func=commands.cmd_reproduce)


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a deep UFM and write its history and checkpoint",
        description="Train a deep UFM; writes OUT/checkpoint.pt (resumable), OUT/history.json "
        "and OUT/metrics.json (final per-layer collapse metrics).",
    )
    _add_model_args(p)
    _add_train_args(p)
    p.add_argument("--out", default="fastdnc-train", help="output folder (default fastdnc-train)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or summary")
    _add_debug(p)
    p.set_defaults(func=commands.cmd_train)


def _add_spectrum(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "spectrum",
        help="layer and full-Hessian spectra of a trained run",
        description="Load RUN/checkpoint.pt (written by 'fastdnc train') and write RUN/spectrum.json "
        "and RUN/spectrum.png: every layer Hessian's spectrum (exact from the Kronecker "
        "factors, from the assembled Gauss-Newton block, or by Lanczos), outlier counts "
        "against K², and the top of the full Hessian with the gradient's overlap.",
    )
    p.add_argument(
        "--run",
        "--run-dir",
        dest="run",
        required=True,
        help="folder of a 'fastdnc train' run (spell it --run-dir under torchrun, which claims --run)",
    )
    p.add_argument("-k", type=int, default=40, help="eigenpairs of the full Hessian (default 40)")
    p.add_argument("--features", action="store_true", help="include H_1 in the full Hessian")
    p.add_argument("--max-dense", type=int, default=6000, help="largest layer block decomposed densely (default 6000)")
    p.add_argument("--threads", type=int, default=None, help=THREADS_HELP)
    p.add_argument(
        "--distributed",
        action="store_true",
        help="under torchrun: shard the samples over the ranks (gloo); rank 0 writes the results",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars or summary")
    _add_debug(p)
    p.set_defaults(func=commands.cmd_spectrum)


def _add_analyze(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "analyze",
        help="put your own trained network through the DNC lens",
        description="Build your model (--model MODULE:FACTORY, your code: it runs), load its trained weights "
        "(--weights, read with weights_only=True and checked) and analyse it on a data set (--dataset, or your "
        "own --data FILE.npz with arrays X and y): per-layer Hessian spectra with the outliers against the "
        "theory's K / K² counts, f_cc', κ_cc', gradient overlaps, NC metrics and the whole model's top and "
        "density. Writes OUT/report.md, OUT/analysis.json and the figures.",
    )
    p.add_argument("--model", required=True, help="MODULE:FACTORY or path/to/file.py:FACTORY returning the nn.Module")
    p.add_argument(
        "--weights", default=None, help="a state_dict saved with torch.save (default: the factory's weights)"
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--dataset", choices=["digits", "mnist1d", "mnist", "cifar10"], help="a bundled data set (training split)"
    )
    src.add_argument("--data", default=None, help="FILE.npz with arrays X (N, ...) and y (N,) integer labels")
    p.add_argument(
        "--data-dir",
        default=None,
        help="ROOT for --dataset mnist/cifar10 files, or with mnist.pkl.gz (default: the offline sample)",
    )
    p.add_argument("--n-per-class", type=int, default=None, help="class-balanced subsample of the data (default: all)")
    p.add_argument(
        "--loss", choices=["ce", "mse"], default="ce", help="the loss the model was trained with (default ce)"
    )
    p.add_argument(
        "--layers", nargs="+", default=None, help="linear layers to analyse (default: the trailing linear head)"
    )
    p.add_argument("--batch-size", type=int, default=1024, help="samples per batch of the analysis (default 1024)")
    p.add_argument(
        "--dtype", choices=["float64", "float32"], default="float64", help="analysis precision (default float64)"
    )
    p.add_argument("--no-model-curvature", action="store_true", help="skip the whole model's Hessian top and density")
    p.add_argument("--no-density", action="store_true", help="skip the whole model's SLQ density")
    p.add_argument("--threads", type=int, default=None, help=THREADS_HELP)
    p.add_argument("--out", default="fastdnc-analysis", help="output folder (default fastdnc-analysis)")
    p.add_argument("--quiet", action="store_true", help="no progress lines or summary")
    _add_debug(p)
    p.set_defaults(func=analyze.cmd_analyze)


def _add_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="benchmark fastdnc against autograd and the peers: --quick for this machine, --compare for regressions",
        description="Without options: run every benchmark side by side and write docs/benchmarks.md (`make "
        f"bench`, {bench_time()}, from a source checkout). --quick: a two-minute table for this "
        "machine (matmul roofline, layer and full Hessian products against autograd, torch.func and curvlinops, "
        "top-k against ARPACK). --compare OLD.json: run the pytest-benchmark suite (or read --new NEW.json) and "
        "print the ratios that moved beyond their noise band.",
    )
    p.add_argument("--out", default="docs/benchmarks.md", help="the page to write (default docs/benchmarks.md)")
    p.add_argument("--quick", action="store_true", help="the two-minute table for this machine (writes nothing)")
    p.add_argument("--compare", metavar="OLD.json", default=None, help="a pytest-benchmark JSON to compare against")
    p.add_argument(
        "--new", metavar="NEW.json", default=None, help="with --compare: the run to compare (default: run now)"
    )
    p.add_argument(
        "--repeat",
        metavar="REPEAT.json",
        default=None,
        help="with --compare: a second run of the suite at OLD's commit; each row's noise band is widened to "
        "twice its ratio's drift between the two (make bench-repeat writes benchmarks/results/suite-repeat.json)",
    )
    _add_debug(p)
    p.set_defaults(func=commands.cmd_bench)
