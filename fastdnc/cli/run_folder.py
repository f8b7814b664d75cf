"""Run folders of the command line: the device, the output folder (checked before anything is
written, removed again when a first command fails), the run's configuration (a folder belongs to
one configuration) and the model of a finished run."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

# Arguments that do not change what a run computes: everything else in config.json must match.
RUN_NEUTRAL = ("command", "func", "out", "quiet", "debug", "no_resume", "steps", "checkpoint_every", "threads")


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
    for p in [out, *out.parents]:
        if p.exists():
            if not p.is_dir():
                raise ValueError(
                    f"{flag} {out} is {'a file' if p == out else f'under {p}, which is a file'}: give a folder"
                )
            if not os.access(p, os.W_OK | os.X_OK):
                raise ValueError(f"{flag} {out}: {p} is not writable")
            break
    return out


def make_folder(out: Path, flag: str = "--out") -> bool:
    """Create ``out`` (and its parents); returns whether it was created. One clear error if not."""
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"{flag} {out}: cannot create the folder ({e.strerror or e})") from None
    return created


def read_json(path: Path, what: str) -> dict:
    from ..io import check_regular_file

    check_regular_file(path, what)
    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{what} {path} is not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{what} {path} is not a JSON object")
    return data


def run_config(a: argparse.Namespace) -> dict:
    return {k: v for k, v in sorted(vars(a).items()) if k not in ("func", "command")}


def check_same_run(out: Path, cfg: dict) -> None:
    """Refuse to continue the run in ``out`` with another configuration (the fields are named)."""
    path = out / "config.json"
    if not path.exists():
        return
    saved = read_json(path, "run configuration")
    diffs = [
        f"{k}: {saved[k]!r} → {v!r}" for k, v in cfg.items() if k not in RUN_NEUTRAL and k in saved and saved[k] != v
    ]
    if diffs:
        raise ValueError(
            f"{out} holds a run with another configuration ({'; '.join(diffs)}); continue it with the "
            "same settings, use another --out, or pass --no-resume to start afresh there (its "
            "checkpoint and history are replaced)"
        )


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


def model_from_run(run: Path):
    """The DeepUFM of a 'fastdnc train' run folder, loaded from its checkpoint, and its step."""
    import torch

    from ..models import DeepUFM
    from ..train import load_checkpoint

    cfg_path, ck = run / "config.json", run / "checkpoint.pt"
    for p in (cfg_path, ck):
        if not p.exists():
            raise FileNotFoundError(f"{p} is missing: point --run at a folder written by 'fastdnc train'")
    c = read_json(cfg_path, "run configuration")
    missing = [k for k in MODEL_KEYS if k not in c]
    if missing or not isinstance(c["weight_decay"], list) or c["dtype"] not in ("float32", "float64"):
        raise ValueError(
            f"{cfg_path} is not a 'fastdnc train' configuration (missing or wrong: "
            f"{', '.join(missing) or 'weight_decay/dtype'})"
        )
    wd = c["weight_decay"][0] if len(c["weight_decay"]) == 1 else c["weight_decay"]
    model = DeepUFM(
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
    step, _ = load_checkpoint(ck, model)
    return model, step
