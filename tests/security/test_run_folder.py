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
    from fastdnc.training import checkpoint_step

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


# ---------------------------------------------------------------- one source of truth
@pytest.mark.parametrize("damage", ["missing", "lacks a field", "hand-edited"])
def test_the_checkpoint_is_the_record_and_config_json_its_copy(run, capsys, damage):
    """A refused command never writes config.json; the original settings stay accepted; spectrum
    builds the model the checkpoint records and refuses a config.json that disagrees with it."""
    import json

    cfg = run / "config.json"
    if damage == "missing":
        cfg.unlink()
    else:
        data = json.loads(cfg.read_text())
        if damage == "lacks a field":
            del data["loss"]
        else:
            data["loss"] = "ce"
        cfg.write_text(json.dumps(data))
    before = snapshot(run)
    assert main([*TRAIN, "--steps", "60", "--loss", "ce", "--out", str(run)]) == 2
    assert "loss: 'mse' → 'ce'" in capsys.readouterr().err and snapshot(run) == before
    if damage == "hand-edited":
        assert main(["spectrum", "--run", str(run), "--quiet"]) == 2
        assert "disagrees with the checkpoint (loss: 'mse' → 'ce'" in capsys.readouterr().err
        assert snapshot(run) == before
    assert main([*TRAIN, "--steps", "60", "--out", str(run)]) == 0  # the original settings
    assert json.loads(cfg.read_text())["loss"] == "mse"  # the copy is restored
    assert main(["spectrum", "--run", str(run), "--quiet"]) == 0
    from fastdnc.cli.run_folder import model_from_run

    model, step, _ = model_from_run(run)
    assert step == 60 and model.loss_type == "mse"


def test_foreign_files_are_never_overwritten(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "history.json").write_text('{"my": "notes"}')
    (out / "metrics.json").write_text("[1, 2]")
    before = snapshot(out)
    assert main([*TRAIN, "--out", str(out)]) == 2
    assert "holds history.json, metrics.json but no 'fastdnc train' run" in capsys.readouterr().err
    (out / "config.json").write_text('{"learning_rate": 3}')
    before = snapshot(out)
    assert main([*TRAIN, "--out", str(out)]) == 2
    assert "config.json is not a 'fastdnc train' configuration" in capsys.readouterr().err
    assert snapshot(out) == before
    (out / "config.json").unlink()
    (out / "history.json").unlink()
    (out / "metrics.json").unlink()
    (out / "checkpoint.pt").write_bytes(b"my own file")
    assert main([*TRAIN, "--no-resume", "--out", str(out)]) == 2  # --no-resume replaces only a checkpoint of ours
    assert "cannot read checkpoint" in capsys.readouterr().err
    assert (out / "checkpoint.pt").read_bytes() == b"my own file"


@pytest.mark.parametrize("lost", [["metrics.json"], ["history.json"], ["history.json", "metrics.json"], ["stale"]])
def test_a_rerun_repairs_history_and_metrics_from_the_checkpoint(run, capsys, lost):
    """A kill between the final checkpoint and history.json / metrics.json is repaired by the rerun."""
    import json

    good = {name: json.loads((run / name).read_text()) for name in ("history.json", "metrics.json")}
    if lost == ["stale"]:  # the files of an earlier, shorter run
        (run / "metrics.json").write_text(json.dumps({**good["metrics.json"], "step": 20}))
    for name in lost if lost != ["stale"] else []:
        (run / name).unlink()
    assert main([*TRAIN[:-1], "--out", str(run)]) == 0
    assert "repaired" in capsys.readouterr().out
    again = {name: json.loads((run / name).read_text()) for name in ("history.json", "metrics.json")}
    assert again["history.json"] == good["history.json"]
    assert {k: v for k, v in again["metrics.json"].items() if k != "train_seconds"} == {
        k: v for k, v in good["metrics.json"].items() if k != "train_seconds"
    }
    assert main([*TRAIN[:-1], "--out", str(run)]) == 0  # complete now: nothing to repair
    assert "repaired" not in capsys.readouterr().out


def test_steps_zero_writes_what_it_says(tmp_path, capsys):
    out = tmp_path / "zero"
    assert main([*TRAIN[:-1], "--steps", "0", "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert "trained 0 steps (to step 0)" in said
    for name in ("checkpoint.pt", "history.json", "metrics.json"):
        assert name in said and (out / name).exists()


# ---------------------------------------------------------------- one process per folder
def _cli(*args: str):
    import subprocess
    import sys

    return subprocess.Popen(
        [sys.executable, "-m", "fastdnc", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TQDM_DISABLE": "1"},
    )


LONG = ["train", "--steps", "5000000", "--width", "6", "--depth", "2", "--checkpoint-every", "4000000", "--quiet"]


def _wait_for(path, proc, seconds: float = 60.0) -> None:
    import time

    t0 = time.perf_counter()
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.perf_counter() - t0 < seconds, f"{path} did not appear"
        time.sleep(0.02)


def test_a_second_process_on_the_same_folder_fails_at_once_and_ctrl_c_removes_only_its_own_files(tmp_path):
    import signal

    out = tmp_path / "shared"
    out.mkdir()
    (out / "notes.txt").write_text("the user's")
    first = _cli(*LONG, "--out", str(out))
    try:
        _wait_for(out / "config.json", first)
        second = _cli(*TRAIN, "--out", str(out))
        _, err = second.communicate(timeout=60)
        assert second.returncode == 2 and len(err.strip().splitlines()) == 1
        assert f"is in use by process {first.pid} (fastdnc train" in err
        assert (out / "config.json").exists()  # the first run's files are untouched
        first.send_signal(signal.SIGINT)  # before its first checkpoint
        _, err = first.communicate(timeout=60)
    finally:
        first.kill()
    assert first.returncode == 130 and "no checkpoint had been written" in err and "resume" not in err
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]  # only what it created is removed
    fresh = tmp_path / "fresh" / "run"  # a folder the interrupted command created goes too
    proc = _cli(*LONG, "--out", str(fresh))
    try:
        _wait_for(fresh / "config.json", proc)
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert not (tmp_path / "fresh").exists()


def test_ctrl_c_after_a_checkpoint_keeps_the_run_and_says_how_to_resume(tmp_path):
    import signal

    out = tmp_path / "run"
    proc = _cli(*LONG[:-3], "--checkpoint-every", "200", "--quiet", "--out", str(out))
    try:
        _wait_for(out / "checkpoint.pt", proc)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130 and "rerun the same command to resume" in err
    assert (out / "checkpoint.pt").exists() and (out / "config.json").exists()


def test_cleanup_removes_only_temporaries_of_finished_processes(run):
    """A temporary whose writer is still running (another process's in-flight write) is kept."""
    import subprocess
    import sys

    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
        dead_pid = int(dead.stdout)
        in_flight = run / f".metrics.json.{alive.pid}-abcdefgh.tmp"
        stale = [run / f".history.json.{dead_pid}-zzzzzzzz.tmp", run / f".checkpoint.pt.{dead_pid}-q1w2e3r4.tmp"]
        for p in [in_flight, *stale]:
            p.write_bytes(b"half")
        assert main([*TRAIN, "--steps", "50", "--out", str(run)]) == 0
        assert in_flight.exists() and not any(p.exists() for p in stale)
    finally:
        alive.kill()
        alive.wait()
