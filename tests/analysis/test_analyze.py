"""fd.analyze: any nn.Module through the DNC lens; an nn.Sequential equal to an MLPHead gives the
head's analysis to 1e-10; results are strict JSON with figures; the Tracker records over training."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import fastdnc as fd
from fastdnc.analysis import LayeredSource, analyze_source


def strict(text: str):
    return json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))


def head_and_sequential(loss: str = "ce"):
    torch.manual_seed(0)
    x, y = torch.randn(6, 40, dtype=torch.float64), torch.arange(40) % 4
    head = fd.MLPHead(x, y, 8, 3, num_classes=4, activation="relu", loss=loss, bias=True, seed=1)
    seq = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4)).double()
    with torch.no_grad():
        for lin, w, b in zip([seq[0], seq[2], seq[4]], head.weights, head.biases):
            lin.weight.copy_(w)
            lin.bias.copy_(b)
    return head, seq, x, y


def test_a_sequential_equal_to_a_head_gives_the_heads_analysis():
    head, seq, x, y = head_and_sequential()
    # the sequential's loss is the fit term alone: the head's whole-model Hessian without its decay
    a = analyze_source(LayeredSource(head, decay=False))
    b = fd.analyze(seq, [(x.T[:25], y[:25]), (x.T[25:], y[25:])], nn.CrossEntropyLoss(), progress=False)
    for la, lb in zip(a.layers, b.layers):
        assert la.outliers == lb.outliers and la.expected == lb.expected and la.complete and lb.complete
        for key in ("eigenvalues", "f", "kappa"):
            torch.testing.assert_close(
                torch.tensor(getattr(lb, key)), torch.tensor(getattr(la, key)), rtol=1e-10, atol=1e-13
            )
        assert lb.overlap_top_k2 == pytest.approx(la.overlap_top_k2, rel=1e-10)
        assert lb.collapse["nc1"] == pytest.approx(la.collapse["nc1"], rel=1e-10)
    torch.testing.assert_close(
        torch.tensor(b.model.eigenvalues), torch.tensor(a.model.eigenvalues), rtol=1e-10, atol=1e-13
    )
    assert b.model.overlap_top_k2 == pytest.approx(a.model.overlap_top_k2, rel=1e-8)
    assert [l.expected.count for l in b.layers] == [4, 4, 12]  # CE, ReLU: K below the last, K(K−1) last


def test_results_are_strict_json_with_figures_and_a_report(tmp_path):
    _, seq, x, y = head_and_sequential()
    res = fd.analyze(seq, (x.T, y), nn.CrossEntropyLoss(), progress=False)
    res.layers[0].gap_ratio = float("inf")  # as at an exact DNC point: written as null with null_space
    res.layers[0].null_space = True
    paths = res.save(tmp_path / "out")
    names = sorted(p.name for p in paths)
    assert names == ["analysis.json", "density.png", "fidelity.png", "report.md", "spectra.png"]
    data = strict((tmp_path / "out" / "analysis.json").read_text())
    assert data["layers"][0]["gap_ratio"] is None and data["layers"][0]["null_space"] is True
    assert data["layers"][2]["expected_outliers"]["count"] == 12
    report = (tmp_path / "out" / "report.md").read_text()
    assert "| 4 | 4 × 8 |" in report and "the rest is the null space" in report and "![spectra](spectra.png)" in report


def test_the_mode_is_restored_and_random_models_are_refused():
    _, seq, x, y = head_and_sequential()
    seq.train()
    fd.analyze(seq, (x.T, y), nn.CrossEntropyLoss(), model_curvature=False, progress=False)
    assert seq.training
    with pytest.raises(ValueError, match="needs its data and loss"):
        fd.analyze(seq)
    with pytest.raises(ValueError, match="analyses nn.Linear layers"):
        fd.analyze(seq, (x.T, y), nn.CrossEntropyLoss(), layers=[seq[1]], progress=False)


def test_the_tracker_records_over_a_users_training_loop(tmp_path):
    torch.manual_seed(3)
    x, y = torch.randn(60, 6, dtype=torch.float64), torch.arange(60) % 3
    net = nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 3)).double()
    opt = torch.optim.SGD(net.parameters(), lr=0.2)
    tracker = fd.Tracker(net, (x, y), nn.CrossEntropyLoss(), compare_cold=True)
    for step in range(31):
        if step % 10 == 0:
            tracker.record(step)
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    assert [r.step for r in tracker.records] == [0, 10, 20, 30]
    assert tracker.products[0].keys() == {"cold"} and all(p.keys() == {"warm", "cold"} for p in tracker.products[1:])
    assert tracker.products_saved() is not None
    paths = {p.name for p in tracker.save(tmp_path)}
    assert {"records.json", "report.md", "alignment.png", "collapse.png", "spectra_0.png", "spectra_2.png"} <= paths
    assert len(strict((tmp_path / "records.json").read_text())["records"]) == 4


def test_a_record_read_back_from_json_is_the_same_analysis(tmp_path):
    """What an interrupted run keeps of its earlier records: Analysis.to_dict → from_dict is exact,
    an infinite gap (null space) included, and a Tracker restored from it saves the same report."""
    _, seq, x, y = head_and_sequential()
    tracker = fd.Tracker(seq, (x.T, y), nn.CrossEntropyLoss(), density=True)
    res = tracker.record(5)
    res.layers[1].gap_ratio, res.layers[1].null_space = float("inf"), True
    data = strict(json.dumps(res.to_dict(), allow_nan=False))
    back = fd.analysis.Analysis.from_dict(data)
    assert back.to_dict() == res.to_dict() and back.layers[1].gap_ratio == float("inf") and back.vectors == {}
    again = fd.Tracker(seq, (x.T, y), nn.CrossEntropyLoss())
    again.restore(data)
    tracker.save(tmp_path / "a")
    again.save(tmp_path / "b")
    assert (tmp_path / "a" / "report.md").read_text() == (tmp_path / "b" / "report.md").read_text()
