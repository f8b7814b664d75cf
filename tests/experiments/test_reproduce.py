"""``fastdnc reproduce --preset quick``: the README's main job, end to end, against theory."""

from __future__ import annotations

import json

import pytest

from fastdnc.cli import main


def _no_constant(constant: str):
    raise AssertionError(f"results.json is not strict JSON: {constant}")


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("quick")
    doc = out / "docs" / "theory-vs-measurement.md"
    assert main(["reproduce", "--preset", "quick", "--out", str(out), "--doc", str(doc), "--quiet"]) == 0
    return out, json.loads((out / "results.json").read_text(), parse_constant=_no_constant), doc


def test_report_figures_and_results_are_written(quick):
    out, res, doc = quick
    assert set(res["experiments"]) == {"linear_mse", "relu_mse", "linear_ce", "relu_ce", "linear_ce_deep"}
    report = (out / "report.md").read_text()
    page = doc.read_text()
    for exp in res["experiments"].values():
        for name in exp["figures"].values():
            png = out / name
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
            assert f"]({name})" in report
            figures = "theory-vs-measurement_figures"
            assert f"]({figures}/{name})" in page and (doc.parent / figures / name).exists()
    assert "| loss |" in report and res["wall_seconds"] > 0
    assert "| quantity | theory | measured | error | verdict |" in report
    for exp in res["experiments"].values():  # every row says whether it agrees, and a differing one why
        for r in exp["table"]:
            assert r["verdict"] in ("agrees", "differs", "not compared"), r
            assert r["verdict"] != "differs" or r["note"], r


def test_trained_linear_ufm_meets_every_prediction_to_1e6(quick):
    table = quick[1]["experiments"]["linear_mse"]["table"]
    errors = {r["quantity"]: r["error"] for r in table if r["error"] is not None}
    assert len(errors) > 30 and max(errors.values()) < 1e-6, max(errors.items(), key=lambda kv: kv[1])
    ranks = [r for r in table if "Papyan ranks" in r["quantity"]]
    assert ranks and all(r["theory"] == r["measured"] for r in ranks)


def test_relu_outliers_separate_and_ce_reaches_its_critical_point(quick):
    exps = quick[1]["experiments"]
    layers = exps["relu_mse"]["measured"]["layers"]
    assert all(l["gap_ratio"] > 2 if l["gap_ratio"] is not None else l["null_space"] for l in layers)  # None: no bulk
    assert layers[-1]["outliers"] == 16
    ce = {r["quantity"]: r["error"] for r in exps["linear_ce"]["table"] if r["error"] is not None}
    assert max(ce.values()) < 1e-8
    deep = exps["linear_ce_deep"]  # here gradient descent beats the DNC critical point
    row = next(r for r in deep["table"] if r["quantity"].startswith("loss at the CE DNC"))
    assert deep["measured"]["final_loss"] < row["theory"] and "lower loss" in row["note"]


def test_unknown_preset_is_refused():
    with pytest.raises(SystemExit):
        main(["reproduce", "--preset", "nope"])


def test_the_theory_page_summary_lists_every_row_that_differs():
    from fastdnc.experiments.reproduce import summary
    from fastdnc.experiments.ufm_comparison import row, verdict

    table = [
        row("loss", 1.0, 1.0, 1e-12),
        row("overlap", 1.0, 0.893, 0.107, "not converged"),
        row("rank", 16, 16, None),
        row("outliers", 4, 9, None),
        row("levels", 1.0, "nan", float("nan")),
    ]
    for r in table:
        r["verdict"] = verdict(r)
    assert [r["verdict"] for r in table] == ["agrees", "differs", "agrees", "differs", "differs"]
    text = "\n".join(summary({"experiments": {"linear_mse": {"table": table}}}))
    assert "* `linear_mse`: 2 of 5 compared rows agree (largest relative error 0.11)." in text
    assert "`linear_mse` overlap: 0.107 (not converged)" in text and "`linear_mse` levels: nan (no note)" in text
    assert "`linear_mse` outliers: count (no note)" in text and "loss:" not in text


@pytest.mark.parametrize(
    ("final", "reason"),
    [(0.8, "expected: training found a loss 20.0% below"), (1.5, "not converged"), (1.0 + 1e-5, "unexplained")],
)
def test_every_row_beyond_the_tolerance_gets_the_reason_its_loss_shows(final, reason):
    from fastdnc.experiments.ufm_comparison import explain

    table = [
        {"quantity": "loss", "error": 1e-12, "note": ""},
        {"quantity": "levels", "error": 0.3, "note": ""},
        {"quantity": "alpha", "error": float("nan"), "note": ""},
        {"quantity": "kept", "error": 0.5, "note": "its own note"},
    ]
    notes = [r["note"] for r in explain(table, final, 1.0, "the DNC point")]
    assert notes[0] == "" and notes[3] == "its own note"
    assert notes[1].startswith(reason) and notes[2] == notes[1] and "the DNC point" in notes[1]


def test_a_resumed_reproduce_says_so_in_the_report_header():
    from fastdnc.experiments.reproduce import resumed_note

    fresh = {"a": {"resumed_from": 0, "train_seconds": 3.0, "analysis_seconds": 1.0}}
    assert resumed_note(fresh) == ""
    resumed = {**fresh, "b": {"resumed_from": 400, "train_seconds": 5.0, "analysis_seconds": 2.0}}
    note = resumed_note(resumed)
    assert "This run resumed b from step 400" in note and "a from" not in note
    assert "training took 8.0 s over all runs, analysis 3.0 s in this one" in note


@pytest.mark.parametrize("preset", ["quick", "paper"])
def test_section_and_figure_titles_are_unique_within_a_preset(preset):
    from fastdnc.experiments.reproduce import PRESETS

    titles = [cfg.title for cfg in PRESETS[preset]]
    assert len(set(titles)) == len(titles), titles
