"""Hostile files: crafted checkpoints and CIFAR pickles, gzip bombs, overflowing IDX headers, bad
labels and FIFOs. Each runs in a child process (see conftest.py): no payload runs, the peak memory
grows by less than 200 MB, nothing blocks, and the error names the file and the problem."""

from __future__ import annotations

import gzip
import os
import pickle
import zlib

import numpy as np
import pytest
import torch

from .conftest import PEAK_KB, RSS_LIMIT_MB

MNIST_HEADER = bytes([0, 0, 8, 3]) + b"".join(s.to_bytes(4, "big") for s in (60_000, 28, 28))


class Payload:
    """Pickles as a call of ``func(*args)``: what an attacker writes into a data file."""

    def __init__(self, func, *args, state=None):
        self.func, self.args, self.state = func, args, state

    def __reduce__(self):
        return (self.func, self.args) if self.state is None else (self.func, self.args, self.state)


def _reconstruct():
    from numpy._core.multiarray import _reconstruct

    return _reconstruct


def cifar_payloads(sentinel) -> dict[str, bytes]:
    nd = _reconstruct()
    return {
        # 35 bytes that ask builtins.bytearray for 8 GiB
        "bytearray": b"\x80\x02cbuiltins\nbytearray\n\x8a\x05\x00\x00\x00\x00\x02\x85R.",
        "eval": pickle.dumps({b"data": Payload(eval, f"open({str(sentinel)!r}, 'w')"), b"labels": [0]}),
        "os.system": pickle.dumps({b"data": Payload(os.system, f"touch {sentinel}"), b"labels": [0]}),
        # a genuine-looking array whose declared shape is 10¹² entries (NumPy would check the bytes only later)
        "huge declared shape": pickle.dumps(
            {
                b"data": Payload(
                    nd, np.ndarray, (0,), b"b", state=(1, (10**6, 10**6), np.dtype("u1"), False, b"x" * 8)
                ),
                b"labels": [0],
            }
        ),
        # the placeholder itself asked to be 10¹² bytes
        "huge placeholder": pickle.dumps({b"data": Payload(nd, np.ndarray, (10**12,), b"b"), b"labels": [0]}),
        "object dtype": pickle.dumps(
            {
                b"data": Payload(
                    nd, np.ndarray, (0,), b"b", state=(1, (1,), np.dtype("O"), False, [Payload(os.system, "true")])
                ),
                b"labels": [0],
            }
        ),
    }


def _cifar_root(tmp_path, batch: bytes):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(1, 6):
        (folder / f"data_batch_{i}").write_bytes(batch)
    return folder


@pytest.mark.parametrize(
    "name", ["bytearray", "eval", "os.system", "huge declared shape", "huge placeholder", "object dtype"]
)
def test_cifar_payloads_are_refused_without_running_or_allocating(tmp_path, sentinel, isolated, name):
    folder = _cifar_root(tmp_path, cifar_payloads(sentinel)[name])
    res = isolated(f"""
        def run():
            fastdnc.data.load_dataset("cifar10", {str(tmp_path)!r})
    """)
    assert res["kind"] == "DataError", res
    assert str(folder / "data_batch_1") in res["error"], res["error"]
    assert res["rss_growth_mb"] < RSS_LIMIT_MB, res


@pytest.mark.parametrize(
    "labels, match",
    [
        (["cat", "dog"], "labels must be integers"),
        ([float("nan"), 1.0], "NaN"),
        ([0.5, 1.0], "whole numbers"),
        ([3, 11], "label 11 is outside 0..9"),
        ([-1, 2], "outside 0..9"),
    ],
)
def test_cifar_bad_labels(tmp_path, labels, match):
    from fastdnc.data import DataError, load_dataset

    _cifar_root(tmp_path, pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": labels}))
    with pytest.raises(DataError, match=match) as info:
        load_dataset("cifar10", tmp_path)
    assert "data_batch_1" in str(info.value)


def test_cifar_oversized_file_is_refused_before_reading(tmp_path, isolated):
    folder = _cifar_root(tmp_path, b"")
    with open(folder / "data_batch_1", "wb") as f:  # sparse: 1 GiB declared, nothing written
        f.truncate(2**30)
    res = isolated(f"""
        def run():
            fastdnc.data.load_dataset("cifar10", {str(tmp_path)!r})
    """)
    assert res["kind"] == "DataError" and "more than any CIFAR-10 batch" in res["error"], res
    assert res["rss_growth_mb"] < RSS_LIMIT_MB


@pytest.fixture(scope="module")
def gzip_bomb(tmp_path_factory):
    """A valid MNIST image header followed by 1 GiB of zeros, gzip-compressed to about 1 MB."""
    path = tmp_path_factory.mktemp("bomb") / "train-images-idx3-ubyte.gz"
    comp = zlib.compressobj(1, zlib.DEFLATED, 31)  # 31: gzip container
    zeros = bytes(16 * 2**20)
    with open(path, "wb") as f:
        f.write(comp.compress(MNIST_HEADER))
        for _ in range(64):
            f.write(comp.compress(zeros))
        f.write(comp.flush())
    return path


def _mnist_root(tmp_path, images: bytes | None = None, labels: bytes | None = None, gz: bool = False):
    folder = tmp_path / "MNIST" / "raw"
    folder.mkdir(parents=True, exist_ok=True)
    sfx = ".gz" if gz else ""
    n = 3
    images = (
        images
        if images is not None
        else bytes([0, 0, 8, 3]) + b"".join(s.to_bytes(4, "big") for s in (n, 28, 28)) + bytes(n * 784)
    )
    labels = labels if labels is not None else bytes([0, 0, 8, 1]) + n.to_bytes(4, "big") + bytes([0, 1, 2])
    (folder / f"train-images-idx3-ubyte{sfx}").write_bytes(gzip.compress(images) if gz else images)
    (folder / f"train-labels-idx1-ubyte{sfx}").write_bytes(gzip.compress(labels) if gz else labels)
    return folder


def test_gzip_bomb_stops_at_the_declared_size(tmp_path, gzip_bomb, isolated):
    assert gzip_bomb.stat().st_size < 8 * 2**20  # ≥ 1 GiB uncompressed
    folder = _mnist_root(tmp_path, gz=True)
    os.replace(gzip_bomb, folder / "train-images-idx3-ubyte.gz")
    res = isolated(f"""
        def run():
            fastdnc.data.load_dataset("mnist", {str(tmp_path)!r})
    """)
    assert res["kind"] == "DataError" and "too long" in res["error"] and "decompression bomb" in res["error"], res
    assert "train-images-idx3-ubyte.gz" in res["error"]
    assert res["rss_growth_mb"] < RSS_LIMIT_MB, res


@pytest.mark.parametrize(
    "dims, match",
    [
        ((2**32 - 1, 2**32 - 1, 2**32 - 1), r"dimension 1 must be 28"),  # overflowing product, wrong image size
        ((4_000_000_000, 28, 28), r"more than the 47040000 entries"),  # too many images for MNIST
        ((5, 28, 29), r"dimension 2 must be 28"),
    ],
)
def test_idx_headers_are_checked_before_the_body(tmp_path, isolated, dims, match):
    head = bytes([0, 0, 8, 3]) + b"".join(s.to_bytes(4, "big") for s in dims)
    _mnist_root(tmp_path, images=head + bytes(100), gz=True)
    res = isolated(f"""
        def run():
            fastdnc.data.load_dataset("mnist", {str(tmp_path)!r})
    """)
    assert res["kind"] == "DataError", res
    assert "train-images-idx3-ubyte.gz" in res["error"] and __import__("re").search(match, res["error"]), res
    assert res["rss_growth_mb"] < RSS_LIMIT_MB


def test_generic_idx_reader_bounds_the_product_of_the_dimensions(tmp_path, isolated):
    path = tmp_path / "huge.idx"
    path.write_bytes(bytes([0, 0, 8, 3]) + b"".join((2**32 - 1).to_bytes(4, "big") for _ in range(3)) + bytes(10))
    res = isolated(f"""
        def run():
            fastdnc.data.read_idx({str(path)!r})
    """)
    assert res["kind"] == "DataError" and "declares shape (4294967295, 4294967295, 4294967295)" in res["error"], res
    assert res["rss_growth_mb"] < RSS_LIMIT_MB


@pytest.mark.parametrize(
    "values, code, match",
    [
        (np.array([0.0, np.nan, 2.0], ">f4"), 0x0D, "NaN"),
        (np.array([0.0, 1.5, 2.0], ">f8"), 0x0E, "whole numbers"),
        (np.array([0, 12, 2], ">u1"), 0x08, "label 12 is outside 0..9"),
        (np.array([0, -3, 2], ">i2"), 0x0B, "label -3 is outside 0..9"),
    ],
)
def test_idx_bad_labels(tmp_path, values, code, match):
    from fastdnc.data import DataError, load_dataset

    labels = bytes([0, 0, code, 1]) + (3).to_bytes(4, "big") + values.tobytes()
    _mnist_root(tmp_path, labels=labels)
    with pytest.raises(DataError, match=match) as info:
        load_dataset("mnist", tmp_path)
    assert "train-labels-idx1-ubyte" in str(info.value)


@pytest.mark.parametrize("which", ["mnist", "cifar10", "checkpoint"])
def test_fifos_are_refused_without_blocking(tmp_path, isolated, which):
    if which == "mnist":
        folder = _mnist_root(tmp_path)
        target = folder / "train-images-idx3-ubyte"
        call = f'fastdnc.data.load_dataset("mnist", {str(tmp_path)!r})'
    elif which == "cifar10":
        target = _cifar_root(tmp_path, b"") / "data_batch_1"
        call = f'fastdnc.data.load_dataset("cifar10", {str(tmp_path)!r})'
    else:
        target = tmp_path / "run.ckpt"
        call = f"fastdnc.load_checkpoint({str(target)!r}, fastdnc.DeepUFM(3, 2, 4, 2))"
    target.unlink(missing_ok=True)
    os.mkfifo(target)
    res = isolated(
        f"""
        def run():
            {call}
    """,
        timeout=60,
    )
    assert res["kind"] in ("DataError", "ValueError") and "FIFO" in res["error"] and str(target) in res["error"], res


def _evil_checkpoint(path, sentinel, legacy: bool = False) -> None:
    obj = {
        "format": "fastdnc-checkpoint-1",
        "step": 1,
        "model": Payload(os.system, f"touch {sentinel}"),
        "optimizer": {},
        "sampler": torch.zeros(1),
        "history": {},
        "config": {},
    }
    torch.save(obj, path, _use_new_zipfile_serialization=not legacy)


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_malicious_checkpoint_does_not_run(tmp_path, sentinel, isolated, legacy):
    path = tmp_path / "checkpoint.pt"
    _evil_checkpoint(path, sentinel, legacy)
    res = isolated(f"""
        def run():
            fastdnc.load_checkpoint({str(path)!r}, fastdnc.DeepUFM(3, 2, 4, 2))
    """)
    assert res["kind"] == "ValueError" and str(path) in res["error"], res
    if legacy:  # refused before unpickling: the legacy format allocates the sizes it declares
        assert "not a zip-format torch file" in res["error"], res
    else:
        assert "something other than data" in res["error"] and "posix.system" in res["error"], res
    assert "weights_only" not in res["error"]  # never the advice to load it unsafely


def test_malicious_checkpoint_through_every_command(tmp_path, sentinel):
    """fastdnc train (resume), fastdnc spectrum and fastdnc reproduce --preset real read checkpoints."""
    import subprocess
    import sys

    run = tmp_path / "run"
    assert (
        subprocess.run(
            [
                sys.executable,
                "-m",
                "fastdnc",
                "train",
                "--steps",
                "20",
                "--width",
                "6",
                "--depth",
                "2",
                "--out",
                str(run),
                "--quiet",
            ]
        ).returncode
        == 0
    )
    _evil_checkpoint(run / "checkpoint.pt", sentinel)
    real = tmp_path / "real"
    real.mkdir()
    _evil_checkpoint(real / "real_digits_mlp.ckpt", sentinel)
    commands = [
        ["train", "--steps", "40", "--width", "6", "--depth", "2", "--out", str(run)],
        ["spectrum", "--run", str(run)],
        ["reproduce", "--preset", "real", "--dataset", "digits", "--steps", "50", "--out", str(real)],
    ]
    for args in commands:
        proc = subprocess.run([sys.executable, "-m", "fastdnc", *args], capture_output=True, text=True, timeout=300)
        assert proc.returncode != 0, args
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert "something other than data" in lines[0] and ("checkpoint.pt" in lines[0] or ".ckpt" in lines[0]), lines


@pytest.mark.parametrize(
    "content, match",
    [
        ({"a": 1}, "is not a fastdnc checkpoint"),
        ({"format": "fastdnc-checkpoint-1", "step": 3}, r"missing or wrong model \(expected dict, found NoneType\)"),
        (
            {
                "format": "fastdnc-checkpoint-1",
                "step": "3",
                "model": {},
                "optimizer": {},
                "sampler": torch.zeros(1),
                "history": {},
                "config": {},
            },
            r"step \(expected int, found str\)",
        ),
        (
            {
                "format": "fastdnc-checkpoint-1",
                "step": 3,
                "model": {"w": 1.0},
                "optimizer": {},
                "sampler": torch.zeros(1),
                "history": {},
                "config": {},
            },
            "not a named tensor",
        ),
        ([1, 2, 3], "is not a fastdnc checkpoint"),
    ],
)
def test_foreign_checkpoints_get_a_clear_error(tmp_path, content, match):
    import fastdnc as fd

    path = tmp_path / "x.ckpt"
    torch.save(content, path)
    with pytest.raises(ValueError, match=match) as info:
        fd.load_checkpoint(path, fd.DeepUFM(3, 2, 4, 2))
    assert str(path) in str(info.value)


# ---------------------------------------------------------------- memory bounded by the file
def rewrite_zip(template: bytes, path, records: dict | None = None, pickle_edit=None, deflate=()) -> None:
    """Write ``path`` as the torch zip ``template`` with its data.pkl edited by ``pickle_edit`` and
    ``records`` replacing records (bytes, or a callable yielding chunks); records named in
    ``deflate`` are compressed."""
    import io
    import zipfile

    src = zipfile.ZipFile(io.BytesIO(template))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            name = info.filename
            data = (records or {}).get(name.split("/", 1)[1], None)
            method = zipfile.ZIP_DEFLATED if name.split("/", 1)[1] in deflate else zipfile.ZIP_STORED
            if callable(data):
                info = zipfile.ZipInfo(name)
                info.compress_type = method
                with dst.open(info, "w", force_zip64=True) as f:
                    for chunk in data():
                        f.write(chunk)
                continue
            if data is None:
                data = src.read(name)
                if name.endswith("data.pkl") and pickle_edit is not None:
                    data = pickle_edit(data)
            dst.writestr(zipfile.ZipInfo(name), data, compress_type=method)


def checkpoint_bytes(**entries) -> bytes:
    import io

    import fastdnc as fd

    ck = {
        "format": "fastdnc-checkpoint-1",
        "step": 1,
        "model": fd.DeepUFM(3, 2, 4, 2).state_dict(),
        "optimizer": {"name": "gd", "state": {"t": 1}},
        "sampler": torch.Generator().manual_seed(0).get_state(),
        "history": {"step": [1], "loss": [0.5]},
        "config": {},
    }
    ck.update(entries)
    buf = io.BytesIO()
    torch.save(ck, buf)
    return buf.getvalue()


def test_a_deflate_bomb_checkpoint_is_refused_before_inflating(tmp_path, isolated):
    """A 300 MB tensor record deflated into a file of ~300 KB: refused without inflating it."""
    import struct

    n = 300 * 2**20
    template = checkpoint_bytes(model={"w": torch.zeros(10, dtype=torch.uint8)})
    path = tmp_path / "bomb.ckpt"
    rewrite_zip(
        template,
        path,
        records={"data/0": lambda: (bytes(2**20) for _ in range(300))},
        pickle_edit=lambda p: p.replace(b"K\x0a", b"J" + struct.pack("<i", n)),
        deflate=("data/0",),
    )
    assert path.stat().st_size < 2 * 2**20
    res = isolated(f"""
        def run():
            fastdnc.load_checkpoint({str(path)!r}, fastdnc.DeepUFM(3, 2, 4, 2))
    """)
    assert res["kind"] == "ValueError" and "is compressed" in res["error"] and str(path) in res["error"], res
    assert res["rss_growth_mb"] < RSS_LIMIT_MB, res


def test_a_history_of_shared_references_is_refused_without_expanding_it(tmp_path, isolated):
    """One 1 MB string referenced 2,500 times pickles into ~1 MB but expands to 2.5 GB."""
    big = "x" * 2**20
    path = tmp_path / "memo.ckpt"
    path.write_bytes(checkpoint_bytes(history={"step": [1] * 2500, "note": [big] * 2500}))
    assert path.stat().st_size < 2 * 2**20
    for call in (
        "fastdnc.load_checkpoint({p!r}, fastdnc.DeepUFM(3, 2, 4, 2))",
        "__import__('fastdnc.training.checkpoint', fromlist=['_']).checkpoint_step({p!r})",
    ):
        res = isolated(f"""
            def run():
                {call.format(p=str(path))}
        """)
        assert res["kind"] == "ValueError" and "expands to more than" in res["error"], res
        assert res["rss_growth_mb"] < RSS_LIMIT_MB, res


def test_deeply_nested_checkpoint_data_is_refused_clearly(tmp_path, isolated):
    depth = 100_000
    deep = b"]" * depth + b"a" * (depth - 1)  # EMPTY_LIST × depth, then APPEND each into the one below
    placeholder = "DEEP-PLACEHOLDER"
    path = tmp_path / "deep.ckpt"
    marker = b"X" + len(placeholder).to_bytes(4, "little") + placeholder.encode()
    rewrite_zip(
        checkpoint_bytes(history={"step": [1], "x": [placeholder]}),
        path,
        pickle_edit=lambda p: p.replace(marker, deep),
    )
    res = isolated(f"""
        def run():
            fastdnc.load_checkpoint({str(path)!r}, fastdnc.DeepUFM(3, 2, 4, 2))
    """)
    assert res["kind"] == "ValueError" and "more than 100 levels deep" in res["error"], res


def test_a_checkpoint_with_nan_parameters_is_named_as_such(tmp_path):
    import fastdnc as fd

    model = fd.DeepUFM(3, 2, 4, 2)
    state = model.state_dict()
    state["weights.0"][0, 0] = float("nan")
    path = tmp_path / "nan.ckpt"
    path.write_bytes(checkpoint_bytes(model=state))
    with pytest.raises(ValueError, match=r"holds NaN/Inf in \['weights.0'\]: fastdnc never writes") as info:
        fd.train(fd.DeepUFM(3, 2, 4, 2), 5, 0.1, checkpoint=path, progress=False)
    assert "last good" not in str(info.value)


def test_oversized_and_deeply_nested_json_is_refused(tmp_path):
    import subprocess
    import sys

    run = tmp_path / "run"
    args = ["train", "--steps", "10", "--width", "6", "--depth", "2", "--quiet", "--out", str(run)]
    assert subprocess.run([sys.executable, "-m", "fastdnc", *args]).returncode == 0
    cfg = run / "config.json"
    cfg.unlink()
    with open(cfg, "wb") as f:  # a sparse file of 3 GB: nothing is read
        f.truncate(3 * 2**30)
    for cmd in (["spectrum", "--run", str(run)], [*args[:-3], "--out", str(run)]):
        proc = subprocess.run([sys.executable, "-c", _PEAK_RSS, *cmd], capture_output=True, text=True, timeout=120)
        err, peak_mb = proc.stderr.strip().splitlines(), float(proc.stdout.split()[-1])
        if cmd[0] == "spectrum":
            assert len(err) == 1 and "has 3,221,225,472 bytes (at most" in err[0], proc.stderr
        assert peak_mb < RSS_LIMIT_MB, peak_mb
    cfg.write_text("[" * 200_000 + "]" * 200_000)
    proc = subprocess.run(
        [sys.executable, "-m", "fastdnc", "spectrum", "--run", str(run)], capture_output=True, text=True
    )
    assert proc.returncode == 2 and "nests its JSON too deeply" in proc.stderr and "Traceback" not in proc.stderr


# runs fastdnc.cli.main on argv[1:] and prints the growth of the peak resident memory in MB
_PEAK_RSS = (
    PEAK_KB
    + "import sys\nimport torch, fastdnc, fastdnc.cli.commands  # the CLI imports these lazily: before the baseline\n"
    + "from fastdnc.cli import main\nsys.argv[0] = 'fastdnc'\nreset_peak()\nbefore = status_kb('VmRSS')\n"
    + "main(sys.argv[1:])\nprint((status_kb('VmHWM') - before) / 1024)\n"
)


def test_an_infinite_data_iterable_is_refused(monkeypatch):
    import itertools

    from torch import nn

    import fastdnc as fd
    from fastdnc import _memory

    model = nn.Linear(3, 2).double()
    x, y = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="more than 1,000,000 batches: pass a finite loader"):
        fd.HessianOperator(model, nn.MSELoss(), itertools.cycle([(x, y)]))
    monkeypatch.setattr(_memory, "available_bytes", lambda device="cpu": 2**24)

    def fresh():
        while True:
            yield torch.empty(1024, 3, dtype=torch.float64), torch.empty(1024, 2, dtype=torch.float64)

    with pytest.raises(ValueError, match="more than 8 MiB of tensors on cpu .* pass a finite loader"):
        fd.GGNOperator(model, nn.MSELoss(), fresh())
