"""Atomic writes: a failed write leaves the old file intact and no temporary files."""

from __future__ import annotations

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
