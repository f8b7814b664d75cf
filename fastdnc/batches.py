r"""The data of the drop-in operators: what a batch may look like, its size, its device, and how
the loss reduces it.

**Formats** (those curvlinops accepts, and a little more). ``data`` is one batch or an iterable of
batches; it is read **once** into a list, so a shuffling loader cannot make two products disagree.
The reading stops with a clear error after :data:`MAX_BATCHES` batches or when the batches' tensors
exceed half the memory available on their device: an infinite iterable (``itertools.cycle``, an
infinite ``IterableDataset``) is refused instead of filling the memory.
A batch is a tuple or list ``(X, y)``; entries after ``y`` (sample indices, …) are ignored with a
warning. ``X`` is

* a tensor: the model is called as ``model(X)``;
* a tuple or list of tensors: ``model(*X)`` (models with several inputs);
* a dict (any mapping) of tensors: ``model(**X)``.

(:mod:`fastdnc.compat.curvlinops` keeps curvlinops' own convention instead: ``model(X)`` whatever
``X`` is, so a model taking a dict reads its keys itself.)

One batch may be passed bare as ``(X, y)`` when ``y`` is a tensor and ``X`` one of the above. The
**size** of a batch (its weight :math:`n_b/N` under a mean reduction) is ``batch_size_fn(X)`` when
given, else the leading dimension of ``X`` (of every tensor in it, which must agree). Empty batches
are dropped; data without samples is an error.

**Devices.** Batches stay where the user put them; each product moves a copy of one batch at a time
to the parameters' device.

**Reduction.** A loss with a ``reduction`` attribute (every ``torch.nn`` loss) says how it reduces
(``KLDivLoss``'s ``"batchmean"`` is a mean over samples); ``"none"`` is refused. For a plain
function, pass ``reduction="mean"`` or ``"sum"``; without it the operator finds out by evaluating
the loss on a batch and on its two halves (``mean`` when the whole is the size-weighted mean of the
halves, ``sum`` when it is their sum) and refuses when it cannot tell (a zero loss, a loss that
couples samples, outputs that cannot be split).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

REDUCTIONS = ("mean", "sum")
MAX_BATCHES = 1_000_000


@dataclass
class Batch:
    """One batch: the model's positional and keyword inputs, the target, and the sample count."""

    args: tuple
    kwargs: dict
    target: Any
    size: int

    def to(self, device: torch.device) -> Batch:
        """A copy on ``device`` (the tensors only; the batch itself is left where it is)."""
        return Batch(_move(self.args, device), _move(self.kwargs, device), _move(self.target, device), self.size)


def _move(obj: Any, device: torch.device) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, tuple):
        return tuple(_move(o, device) for o in obj)
    if isinstance(obj, list):
        return [_move(o, device) for o in obj]
    if isinstance(obj, Mapping):
        return {k: _move(v, device) for k, v in obj.items()}
    return obj


def tensors_of(obj: Any) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (tuple, list)):
        return [t for o in obj for t in tensors_of(o)]
    if isinstance(obj, Mapping):
        return [t for o in obj.values() for t in tensors_of(o)]
    return []


def _is_input(x: Any) -> bool:
    return isinstance(x, (torch.Tensor, Mapping)) or (
        isinstance(x, (tuple, list)) and len(x) > 0 and all(isinstance(t, torch.Tensor) for t in x)
    )


def _size(x: Any, index: int, batch_size_fn: Callable[[Any], int] | None) -> int:
    if batch_size_fn is not None:
        n = batch_size_fn(x)
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"batch_size_fn returned {n!r} for batch {index}: expected an int >= 0")
        return n
    sizes = {t.shape[0] if t.ndim else None for t in tensors_of(x)}
    if len(sizes) != 1 or None in sizes:
        raise ValueError(
            f"batch {index}: cannot tell its size from the inputs (leading dimensions "
            f"{sorted(map(str, sizes))}); pass batch_size_fn=lambda X: ... (as for curvlinops)"
        )
    size = sizes.pop()
    assert size is not None
    return int(size)


def read_batches(data: Any, batch_size_fn: Callable[[Any], int] | None = None, unpack: bool = True) -> list[Batch]:
    """``data`` (see the module docstring) as a list of :class:`Batch`; a ValueError or TypeError
    that says what was wrong and what is accepted. ``unpack=False`` is curvlinops' convention: ``X``
    of any kind is passed whole, ``model(X)``. A list of :class:`Batch` (already read) is returned as is."""
    if isinstance(data, list) and data and all(isinstance(b, Batch) for b in data):
        return data
    if isinstance(data, (tuple, list)) and len(data) >= 2 and isinstance(data[1], torch.Tensor) and _is_input(data[0]):
        raw: list = [data]
    elif isinstance(data, Iterable) and not isinstance(data, (torch.Tensor, Mapping, str, bytes)):
        raw = _read_finitely(data)
    else:
        raise TypeError(f"data must be a batch (X, y) or an iterable of batches, got {type(data).__name__}")
    batches, extra = [], False
    for i, b in enumerate(raw):
        if not isinstance(b, (tuple, list)) or len(b) < 2 or not _is_input(b[0]):
            raise TypeError(
                f"batch {i} is not (X, y) with X a tensor, a tuple of tensors or a dict of tensors "
                f"(got {type(b).__name__}" + (f" of {len(b)} entries)" if isinstance(b, (tuple, list)) else ")")
            )
        extra |= len(b) > 2
        x = b[0]
        args: tuple
        if not unpack:
            args, kwargs = (x,), {}
        elif isinstance(x, Mapping):
            args, kwargs = (), dict(x)
        else:
            args, kwargs = ((x,) if isinstance(x, torch.Tensor) else tuple(x)), {}
        n = _size(x, i, batch_size_fn)
        if n > 0:
            batches.append(Batch(args, kwargs, b[1], n))
    if extra:
        warnings.warn("batches have entries after (X, y); they are ignored", stacklevel=3)
    if not batches:
        raise ValueError("data has no samples (no batch, or only empty ones)")
    return batches


def _read_finitely(data: Iterable) -> list:
    """The batches of ``data`` in a list, refusing more than :data:`MAX_BATCHES` of them or tensors
    beyond half the memory available on their devices (each storage counted once)."""
    from ._memory import available_bytes, gib

    raw: list = []
    seen: set[tuple[torch.device, int]] = set()
    used: dict[torch.device, int] = {}
    budget: dict[torch.device, float] = {}
    for i, b in enumerate(data):
        if i >= MAX_BATCHES:
            raise ValueError(
                f"data yielded more than {MAX_BATCHES:,} batches: pass a finite loader (an itertools.cycle or an "
                "infinite IterableDataset never ends)"
            )
        for t in tensors_of(b):
            key = (t.device, t.untyped_storage().data_ptr())
            if key in seen:
                continue
            seen.add(key)
            dev = t.device
            if dev not in budget:
                have = available_bytes(dev)
                budget[dev] = float("inf") if have is None else have / 2
            used[dev] = used.get(dev, 0) + t.untyped_storage().nbytes()
            if used[dev] > budget[dev]:
                raise ValueError(
                    f"data yielded more than {gib(budget[dev])} of tensors on {dev} (half the memory available) "
                    f"in {i + 1} batches: pass a finite loader, or fewer or smaller batches"
                )
        raw.append(b)
    return raw


def declared_reduction(loss_fn: Any, reduction: str | None) -> str | None:
    """The reduction ``loss_fn`` declares (its ``reduction`` attribute) or the caller gives; both
    must agree. ``None`` when neither says (then :func:`detect_reduction`)."""
    if reduction is not None and reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    own = getattr(loss_fn, "reduction", None)
    if own is None:
        return reduction
    if own == "batchmean":  # KLDivLoss: the sum over a batch divided by its size, a mean over samples
        own = "mean"
    if own not in REDUCTIONS:
        raise ValueError(f"loss_fn must use reduction='mean' or 'sum', got {own!r}")
    if reduction is not None and reduction != own:
        raise ValueError(f"loss_fn.reduction is {own!r} but reduction={reduction!r} was passed")
    return own


def require_scalar(loss: object) -> torch.Tensor:
    """``loss`` itself when it is a one-element tensor; else a ValueError that says what it is."""
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
        raise ValueError(
            f"loss_fn returned {shape}, not a scalar: reduce it over the batch (reduction='mean' or 'sum')"
        )
    return loss


def detect_reduction(loss_fn: Callable, output: torch.Tensor, target: Any) -> str:
    """``"mean"`` or ``"sum"``: how ``loss_fn`` reduces over the leading dimension, found from the
    loss of the whole batch and of its two halves; a ValueError when it cannot tell."""
    n = output.shape[0] if isinstance(output, torch.Tensor) and output.ndim else 0
    if n < 2 or not isinstance(target, torch.Tensor) or target.ndim == 0 or target.shape[0] != n:
        raise ValueError(
            "loss_fn has no 'reduction' attribute and its batches cannot be split to find out whether "
            "it averages or sums over samples: pass reduction='mean' or reduction='sum'"
        )
    h = n // 2
    with torch.no_grad():
        values = [loss_fn(output[s], target[s]) for s in (slice(None), slice(None, h), slice(h, None))]
    whole, a, b = (float(require_scalar(v)) for v in values)
    scale = max(abs(whole), abs(a), abs(b))
    tol = (1e-9 if output.dtype == torch.float64 else 1e-4) * scale
    is_sum, is_mean = abs(whole - (a + b)) <= tol, abs(whole - (h * a + (n - h) * b) / n) <= tol
    if scale > 0 and is_sum != is_mean:
        return "sum" if is_sum else "mean"
    raise ValueError(
        f"cannot tell whether loss_fn averages or sums over samples (whole batch {whole:.6g}, halves "
        f"{a:.6g} and {b:.6g}): pass reduction='mean' or reduction='sum'"
    )
