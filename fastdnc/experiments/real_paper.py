r"""The paper's real-network experiment at its scale: ``fastdnc reproduce --preset real-paper``.

MNIST at 5,000 digits per class (drawn from the 60,000 training digits of the classic
``mnist.pkl.gz``, which ``make data`` fetches and checks), the convolutional backbone
(:class:`~fastdnc.networks.ConvBackbone`, 64 output features) under a head of L = 3 fully connected
ReLU layers of width 64, MSE, λ_W = 5e-3 on the head and λ_H = 1e-6 on the backbone's output
features (docs/theory.md §4, the authors' companion setup), trained with large batches (Adam,
1,000 samples per step) and judged on the 10,000 held-out test digits. ``--model resnet20`` swaps
in ResNet-20 (not the default: about 40× the backbone's flops on two cores).

The DNC lens is recorded **over training** by a :class:`~fastdnc.analysis.Tracker` at
:func:`record_steps` (denser early, where the outliers form): at each, the head is rebuilt on the
backbone's current features of a fixed class-balanced analysis subset (``analysis_per_class``
digits of each class, float64) and every head layer's exact Hessian spectrum, its outliers
against the theory's count, f_cc', κ_cc', the NC metrics and the full head Hessian's top with the
fit gradient's overlap are measured, warm-started from the previous record.

**Resume**: the trainer's checkpoint and one ``records/step_NNNNNN.json`` per finished record; a
rerun skips the records it has, continues training from the checkpoint and refuses a folder made
with other settings (``records/settings.json``).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from .. import plots
from ..analysis import Tracker
from ..analysis.report import figures, tracker_figures
from ..data import DataError
from ..io import atomic_write_json, atomic_write_text
from ..safe_read import read_json
from ..training import train
from .real import RealConfig, as_float64, build, held_out_accuracy
from .real_report import markdown, regime

PAPER = RealConfig(
    dataset="mnist",
    n_per_class=5000,
    model="cnn",
    width=64,
    depth=3,
    activation="relu",
    loss="mse",
    weight_decay=5e-3,
    feature_decay=1e-6,
    optimizer="adam",
    lr=1e-3,
    batch_size=1000,
    steps=1500,
)
RECORDS = 6  # analyses over training, step 0 and the last included
ANALYSIS_PER_CLASS = 100


def record_steps(steps: int, count: int) -> list[int]:
    """``count`` steps from 0 to ``steps``, quadratically spaced (denser early), without repeats."""
    if count < 2:
        return [steps]
    return sorted({round(steps * (i / (count - 1)) ** 2) for i in range(count)})


def analysis_columns(labels: torch.Tensor, num_classes: int, per_class: int) -> torch.Tensor:
    """The first ``per_class`` samples of every class (the data are in class order and drawn at random
    within each class, so this is a class-balanced random subset)."""
    cols = [torch.nonzero(labels == c).flatten()[:per_class] for c in range(num_classes)]
    if min(c.numel() for c in cols) < per_class:
        raise DataError(f"analysis_per_class={per_class} is more than the smallest class holds")
    return torch.cat(cols)


def _settings_check(folder: Path, settings: dict) -> None:
    """Refuse a records folder made with other settings (one configuration per run folder)."""
    path = folder / "settings.json"
    if path.exists():
        old = read_json(path, "real-paper settings")
        if old != settings:
            diff = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
            raise DataError(
                f"{folder.parent} holds a real-paper run with other settings ({', '.join(diff)}); use another --out"
            )
    else:
        atomic_write_json(path, settings)


def run_over_training(
    cfg: RealConfig,
    out: Path,
    records: int = RECORDS,
    analysis_per_class: int = ANALYSIS_PER_CLASS,
    progress: bool = True,
) -> dict:
    """Train ``cfg`` in stages, analyse the head at each of :func:`record_steps`, and return the
    JSON-ready results (the last record as ``analysis``, every record under ``records``)."""
    out.mkdir(parents=True, exist_ok=True)
    folder = out / "records"
    folder.mkdir(exist_ok=True)
    _settings_check(folder, {**asdict(cfg), "records": records, "analysis_per_class": analysis_per_class})
    data, net = build(cfg)
    cols = analysis_columns(data.labels, data.num_classes, analysis_per_class)
    name = f"real_paper_{cfg.model}"
    tracker = Tracker(net, model_curvature=True, density=False, progress=progress)
    history = None
    t_analysis = 0.0
    for step in record_steps(cfg.steps, records):
        path = folder / f"step_{step:06d}.json"
        if path.exists():
            _restore(tracker, path)
            continue
        history = _train_to(cfg, net, step, out / f"{name}.ckpt", name, progress)
        t0 = time.perf_counter()
        res = tracker.record(step, model=as_float64(net.head(cols)))
        t_analysis += time.perf_counter() - t0
        atomic_write_json(path, res.to_dict())
    history = _train_to(cfg, net, cfg.steps, out / f"{name}.ckpt", name, False)  # the final weights
    test_accuracy, test_samples = held_out_accuracy(cfg, net)
    full = net.head()
    final = tracker.records[-1].to_dict()
    loss = plots.loss_figure(history, None, f"MNIST {cfg.model}: training")
    figs = {f"over_{k}": v for k, v in tracker_figures(tracker, out, f"{name}_").items()}
    figs.update({f"final_{k}": v for k, v in figures(tracker.records[-1], out, f"{name}_final_").items()})
    figs["loss"] = Path(plots.save(loss, out / f"{name}_loss.png")).name
    return {
        "config": asdict(cfg),
        "samples": data.num_samples,
        "analysis_samples": int(cols.numel()),
        "num_classes": data.num_classes,
        "data_source": data.name,
        "train_accuracy": float((full.output().argmax(0) == full.labels).double().mean()),
        "test_accuracy": test_accuracy,
        "test_samples": test_samples,
        "train_seconds": history.last("wall_time"),
        "analysis_seconds_this_session": t_analysis,
        "final_loss": history.last("loss"),
        "analysis": final,
        "records": [r.to_dict() for r in tracker.records],
        "figures": figs,
    }


def _restore(tracker: Tracker, path: Path) -> None:
    """Keep the record of an earlier session (size-checked strict JSON), or refuse it in one line."""
    record = read_json(path, "real-paper record")  # a ValueError naming the file when it is not JSON
    try:
        tracker.restore(record)
    except (KeyError, TypeError, ValueError) as e:
        raise DataError(
            f"{path} is not a record this preset wrote ({e!r}); delete it to measure that step again"
        ) from None


def _train_to(cfg: RealConfig, net, steps: int, checkpoint: Path, label: str, progress: bool):
    """Train (or resume) ``net`` up to ``steps`` updates in all (the checkpoint holds the earlier ones)."""
    return train(
        net,
        steps,
        cfg.lr,
        optimizer=cfg.optimizer,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        checkpoint=checkpoint,
        label=f"{label} to step {steps}",
        progress=progress,
        log_at=max(cfg.steps // 10, 1),  # a logged step evaluates the loss on all 50,000 digits
        checkpoint_every=max(cfg.steps // 20, 1),
    )


def over_training_table(res: dict) -> list[str]:
    """One row per record and head layer, with the full head Hessian's outliers and the gradient's
    overlap with its top K² eigenvectors."""
    k = res["num_classes"]
    lines = [
        "| step | layer | outliers | expected at DNC | f (same) | f (cross) | κ (same, → 1/K) | max κ (cross) | "
        "NC1 of its input | head Hessian outliers | gradient in its top K² |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in res["records"]:
        m = r["model"]
        for layer in r["layers"]:
            want = layer["expected_outliers"]["count"]
            lines.append(
                f"| {r['step']} | {layer['name']} | {layer['outliers']} | {'—' if want is None else want} | "
                f"{layer['f_same']:.3f} | {layer['f_cross']:.3f} | {layer['kappa_same']:.3f} | "
                f"{layer['kappa_cross_max']:.2e} | {layer['collapse']['nc1']:.3g} | {m['outliers']} | "
                f"{m['overlap_top_k2']:.4f} |"
            )
    lines += ["", f"K = {k}: 1/K = {1 / k:.3f}, K² = {k * k}."]
    return lines


def verdict(res: dict) -> list[str]:
    """The run against the theory at its last record: which layers show the predicted count, how far f
    is from 1 and κ from 1/K and 0, where the gradient lies, and the distance to DNC (NC1)."""
    a, k = res["analysis"], res["num_classes"]
    lines = [regime(res), ""]
    for layer in a["layers"]:
        want = layer["expected_outliers"]["count"]
        match = f"{layer['outliers']} outliers, " + (
            "as predicted" if layer["outliers"] == want else f"predicted {want}"
        )
        lines.append(
            f"- layer {layer['name']}: {match}; 1 − f (same class) = {1 - layer['f_same']:.3f}, "
            f"κ (same) = {layer['kappa_same']:.3f} against 1/K = {1 / k:.3f}, max κ (cross) = "
            f"{layer['kappa_cross_max']:.2e}; NC1 of its input {layer['collapse']['nc1']:.3g} (0 at DNC)."
        )
    m = a["model"]
    lines.append(
        f"- the fit gradient has {m['overlap_top_k2']:.1%} of its squared norm in the full head Hessian's top "
        f"K² = {k * k} eigenvectors ({m['overlap_top_k']:.1%} in the top K)."
    )
    return lines


def report(res: dict, command: str, figure_dir: str | None = None) -> str:
    """The markdown of a real-paper run (``figure_dir``: where the figures are, relative to the page)."""

    def shown(group: str) -> list[str]:
        found = [(k, n) for k, n in res["figures"].items() if k.startswith(group)]
        return [line for k, n in found for line in (f"![{k}]({n if figure_dir is None else f'{figure_dir}/{n}'})", "")]

    final = {**res, "figures": {}}
    return "\n".join(
        [
            f"Generated by `{command}` in {res['wall_seconds']:.0f} s on {res['threads']} CPU threads "
            f"(training {res['train_seconds']:.0f} s cumulative over resumed sessions; torch {torch.__version__}). "
            f"The analysis runs on {res['analysis_samples']} training digits (a class-balanced subset), in float64. "
            "Raw numbers: `results.json`.",
            "",
            "### The verdict at the last record",
            "",
            *verdict(res),
            "",
            "### Over training",
            "",
            *over_training_table(res),
            "",
            *shown("over_"),
            "### The last record in detail",
            "",
            markdown(final).split("\n", 2)[2],
            *shown("final_"),
            *shown("loss"),
        ]
    )


MARK_BEGIN, MARK_END = "<!-- real-paper: begin -->", "<!-- real-paper: end -->"


def splice(page: str, section: str) -> str:
    """``page`` with its real-data section (between the markers) replaced by ``section``, or with
    ``section`` appended."""
    block = f"{MARK_BEGIN}\n{section.rstrip()}\n{MARK_END}"
    if MARK_BEGIN in page and MARK_END in page:
        head, rest = page.split(MARK_BEGIN, 1)
        return head + block + rest.split(MARK_END, 1)[1]
    return page.rstrip() + "\n\n" + block + "\n"


def real_section(page: str) -> str:
    """The real-data section of ``page`` with its markers ('' when it has none): kept when the
    synthetic presets regenerate the page."""
    if MARK_BEGIN not in page or MARK_END not in page:
        return ""
    return MARK_BEGIN + page.split(MARK_BEGIN, 1)[1].split(MARK_END, 1)[0] + MARK_END


def reproduce_real_paper(
    out: str | Path,
    data_dir: str | None,
    *,
    model: str | None = None,
    steps: int | None = None,
    n_per_class: int | None = None,
    records: int = RECORDS,
    analysis_per_class: int = ANALYSIS_PER_CLASS,
    doc: str | Path | None = None,
    progress: bool = True,
) -> dict:
    """``fastdnc reproduce --preset real-paper``: the run, ``report.md`` and ``results.json`` in ``out``,
    and with ``doc`` the real-data section of that page (figures copied beside it)."""
    if data_dir is None:
        raise DataError("--preset real-paper reads MNIST's mnist.pkl.gz: run `make data` and pass --data-dir data")
    if model not in (None, "cnn", "resnet20"):
        raise ValueError(f"--preset real-paper trains a backbone with a head: --model cnn or resnet20, not {model!r}")
    cfg = replace(
        PAPER,
        data_dir=str(data_dir),
        model=PAPER.model if model is None else model,
        steps=PAPER.steps if steps is None else steps,
        n_per_class=PAPER.n_per_class if n_per_class is None else n_per_class,
    )
    out = Path(out)
    t0 = time.perf_counter()
    res = run_over_training(cfg, out, records, analysis_per_class, progress)
    res["wall_seconds"], res["threads"] = time.perf_counter() - t0, torch.get_num_threads()
    if not all(math.isfinite(x) for x in (res["train_seconds"], res["final_loss"])):
        raise ValueError("the run ended with a non-finite loss")
    atomic_write_json(out / "results.json", {"preset": "real-paper", "experiments": {"mnist": res}})
    write_reports(res, out, data_dir, doc)
    return res


def write_reports(res: dict, out: Path, data_dir: str, doc: str | Path | None) -> None:
    """``report.md`` in ``out`` and, with ``doc``, that page's real-data section (figures copied beside it)."""
    command = f"fastdnc reproduce --preset real-paper --data-dir {data_dir} --out {out}"
    title = f"# fastdnc reproduce: the paper's real-network experiment (MNIST, {res['config']['model']} + head)\n\n"
    atomic_write_text(out / "report.md", title + report(res, command))
    if doc is not None:
        doc = Path(doc)
        figs = doc.parent / f"{doc.stem}_figures"
        figs.mkdir(parents=True, exist_ok=True)
        for name in res["figures"].values():
            (figs / name).write_bytes((out / name).read_bytes())
        section = "## Real data: MNIST, the paper's scale\n\n" + report(res, f"{command} --doc {doc}", figs.name)
        page = doc.read_text() if doc.exists() else ""
        atomic_write_text(doc, splice(page, section))
