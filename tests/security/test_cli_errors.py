"""Every failure a user can cause on the command line: a non-zero exit, one line on stderr, no
traceback (``--debug`` shows it). Run as a user would, through ``python -m fastdnc``."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

TRAIN = ["train", "--steps", "30", "--width", "6", "--depth", "2", "--quiet"]


def fastdnc(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fastdnc", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "TQDM_DISABLE": "1"},
    )


def one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    assert proc.returncode != 0, proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def run(tmp_path):
    """A finished 30-step run folder."""
    out = tmp_path / "run"
    assert fastdnc(*TRAIN, "--out", str(out)).returncode == 0
    return out


def test_out_is_a_file_or_under_a_file(tmp_path):
    (tmp_path / "file").write_text("x")
    one_line_error(fastdnc(*TRAIN, "--out", str(tmp_path / "file")), "is a file")
    one_line_error(fastdnc(*TRAIN, "--out", str(tmp_path / "file" / "sub")), "which is a file")
    one_line_error(fastdnc("reproduce", "--out", str(tmp_path / "file"), "--quiet"), "is a file")


def test_out_that_cannot_be_created():
    # /proc refuses new folders even to root (a read-only or unwritable place)
    one_line_error(fastdnc(*TRAIN, "--out", "/proc/fastdnc-cannot-create"), "cannot create the folder")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders; /proc covers unwritable places")
def test_out_read_only(tmp_path):  # pragma: no cover - runs for non-root users
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o555)
    one_line_error(fastdnc(*TRAIN, "--out", str(ro / "run")), "not writable")


@pytest.mark.parametrize(
    "device, needle",
    [
        ("bogus", "is not a device"),
        ("cuda:0x", "is not a device"),
        ("meta", "only cpu and cuda"),
        ("cuda", "CUDA is not available" if not torch.cuda.is_available() else ""),
    ],
)
def test_bad_devices(tmp_path, device, needle):
    if device == "cuda" and torch.cuda.is_available():
        device, needle = "cuda:99", "CUDA device"
    one_line_error(fastdnc(*TRAIN, "--device", device, "--out", str(tmp_path / "r")), needle)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    "flags, needle",
    [
        (["--checkpoint-every", "0"], "--checkpoint-every must be >= 1"),
        (["--checkpoint-every", "-3"], "--checkpoint-every must be >= 1"),
        (["--steps", "-1"], "--steps must be >= 0"),
        (["--classes", "9", "--width", "4"], "width d=4 must be >= num_classes K=9"),
        (["--weight-decay", "-1"], "weight_decay must be finite and >= 0"),
        (["--width", "100000000"], "needs ~"),  # MemoryError with the estimate
        (["--lr", "1e6", "--checkpoint-every", "1000"], "NaN/Inf"),  # NonFiniteError before any checkpoint
    ],
)
def test_bad_training_settings(tmp_path, flags, needle):
    line = one_line_error(fastdnc(*TRAIN, *flags, "--out", str(tmp_path / "r")), needle)
    assert not (tmp_path / "r").exists()  # a failed first command leaves no folder behind
    if needle == "needs ~":
        assert "available" in line and "instead" in line
    if needle == "NaN/Inf":
        assert "checkpoint" not in line  # no checkpoint was written: none is named


def test_nonfinite_names_only_a_checkpoint_that_exists(tmp_path):
    line = one_line_error(
        fastdnc(*TRAIN, "--lr", "1e6", "--checkpoint-every", "1", "--out", str(tmp_path / "r")),
        "NaN/Inf",
        "last good checkpoint is",
    )
    assert (tmp_path / line.split("last good checkpoint is ")[1].strip()).exists()


def test_memory_error_of_a_huge_sample_count(tmp_path):
    one_line_error(
        fastdnc(*TRAIN, "--n-per-class", "10000000000", "--out", str(tmp_path / "r")), "needs ~", "this machine has"
    )


def test_bad_checkpoints_and_configs(run):
    ck = run / "checkpoint.pt"
    good = ck.read_bytes()
    ck.write_bytes(b"garbage")
    one_line_error(fastdnc(*TRAIN, "--steps", "60", "--out", str(run)), "cannot read checkpoint", str(ck))
    one_line_error(fastdnc("spectrum", "--run", str(run)), "cannot read checkpoint")
    ck.unlink()
    os.mkfifo(ck)
    one_line_error(fastdnc(*TRAIN, "--steps", "60", "--out", str(run), timeout=60), "FIFO")
    one_line_error(fastdnc("spectrum", "--run", str(run), timeout=60), "FIFO")
    ck.unlink()
    ck.write_bytes(good)
    (run / "config.json").write_text("{not json")
    one_line_error(fastdnc("spectrum", "--run", str(run)), "is not valid JSON")
    (run / "config.json").write_text('{"classes": 4}')
    one_line_error(fastdnc("spectrum", "--run", str(run)), "is not a 'fastdnc train' configuration")
    one_line_error(fastdnc("spectrum", "--run", str(run.parent / "nowhere")), "is missing")


def test_debug_shows_the_traceback(tmp_path):
    proc = fastdnc(*TRAIN, "--device", "bogus", "--debug", "--out", str(tmp_path / "r"))
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "is not a device" in proc.stderr


def test_one_line_for_distributed_and_unexpected_errors():
    from fastdnc.cli import one_line
    from fastdnc.distributed import DistributedError

    assert (
        one_line(DistributedError("all_reduce failed on rank 0 of 2\n(a peer died)"))
        == "all_reduce failed on rank 0 of 2 (a peer died)"
    )
    assert "rerun with --debug" in one_line(KeyError("x"))
    assert one_line(MemoryError()).startswith("out of memory")
    assert one_line(PermissionError(13, "Permission denied", "/x")) == "Permission denied: /x"


@pytest.mark.parametrize(
    "flags, needle",
    [
        (["--out", "a" * 300], "has 300 bytes (at most 255)"),
        (["--out", "x/" + "b" * 256 + "/y"], "has 256 bytes (at most 255)"),
        (["--seed", "99999999999999999999999"], "seed must be in 0 … 2**63 - 1"),
        (["--seed", "-1"], "seed must be in 0 … 2**63 - 1"),
    ],
)
def test_names_and_numbers_out_of_range_are_one_line(tmp_path, flags, needle):
    args = [*TRAIN, *flags] if "--out" in flags else [*TRAIN, *flags, "--out", str(tmp_path / "r")]
    proc = subprocess.run(
        [sys.executable, "-m", "fastdnc", *args], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    one_line_error(proc, needle)
    assert list(tmp_path.iterdir()) == []  # nothing created


def test_more_threads_than_cores_are_capped_with_a_note(tmp_path):
    from fastdnc._threads import usable_cores

    proc = fastdnc(*TRAIN, "--threads", "10000", "--out", str(tmp_path / "r"), timeout=60)
    assert proc.returncode == 0
    cores = usable_cores()
    assert proc.stderr.strip() == (
        f"fastdnc train: note: threads=10000 is more than the {cores} core{'s' if cores > 1 else ''} this process "
        f"may use: using {cores}"
    )
