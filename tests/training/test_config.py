"""TrainConfig: one checked list of a run's settings, used by train(), the checkpoint's record and
the command line."""

from __future__ import annotations

import pytest
import torch

import fastdnc as fd
from fastdnc.training import TrainConfig, run_config


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(steps=-1), "steps must be a non-negative int"),
        (dict(steps=2.0), "steps must be a non-negative int"),
        (dict(steps=5, lr=0.0), "lr must be a finite positive number"),
        (dict(steps=5, lr=float("nan")), "lr must be a finite positive number"),
        (dict(steps=5, batch_size=4), "batch_size needs optimizer='sgd' or 'adam'"),
        (dict(steps=5, optimizer="sgd", batch_size=0), "batch_size needs"),
        (dict(steps=5, optimizer="rmsprop"), "rmsprop"),
        (dict(steps=5, checkpoint_every=0), "checkpoint_every"),
        (dict(steps=5, check_finite_every=0), "check_finite_every"),
        (dict(steps=5, seed=-1), "seed"),
        (dict(steps=5, schedule="nope"), "nope"),
    ],
)
def test_a_setting_out_of_range_is_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**kwargs)


def model():
    torch.manual_seed(0)
    return fd.DeepUFM(3, 4, 6, 3, activation="relu", dtype=torch.float64)


def test_train_takes_a_config_or_its_keywords_with_the_same_result(tmp_path):
    settings = dict(optimizer="sgd", momentum=0.8, batch_size=5, schedule="cosine", seed=3)
    a, b = model(), model()
    ha = fd.train(a, 40, 0.05, **settings, checkpoint=tmp_path / "a.pt", progress=False)
    hb = fd.train(b, TrainConfig(40, 0.05, **settings), checkpoint=tmp_path / "b.pt", progress=False)
    assert ha["loss"] == hb["loss"]
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)
    ca = fd.training.read_checkpoint(tmp_path / "a.pt", "cpu")["config"]
    assert ca == fd.training.read_checkpoint(tmp_path / "b.pt", "cpu")["config"]
    assert ca == TrainConfig(40, 0.05, **settings).record(a) == run_config(a, lr=0.05, **settings)
    # resuming the keyword run with the config (and a larger step count) continues it
    more = fd.train(a, TrainConfig(60, 0.05, **settings), checkpoint=tmp_path / "a.pt", progress=False)
    assert more.start_step == 40 and more.end_step == 60


def test_a_config_and_a_differing_keyword_are_refused():
    with pytest.raises(ValueError, match=r"also given: \['lr', 'optimizer'\]"):
        fd.train(model(), TrainConfig(5), 0.5, optimizer="adam")
    fd.train(model(), TrainConfig(5), optimizer="gd", progress=False)  # a keyword at its default is fine


def test_the_record_holds_only_what_the_optimiser_reads():
    m = model()
    assert "momentum" not in TrainConfig(5).record(m) and "betas" not in TrainConfig(5, optimizer="sgd").record(m)
    adam = TrainConfig(5, optimizer="adam", betas=(0.8, 0.9)).record(m, command={"width": 6})
    assert adam["betas"] == [0.8, 0.9] and adam["command"] == {"width": 6} and adam["model"]["class"] == "DeepUFM"


def test_a_model_without_a_loss_is_refused_in_one_line():
    with pytest.raises(TypeError, match="train needs a model with a loss\\(\\) method"):
        fd.train(torch.nn.Linear(2, 2), 3)


def test_any_module_with_a_loss_trains_through_autograd_and_only_batch_models_take_batches():
    class Quadratic(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.tensor([3.0, -2.0], dtype=torch.float64))

        def loss(self):
            return (self.w**2).sum()

    q = Quadratic()
    history = fd.train(q, 50, 0.1, progress=False)
    assert history["loss"][-1] < 1e-8 * history["loss"][0]
    with pytest.raises(ValueError, match="batch_size needs a model with loss_and_gradients"):
        fd.train(Quadratic(), 5, 0.1, optimizer="sgd", batch_size=1, progress=False)
