"""The training loop: :func:`train` and the checks of its settings.

A step is the loss and its gradients (hand-written backpropagation for layered models, autograd
for any module with a ``loss()``), summed over the ranks of a data-parallel run in one
all_reduce, then an in-place optimiser update. "Step t" is the state after t updates.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import torch
from tqdm.auto import tqdm

from .. import _comm
from .._memory import require_memory
from .._threads import check_threads, intra_op_threads, threads_for
from ..io import remove_stale_temporaries
from ..run_lock import locked
from ..safe_read import check_regular_file
from .checkpoint import config_hash, resume_checkpoint, write_checkpoint
from .config import SETTINGS, TrainConfig
from .history import History
from .optimizers import Optimizer, make_optimizer
from .schedules import log_steps
from .trainable import ChunkedTrainable, model_kind

LOG = logging.getLogger("fastdnc")
Callback = Callable[[torch.nn.Module, int], dict[str, Any]]
Gradients = tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, list[torch.Tensor]]


class NonFiniteError(FloatingPointError):
    """Raised when the loss (hence a parameter or the output) becomes NaN or Inf."""


@dataclass
class _Batch:
    """Mini-batch sampler over the N samples with its own seeded generator."""

    n: int
    size: int | None
    generator: torch.Generator

    def next(self, device: torch.device) -> torch.Tensor | None:
        if self.size is None or self.size >= self.n:
            return None
        idx = torch.randperm(self.n, generator=self.generator)[: self.size]
        return idx.sort().values.to(device)


def _loss_and_grads(run: _Run, columns: torch.Tensor | None) -> Gradients:
    """Loss terms and gradients; in a data-parallel run (``run.share`` = n_rank/N) summed over the
    ranks in one all_reduce."""
    loss, fit, reg, grads = local_loss_and_grads(run.model, run.kind, run.params, columns)
    share = run.share
    if share is None:
        return loss, fit, reg, grads
    scalars = [loss, loss if fit is None else fit, loss if reg is None else reg]
    buf = torch.cat([torch.stack([t.reshape(()) for t in scalars])] + [g.reshape(-1) for g in grads]) * share
    _comm.all_reduce_(buf, "reducing the gradients")
    out, i = [], 3
    for g in grads:
        out.append(buf[i : i + g.numel()].view_as(g))
        i += g.numel()
    return buf[0], None if fit is None else buf[1], None if reg is None else buf[2], out


def local_loss_and_grads(model: Any, kind: str, params: list[torch.Tensor], columns: torch.Tensor | None) -> Gradients:
    """This process's loss terms and gradients on ``columns`` (``None``: every sample, in chunks for a
    :class:`~fastdnc.training.trainable.ChunkedTrainable`)."""
    if kind == "layered":
        lg = model.loss_and_gradients(columns=columns)
        return lg.loss, lg.fit, lg.reg, lg.gradients
    chunks = model.full_batch_chunks() if columns is None and isinstance(model, ChunkedTrainable) else None
    if chunks:  # Σ_b (n_b/N) loss(b): the full batch's value and gradient in bounded memory
        total, summed = torch.zeros((), device=model.device), [torch.zeros_like(p) for p in params]
        for cols in chunks:
            with torch.enable_grad():
                part = model.loss(cols) * (cols.numel() / model.num_samples)
                chunk_grads = torch.autograd.grad(part, params)
            total = total.to(part.dtype) + part.detach()
            for acc, g in zip(summed, chunk_grads, strict=True):
                acc.add_(g)
        return total, None, None, summed
    with torch.enable_grad():
        loss = model.loss() if columns is None else model.loss(columns)
        grads = list(torch.autograd.grad(loss, params))
    return loss.detach(), None, None, grads


def _params_of(model: Any, kind: str) -> list[torch.Tensor]:
    if kind == "layered":
        return [t for _, t in model.trainable_blocks()]
    return [p for p in model.parameters() if p.requires_grad]


def _log_set(log_at: Iterable[int] | int | None, steps: int) -> set[int]:
    if log_at is None:
        logged = set(log_steps(steps))
    elif isinstance(log_at, int):
        logged = set(range(0, steps + 1, max(log_at, 1)))
    else:
        logged = {int(s) for s in log_at}
    return logged | {0, steps}


@dataclass
class _Run:
    """One call of :func:`train`: the model, its optimiser and sampler, and the logging state."""

    model: Any  # a layered model, or any module with a loss() method
    kind: str  # how it is stepped (fastdnc.training.trainable.model_kind)
    params: list[torch.Tensor]
    opt: Optimizer
    sampler: _Batch
    settings: TrainConfig
    share: float | None
    checkpoint: str | os.PathLike | None
    config: dict  # the checkpoint's record of the run (TrainConfig.record)
    collapse: bool
    callbacks: Sequence[Callback]
    history: History = field(default_factory=History)
    last_good: str | os.PathLike | None = None
    clock0: float = 0.0

    @property
    def steps(self) -> int:
        return self.settings.steps

    def resume(self, resume: bool) -> int:
        """Load this run's checkpoint if there is one; every rank agrees on the step or none starts."""
        start, error = 0, None
        try:
            if self.checkpoint is not None:
                check_regular_file(self.checkpoint, "checkpoint", must_exist=False)
                if resume and os.path.exists(self.checkpoint):
                    start, self.history = resume_checkpoint(
                        self.checkpoint, self.model, self.opt, self.sampler.generator, self.config
                    )
                    self.last_good = self.checkpoint
        except (ValueError, OSError) as e:
            if self.share is None:
                raise
            error = e
        if self.share is not None:
            _comm.agree([start, self.steps, config_hash(self.config)], "resuming from the per-rank checkpoints", error)
        # wall time is cumulative over resumed sessions
        previous = self.history.last("wall_time") if "wall_time" in self.history else None
        self.clock0 = time.perf_counter() - (previous or 0.0)
        return start

    def record(self, step: int, grads: Gradients) -> float:
        loss, fit, reg, g = grads
        values: dict[str, Any] = {"loss": float(loss), "lr": self.settings.lr_at(min(step, self.steps - 1))}
        if fit is not None and reg is not None:
            values.update(fit_loss=float(fit), reg_loss=float(reg))
        values["grad_norm"] = math.sqrt(sum(float(t.square().sum()) for t in g))
        values["wall_time"] = time.perf_counter() - self.clock0
        if self.collapse:
            from ..collapse import collapse_metrics

            values.update(collapse_metrics(self.model).scalars())
        for cb in self.callbacks:
            values.update(cb(self.model, step))
        self.history.append(step, values)
        return values["loss"]

    def save(self, step: int, sampler_state: torch.Tensor) -> None:
        assert self.checkpoint is not None
        write_checkpoint(self.checkpoint, self.model, self.opt, sampler_state, self.history, step, self.config)
        self.last_good = self.checkpoint

    def check_finite(self, step: int, loss: torch.Tensor) -> None:
        if not math.isfinite(float(loss)):
            where = f"; the last good checkpoint is {self.last_good!s}" if self.last_good else ""
            raise NonFiniteError(
                f"loss is {float(loss)} at step {step} (after {step} updates): a parameter or the output "
                f"became NaN/Inf (learning rate {self.settings.lr} too large?){where}"
            )


def _loop(run: _Run, start: int, bar: Any, logged: set[int], every: int, check_finite_every: int) -> None:
    """Steps ``start`` … ``run.steps``: a checkpoint of the state after ``step`` updates is written only
    once that state's loss has been checked, with the sampler state from before this step's batch."""
    chunk = max(1, run.steps // 1000)
    warm = warm_up_end(run.steps, chunk) if getattr(bar, "bar_format", None) == WARM_UP_FORMAT else -1
    for step in range(start, run.steps + 1):
        if step == warm:
            measure_rate_from_here(bar)
        saving = run.checkpoint is not None and step % every == 0 and start < step < run.steps
        sampler_state = run.sampler.generator.get_state() if saving else None
        columns = run.sampler.next(run.model.device) if step < run.steps and run.sampler.size else None
        grads = _loss_and_grads(run, columns)
        if step % check_finite_every == 0 or step == run.steps or saving:
            run.check_finite(step, grads[0])
        if sampler_state is not None:  # saving
            run.save(step, sampler_state)
        if step in logged and step not in run.history.steps[-1:]:
            # log full-batch values, not the mini-batch's (whose gradients still take the step)
            full = grads if columns is None else _loss_and_grads(run, None)
            bar.set_postfix(loss=f"{run.record(step, full):.3e}", refresh=False)
        if step == run.steps:
            return
        run.opt.step(grads[3], run.settings.lr_at(step))
        if (step + 1) % chunk == 0:
            bar.update(chunk)


WARM_UP_FORMAT = "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}, measuring the rate{postfix}]"


def warm_up_end(steps: int, chunk: int) -> int:
    """The step from which the bar's rate and ETA are measured: the first steps are logged densely
    (log-spaced metrics), so their rate would predict the run many times too long."""
    return min(steps, max(10 * chunk, steps // 100))


def measure_rate_from_here(bar: Any) -> None:
    """Forget the warm-up's rate: from now on the bar's rate and ETA come from the steps after it
    (the elapsed time still counts from the start)."""
    if bar.disable:
        return
    n, start = bar.n, bar.start_t
    bar.reset(total=bar.total)
    bar.n = bar.last_print_n = bar.initial = n
    bar.start_t = start
    bar.bar_format = None
    bar.refresh()


def _sharding(
    n: int, distributed: bool | None, checkpoint: str | os.PathLike | None
) -> tuple[float | None, str | os.PathLike | None]:
    """This rank's weight n_rank/N in a data-parallel run (``None`` in a single process) and its own
    checkpoint path (``<checkpoint>.rank<r>``)."""
    if not (distributed or (distributed is None and _comm.world_size() > 1)):
        return None, checkpoint
    share = n / _comm.global_count(n)
    return share, None if checkpoint is None else f"{checkpoint}.rank{_comm.rank()}"


def train(
    model: torch.nn.Module,
    steps: int | TrainConfig,
    lr: float = 0.1,
    *,
    optimizer: str = "gd",
    momentum: float = 0.9,
    nesterov: bool = False,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    batch_size: int | None = None,
    schedule: str | Callable[[int], float] | None = None,
    schedule_kwargs: dict[str, Any] | None = None,
    log_at: Iterable[int] | int | None = None,
    callbacks: Sequence[Callback] = (),
    collapse: bool = False,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    resume: bool = True,
    seed: int = 0,
    check_finite_every: int = 1,
    progress: bool | None = None,
    distributed: bool | None = None,
    threads: int | None = None,
    label: str = "train",
    command: dict[str, Any] | None = None,
) -> History:
    """Train ``model`` in place and return its :class:`History`.

    Args:
        model: a :class:`~fastdnc.models.DeepUFM` / :class:`~fastdnc.models.MLPHead`, or any module
            with a ``loss()`` method (trained through autograd).
        steps: number of updates, or a :class:`~fastdnc.training.TrainConfig` holding every
            setting of the run (``lr`` to ``threads`` below; then leave those keywords out).
        lr: base learning rate (times the schedule's factor).
        optimizer: ``"gd"`` (full-batch gradient descent, the paper's), ``"sgd"`` (momentum,
            optional ``nesterov`` and ``batch_size``) or ``"adam"``.
        batch_size: samples per step (mini-batches drawn without replacement from a generator
            seeded with ``seed``); ``None`` is full batch.
        schedule, schedule_kwargs: learning-rate schedule, see :func:`lr_factor`.
        log_at: steps to log (an iterable), every ``k`` steps (an int), or ``None`` for
            :func:`log_steps`. Steps 0 and ``steps`` are always logged.
        callbacks: functions ``f(model, step) -> dict`` whose values are logged.
        collapse: also log the scalar per-layer NC/DNC metrics (:func:`fastdnc.collapse_metrics`).
        distributed: data-parallel training over a torch.distributed process group (default: when
            one with more than one rank is running). Each rank's model holds its shard of the
            samples (:func:`fastdnc.distributed.shard_model`); loss and gradients are summed over
            the ranks with weights n_rank/N in one all_reduce per step, so every rank takes the
            same step as a single process on all the data. Each rank writes its own checkpoint
            (``<checkpoint>.rank<r>``).
        checkpoint: path of the checkpoint file; with ``resume`` an existing one is continued.
        checkpoint_every: steps between checkpoints (default: ``steps // 20``); one is always
            written at the end.
        check_finite_every: how often (in steps) the loss is checked for NaN/Inf (each check is a
            device sync on GPUs).
        progress: tqdm progress bar (default: on for runs of 10⁴ steps or more).
        label: the progress bar's name (e.g. the experiment and its position, "relu_mse 2/5").
        threads: intra-op threads while training (default: one when the largest GEMM of a step is
            small, see :mod:`fastdnc._threads`, else the caller's setting, which is restored); at
            most the cores this process may use.
        command: plain data recorded in the checkpoint's configuration and compared on resume (the
            command line's settings: ``fastdnc train`` builds its run folder's model from them).

    Raises:
        NonFiniteError: the loss became NaN/Inf; the message names the step.
    """
    given = dict(
        optimizer=optimizer,
        momentum=momentum,
        nesterov=nesterov,
        betas=betas,
        eps=eps,
        batch_size=batch_size,
        schedule=schedule,
        schedule_kwargs=schedule_kwargs or {},
        seed=seed,
        check_finite_every=check_finite_every,
        checkpoint_every=checkpoint_every,
        threads=threads,
    )
    settings = _settings(steps, lr, given)
    threads = check_threads(settings.threads)
    kind = model_kind(model)
    if settings.batch_size is not None and kind == "autograd":
        raise ValueError(
            "batch_size needs a model with loss_and_gradients (DeepUFM, MLPHead) or a loss(columns) (BackboneHead)"
        )
    if kind == "layered":
        model.check()
    params = _params_of(model, kind)
    opt = make_optimizer(params=params, name=settings.optimizer, **settings.optimizer_settings())
    device = params[0].device if params else torch.device("cpu")
    require_memory(
        _training_bytes(model, kind, params, settings.optimizer),
        f"training {type(model).__name__}",
        device,
        instead="a smaller model (width, depth, samples), float32, or mini-batches (batch_size)",
    )
    n = int(cast(Any, model).num_samples) if kind != "autograd" else 0
    share, checkpoint = _sharding(n, distributed, checkpoint)
    sampler = _Batch(n, settings.batch_size, torch.Generator().manual_seed(settings.seed))
    record = settings.record(model, command)
    run = _Run(model, kind, params, opt, sampler, settings, share, checkpoint, record, collapse, callbacks)
    if checkpoint is None:
        return _train(run, resume, progress, label, log_at, threads)
    with locked(checkpoint, f"checkpoint {checkpoint}"):  # one process per checkpoint
        return _train(run, resume, progress, label, log_at, threads)


def _settings(steps: int | TrainConfig, lr: float, given: dict[str, Any]) -> TrainConfig:
    """The run's :class:`TrainConfig`: ``steps`` itself, or one made (and checked) from the keywords.
    With a TrainConfig, the keywords of its fields must keep their defaults (one source of truth)."""
    if not isinstance(steps, TrainConfig):
        return TrainConfig(steps, lr, **given)
    default = TrainConfig(0)
    clash = sorted(k for k in SETTINGS if k in given and given[k] != getattr(default, k))
    if lr != default.lr:
        clash.insert(0, "lr")
    if clash:
        raise ValueError(f"train(model, TrainConfig(...)) takes its settings from the TrainConfig; also given: {clash}")
    return steps


def _train(
    run: _Run, resume: bool, progress: bool | None, label: str, log_at: Iterable[int] | int | None, threads: int | None
) -> History:
    """:func:`train` after its checks, holding the checkpoint's lock."""
    start, steps = run.resume(resume), run.steps
    run.history.start_step, run.history.end_step = start, max(start, steps)
    if start > steps or (start == steps and run.last_good is not None):
        return run.history  # finished: no forward pass (it could move e.g. BatchNorm's running statistics)
    if run.checkpoint is not None:
        remove_stale_temporaries(run.checkpoint)
    if start:
        LOG.info("%s: resumed from step %d of checkpoint %s, training to step %d", label, start, run.checkpoint, steps)
    show = progress if progress is not None else steps >= 10_000
    with tqdm(
        total=steps,
        initial=start,
        disable=not show,
        desc=f"{label} (resumed at step {start})" if start else label,
        unit="step",
        dynamic_ncols=True,
        mininterval=0.5,
        bar_format=WARM_UP_FORMAT if start == 0 and log_at is None else None,
    ) as bar:
        flops = _largest_gemm_flops(run.model, run.kind, run.settings.batch_size)
        every = run.settings.checkpoint_every or max(steps // 20, 1)
        with torch.no_grad(), intra_op_threads(threads_for(flops, threads)):
            _loop(run, start, bar, _log_set(log_at, steps), every, run.settings.check_finite_every)
        bar.update(steps - bar.n)
    if run.checkpoint is not None:
        run.save(steps, run.sampler.generator.get_state())
    return run.history


def _largest_gemm_flops(model: Any, kind: str, batch_size: int | None) -> float:
    """2·m·n·k of the largest GEMM of a training step of a layered model (a weight times the layer
    input over the batch); infinite (keep the caller's threads) for any other module."""
    if kind != "layered":
        return float("inf")
    n = model.num_samples if batch_size is None else min(batch_size, model.num_samples)
    return max(2.0 * w.shape[0] * w.shape[1] * n for w in model.weights)


def _training_bytes(model: Any, kind: str, params: list[torch.Tensor], optimizer: str) -> int:
    """Memory that training adds to the model: gradients, one temporary per parameter, the
    optimiser's state and, for layered models, the forward and backward states (about four
    (width × N) matrices per layer)."""
    item = params[0].element_size() if params else 4
    total = sum(t.numel() for t in params) * item * (2 + {"sgd": 1, "adam": 2}.get(optimizer, 0))
    if kind == "layered":
        total += 4 * sum(w.shape[0] for w in model.weights) * model.num_samples * item
    return total
