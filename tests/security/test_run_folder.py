"""A run folder belongs to one configuration; a rejected command changes nothing in it; stale
temporaries of killed writes are removed; checkpoint paths must be regular files."""

from __future__ import annotations

import os

import pytest
import torch

import fastdnc as fd
from fastdnc.cli import main

TRAIN = ["train", "--steps", "40", "--width", "6", "--depth", "2", "--quiet"]


def snapshot(folder) -> dict:
    """Every file below ``folder`` with its bytes and modification time."""
    return {
        p.relative_to(folder): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.rglob("*")) if p.is_file()
    }


@pytest.fixture
def run(tmp_path):
    out = tmp_path / "run"
    assert main([*TRAIN, "--out", str(out)]) == 0
    return out


@pytest.mark.parametrize(
    "flags, needle",
    [
        (["--width", "8"], "width: 6 → 8"),
        (["--activation", "relu", "--loss", "ce"], "activation: 'linear' → 'relu'; loss: 'mse' → 'ce'"),
        (["--weight-decay", "1e-2"], "weight_decay: [0.005] → [0.01]"),
        (["--feature-decay", "1e-3"], "feature_decay: None → 0.001"),
        (["--schedule", "cosine"], "schedule: 'constant' → 'cosine'"),
        (["--dtype", "float32"], "dtype: 'float64' → 'float32'"),
        (["--seed", "3"], "seed: 0 → 3"),
        (["--optimizer", "adam"], "optimizer: 'gd' → 'adam'"),
        (["--lr", "0.05"], "lr: 0.1 → 0.05"),
        (["--device", "bogus"], "is not a device"),
        (["--checkpoint-every", "0"], "--checkpoint-every must be >= 1"),
    ],
)
def test_a_rejected_command_leaves_the_run_folder_unchanged(run, capsys, flags, needle):
    before = snapshot(run)
    assert main([*TRAIN, "--steps", "80", *flags, "--out", str(run)]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err
    if "→" in needle:
        assert "--no-resume" in err and "another --out" in err  # how to start afresh
    assert snapshot(run) == before


@pytest.mark.parametrize(
    "flags, needle",
    [
        (["--lr", "-1"], "lr must be a finite positive number"),
        (["--threads", "0"], "threads must be an int >= 1"),
        (["--optimizer", "sgd", "--momentum", "1.5"], "momentum must be in [0, 1)"),
        (["--batch-size", "4"], "batch_size needs optimizer='sgd' or 'adam'"),
    ],
)
def test_no_resume_with_bad_settings_leaves_the_run_unchanged(run, capsys, flags, needle):
    """--no-resume skips the configuration check; the settings are still checked before any write."""
    before = snapshot(run)
    assert main([*TRAIN, "--steps", "80", "--no-resume", *flags, "--out", str(run)]) == 2
    assert needle in capsys.readouterr().err
    assert snapshot(run) == before


def test_fewer_steps_than_done_is_a_no_op_that_says_so(run, capsys):
    before = snapshot(run)
    assert main([*TRAIN[:-1], "--steps", "10", "--out", str(run)]) == 0
    assert "already trained 40 steps (--steps 10): nothing to do" in capsys.readouterr().out
    assert main([*TRAIN[:-1], "--out", str(run)]) == 0  # the same command again: nothing to do
    assert "nothing to do" in capsys.readouterr().out
    assert snapshot(run) == before


def test_resume_says_so_and_no_resume_starts_afresh(run, capsys):
    assert main([*TRAIN[:-1], "--steps", "70", "--out", str(run)]) == 0
    assert "resumed from step 40, trained 30 steps (to step 70)" in capsys.readouterr().out
    assert main([*TRAIN[:-1], "--steps", "20", "--width", "8", "--no-resume", "--out", str(run)]) == 0
    assert "trained 20 steps (to step 20)" in capsys.readouterr().out
    assert '"width": 8' in (run / "config.json").read_text()
    from fastdnc.train import checkpoint_step

    assert checkpoint_step(run / "checkpoint.pt") == 20


def test_stale_temporaries_are_removed_by_the_next_run(run):
    stale = [run / ".checkpoint.pt.abc123.tmp", run / ".checkpoint.pt.zz.tmp"]
    for p in stale:
        p.write_bytes(b"half a checkpoint")
    other = run / ".notes.txt.keep.tmp"  # not a temporary of the checkpoint: left alone
    other.write_bytes(b"x")
    assert main([*TRAIN, "--steps", "60", "--out", str(run)]) == 0
    assert not any(p.exists() for p in stale) and other.exists()
    assert not list(run.glob(".checkpoint.pt.*"))


def test_api_refuses_a_fifo_checkpoint_and_cleans_temporaries(tmp_path):
    fifo = tmp_path / "fifo.ckpt"
    os.mkfifo(fifo)
    for resume in (True, False):
        with pytest.raises(ValueError, match="FIFO"):
            fd.train(fd.DeepUFM(3, 2, 4, 2), 5, 0.1, checkpoint=fifo, resume=resume, progress=False)
    ck = tmp_path / "run.ckpt"
    (tmp_path / ".run.ckpt.x.tmp").write_bytes(b"")
    fd.train(fd.DeepUFM(3, 2, 4, 2), 5, 0.1, checkpoint=ck, progress=False)
    assert not list(tmp_path.glob(".run.ckpt.*"))
    with pytest.raises(ValueError, match="refusing to replace it|FIFO"):
        fd.io.atomic_write_bytes(fifo, b"data")


def test_checkpoints_written_before_the_hardening_still_load(tmp_path):
    """The format before the full configuration was recorded: config held five training fields."""
    model = fd.DeepUFM(3, 2, 4, 2, seed=0)
    fd.train(model, 10, 0.1, progress=False)
    opt = {"name": "gd", "state": {"t": 10}}
    old = {
        "format": "fastdnc-checkpoint-1",
        "step": 10,
        "model": model.state_dict(),
        "optimizer": opt,
        "sampler": torch.Generator().manual_seed(0).get_state(),
        "history": {"step": [0, 10], "loss": [1.0, 0.5]},
        "config": {"steps": 10, "lr": 0.1, "optimizer": "gd", "batch_size": None, "seed": 0},
    }
    torch.save(old, tmp_path / "old.ckpt")
    fresh = fd.DeepUFM(3, 2, 4, 2, seed=5)
    step, hist = fd.load_checkpoint(tmp_path / "old.ckpt", fresh)
    assert step == 10 and hist["loss"] == [1.0, 0.5]
    assert all(torch.equal(a, b) for a, b in zip(fresh.parameters(), model.parameters()))
    resumed = fd.train(fd.DeepUFM(3, 2, 4, 2, seed=5), 20, 0.1, checkpoint=tmp_path / "old.ckpt", progress=False)
    assert resumed.start_step == 10 and resumed.steps[-1] == 20


def test_every_checkpoint_the_package_writes_loads_safely(tmp_path):
    """Callbacks may log NumPy and tensor values: the checkpoint stores them as plain data."""
    import numpy as np

    def cb(model, step):
        return {"np": np.float64(step), "t": torch.tensor([1.0, 2.0]), "arr": np.arange(3), "s": "text"}

    for optimizer, extra in (("gd", {}), ("sgd", {"batch_size": 3, "nesterov": True}), ("adam", {})):
        ck = tmp_path / f"{optimizer}.ckpt"
        fd.train(
            fd.DeepUFM(3, 2, 4, 2),
            10,
            0.05,
            optimizer=optimizer,
            callbacks=[cb],
            checkpoint=ck,
            checkpoint_every=3,
            schedule="step",
            schedule_kwargs={"milestones": (0.5,)},
            progress=False,
            **extra,
        )
        step, hist = fd.load_checkpoint(ck, fd.DeepUFM(3, 2, 4, 2))
        assert step == 10 and hist["np"][-1] == 10.0 and hist["t"][-1] == [1.0, 2.0] and hist["s"][0] == "text"
        again = fd.train(
            fd.DeepUFM(3, 2, 4, 2),
            15,
            0.05,
            optimizer=optimizer,
            callbacks=[cb],
            checkpoint=ck,
            schedule="step",
            schedule_kwargs={"milestones": (0.5,)},
            progress=False,
            **extra,
        )
        assert again.start_step == 10
