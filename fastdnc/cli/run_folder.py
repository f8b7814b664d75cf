"""Run folders of the command line: one configuration and one process at a time.

* **Ownership.** A command locks its folder (:mod:`fastdnc.run_lock`): a second process on the same
  folder fails at once, naming the first. Before anything is written the folder is checked: the
  files a command would write (``config.json``, ``history.json``, ``metrics.json``,
  ``checkpoint.pt``) must be this package's, never a user's file that happens to share a name.
* **One source of truth.** The checkpoint records the command's settings (``train(command=…)``);
  ``config.json`` is a copy, written only once a command has been accepted. A rerun is compared
  with the checkpoint, ``fastdnc spectrum`` builds its model from the checkpoint and refuses a
  ``config.json`` that disagrees with it.
* **Repairs.** A run killed after its last checkpoint but before ``history.json`` /
  ``metrics.json`` is completed by the next rerun from the checkpoint.
* **Failures** remove only the files the failed command created, and the folders it created when
  they are left empty; a folder holding a checkpoint is kept whole (the run resumes from it).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

# Arguments that do not change what a run computes: everything else in config.json must match.
RUN_NEUTRAL = ("command", "func", "out", "quiet", "debug", "no_resume", "steps", "checkpoint_every", "threads")
# What 'fastdnc train' writes into its folder
TRAIN_FILES = ("checkpoint.pt", "config.json", "history.json", "metrics.json")
CHECKPOINT_SUFFIXES = (".pt", ".ckpt")
MODEL_KEYS = (
    "classes",
    "n_per_class",
    "width",
    "depth",
    "activation",
    "loss",
    "weight_decay",
    "feature_decay",
    "seed",
    "dtype",
    "device",
)


def checked_device(name: str):
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
            raise ValueError(
                f"--device {name}: CUDA is not available here (no GPU, or a CPU build of torch); use --device cpu"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def output_folder(path: str, flag: str = "--out") -> Path:
    """``path`` as a folder that exists or can be created: not a file, not under a file."""
    out = Path(path)
    too_long = [part for part in out.parts if len(os.fsencode(part)) > 255]
    if too_long:
        raise ValueError(
            f"{flag}: the name {too_long[0][:40]}… has {len(os.fsencode(too_long[0]))} bytes (at most 255)"
        )
    for p in [out, *out.parents]:
        if _exists(p):
            if not p.is_dir():
                raise ValueError(
                    f"{flag} {out} is {'a file' if p == out else f'under {p}, which is a file'}: give a folder"
                )
            if not os.access(p, os.W_OK | os.X_OK):
                raise ValueError(f"{flag} {out}: {p} is not writable")
            break
    return out


def make_folder(out: Path, flag: str = "--out") -> list[Path]:
    """Create ``out`` (and its parents); returns the folders it created, deepest first. One clear
    error if it cannot."""
    missing = [p for p in (out, *out.parents) if not _exists(p)]
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"{flag} {out}: cannot create the folder ({e.strerror or e})") from None
    return missing


def _exists(p: Path) -> bool:
    try:
        return p.exists()
    except OSError as e:  # a name too long, a path too deep: one clear line
        raise ValueError(f"{p}: {e.strerror or e}") from None


def has_checkpoint(folder: Path) -> bool:
    """Whether ``folder`` holds a checkpoint a rerun can resume from."""
    try:
        return folder.is_dir() and any(p.suffix in CHECKPOINT_SUFFIXES and p.is_file() for p in folder.iterdir())
    except OSError:
        return False


def remove_created(created: list[Path], folders: list[Path]) -> None:
    """Remove the files a failed command ``created`` and then the ``folders`` it created, where
    they are left empty (deepest first); never a file it did not create."""
    for path in reversed(created):
        try:
            path.unlink()
        except OSError:
            pass
    for folder in sorted(set(folders), key=lambda p: len(p.parts), reverse=True):
        try:
            folder.rmdir()  # only succeeds on an empty folder
        except OSError:
            pass


def read_json(path: Path, what: str) -> dict:
    from ..safe_read import read_json as read

    return read(path, what)


def command_settings(args: argparse.Namespace) -> dict:
    """The command line's settings as a dict (what config.json records), without the dispatch fields."""
    return {k: v for k, v in sorted(vars(args).items()) if k not in ("func", "command")}


def computed_settings(cfg: dict) -> dict:
    """The settings of a run configuration that change what it computes (not RUN_NEUTRAL)."""
    return {k: v for k, v in cfg.items() if k not in RUN_NEUTRAL}


def differences(saved: dict, current: dict) -> list[str]:
    """``"field: saved → current"`` for the computed settings that differ (fields the saved record
    lacks are not compared)."""
    return [f"{k}: {saved[k]!r} → {v!r}" for k, v in computed_settings(current).items() if k in saved and saved[k] != v]


def is_train_config(data: Any) -> bool:
    """Whether ``data`` looks like a ``config.json`` that 'fastdnc train' wrote."""
    return isinstance(data, dict) and all(k in data for k in MODEL_KEYS)


def check_train_folder(out: Path, no_resume: bool) -> dict | None:
    """Refuse a folder whose files are not from a 'fastdnc train' run (a user's file is never
    overwritten) and return the ``config.json`` that judges a rerun before the first checkpoint.

    With a checkpoint, ``config.json`` is only its copy (replaced once the command is accepted);
    with ``no_resume`` the checkpoint must still be a fastdnc checkpoint to be replaced. Without a
    checkpoint, ``config.json`` must be a 'fastdnc train' configuration, and ``history.json`` /
    ``metrics.json`` need one of the two beside them."""
    from ..training.checkpoint import read_checkpoint

    checkpoint, cfg_path = out / "checkpoint.pt", out / "config.json"
    if checkpoint.exists():
        if no_resume:
            read_checkpoint(checkpoint, "cpu", finite=False)  # a file that is not ours is never replaced
        return None
    config = None
    if cfg_path.exists():
        try:
            config = read_json(cfg_path, "run configuration")
        except ValueError as e:
            raise ValueError(f"{e}: it is not from 'fastdnc train'; move it away or use another --out") from None
        if not is_train_config(config):
            raise ValueError(
                f"{cfg_path} is not a 'fastdnc train' configuration (it lacks "
                f"{[k for k in MODEL_KEYS if k not in config]}); move it away or use another --out"
            )
    foreign = [n for n in ("history.json", "metrics.json") if (out / n).exists() and config is None]
    if foreign:
        raise ValueError(
            f"{out} holds {', '.join(foreign)} but no 'fastdnc train' run (no config.json or checkpoint.pt): "
            "refusing to overwrite them; use another --out"
        )
    return None if no_resume else config


def refuse_other_configuration(out: Path, diffs: list[str], against: str) -> None:
    if diffs:
        raise ValueError(
            f"{out} holds a run with another configuration ({'; '.join(diffs)}, by its {against}); continue it "
            "with the same settings, use another --out, or pass --no-resume to start afresh there (its "
            "checkpoint and history are replaced)"
        )


def model_from_config(c: dict, what: str):
    """The DeepUFM that a 'fastdnc train' configuration describes (its initial weights)."""
    import torch

    from ..models import DeepUFM

    missing = [k for k in MODEL_KEYS if k not in c]
    if missing or not isinstance(c["weight_decay"], list) or c["dtype"] not in ("float32", "float64"):
        raise ValueError(
            f"{what} is not a 'fastdnc train' configuration (missing or wrong: {', '.join(missing) or 'weight_decay/dtype'})"
        )
    wd = c["weight_decay"][0] if len(c["weight_decay"]) == 1 else c["weight_decay"]
    return DeepUFM(
        c["classes"],
        c["n_per_class"],
        c["width"],
        c["depth"],
        activation=c["activation"],
        loss=c["loss"],
        weight_decay=wd,
        feature_decay=c["feature_decay"],
        seed=c["seed"],
        dtype=getattr(torch, c["dtype"]),
        device=checked_device(c["device"]),
    )


def _model_from_checkpoint_record(ck: dict, what: str, device: str):
    """A DeepUFM of the shapes a checkpoint records (checkpoints written before the command line's
    settings were recorded): its model configuration and its features' shape."""
    import torch

    from ..models import DeepUFM

    m, features = ck["config"].get("model"), ck["model"].get("_features")
    if not isinstance(m, dict) or m.get("class") != "DeepUFM" or not isinstance(features, torch.Tensor):
        raise ValueError(f"{what} is not a checkpoint of a DeepUFM (written by 'fastdnc train')")
    try:
        dims, k = list(m["dims"]), int(m["num_classes"])
        n = features.shape[1] // k
        return DeepUFM(
            k,
            n,
            dims[0],
            len(dims) - 1,
            activation=m["activation"],
            loss=m["loss"],
            weight_decay=m["weight_decay"],
            feature_decay=m["feature_decay"],
            dtype=getattr(torch, m["dtype"]),
            device=checked_device(device),
        )
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, ZeroDivisionError) as e:
        raise ValueError(f"{what} records a model fastdnc cannot rebuild ({e})") from None


def model_from_run(run: Path):
    """The DeepUFM of a 'fastdnc train' run folder at its checkpoint, the checkpoint's step and its
    history. The checkpoint is the record: the model is built from the settings it holds, and a
    ``config.json`` that disagrees with it is refused (it is only a copy)."""
    from ..training import load_checkpoint
    from ..training.checkpoint import read_checkpoint

    cfg_path, ck_path = run / "config.json", run / "checkpoint.pt"
    if not ck_path.exists():
        raise FileNotFoundError(f"{ck_path} is missing: point --run at a folder written by 'fastdnc train'")
    ck = read_checkpoint(ck_path, "cpu")
    recorded = ck["config"].get("command")
    config = read_json(cfg_path, "run configuration") if cfg_path.exists() else None
    if config is not None and not is_train_config(config):
        raise ValueError(
            f"{cfg_path} is not a 'fastdnc train' configuration (it lacks {[k for k in MODEL_KEYS if k not in config]})"
        )
    if isinstance(recorded, dict):
        if config is not None:
            diffs = differences(recorded, config)
            if diffs:
                raise ValueError(
                    f"{cfg_path} disagrees with the checkpoint ({'; '.join(diffs)}, checkpoint → config.json): the "
                    "checkpoint is the record of the run; restore config.json or remove it"
                )
        model = model_from_config(recorded, f"the settings recorded in {ck_path}")
    else:  # a checkpoint of a version that did not record the command line: its model record
        model = _model_from_checkpoint_record(ck, str(ck_path), config.get("device", "cpu") if config else "cpu")
        if config is not None:
            from ..training.checkpoint import config_differences

            claimed = model_from_config(config, str(cfg_path)).checkpoint_config()
            diffs = config_differences(ck["config"]["model"], claimed)
            if diffs:
                raise ValueError(
                    f"{cfg_path} disagrees with the checkpoint ({'; '.join(diffs)}, checkpoint → config.json): "
                    "the checkpoint is the record of the run; restore config.json or remove it"
                )
    step, history = load_checkpoint(ck_path, model)
    return model, step, history
