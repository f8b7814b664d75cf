"""Training of UFMs and MLP heads: optimisers, schedules, history, checkpoints, resume.

Design choices:

* **Fast steps.** Layered models (:class:`~fastdnc.models.DeepUFM`, :class:`~fastdnc.models.MLPHead`)
  supply exact gradients by hand-written backpropagation (``loss_and_gradients``), and the
  optimisers update the parameters in place with fused ``torch._foreach`` ops, so a step is a few
  matmuls and no autograd graph. Any other module with a ``loss()`` method trains through autograd.
* **Step semantics.** "Step t" is the state after t updates: the history records step 0 (the
  initialisation) and step ``steps`` (the end). The default logging schedule is log-spaced.
* **Checkpoints** hold the parameters, the optimiser state, the RNG state of the mini-batch
  sampler, the history and the step, and are written atomically (:mod:`fastdnc.io`). Resuming
  from one yields bit-for-bit the parameters of an uninterrupted run (tested with a SIGKILL). They
  hold only tensors and plain data and are read with ``weights_only=True``: a crafted file cannot
  run code. A checkpoint records the whole configuration (model and training); resuming with any
  other configuration is refused with the list of differing fields.
* **Non-finite values** (NaN/Inf in the loss, hence in a parameter or the output) stop training
  with :class:`NonFiniteError` naming the step; no checkpoint is written after it, so the last
  good one stays.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from ._checks import check_positive_int
from ._memory import require_memory
from ._threads import intra_op_threads, threads_for
from .io import (
    atomic_torch_save,
    atomic_write_json,
    check_regular_file,
    plain,
    remove_stale_temporaries,
    safe_torch_load,
)

Callback = Callable[[torch.nn.Module, int], dict[str, Any]]


class NonFiniteError(FloatingPointError):
    """Raised when the loss (hence a parameter or the output) becomes NaN or Inf."""


# ---------------------------------------------------------------------------------------------
# Learning-rate schedules: lr(step) = base_lr * factor(step, total)


def lr_factor(schedule: str | Callable[[int], float] | None, step: int, total: int, **kw: float) -> float:
    """Multiplier of the base learning rate at ``step`` of ``total``.

    ``None``/``"constant"``: 1. ``"cosine"``: :math:`\\tfrac12(1+\\cos(\\pi t/T))`, floored at
    ``min_factor``. ``"linear"``: linear decay to ``min_factor``. ``"step"``: multiplied by
    ``gamma`` (0.1) at each of ``milestones`` (fractions of T, default 0.5 and 0.75).
    ``"exponential"``: ``gamma ** t``. ``warmup`` (a number of steps) ramps linearly from 0 first.
    A callable receives the step and returns the factor.
    """
    warmup = int(kw.get("warmup", 0))
    if warmup and step < warmup:
        return (step + 1) / warmup
    if callable(schedule):
        return float(schedule(step))
    t = (step - warmup) / max(total - warmup, 1)
    lo = float(kw.get("min_factor", 0.0))
    if schedule in (None, "constant"):
        return 1.0
    if schedule == "cosine":
        return lo + (1 - lo) * 0.5 * (1 + math.cos(math.pi * t))
    if schedule == "linear":
        return lo + (1 - lo) * (1 - t)
    if schedule == "step":
        gamma = float(kw.get("gamma", 0.1))
        return gamma ** sum(t >= m for m in kw.get("milestones", (0.5, 0.75)))
    if schedule == "exponential":
        return float(kw.get("gamma", 0.9999)) ** step
    raise ValueError(f"unknown schedule {schedule!r}; use constant, cosine, linear, step, exponential or a callable")


# ---------------------------------------------------------------------------------------------
# Optimisers acting in place on lists of tensors


class Optimizer:
    """In-place optimiser on a list of tensors; ``state_dict`` round-trips exactly."""

    name = "gd"

    def __init__(self, params: list[torch.Tensor]) -> None:
        self.params = params
        self.state: dict[str, Any] = {"t": 0}

    def step(self, grads: list[torch.Tensor], lr: float) -> None:
        """Plain gradient descent: :math:`\\theta \\leftarrow \\theta - \\eta g`."""
        torch._foreach_add_(self.params, grads, alpha=-lr)
        self.state["t"] += 1

    def state_dict(self) -> dict[str, Any]:
        return {"name": self.name, "state": self.state}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        if not isinstance(sd, dict) or not isinstance(sd.get("state"), dict) or "t" not in sd["state"]:
            raise ValueError("the optimizer state is malformed")
        if sd.get("name") != self.name:
            raise ValueError(f"checkpoint was written with optimizer {sd.get('name')!r}, not {self.name!r}")
        for key, value in sd["state"].items():
            if key == "t":
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise ValueError(f"the optimizer's step count is {value!r}, not a non-negative int")
                continue
            shapes = [tuple(p.shape) for p in self.params]
            if not (isinstance(value, list) and all(isinstance(t, torch.Tensor) for t in value)
                    and [tuple(t.shape) for t in value] == shapes):
                raise ValueError(f"the optimizer state {key!r} does not match the parameters' shapes {shapes}")
        self.state = {k: v if k == "t" else [t.to(p) for t, p in zip(v, self.params)] for k, v in sd["state"].items()}


class SGD(Optimizer):
    """Heavy-ball momentum (PyTorch's convention: ``buf = μ·buf + g``, first ``buf = g``),
    optionally Nesterov."""

    name = "sgd"

    def __init__(self, params: list[torch.Tensor], momentum: float = 0.9, nesterov: bool = False) -> None:
        super().__init__(params)
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.momentum, self.nesterov = momentum, nesterov

    def step(self, grads: list[torch.Tensor], lr: float) -> None:
        bufs = self.state.get("buf")
        if bufs is None:
            bufs = self.state["buf"] = [g.clone() for g in grads]
        else:
            torch._foreach_mul_(bufs, self.momentum)
            torch._foreach_add_(bufs, grads)
        direction = torch._foreach_add(grads, bufs, alpha=self.momentum) if self.nesterov else bufs
        torch._foreach_add_(self.params, direction, alpha=-lr)
        self.state["t"] += 1


class Adam(Optimizer):
    """Adam with bias correction (Kingma & Ba)."""

    name = "adam"

    def __init__(self, params: list[torch.Tensor], betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        super().__init__(params)
        self.betas, self.eps = betas, eps
        self.state.update(m=[torch.zeros_like(p) for p in params], v=[torch.zeros_like(p) for p in params])

    def step(self, grads: list[torch.Tensor], lr: float) -> None:
        b1, b2 = self.betas
        t = self.state["t"] = self.state["t"] + 1
        m, v = self.state["m"], self.state["v"]
        torch._foreach_lerp_(m, grads, 1 - b1)
        torch._foreach_mul_(v, b2)
        torch._foreach_addcmul_(v, grads, grads, value=1 - b2)
        denom = torch._foreach_sqrt(v)
        torch._foreach_div_(denom, math.sqrt(1 - b2**t))
        torch._foreach_add_(denom, self.eps)
        torch._foreach_addcdiv_(self.params, m, denom, value=-lr / (1 - b1**t))


def make_optimizer(name: str, params: list[torch.Tensor], **kw: Any) -> Optimizer:
    """``"gd"`` (default), ``"sgd"`` (momentum, nesterov) or ``"adam"`` (betas, eps)."""
    if name == "gd":
        return Optimizer(params)
    if name == "sgd":
        return SGD(params, momentum=kw.get("momentum", 0.9), nesterov=kw.get("nesterov", False))
    if name == "adam":
        return Adam(params, betas=kw.get("betas", (0.9, 0.999)), eps=kw.get("eps", 1e-8))
    raise ValueError(f"unknown optimizer {name!r}; use 'gd', 'sgd' or 'adam'")


# ---------------------------------------------------------------------------------------------
# History


class History:
    """Metrics logged during training: ``history["loss"]`` is aligned with ``history.steps``.

    A metric absent at some logged step holds ``None`` there. After :func:`train`, ``start_step``
    is the step it resumed from (0 for a fresh run) and ``end_step`` the step the model is at.
    """

    def __init__(self) -> None:
        self.steps: list[int] = []
        self.records: dict[str, list[Any]] = {}
        self.start_step = 0
        self.end_step = 0

    def append(self, step: int, values: dict[str, Any]) -> None:
        for key in values:
            if key not in self.records:
                self.records[key] = [None] * len(self.steps)
        self.steps.append(int(step))
        for key, column in self.records.items():
            column.append(values.get(key))

    def __getitem__(self, key: str) -> list[Any]:
        if key == "step":
            return self.steps
        if key not in self.records:
            raise KeyError(f"no metric {key!r}; logged: {sorted(self.records)}")
        return self.records[key]

    def __contains__(self, key: str) -> bool:
        return key == "step" or key in self.records

    def __len__(self) -> int:
        return len(self.steps)

    def keys(self) -> list[str]:
        return list(self.records)

    def last(self, key: str) -> Any:
        return self[key][-1]

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.steps, **self.records}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> History:
        if not isinstance(d, dict) or not isinstance(d.get("step"), list):
            raise ValueError("the history is malformed: expected a dict with a 'step' list")
        n = len(d["step"])
        bad = [k for k, v in d.items() if not isinstance(k, str) or not isinstance(v, list) or len(v) != n]
        if bad or not all(isinstance(s, int) and not isinstance(s, bool) for s in d["step"]):
            raise ValueError(f"the history is malformed: columns {bad or ['step']} are not lists of {n} entries")
        h = cls()
        h.steps = list(d["step"])
        h.records = {k: list(v) for k, v in d.items() if k != "step"}
        return h

    def save(self, path: str | os.PathLike) -> None:
        """Atomically write the history as JSON."""
        atomic_write_json(path, self.to_dict())


def log_steps(total: int, per_decade: int = 24) -> list[int]:
    """Log-spaced steps in [0, total]: 0, 1, 2, …, then about ``per_decade`` per decade, and total."""
    if total <= 0:
        return [0]
    pts = {0, total}
    n = max(2, int(per_decade * math.log10(total + 1)) + 1)
    for i in range(n + 1):
        pts.add(int(round((total + 1) ** (i / n))) - 1)
    return sorted(p for p in pts if 0 <= p <= total)


# ---------------------------------------------------------------------------------------------
# Training


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


def _loss_and_grads(model: torch.nn.Module, params: list[torch.Tensor], columns: torch.Tensor | None,
                    share: float | None = None):
    """Loss terms and gradients; with ``share`` (n_rank/N) summed over the ranks in one all_reduce."""
    loss, fit, reg, grads = _local_loss_and_grads(model, params, columns)
    if share is None:
        return loss, fit, reg, grads
    from .distributed import all_reduce_

    scalars = [loss, loss if fit is None else fit, loss if reg is None else reg]
    buf = torch.cat([torch.stack([t.reshape(()) for t in scalars])] + [g.reshape(-1) for g in grads]) * share
    all_reduce_(buf, "reducing the gradients")
    out, i = [], 3
    for g in grads:
        out.append(buf[i : i + g.numel()].view_as(g))
        i += g.numel()
    return buf[0], None if fit is None else buf[1], None if reg is None else buf[2], out


def _local_loss_and_grads(model: torch.nn.Module, params: list[torch.Tensor], columns: torch.Tensor | None):
    if hasattr(model, "loss_and_gradients"):
        lg = model.loss_and_gradients(columns=columns)
        return lg.loss, lg.fit, lg.reg, lg.gradients
    if columns is not None and not getattr(model, "accepts_columns", False):
        raise ValueError("batch_size needs a model with loss_and_gradients (DeepUFM, MLPHead) or a loss(columns) "
                         "(BackboneHead)")
    with torch.enable_grad():
        loss = model.loss() if columns is None else model.loss(columns)
        grads = list(torch.autograd.grad(loss, params))
    return loss.detach(), None, None, grads


def _params_of(model: torch.nn.Module) -> list[torch.Tensor]:
    if hasattr(model, "trainable_blocks"):
        return [t for _, t in model.trainable_blocks()]
    return [p for p in model.parameters() if p.requires_grad]


def train(
    model: torch.nn.Module,
    steps: int,
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
) -> History:
    """Train ``model`` in place and return its :class:`History`.

    Args:
        model: a :class:`~fastdnc.models.DeepUFM` / :class:`~fastdnc.models.MLPHead`, or any module
            with a ``loss()`` method (trained through autograd).
        steps: number of updates.
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
            small, see :mod:`fastdnc._threads`, else the caller's setting, which is restored).

    Raises:
        NonFiniteError: the loss became NaN/Inf; the message names the step.
    """
    check_training(steps, lr, optimizer=optimizer, momentum=momentum, nesterov=nesterov, betas=betas, eps=eps,
                   batch_size=batch_size, schedule=schedule, schedule_kwargs=schedule_kwargs,
                   check_finite_every=check_finite_every, checkpoint_every=checkpoint_every, threads=threads)
    if hasattr(model, "check"):
        model.check()
    params = _params_of(model)
    opt = make_optimizer(optimizer, params, momentum=momentum, nesterov=nesterov, betas=betas, eps=eps)
    n = getattr(model, "num_samples", 0)
    sampler = _Batch(n, batch_size, torch.Generator().manual_seed(seed))
    skw = dict(schedule_kwargs or {})
    if log_at is None:
        log_set = set(log_steps(steps))
    elif isinstance(log_at, int):
        log_set = set(range(0, steps + 1, max(log_at, 1)))
    else:
        log_set = {int(s) for s in log_at}
    log_set |= {0, steps}
    every = checkpoint_every or max(steps // 20, 1)
    require_memory(_training_bytes(model, params, optimizer), f"training {type(model).__name__}",
                   getattr(model, "device", torch.device("cpu")),
                   instead="a smaller model (width, depth, samples), float32, or mini-batches (batch_size)")
    from . import distributed as dist_

    share = None
    if distributed or (distributed is None and dist_.world_size() > 1):
        share = n / dist_.global_count(n)
        if checkpoint is not None:
            checkpoint = f"{checkpoint}.rank{dist_.rank()}"
    config = run_config(model, lr=lr, optimizer=optimizer, momentum=momentum, nesterov=nesterov, betas=betas,
                        eps=eps, batch_size=batch_size, schedule=schedule, schedule_kwargs=skw, seed=seed)

    history = History()
    start, last_good, error = 0, None, None
    try:
        if checkpoint is not None:
            check_regular_file(checkpoint, "checkpoint", must_exist=False)
            if resume and os.path.exists(checkpoint):
                start, history = _load(checkpoint, model, opt, sampler, config)
                last_good = checkpoint
    except (ValueError, OSError) as e:
        if share is None:
            raise
        error = e
    if share is not None:  # every rank resumes from the same step of the same run, or none starts
        dist_.agree([start, steps, config_hash(config)], "resuming from the per-rank checkpoints", error)
    history.start_step, history.end_step = start, max(start, steps)
    if start >= steps:  # finished: no forward pass (it could move e.g. BatchNorm's running statistics)
        return history
    if checkpoint is not None:
        remove_stale_temporaries(checkpoint)
    # wall time is cumulative over resumed sessions
    previous = history.last("wall_time") if "wall_time" in history else None
    clock0 = time.perf_counter() - (previous or 0.0)
    extra: dict[str, Any] = {}

    def record(step: int, loss: torch.Tensor, fit, reg, grads) -> None:
        values: dict[str, Any] = {"loss": float(loss), "lr": lr * lr_factor(schedule, min(step, steps - 1), steps, **skw)}
        if fit is not None:
            values.update(fit_loss=float(fit), reg_loss=float(reg))
        values["grad_norm"] = math.sqrt(sum(float(g.square().sum()) for g in grads))
        values["wall_time"] = time.perf_counter() - clock0
        if collapse:
            from .collapse import collapse_metrics

            values.update(collapse_metrics(model).scalars())
        for cb in callbacks:
            values.update(cb(model, step))
        history.append(step, values)
        extra["loss"] = values["loss"]

    show = progress if progress is not None else steps >= 10_000
    bar = tqdm(total=steps, initial=start, disable=not show, desc=label, unit="step", dynamic_ncols=True,
               mininterval=0.5)
    chunk = max(1, steps // 1000)
    with torch.no_grad(), intra_op_threads(threads_for(_largest_gemm_flops(model, batch_size), threads)):
        for step in range(start, steps + 1):
            # a checkpoint of the state after `step` updates is written only once that state's loss
            # has been checked, with the sampler state from before this step's batch is drawn
            saving = checkpoint is not None and step % every == 0 and start < step < steps
            sampler_state = sampler.generator.get_state() if saving else None
            columns = sampler.next(model.device) if step < steps and batch_size else None
            loss, fit, reg, grads = _loss_and_grads(model, params, columns, share)
            if (step % check_finite_every == 0 or step == steps or saving) and not math.isfinite(float(loss)):
                bar.close()
                where = f"; the last good checkpoint is {last_good!s}" if last_good else ""
                raise NonFiniteError(
                    f"loss is {float(loss)} at step {step} (after {step} updates): a parameter or the output "
                    f"became NaN/Inf (learning rate {lr} too large?){where}"
                )
            if saving:
                _save(checkpoint, model, opt, sampler_state, history, step, config)
                last_good = checkpoint
            if step in log_set and step not in history.steps[-1:]:
                if columns is not None:  # log full-batch values, not the mini-batch's
                    loss, fit, reg, grads = _loss_and_grads(model, params, None, share)
                record(step, loss, fit, reg, grads)
                if show:
                    bar.set_postfix(loss=f"{extra['loss']:.3e}", refresh=False)
            if step == steps:
                break
            opt.step(grads, lr * lr_factor(schedule, step, steps, **skw))
            if (step + 1) % chunk == 0:
                bar.update(chunk)
    bar.update(steps - bar.n)
    bar.close()
    if checkpoint is not None:
        _save(checkpoint, model, opt, sampler.generator.get_state(), history, steps, config)
    return history


def check_training(steps: int, lr: float, *, optimizer: str = "gd", momentum: float = 0.9, nesterov: bool = False,
                   betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, batch_size: int | None = None,
                   schedule: str | Callable[[int], float] | None = None, schedule_kwargs: dict[str, Any] | None = None,
                   check_finite_every: int = 1, checkpoint_every: int | None = None,
                   threads: int | None = None) -> None:
    """Every check of :func:`train`'s settings that needs no model: a ValueError naming the
    setting. The command line runs it before it writes anything."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be a non-negative int, got {steps!r}")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a finite positive number, got {lr!r}")
    check_positive_int(check_finite_every, "check_finite_every")
    if checkpoint_every is not None:
        check_positive_int(checkpoint_every, "checkpoint_every")
    make_optimizer(optimizer, [], momentum=momentum, nesterov=nesterov, betas=betas, eps=eps)
    if batch_size is not None and (optimizer == "gd" or not 1 <= batch_size):
        raise ValueError("batch_size needs optimizer='sgd' or 'adam' and must be >= 1")
    lr_factor(schedule, 0, max(steps, 1), **dict(schedule_kwargs or {}))
    threads_for(1.0, threads)


def run_config(model: torch.nn.Module, *, lr: float, optimizer: str, momentum: float, nesterov: bool,
               betas: tuple[float, float], eps: float, batch_size: int | None,
               schedule: str | Callable[[int], float] | None, schedule_kwargs: dict[str, Any], seed: int) -> dict:
    """Everything that determines a training run besides its length, as plain data: the
    optimiser and its settings, the schedule, the batch size, the seed, and the model's
    ``checkpoint_config()`` (its class, shapes, activation, loss, decays, dtype) where it has one.
    A checkpoint stores it, and resuming with anything different is refused."""
    cfg: dict[str, Any] = {"lr": lr, "optimizer": optimizer, "batch_size": batch_size, "seed": seed,
                           "schedule": schedule if schedule is None or isinstance(schedule, str) else "callable",
                           "schedule_kwargs": schedule_kwargs}
    if optimizer == "sgd":
        cfg.update(momentum=momentum, nesterov=nesterov)
    if optimizer == "adam":
        cfg.update(betas=list(betas), eps=eps)
    describe = getattr(model, "checkpoint_config", None)
    cfg["model"] = describe() if callable(describe) else {"class": type(model).__name__}
    return plain(cfg)


def config_hash(config: dict) -> int:
    """A 48-bit hash of a plain configuration (the same on every rank and every run)."""
    return int(hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12], 16)


def config_differences(saved: dict, current: dict, prefix: str = "") -> list[str]:
    """``"field: saved → current"`` for every field of ``current`` that differs from ``saved``
    (fields that an older checkpoint did not record are not compared)."""
    out = []
    for key in sorted(set(saved) & set(current)):
        a, b = saved[key], current[key]
        if isinstance(a, dict) and isinstance(b, dict) and key == "model":
            out += config_differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} → {b!r}")
    return out


def _largest_gemm_flops(model: torch.nn.Module, batch_size: int | None) -> float:
    """2·m·n·k of the largest GEMM of a training step of a layered model (a weight times the layer
    input over the batch); infinite (keep the caller's threads) for any other module."""
    if not hasattr(model, "loss_and_gradients"):
        return float("inf")
    n = model.num_samples if batch_size is None else min(batch_size, model.num_samples)
    return max(2.0 * w.shape[0] * w.shape[1] * n for w in model.weights)


def _training_bytes(model: torch.nn.Module, params: list[torch.Tensor], optimizer: str) -> int:
    """Memory that training adds to the model: gradients, one temporary per parameter, the
    optimiser's state and, for layered models, the forward and backward states (about four
    (width × N) matrices per layer)."""
    item = params[0].element_size() if params else 4
    total = sum(t.numel() for t in params) * item * (2 + {"sgd": 1, "adam": 2}.get(optimizer, 0))
    if hasattr(model, "loss_and_gradients"):
        total += 4 * sum(w.shape[0] for w in model.weights) * model.num_samples * item
    return total


def _save(path, model, opt: Optimizer, sampler_state: torch.Tensor, history: History, step: int,
          config: dict) -> None:
    atomic_torch_save(
        path,
        {
            "format": "fastdnc-checkpoint-1",
            "step": step,
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "sampler": sampler_state,
            "history": plain(history.to_dict()),
            "config": config,
        },
    )


_SCHEMA = {"step": int, "model": dict, "optimizer": dict, "sampler": torch.Tensor, "history": dict, "config": dict}


def _read_checkpoint(path, map_location) -> dict:
    ck = safe_torch_load(path, map_location)
    if not isinstance(ck, dict) or ck.get("format") != "fastdnc-checkpoint-1":
        raise ValueError(f"{path} is not a fastdnc checkpoint (no 'format': 'fastdnc-checkpoint-1' entry)")
    wrong = [f"{key} (expected {kind.__name__}, found {type(ck.get(key)).__name__})" for key, kind in _SCHEMA.items()
             if not isinstance(ck.get(key), kind) or isinstance(ck.get(key), bool)]
    if wrong:
        raise ValueError(f"{path} is not a valid fastdnc checkpoint: missing or wrong {', '.join(wrong)}")
    if ck["step"] < 0 or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in ck["model"].items()):
        raise ValueError(f"{path} is not a valid fastdnc checkpoint: a negative step or a model entry that is not "
                         "a named tensor")
    return ck


def _load_model(path, ck: dict, model: torch.nn.Module) -> tuple[int, History]:
    try:
        model.load_state_dict(ck["model"])
    except RuntimeError as e:
        raise ValueError(f"checkpoint {path} does not fit this model: {e}") from e
    try:
        return int(ck["step"]), History.from_dict(ck["history"])
    except ValueError as e:
        raise ValueError(f"checkpoint {path}: {e}") from e


def _load(path, model, opt: Optimizer, sampler: _Batch, config: dict) -> tuple[int, History]:
    ck = _read_checkpoint(path, getattr(model, "device", "cpu"))
    diffs = config_differences(ck["config"], config)
    if diffs:
        raise ValueError(f"checkpoint {path} belongs to another configuration ({'; '.join(diffs)}); resume with "
                         "the same settings, or start afresh with another checkpoint path or resume=False")
    try:  # the optimiser and the sampler first: they are this call's own, the model is the caller's
        opt.load_state_dict(ck["optimizer"])
        sampler.generator.set_state(ck["sampler"])
    except (ValueError, RuntimeError, TypeError) as e:
        raise ValueError(f"checkpoint {path}: {e}") from e
    return _load_model(path, ck, model)


def checkpoint_step(path: str | os.PathLike) -> int:
    """The step at which :func:`train` wrote the checkpoint ``path`` (read safely and validated)."""
    return int(_read_checkpoint(path, "cpu")["step"])


def load_checkpoint(path: str | os.PathLike, model: torch.nn.Module) -> tuple[int, History]:
    """Load the parameters of a checkpoint written by :func:`train` into ``model``.

    Returns the step it was written at and the history up to then. The file is read with
    ``weights_only=True`` (no code in it can run) and checked to be a fastdnc checkpoint.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"no checkpoint at {path}")
    return _load_model(path, _read_checkpoint(path, getattr(model, "device", "cpu")), model)
