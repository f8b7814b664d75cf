"""Trainer: convergence to theory, optimisers, schedules, history, checkpoints and resume."""

from __future__ import annotations

import copy
import math
import subprocess
import sys
import textwrap

import pytest
import torch

import fastdnc as fd
from fastdnc.training import log_steps, lr_factor


def test_linear_ufm_reaches_the_closed_form_optimum():
    """Issue acceptance: K=4, d=12, n=5, L=4, λ=5e-3, lr=0.1, 2e4 GD steps, float64."""
    m = fd.DeepUFM(4, 5, 12, 4, weight_decay=5e-3, dtype=torch.float64, seed=0)
    hist = fd.train(m, 20_000, 0.1, progress=False)
    opt = fd.theory.optimum(4, 5, 4, 5e-3)
    assert abs(m.loss().item() - opt.optimal_loss) < 1e-8
    assert hist.steps[0] == 0 and hist.steps[-1] == 20_000
    rep = fd.collapse_metrics(m)
    for row in rep.layers:
        assert row["nc1"] < 1e-8
        assert row["orthogonal_frame_distance"] < 1e-6
        assert row["equinorm"] < 1e-6 and row["equiangularity"] < 1e-6
    for row, s in zip(rep.weights, opt.singular_values):
        assert row["rank"] == 4
        assert row["dnc3"] < 1e-6
        assert max(abs(x - s) for x in row["singular_values"][:4]) < 1e-6
    assert rep.nc3 < 1e-10


def _clone_pair():
    m = fd.DeepUFM(3, 2, 5, 3, activation="relu", loss="ce", weight_decay=1e-2, seed=3)
    return m, copy.deepcopy(m)


@pytest.mark.parametrize(
    "name, kwargs, torch_opt",
    [
        ("gd", {}, lambda p, lr: torch.optim.SGD(p, lr=lr)),
        ("sgd", dict(momentum=0.8), lambda p, lr: torch.optim.SGD(p, lr=lr, momentum=0.8)),
        (
            "sgd",
            dict(momentum=0.7, nesterov=True),
            lambda p, lr: torch.optim.SGD(p, lr=lr, momentum=0.7, nesterov=True),
        ),
        (
            "adam",
            dict(betas=(0.8, 0.99), eps=1e-7),
            lambda p, lr: torch.optim.Adam(p, lr=lr, betas=(0.8, 0.99), eps=1e-7),
        ),
    ],
)
def test_optimizers_match_torch_optim(name, kwargs, torch_opt):
    ours, ref = _clone_pair()
    lr = 0.05
    fd.train(ours, 25, lr, optimizer=name, progress=False, **kwargs)
    params = [t for _, t in ref.trainable_blocks()]
    opt = torch_opt(params, lr)
    for _ in range(25):
        opt.zero_grad()
        ref.loss().backward()
        opt.step()
    for a, b in zip(ours.parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-13)


def test_schedules():
    assert lr_factor("cosine", 0, 100) == 1.0
    assert lr_factor("cosine", 100, 100) == pytest.approx(0.0, abs=1e-15)
    assert lr_factor("cosine", 50, 100) == pytest.approx(0.5)
    assert lr_factor("step", 60, 100) == pytest.approx(0.1)
    assert lr_factor("step", 80, 100) == pytest.approx(0.01)
    assert lr_factor("linear", 25, 100, min_factor=0.2) == pytest.approx(0.8)
    assert lr_factor(None, 5, 10, warmup=10) == pytest.approx(0.6)
    assert lr_factor(lambda s: 1 / (1 + s), 3, 10) == 0.25
    with pytest.raises(ValueError, match="unknown schedule"):
        lr_factor("bogus", 0, 10)
    m = fd.DeepUFM(3, 2, 4, 2)
    h = fd.train(m, 10, 0.1, schedule="cosine", log_at=1, progress=False)
    assert h["lr"][0] == pytest.approx(0.1) and h["lr"][5] == pytest.approx(0.05)


def test_log_steps_and_history_callbacks():
    steps = log_steps(20_000)
    assert steps[0] == 0 and steps[-1] == 20_000 and steps == sorted(set(steps))
    assert 50 < len(steps) < 200 and {1, 2, 3} <= set(steps)
    m = fd.DeepUFM(3, 2, 4, 2)
    h = fd.train(
        m, 20, 0.1, log_at=[5, 7], callbacks=[lambda model, step: {"twice": 2 * step}], collapse=True, progress=False
    )
    assert h.steps == [0, 5, 7, 20]
    assert h["twice"] == [0, 10, 14, 40]
    assert "nc1/l1" in h and "weight_dnc3/l2" in h and len(h["loss"]) == 4
    assert h["loss"][-1] == pytest.approx(m.loss().item(), rel=1e-14)
    with pytest.raises(KeyError, match="no metric"):
        h["nope"]


def test_minibatch_sgd_decreases_the_loss():
    m = fd.DeepUFM(4, 8, 8, 3, weight_decay=1e-3)
    h = fd.train(m, 400, 0.05, optimizer="sgd", batch_size=8, progress=False)
    assert h["loss"][-1] < 0.5 * h["loss"][0]


@pytest.mark.parametrize("check_every", [1, 10**6])
def test_nonfinite_loss_names_the_step_and_keeps_the_last_good_checkpoint(tmp_path, check_every):
    """A state is checked before it is checkpointed, however rarely the loss is checked otherwise."""
    m = fd.DeepUFM(3, 2, 4, 3, seed=0)
    ck = tmp_path / "run.ckpt"
    with pytest.raises(fd.NonFiniteError, match=r"at step (\d+) .*last good checkpoint") as info:
        fd.train(m, 1000, 50.0, checkpoint=ck, checkpoint_every=2, check_finite_every=check_every, progress=False)
    bad_step = int(info.value.args[0].split("at step ")[1].split()[0])
    fresh = fd.DeepUFM(3, 2, 4, 3, seed=0)
    step, hist = fd.load_checkpoint(ck, fresh)
    assert 0 < step < bad_step
    fresh.check()  # finite
    assert math.isfinite(fresh.loss().item())


KILLED_RUN = textwrap.dedent(
    """
    import os, signal, sys, torch, fastdnc as fd
    ckpt, optimizer, batch = sys.argv[1], sys.argv[2], (None if sys.argv[3] == "none" else int(sys.argv[3]))
    m = fd.DeepUFM(4, 3, 8, 3, activation="relu", weight_decay=5e-3, seed=1)
    def killer(model, step):
        if step >= 350:
            os.kill(os.getpid(), signal.SIGKILL)
        return {}
    fd.train(m, 600, 0.05, optimizer=optimizer, batch_size=batch, checkpoint=ckpt, checkpoint_every=100,
             log_at=50, callbacks=[killer], progress=False)
    """
)


@pytest.mark.parametrize("optimizer, batch", [("gd", None), ("sgd", 5), ("adam", None)])
def test_killed_run_resumes_to_identical_parameters(tmp_path, optimizer, batch):
    ckpt = tmp_path / "run.ckpt"
    proc = subprocess.run(
        [sys.executable, "-c", KILLED_RUN, str(ckpt), optimizer, str(batch).lower()], capture_output=True, text=True
    )
    assert proc.returncode == -9, proc.stderr  # died by SIGKILL
    assert ckpt.exists() and not list(tmp_path.glob(".run.ckpt.*.tmp"))  # no partial temp file left
    step, _ = fd.load_checkpoint(ckpt, fd.DeepUFM(4, 3, 8, 3, activation="relu", weight_decay=5e-3, seed=1))
    assert step == 300

    resumed = fd.DeepUFM(4, 3, 8, 3, activation="relu", weight_decay=5e-3, seed=1)
    hist = fd.train(
        resumed,
        600,
        0.05,
        optimizer=optimizer,
        batch_size=batch,
        checkpoint=ckpt,
        checkpoint_every=100,
        log_at=50,
        progress=False,
    )
    straight = fd.DeepUFM(4, 3, 8, 3, activation="relu", weight_decay=5e-3, seed=1)
    fd.train(straight, 600, 0.05, optimizer=optimizer, batch_size=batch, log_at=50, progress=False)
    for a, b in zip(resumed.parameters(), straight.parameters()):
        assert torch.equal(a, b)
    assert hist.steps == list(range(0, 601, 50))


def test_resume_rejects_a_different_run(tmp_path):
    ck = tmp_path / "a.ckpt"
    fd.train(fd.DeepUFM(3, 2, 4, 2), 10, 0.1, checkpoint=ck, progress=False)
    with pytest.raises(ValueError, match=r"another configuration \(lr: 0.1 → 0.2\)"):
        fd.train(fd.DeepUFM(3, 2, 4, 2), 20, 0.2, checkpoint=ck, progress=False)
    with pytest.raises(ValueError, match=r"model.dims: \[4, 4, 3\] → \[5, 5, 3\]"):
        fd.train(fd.DeepUFM(3, 2, 5, 2), 20, 0.1, checkpoint=ck, progress=False)
    # same shapes, other model: every differing field is named
    with pytest.raises(ValueError, match=r"model.activation: 'linear' → 'relu'; model.loss: 'mse' → 'ce'"):
        fd.train(fd.DeepUFM(3, 2, 4, 2, activation="relu", loss="ce"), 20, 0.1, checkpoint=ck, progress=False)
    with pytest.raises(ValueError, match=r"model.weight_decay: \[0.005, 0.005\] → \[0.01, 0.01\]"):
        fd.train(fd.DeepUFM(3, 2, 4, 2, weight_decay=1e-2), 20, 0.1, checkpoint=ck, progress=False)
    with pytest.raises(ValueError, match=r"momentum: 0.9 → 0.5"):
        fd.train(
            fd.DeepUFM(3, 2, 4, 2),
            10,
            0.1,
            optimizer="sgd",
            momentum=0.9,
            checkpoint=tmp_path / "s.ckpt",
            progress=False,
        )
        fd.train(
            fd.DeepUFM(3, 2, 4, 2),
            20,
            0.1,
            optimizer="sgd",
            momentum=0.5,
            checkpoint=tmp_path / "s.ckpt",
            progress=False,
        )
    with pytest.raises(ValueError, match="does not fit this model"):  # a state dict that does not fit
        fd.load_checkpoint(ck, fd.DeepUFM(3, 2, 5, 2))
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read checkpoint"):
        fd.train(fd.DeepUFM(3, 2, 4, 2), 20, 0.1, checkpoint=tmp_path / "junk.ckpt", progress=False)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        fd.load_checkpoint(tmp_path / "missing.ckpt", fd.DeepUFM(3, 2, 4, 2))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(steps=-1), "steps"),
        (dict(lr=float("nan")), "lr"),
        (dict(optimizer="lbfgs"), "unknown optimizer"),
        (dict(batch_size=4), "batch_size needs optimizer"),
        (dict(optimizer="sgd", momentum=1.5), "momentum"),
        (dict(check_finite_every=0), "check_finite_every must be an integer >= 1"),
        (dict(checkpoint_every=0), "checkpoint_every must be an integer >= 1"),
        (dict(checkpoint_every=-5), "checkpoint_every must be an integer >= 1"),
    ],
)
def test_bad_training_arguments(kwargs, match):
    args = dict(steps=10, lr=0.1) | kwargs
    with pytest.raises(ValueError, match=match):
        fd.train(fd.DeepUFM(3, 2, 4, 2), progress=False, **args)


def test_generic_module_trains_through_autograd():
    class Quadratic(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.x = torch.nn.Parameter(torch.tensor([3.0, -2.0]))

        def loss(self):
            return (self.x**2).sum()

    q = Quadratic()
    h = fd.train(q, 50, 0.1, progress=False)
    assert h["loss"][-1] < 1e-8


def test_the_progress_bar_is_named(monkeypatch):
    seen = {}

    class Bar:
        def __init__(self, **kw):
            seen.update(kw)
            self.n = kw.get("initial", 0)

        def update(self, k):
            self.n += k

        def set_postfix(self, **kw):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            pass

    import sys

    monkeypatch.setattr(sys.modules["fastdnc.training.loop"], "tqdm", Bar)
    fd.train(fd.DeepUFM(3, 2, 4, 2), 5, 0.1, progress=True, label="relu_mse 2/5")
    assert seen["desc"] == "relu_mse 2/5" and seen["total"] == 5


def test_logging_does_not_change_the_mini_batch_trajectory():
    """A logged step records full-batch values but steps with the mini-batch gradient, so the
    parameters do not depend on when the history is logged."""
    models = []
    for log_at in (1, 7, None):
        m = fd.DeepUFM(3, 2, 5, 3, activation="relu", loss="ce", seed=1)
        fd.train(m, 21, 0.05, optimizer="sgd", batch_size=4, log_at=log_at)
        models.append(m)
    for other in models[1:]:
        for a, b in zip(models[0].parameters(), other.parameters()):
            assert torch.equal(a, b)


def test_the_progress_bar_measures_its_rate_after_the_densely_logged_warm_up():
    """The first steps are logged densely; an ETA from their rate would be many times too long, so
    the bar shows none during them and then measures the rate from there, keeping the elapsed time."""
    import io

    from tqdm import tqdm

    from fastdnc.training.loop import WARM_UP_FORMAT, measure_rate_from_here, warm_up_end

    assert warm_up_end(40_000, 40) == 400 and warm_up_end(50, 1) == 10 and warm_up_end(5, 1) == 5
    out = io.StringIO()
    bar = tqdm(total=1000, file=out, disable=False, bar_format=WARM_UP_FORMAT, mininterval=0)
    bar.update(100)
    assert "measuring the rate" in out.getvalue() and "step/s" not in out.getvalue() and "it/s" not in out.getvalue()
    bar.start_t -= 50.0  # the warm-up took long
    measure_rate_from_here(bar)
    assert bar.n == bar.initial == 100 and bar.format_dict["elapsed"] >= 50.0
    assert bar.format_dict["rate"] is None  # nothing measured yet: no ETA from the warm-up's rate
    bar.update(100)
    assert bar.format_dict["rate"] is None or bar.format_dict["rate"] > 100 / 50.0
    bar.close()
