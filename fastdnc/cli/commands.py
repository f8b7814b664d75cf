"""The commands ``train``, ``spectrum``, ``bench`` and ``reproduce``: each takes the parsed arguments
and returns the exit status; every error a user can cause is raised as an exception that
:func:`fastdnc.cli.main` prints as one line."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .._text import plural
from .run_folder import (
    check_train_folder,
    checked_device,
    command_settings,
    computed_settings,
    differences,
    model_from_run,
    output_folder,
    refuse_other_configuration,
)


def _train_config(args: argparse.Namespace):
    """The run's :class:`~fastdnc.training.TrainConfig` from the command's flags (checked: a
    ValueError naming the setting)."""
    from ..training import TrainConfig

    return TrainConfig(
        args.steps,
        args.lr,
        optimizer=args.optimizer,
        momentum=args.momentum,
        batch_size=args.batch_size,
        schedule=args.schedule,
        checkpoint_every=args.checkpoint_every,
        seed=args.seed,
        threads=args.threads,
    )


def _model_from_args(args: argparse.Namespace):
    """The DeepUFM the arguments describe, after every training setting is checked (a rejected
    command writes nothing)."""
    import torch

    from ..models import DeepUFM

    if args.steps < 0:
        raise ValueError(f"--steps must be >= 0, got {args.steps}")
    if args.checkpoint_every is not None and args.checkpoint_every <= 0:
        raise ValueError(f"--checkpoint-every must be >= 1, got {args.checkpoint_every}")
    _train_config(args)
    wd = args.weight_decay[0] if len(args.weight_decay) == 1 else args.weight_decay
    return DeepUFM(
        args.classes,
        args.n_per_class,
        args.width,
        args.depth,
        activation=args.activation,
        loss=args.loss,
        weight_decay=wd,
        feature_decay=args.feature_decay,
        seed=args.seed,
        dtype=getattr(torch, args.dtype),
        device=checked_device(args.device),
    )


def _checkpoint_step(args: argparse.Namespace, out: Path, cfg: dict, model) -> int | None:
    """The step of ``out``'s checkpoint when this command may continue it (``None`` without one);
    refuses a run of another configuration, judged by the checkpoint (the record) or, before the
    first checkpoint, by config.json (its copy)."""
    from ..training.checkpoint import check_same_configuration, read_checkpoint

    config = check_train_folder(out, args.no_resume)
    checkpoint = out / "checkpoint.pt"
    if args.no_resume or not checkpoint.exists():
        if config is not None:
            refuse_other_configuration(out, differences(config, cfg), "config.json")
        return None
    ck = read_checkpoint(checkpoint, "cpu")
    expected = _train_config(args).record(model, command=computed_settings(cfg))
    hint = "continue it with the same settings, use another --out, or pass --no-resume to start afresh there"
    check_same_configuration(checkpoint, ck, expected, hint)
    return int(ck["step"])


def _write_results(out: Path, model, history, seconds: float) -> None:
    """history.json and metrics.json of a run at the model's current step."""
    from ..collapse import collapse_metrics
    from ..io import atomic_write_json

    history.save(out / "history.json")
    atomic_write_json(
        out / "metrics.json",
        {
            "step": history.end_step,
            "final_loss": model.loss().item(),
            "train_seconds": seconds,
            "collapse": collapse_metrics(model).to_dict(),
        },
    )


def _refresh_copy(out: Path, cfg: dict) -> None:
    """Write config.json, the copy of an accepted command's settings, where it is missing or its
    computed settings differ (a rerun with only other neutral flags leaves it untouched)."""
    from ..io import atomic_write_json
    from ..safe_read import read_json

    try:
        same = not differences(read_json(out / "config.json", "run configuration"), cfg)
    except (ValueError, FileNotFoundError):
        same = False
    if not same:
        atomic_write_json(out / "config.json", cfg)


def _repair(out: Path, step: int, quiet: bool) -> None:
    """Complete history.json and metrics.json from the checkpoint when a run was killed between its
    last checkpoint and them (metrics.json then names another step, or a file is missing)."""
    from ..safe_read import read_json

    try:
        written = read_json(out / "metrics.json", "metrics").get("step")
    except (ValueError, FileNotFoundError):
        written = None
    if written == step and (out / "history.json").exists():
        return
    model, _, history = model_from_run(out)
    history.start_step = history.end_step = step
    seconds = history.last("wall_time") if "wall_time" in history else 0.0
    _write_results(out, model, history, seconds or 0.0)
    if not quiet:
        print(f"repaired {out / 'history.json'} and {out / 'metrics.json'} from the checkpoint at step {step}")


def cmd_train(args: argparse.Namespace) -> int:
    from ..io import atomic_write_json, remove_stale_temporaries
    from ..training import train

    model = _model_from_args(args)
    out = output_folder(args.out)  # created and locked by fastdnc.cli.main
    cfg = command_settings(args)
    remove_stale_temporaries(out, any_target=True)  # those of runs that were killed (never a live one's)
    done = _checkpoint_step(args, out, cfg, model)
    if done is not None and done >= args.steps:
        _refresh_copy(out, cfg)
        _repair(out, done, args.quiet)
        if not args.quiet:
            print(
                f"{out} has already trained {plural(done, 'step')} (--steps {args.steps}): nothing to do; pass a larger "
                "--steps to continue it"
            )
        return 0
    atomic_write_json(out / "config.json", cfg)  # the accepted command's copy of the run's settings
    t0 = time.perf_counter()
    history = train(
        model,
        _train_config(args),
        collapse=True,
        checkpoint=out / "checkpoint.pt",
        resume=not args.no_resume,
        progress=False if args.quiet else None,
        command=computed_settings(cfg),
    )
    seconds = time.perf_counter() - t0
    _write_results(out, model, history, seconds)
    if not args.quiet:
        start, end = history.start_step, history.end_step
        resumed = f"resumed from step {start}, " if start else ""
        print(
            f"{resumed}trained {plural(end - start, 'step')} (to step {end}) in {seconds:.1f} s; final loss "
            f"{model.loss().item():.10g}"
        )
        print(f"wrote {out / 'checkpoint.pt'}, {out / 'history.json'}, {out / 'metrics.json'}")
    return 0


def _print_spectrum(result: dict, run: Path) -> None:
    from ..analysis.report import gap_text

    for row in result["layers"]:
        want = row["expected_outliers"]["count"]
        print(
            f"layer {row['name']}: {plural(row['outliers'], 'outlier')} (expected at DNC: {'—' if want is None else want}), "
            f"{gap_text(row['gap_ratio'], row['null_space'])}, {row['spectrum']}"
        )
    m = result["model"]
    print(
        f"full Hessian top {len(m['eigenvalues'])}: {plural(m['outliers'], 'outlier')}; gradient overlap with the top K²: "
        f"{m['overlap_top_k2']:.6f}"
    )
    print(f"wrote {run / 'spectrum.json'} and {run / 'spectrum.png'}")


def cmd_spectrum(args: argparse.Namespace) -> int:
    from .. import plots
    from ..analysis import LayeredSource, ShardedSource, analyze_source
    from ..curvature import feature_hessian
    from ..io import atomic_write_json

    run = Path(args.run)
    model, step, _ = model_from_run(run)
    k2 = model.num_classes**2
    if args.k < 1:
        raise ValueError(f"-k must be >= 1, got {args.k}")
    source: LayeredSource
    if args.distributed:
        from .. import distributed

        distributed.init()
        model = distributed.shard_model(model)
        source = ShardedSource(model, decay=False, include_features=args.features)
        args.quiet = args.quiet or distributed.rank() > 0
    else:
        source = LayeredSource(model, decay=False, include_features=args.features)
    analysis = analyze_source(
        source,
        extra=max(1, args.k - k2),
        dense_limit=args.max_dense,
        density=False,
        label=None if args.quiet else "spectrum",
    )
    result = {"step": step, **analysis.to_dict()}
    if args.features:
        result["feature_hessian_trace"] = float(feature_hessian(model).trace())
    if args.distributed and distributed.rank() > 0:
        return 0
    atomic_write_json(run / "spectrum.json", result)
    layers, m = analysis.layers, analysis.model
    panels = [(l.eigenvalues, f"{l.name}: {l.spectrum}", l.outliers, l.parameters) for l in layers]
    title = (
        f"{type(model).__name__} ({model.loss_type.upper()}, {model.activation}, K={model.num_classes}, "
        f"L={model.depth}) at step {step}:\nthe layer Hessians"
    )
    if m is not None:
        panels.append(
            (m.eigenvalues, f"whole model: top {len(m.eigenvalues)} of {m.parameters:,}", m.outliers, m.parameters)
        )
        title += f" and the whole model's (gradient overlap with its top K²: {m.overlap_top_k2:.3f})"
    spectra, labels, counts, sizes = zip(*panels)
    fig = plots.spectra_figure(
        list(spectra), list(labels), list(counts), title, spike_label="{n} outlier{s} (measured)", sizes=list(sizes)
    )
    plots.save(fig, run / "spectrum.png")
    if not args.quiet:
        _print_spectrum(result, run)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    import subprocess
    import tempfile

    given = [f"--{name}" for name in ("new", "repeat") if getattr(args, name) is not None]
    if given and args.compare is None:
        raise ValueError(f"{' and '.join(given)} only go{'es' if len(given) == 1 else ''} with --compare OLD.json")
    if args.quick and args.compare is not None:
        raise ValueError("--quick and --compare are two different runs: give one")
    if args.quick:
        from ..bench.quick import table

        print(table())
        return 0
    from ..bench import suite

    if args.compare is not None:
        from ..bench import compare

        old = compare.load(args.compare)
        noise = None if args.repeat is None else compare.repeat_noise(old, compare.load(args.repeat))
        if args.new is None:
            with tempfile.TemporaryDirectory() as tmp:
                new_path = Path(tmp) / "new.json"
                try:
                    suite.run(new_path)
                except ValueError as e:
                    raise ValueError(f"{e}; nothing compared") from None
                new = compare.load(new_path)
        else:
            new = compare.load(args.new)
        changes = compare.compare(old, new, noise=noise)
        print(compare.report(changes))
        return 1 if any(c.moved and c.factor > 1 for c in changes) else 0
    return subprocess.call([sys.executable, str(suite.benchmarks_file("run_all.py")), "--out", args.out])


def _rank() -> int:
    from .._comm import rank

    return rank()


def _accuracies(res: dict) -> str:
    """The data source, train accuracy and held-out accuracy of a real-data run."""
    held_out = (
        f"{res['test_accuracy']:.2%} ({res['test_samples']} samples)"
        if res["test_accuracy"] is not None
        else "not available (no test files)"
    )
    return f"{res['data_source']}: train accuracy {res['train_accuracy']:.2%}, held-out {held_out}"


def cmd_reproduce(args: argparse.Namespace) -> int:
    from ..experiments import reproduce
    from ..experiments.ufm_comparison import AGREEMENT_TOL

    output_folder(args.out)
    if args.doc is not None:
        output_folder(str(Path(args.doc).parent), "--doc")
    if args.preset == "real-paper":
        from ..experiments.real_paper import reproduce_real_paper, verdict

        res = reproduce_real_paper(
            args.out,
            args.data_dir,
            model=args.model,
            steps=args.steps,
            n_per_class=args.n_per_class,
            doc=args.doc,
            progress=not args.quiet,
        )
        if not args.quiet:
            print(f"{_accuracies(res)}; wrote {Path(args.out) / 'report.md'} in {res['wall_seconds']:.0f} s")
            print("\n".join(verdict(res)).replace("**", ""))
        return 0
    if args.preset == "real":
        from ..experiments.real import reproduce_real
        from ..experiments.real_report import regime

        res = reproduce_real(
            args.dataset,
            args.out,
            data_dir=args.data_dir,
            n_per_class=args.n_per_class,
            model=args.model,
            steps=args.steps,
            width=args.width,
            depth=args.depth,
            progress=not args.quiet,
            distributed=args.distributed,
        )
        if not args.quiet and _rank() == 0:
            print(
                _accuracies(res) + "; outliers per head layer "
                f"{[l['outliers'] for l in res['analysis']['layers']]} (expected at DNC "
                f"{[l['expected_outliers']['count'] for l in res['analysis']['layers']]}); "
                f"wrote {Path(args.out) / 'report.md'}"
            )
            print(regime(res).replace("**", ""))
        return 0
    res = reproduce(args.preset, args.out, progress=not args.quiet, doc=args.doc, background_figures=True)
    if not args.quiet:
        for name, exp in res["experiments"].items():
            compared = [r for r in exp["table"] if r["error"] is not None]
            beyond = [r for r in compared if not r["error"] <= AGREEMENT_TOL]
            line = f"{name}: {len(compared) - len(beyond)} of {len(compared)} compared rows within {AGREEMENT_TOL:g}"
            if beyond:
                worst = max(beyond, key=lambda r: r["error"])
                line += f"; {len(beyond)} beyond (largest {worst['error']:.2e}: {worst['note']})"
            print(line)
        print(f"wrote {Path(args.out) / 'report.md'} and results.json in {res['wall_seconds']:.1f} s")
    return 0
