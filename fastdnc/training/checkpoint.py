"""Checkpoints and run configurations.

A checkpoint holds the parameters, the optimiser state, the RNG state of the mini-batch sampler,
the history, the step and the run's whole configuration (:meth:`TrainConfig.record`), written atomically
(:mod:`fastdnc.io`). It holds only tensors and plain data and is read with ``weights_only=True``:
a crafted file cannot run code. Resuming with another configuration is refused with the list of
differing fields (:func:`config_differences`).
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import torch

from ..io import atomic_torch_save, plain
from ..safe_read import safe_torch_load
from .config import TrainConfig
from .history import History
from .optimizers import Optimizer


def run_config(model: torch.nn.Module, *, command: dict[str, Any] | None = None, **settings: Any) -> dict:
    """The checkpoint's record of a run with these :class:`~fastdnc.training.TrainConfig` settings
    (:meth:`~fastdnc.training.TrainConfig.record`; ``steps`` is not part of it)."""
    return TrainConfig(0, **settings).record(model, command)


def config_hash(config: dict) -> int:
    """A 48-bit hash of a plain configuration (the same on every rank and every run)."""
    return int(hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12], 16)


def config_differences(saved: dict, current: dict, prefix: str = "") -> list[str]:
    """``"field: saved → current"`` for every field of ``current`` that differs from ``saved``
    (fields that an older checkpoint did not record are not compared)."""
    out = []
    for key in sorted(set(saved) & set(current)):
        a, b = saved[key], current[key]
        if isinstance(a, dict) and isinstance(b, dict) and key in ("model", "command"):
            out += config_differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} → {b!r}")
    return out


def write_checkpoint(
    path: str | os.PathLike,
    model: torch.nn.Module,
    opt: Optimizer,
    sampler_state: torch.Tensor,
    history: History,
    step: int,
    config: dict,
) -> None:
    """Atomically write everything a bit-for-bit resume needs (tensors and plain data only)."""
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


def read_checkpoint(path: str | os.PathLike, map_location: Any, finite: bool = True) -> dict:
    """The checkpoint at ``path``, read with ``weights_only=True`` and checked against the schema
    (and, with ``finite``, for NaN/Inf parameters, which fastdnc never writes)."""
    ck = safe_torch_load(path, map_location)
    if not isinstance(ck, dict) or ck.get("format") != "fastdnc-checkpoint-1":
        raise ValueError(f"{path} is not a fastdnc checkpoint (no 'format': 'fastdnc-checkpoint-1' entry)")
    wrong = [
        f"{key} (expected {kind.__name__}, found {type(ck.get(key)).__name__})"
        for key, kind in _SCHEMA.items()
        if not isinstance(ck.get(key), kind) or isinstance(ck.get(key), bool)
    ]
    if wrong:
        raise ValueError(f"{path} is not a valid fastdnc checkpoint: missing or wrong {', '.join(wrong)}")
    if ck["step"] < 0 or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in ck["model"].items()):
        raise ValueError(
            f"{path} is not a valid fastdnc checkpoint: a negative step or a model entry that is not a named tensor"
        )
    bad = [k for k, v in ck["model"].items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad and finite:
        raise ValueError(
            f"checkpoint {path} holds NaN/Inf in {bad}: fastdnc never writes such a checkpoint (it checks the "
            "loss first), so it was damaged or edited; train afresh (--no-resume) or restore it"
        )
    return ck


def _load_model(path: str | os.PathLike, ck: dict, model: torch.nn.Module) -> tuple[int, History]:
    try:
        model.load_state_dict(ck["model"])
    except RuntimeError as e:
        raise ValueError(f"checkpoint {path} does not fit this model: {e}") from e
    try:
        return int(ck["step"]), History.from_dict(ck["history"])
    except ValueError as e:
        raise ValueError(f"checkpoint {path}: {e}") from e


RESUME_HINT = "resume with the same settings, or start afresh with another checkpoint path or resume=False"


def check_same_configuration(path: str | os.PathLike, ck: dict, config: dict, hint: str = RESUME_HINT) -> None:
    """Refuse the checkpoint ``ck`` (read from ``path``) when it belongs to another configuration
    than ``config``, naming the differing fields (those of the recorded command line alone when
    it recorded one: they determine the rest)."""
    diffs = config_differences(ck["config"], config)
    own = [d.removeprefix("command.") for d in diffs if d.startswith("command.")]
    if diffs:
        raise ValueError(f"checkpoint {path} belongs to another configuration ({'; '.join(own or diffs)}); {hint}")


def resume_checkpoint(
    path: str | os.PathLike, model: torch.nn.Module, opt: Optimizer, generator: torch.Generator, config: dict
) -> tuple[int, History]:
    """Restore the optimiser, the sampler's generator and the model from ``path``, refusing a
    checkpoint of another configuration; returns its step and history."""
    ck = read_checkpoint(path, getattr(model, "device", "cpu"))
    check_same_configuration(path, ck, config)
    try:  # the optimiser and the sampler first: they are this call's own, the model is the caller's
        opt.load_state_dict(ck["optimizer"])
        generator.set_state(ck["sampler"])
    except (ValueError, RuntimeError, TypeError) as e:
        raise ValueError(f"checkpoint {path}: {e}") from e
    return _load_model(path, ck, model)


def checkpoint_step(path: str | os.PathLike) -> int:
    """The step at which :func:`train` wrote the checkpoint ``path`` (read safely and validated)."""
    return int(read_checkpoint(path, "cpu")["step"])


def load_checkpoint(path: str | os.PathLike, model: torch.nn.Module) -> tuple[int, History]:
    """Load the parameters of a checkpoint written by :func:`train` into ``model``.

    Returns the step it was written at and the history up to then. The file is read with
    ``weights_only=True`` (no code in it can run) and checked to be a fastdnc checkpoint.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"no checkpoint at {path}")
    return _load_model(path, read_checkpoint(path, getattr(model, "device", "cpu")), model)
