"""Progress of long analyses: one line per stage with its position and time, silent when disabled."""

from __future__ import annotations

import pytest

from fastdnc.stages import Stages


def test_each_stage_prints_its_position_and_time(capsys):
    stage = Stages("relu_mse 2/5", 2)
    with stage("layer Hessians"):
        pass
    with stage("figures"):
        pass
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("relu_mse 2/5: analysis 1/2 layer Hessians … ") and err[0].endswith(" s")
    assert err[1].startswith("relu_mse 2/5: analysis 2/2 figures … ")
    assert list(stage.seconds) == ["layer Hessians", "figures"]


def test_a_failing_stage_says_so_and_raises(capsys):
    stage = Stages("x", 1)
    with pytest.raises(ValueError), stage("broken"):
        raise ValueError("bad")
    assert capsys.readouterr().err.endswith("x: analysis 1/1 broken … failed\n")


def test_disabled_stages_are_silent_but_timed(capsys):
    stage = Stages("x", 1, enabled=False)
    with stage("quiet"):
        pass
    assert capsys.readouterr().err == "" and stage.seconds["quiet"] >= 0
