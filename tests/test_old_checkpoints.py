"""Checkpoints written by fastdnc 0.1.0 before the package split (tests/fixtures, made at commit
b8afc72) still load exactly and resume on the same trajectory."""

import shutil
from pathlib import Path

import pytest
import torch

import fastdnc as fd

FIXTURES = Path(__file__).parent / "fixtures"


def _deep_ufm() -> fd.DeepUFM:
    return fd.DeepUFM(3, 2, 5, 3, activation="relu", loss="ce", seed=1)


def _mlp_head() -> fd.MLPHead:
    expected = torch.load(FIXTURES / "mlp_head-0.1.0.expected.pt", weights_only=True)
    return fd.MLPHead(expected["inputs"], expected["labels"], 6, 2, bias=True, seed=2)


@pytest.mark.parametrize("name, make, step", [("deep_ufm", _deep_ufm, 20), ("mlp_head", _mlp_head, 10)])
def test_an_old_checkpoint_loads(name, make, step):
    model = make()
    loaded_step, history = fd.load_checkpoint(FIXTURES / f"{name}-0.1.0.pt", model)
    expected = torch.load(FIXTURES / f"{name}-0.1.0.expected.pt", weights_only=True)
    assert loaded_step == step and history.steps[-1] == step
    for key, value in expected["parameters"].items():
        assert torch.equal(model.state_dict()[key], value), key


def test_an_old_checkpoint_resumes_on_the_same_trajectory(tmp_path):
    path = tmp_path / "ck.pt"
    shutil.copy(FIXTURES / "deep_ufm-0.1.0.pt", path)
    settings = dict(optimizer="sgd", nesterov=True, checkpoint_every=5, log_at=5)
    resumed = _deep_ufm()
    history = fd.train(resumed, 30, 0.05, checkpoint=path, **settings)
    assert history.start_step == 20
    fresh = _deep_ufm()
    fd.train(fresh, 30, 0.05, **settings)
    # the fixture's first 20 steps ran on another CPU, whose BLAS may round differently in the last
    # bit: the continuation agrees to rounding here (bit for bit on one machine: tests/test_train.py)
    for a, b in zip(resumed.parameters(), fresh.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    expected = torch.load(FIXTURES / "deep_ufm-0.1.0.expected.pt", weights_only=True)
    assert history["loss"][: len(expected["loss"])] == expected["loss"]
