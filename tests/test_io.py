"""Atomic writes: a failed write leaves the old file intact and no temporary files."""

from __future__ import annotations

import json

import pytest
import torch

from fastdnc.io import atomic_torch_save, atomic_write_json, atomic_write_text


def test_atomic_replace_and_no_leftovers(tmp_path):
    p = tmp_path / "sub" / "a.txt"
    atomic_write_text(p, "one")
    atomic_write_text(p, "two")
    assert p.read_text() == "two"
    assert [f.name for f in p.parent.iterdir()] == ["a.txt"]


def test_failed_write_keeps_the_old_file(tmp_path):
    p = tmp_path / "r.json"
    atomic_write_json(p, {"a": 1})
    with pytest.raises(TypeError, match="cannot write object"):
        atomic_write_json(p, {"a": object()})
    assert p.read_text().strip().startswith("{") and '"a": 1' in p.read_text()
    assert [f.name for f in tmp_path.iterdir()] == ["r.json"]


def test_torch_save_round_trip_and_tensor_json(tmp_path):
    atomic_torch_save(tmp_path / "x.pt", {"t": torch.arange(3)})
    assert torch.equal(torch.load(tmp_path / "x.pt")["t"], torch.arange(3))
    atomic_write_json(tmp_path / "t.json", {"t": torch.tensor([1.5, 2.0])})
    assert "1.5" in (tmp_path / "t.json").read_text()


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077])
def test_outputs_get_the_permissions_of_the_umask(tmp_path, umask):
    import os
    import stat

    old = os.umask(umask)
    try:
        for name, write in (("a.txt", atomic_write_text), ("b.json", atomic_write_json)):
            write(tmp_path / name, "x" if name.endswith("txt") else {"x": 1})
            assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~umask
        atomic_torch_save(tmp_path / "c.pt", {"t": torch.zeros(1)})
        assert stat.S_IMODE((tmp_path / "c.pt").stat().st_mode) == 0o666 & ~umask
    finally:
        os.umask(old)


def test_created_files_are_recorded_and_stale_temporaries_of_dead_writers_removed(tmp_path):
    import os
    import subprocess
    import sys

    from fastdnc.io import recording_created, remove_stale_temporaries

    atomic_write_text(tmp_path / "old.txt", "was there")
    with recording_created() as created:
        atomic_write_text(tmp_path / "old.txt", "replaced")
        atomic_write_text(tmp_path / "new.txt", "made")
    assert created == [tmp_path / "new.txt"]
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True).stdout)
    stale, live = tmp_path / f".new.txt.{dead}-abcdefgh.tmp", tmp_path / f".new.txt.{os.getppid()}-abcdefgh.tmp"
    legacy, other = tmp_path / ".new.txt.zzzzzz.tmp", tmp_path / ".notes.txt.keep.tmp"
    for p in (stale, live, legacy, other):
        p.write_text("")
    assert sorted(remove_stale_temporaries(tmp_path / "new.txt")) == sorted([stale, legacy])
    assert live.exists() and other.exists()


def _strict(text: str):
    def refuse(constant: str):
        raise AssertionError(f"non-strict JSON constant {constant}")

    return json.loads(text, parse_constant=refuse)


def test_json_is_strict_and_says_where_non_finite_values_were(tmp_path):
    obj = {"gap_ratio": float("inf"), "loss": [1.0, float("nan")], "t": torch.tensor([-float("inf"), 2.0]), "ok": 3}
    data = _strict(atomic_write_json(tmp_path / "r.json", obj).read_text())
    assert data == {
        "gap_ratio": None,
        "loss": [1.0, None],
        "t": [None, 2.0],
        "ok": 3,
        "non_finite": {"gap_ratio": "Infinity", "loss[1]": "NaN", "t[0]": "-Infinity"},
    }
    assert "non_finite" not in _strict(atomic_write_json(tmp_path / "f.json", {"a": 1.5}).read_text())
    with pytest.raises(ValueError, match="non-finite values"):
        atomic_write_json(tmp_path / "l.json", [float("nan")])
