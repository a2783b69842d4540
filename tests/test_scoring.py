"""Issue #17: bootstrap CIs (mckd_core.stats), per-row scoring and comparisons (mckd_core.scoring), their place in
report.md / f1_by_stage.png / `mckd eval`, and the CI pooled over seeds of benchmarks/quality.py."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from flows.cli import app
from mckd_core.formats import get_format
from mckd_core.formats.slots import prf
from mckd_core.report import plotted, render_markdown, write_report
from mckd_core.scoring import comparisons, dev_margins, score_predictions, write_test_rows
from mckd_core.stats import (
    bootstrap_ci,
    hierarchical_paired_bootstrap,
    mean_f1,
    micro_f1,
    paired_bootstrap,
    paired_randomization_p,
    pooled_paired_bootstrap,
)

SLOTS = get_format("slots")


# --- the bootstrap on cases with a known answer -------------------------------------------------------------------


def test_identical_systems_differ_by_zero():
    stats = np.random.default_rng(1).random((50, 1))
    assert paired_bootstrap(stats, stats.copy(), mean_f1) == {"diff": 0.0, "ci95": [0.0, 0.0]}
    counts = np.random.default_rng(2).integers(0, 4, size=(40, 3))
    assert paired_bootstrap(counts, counts, micro_f1) == {"diff": 0.0, "ci95": [0.0, 0.0]}


def test_equal_but_unpaired_noise_gives_a_ci_around_zero():
    rng = np.random.default_rng(3)
    a, b = rng.random((200, 1)), rng.random((200, 1))  # two systems of the same quality, different per sentence
    result = paired_bootstrap(a, b, mean_f1)
    assert result["ci95"][0] < 0 < result["ci95"][1]


def test_a_dominating_system_has_a_ci_above_zero():
    rng = np.random.default_rng(4)
    b = rng.random((60, 1)) * 0.5
    a = b + 0.1 + rng.random((60, 1)) * 0.05  # better on every sentence
    result = paired_bootstrap(a, b, mean_f1)
    assert result["diff"] == pytest.approx(float(mean_f1(a) - mean_f1(b)))
    assert 0 < result["ci95"][0] <= result["diff"] <= result["ci95"][1]
    assert paired_bootstrap(b, a, mean_f1)["ci95"][1] < 0


def test_bootstrap_is_seeded_and_the_one_sample_ci_brackets_the_score():
    stats = np.random.default_rng(5).random((30, 1))
    assert bootstrap_ci(stats, mean_f1, seed=7) == bootstrap_ci(stats, mean_f1, seed=7)
    assert bootstrap_ci(stats, mean_f1, seed=7) != bootstrap_ci(stats, mean_f1, seed=8)
    lo, hi = bootstrap_ci(stats, mean_f1)
    assert lo < float(mean_f1(stats)) < hi
    # one value repeated: nothing varies
    assert bootstrap_ci(np.full((10, 1), 0.5), mean_f1) == [50.0, 50.0]


def test_bootstrap_rejects_unpaired_or_empty_rows():
    with pytest.raises(ValueError, match="same test rows"):
        paired_bootstrap(np.zeros((3, 1)), np.zeros((4, 1)), mean_f1)
    with pytest.raises(ValueError, match="non-empty"):
        bootstrap_ci(np.zeros((0, 1)), mean_f1)


def test_micro_f1_is_conlleval_prf_and_scores_resamples_at_once():
    counts = np.array([[1, 2, 1], [0, 1, 2], [3, 3, 4], [0, 0, 0]])
    assert float(micro_f1(counts)) == prf(4, 6, 7)["f1"]
    stacked = np.stack([counts, counts[[0, 0, 1, 1]], np.zeros_like(counts)])  # (resamples, rows, k)
    assert micro_f1(stacked).tolist() == [prf(4, 6, 7)["f1"], prf(2, 6, 6)["f1"], 0.0]


def test_pooled_bootstrap_averages_the_seeds():
    rng = np.random.default_rng(6)
    pairs = []
    for n, gain in ((20, 0.2), (30, 0.1), (25, 0.15)):  # three seeds, each its own test rows
        b = rng.random((n, 1)) * 0.5
        pairs.append((b + gain, b))
    pooled = pooled_paired_bootstrap(pairs, mean_f1)
    assert pooled["runs"] == 3
    assert pooled["diff"] == pytest.approx(np.mean([20.0, 10.0, 15.0]))
    assert pooled["ci95"] == pytest.approx([15.0, 15.0])  # constant gains: no row noise to resample
    same = pooled_paired_bootstrap([(b, b) for _, b in pairs], mean_f1)
    assert (same["diff"], same["ci95"]) == (0.0, [0.0, 0.0])
    noisy = [(rng.random((40, 1)), rng.random((40, 1))) for _ in range(3)]
    lo, hi = pooled_paired_bootstrap(noisy, mean_f1)["ci95"]
    assert lo < 0 < hi


def test_hierarchical_bootstrap_of_identical_systems_is_zero_and_of_exchangeable_ones_brackets_zero():
    rng = np.random.default_rng(8)
    seeds = [rng.random((n, 1)) for n in (30, 40, 50)]
    same = hierarchical_paired_bootstrap([(b, b.copy()) for b in seeds], mean_f1)
    assert (same["diff"], same["ci95"], same["runs"], same["per_seed"]) == (0.0, [0.0, 0.0], 3, [0.0, 0.0, 0.0])
    counts = rng.integers(0, 3, size=(3, 40, 3))
    assert hierarchical_paired_bootstrap([(c, c) for c in counts], micro_f1)["ci95"] == [0.0, 0.0]
    # Two systems drawn alike on every seed: the interval is around 0, and contains it.
    alike = [(rng.random((60, 1)), rng.random((60, 1))) for _ in range(4)]
    lo, hi = hierarchical_paired_bootstrap(alike, mean_f1)["ci95"]
    assert lo < 0 < hi and abs(lo + hi) < hi - lo


def test_one_seed_flipping_the_sign_makes_the_hierarchical_interval_cross_zero_where_the_row_level_one_does_not():
    rng = np.random.default_rng(9)
    pairs = []
    for gain in (0.05, 0.05, -0.04):  # +5, +5 and -4 F1: the third seed's models rank the other way
        b = rng.random((400, 1)) * 0.8
        pairs.append((b + gain + rng.normal(0, 0.02, size=b.shape), b))
    rows_only = pooled_paired_bootstrap(pairs, mean_f1)
    seeds = hierarchical_paired_bootstrap(pairs, mean_f1)
    assert seeds["diff"] == pytest.approx(rows_only["diff"]) and seeds["diff"] == pytest.approx(2.0, abs=0.1)
    assert [round(gap) for gap in seeds["per_seed"]] == [5, 5, -4]
    assert rows_only["ci95"][0] > 0  # the trained models held fixed: 1,200 rows make +2 look certain
    assert seeds["ci95"][0] < 0 < seeds["ci95"][1]  # all three draws from the third seed happen 1 time in 27
    assert seeds["ci95"][0] == pytest.approx(-4.0, abs=0.5) and seeds["ci95"][1] == pytest.approx(5.0, abs=0.5)


def test_hierarchical_bootstrap_is_reproducible_with_its_seed():
    rng = np.random.default_rng(10)
    pairs = [(rng.integers(0, 3, size=(25, 3)), rng.integers(0, 3, size=(25, 3))) for _ in range(3)]
    once = hierarchical_paired_bootstrap(pairs, micro_f1, seed=3)
    assert once == hierarchical_paired_bootstrap(pairs, micro_f1, seed=3)
    assert once["ci95"] != hierarchical_paired_bootstrap(pairs, micro_f1, seed=4)["ci95"]
    with pytest.raises(ValueError, match="same test rows"):
        hierarchical_paired_bootstrap([(np.zeros((3, 1)), np.zeros((4, 1)))], mean_f1)


def test_randomization_p_is_one_for_identical_systems_and_its_floor_for_one_better_on_every_row():
    rng = np.random.default_rng(11)
    counts = rng.integers(0, 3, size=(30, 3))
    assert paired_randomization_p(counts, counts.copy(), micro_f1) == 1.0
    low = rng.random((30, 1)) * 0.5
    assert paired_randomization_p(low + 0.3, low, mean_f1) == pytest.approx(1 / 1001)  # no swap does as well
    assert paired_randomization_p(low, low + 0.3, mean_f1) == 1.0  # one-sided: worse is never "above"
    noisy = low + rng.normal(0, 0.1, size=low.shape)
    assert paired_randomization_p(noisy, low, mean_f1, seed=2) == paired_randomization_p(noisy, low, mean_f1, seed=2)


def test_randomization_p_of_interchangeable_systems_is_below_alpha_at_most_alpha_of_the_time():
    rng = np.random.default_rng(12)
    ps = []
    for draw in range(300):
        pair = rng.integers(0, 3, size=(2, 12, 3))  # 12 rows, the two systems drawn alike
        ps.append(paired_randomization_p(pair[0], pair[1], micro_f1, resamples=200, seed=draw))
    assert np.mean(np.asarray(ps) <= 0.05) <= 0.05 + 0.03  # 300 draws: 0.05 plus three standard errors


# --- per-row scoring and comparisons -----------------------------------------------------------------------------


def _slots_rows():
    return pd.DataFrame(
        {
            "id": ["a", "b", "c"],
            "input": ["from boston", "to dallas", "fly now"],
            "target": ["from [fromloc.city_name boston]", "to [toloc.city_name dallas]", "fly now"],
        }
    )


def test_row_stats_aggregate_to_the_metric_of_each_format():
    df = _slots_rows()
    preds = ["from [fromloc.city_name boston]", "to dallas", "fly [x now]"]
    stats = SLOTS.row_stats(list(df["input"]), list(df["target"]), preds)
    assert stats.tolist() == [[1, 1, 1], [0, 0, 1], [0, 1, 0]]
    assert float(SLOTS.aggregate(stats)) == SLOTS.metrics(list(df["input"]), list(df["target"]), preds)["f1"]
    text = get_format("text")
    assert (
        float(text.aggregate(text.row_stats(["", ""], ["a b", "c"], ["a", None])))
        == text.metrics(["", ""], ["a b", "c"], ["a", None])["f1"]
    )


def test_score_predictions_adds_the_ci_and_the_rows_by_id():
    df = _slots_rows()
    scored = score_predictions(df, ["from [fromloc.city_name boston]", "to dallas", None], "slots")
    assert scored["rows"] == {"id": ["a", "b", "c"], "stats": [[1, 1, 1], [0, 0, 1], [0, 0, 0]]}
    assert scored["f1"] == pytest.approx(200 / 3) and len(scored["ci95"]) == 2
    # constituency reads the rows' gold POS where they have it
    trees = pd.DataFrame(
        {"id": ["s"], "input": ["The cat sat ."], "target": ["( ( The cat ) ( sat . ) )"], "pos": ["DT NN VBD ."]}
    )
    assert score_predictions(trees, ["( The ( cat ( sat . ) ) )"], "constituency")["f1"] == pytest.approx(50.0)
    assert score_predictions(trees.drop(columns="pos"), ["( The ( cat ( sat . ) ) )"], "constituency")[
        "f1"
    ] == pytest.approx(200 / 3)


def test_comparisons_pair_the_rows_by_id(tmp_path):
    df = _slots_rows()
    gold = list(df["target"])
    final = score_predictions(df, gold, "slots")
    teacher = score_predictions(df.iloc[::-1], ["fly now", "to dallas", "from boston"], "slots")  # other row order
    result = comparisons({"final": final, "teacher": teacher, "sft": None}, "slots")
    assert list(result) == ["final - teacher"]
    assert result["final - teacher"]["diff"] == pytest.approx(100.0)
    assert comparisons({"final": final, "self": score_predictions(df, gold, "slots")}, "slots")["final - self"] == {
        "diff": 0.0,
        "ci95": [0.0, 0.0],
    }
    assert comparisons({"teacher": teacher}, "slots") == {}  # no final student scored: nothing to compare
    with pytest.raises(ValueError, match="different test rows"):
        comparisons({"final": final, "teacher": score_predictions(df.iloc[:2], gold[:2], "slots")}, "slots")
    path = write_test_rows({"final": final, "sft": None}, "slots", tmp_path)
    assert json.loads(path.read_text()) == {"task": "slots", "systems": {"final": final["rows"]}}


def test_dev_margins_are_each_candidate_minus_the_final_student_with_its_ci_and_p():
    df = _slots_rows()
    gold = list(df["target"])
    final = score_predictions(df, ["fly now"] * 3, "slots")  # finds nothing
    perfect = score_predictions(df.iloc[::-1], gold[::-1], "slots")  # every chunk, rows in another order
    margins = dev_margins(
        {"final": final, "sft": perfect, "mckd-2": score_predictions(df, ["fly now"] * 3, "slots"), "vanilla-kd": None},
        "slots",
    )
    assert list(margins) == ["sft", "mckd-2"]
    assert margins["sft"]["diff"] == pytest.approx(100.0) and margins["sft"]["ci95"][1] == pytest.approx(100.0)
    # 2 rows with a chunk, both found by sft only: 1 swap in 4 does as well (1 + ~250) / 1001.
    assert margins["sft"]["p"] == pytest.approx(0.25, abs=0.04)
    assert margins["mckd-2"] == {"diff": 0.0, "ci95": [0.0, 0.0], "p": 1.0}
    assert dev_margins({"sft": perfect}, "slots") == {}  # no final student: nothing to compare with


# --- report.md, the figure, mckd eval ----------------------------------------------------------------------------


def hand_made_report() -> dict:
    """A 3-stage constituency run with CIs, comparisons and gold for U (the figure's second panel)."""

    def test(f1, lo, hi):
        return {"f1": f1, "exact_match": 10.0, "f1_kim": f1 - 15, "ci95": [lo, hi]}

    students = lambda f1s: [
        {
            "partition": k,
            "train_rows": 20,
            "dev_f1": 40.0,
            "epochs": 3,
            "seconds": 9.0,  # noqa: E731
            "test": test(f1, f1 - 8, f1 + 7),
        }
        for k, f1 in enumerate(f1s)
    ]
    return {
        "config": {"run_name": "craft-demo", "data": {"task": "constituency"}, "stages": {"num_stages": 3}},
        "counts": {"labeled": 50, "unlabeled": 40, "test": 20, "teacher_valid": 36, "teacher_invalid": 4, "sft_n": 100},
        "teacher": {"test": test(48.0, 40.5, 55.0), "pseudolabel_f1": 41.0},
        "stages": [
            {"stage": 1, "students": students([44.0, 47.0]), "pseudolabel_f1": 45.5, "changed_fraction": 0.4},
            {"stage": 2, "students": students([50.0, 49.0]), "pseudolabel_f1": 48.2, "changed_fraction": 0.2},
        ],
        "final_student": {
            "dir": "/nonexistent",
            "dev_f1": 45.0,
            "train_rows": 40,
            "epochs": 3,
            "seconds": 9.0,
            "test": test(53.0, 46.0, 60.0),
        },
        "baselines": {
            "sft": {"test": test(45.0, 38.0, 52.0)},
            "vanilla-kd": {"test": test(49.0, 41.0, 56.0)},
            "mckd-2": {"test": test(51.0, 44.0, 58.0)},
            "sft-n": {"test": test(60.0, 53.0, 66.0)},
        },
        "comparisons": {
            "final - teacher": {"diff": 5.0, "ci95": [0.5, 9.5]},
            "final - sft-n": {"diff": -7.0, "ci95": [-12.0, -2.0]},
        },
    }


def test_report_md_shows_the_cis_the_comparisons_and_the_metric():
    md = render_markdown(hand_made_report())
    assert "| teacher (few-shot) | 48.0 | [40.5, 55.0] | 10.0 | 41.0 |" in md
    assert "| stage 1 students | 45.5 | — |" in md
    assert "| MCKD-3 — final student | 53.0 | [46.0, 60.0] |" in md
    assert "| final - teacher | +5.0 | [+0.5, +9.5] |" in md and "| final - sft-n | -7.0 | [-12.0, -2.0] |" in md
    assert "MCKD authors' sentence-mean span F1" in md and "`f1_kim`" in md


def test_figure_has_every_row_with_its_ci_and_the_labels_of_u(tmp_path):
    report = hand_made_report()
    shown = plotted(report)
    assert [b[0] for b in shown.bars] == [
        "teacher (few-shot)",
        "stage 1 student 0",
        "stage 1 student 1",
        "stage 2 student 0",
        "stage 2 student 1",
        "SFT on L (50 gold)",
        "vanilla KD (MCKD-1)",
        "MCKD-2",
        "MCKD-3 — final student",
        "SFT-N (100 gold, upper bound)",
    ]
    assert shown.bars[0] == ["teacher (few-shot)", 48.0, [40.5, 55.0], "teacher"]
    assert shown.labels == [["Y0 teacher", 41.0], ["Y1 stage 1", 45.5], ["Y2 stage 2", 48.2]]
    write_report(report, tmp_path)
    assert (tmp_path / "f1_by_stage.png").stat().st_size > 10_000
    # without gold for U (and without CIs, as in reports written before them) it is one panel of plain bars
    for row in [report["teacher"], report["final_student"], *report["baselines"].values()]:
        row["test"].pop("ci95")
        row.pop("pseudolabel_f1", None)
    for stage in report["stages"]:
        stage["pseudolabel_f1"] = None
    assert plotted(report).labels == [] and plotted(report).bars[0][2] is None
    write_report(report, tmp_path / "plain")
    assert (tmp_path / "plain" / "f1_by_stage.png").is_file()


def test_mckd_eval_prints_both_constituency_metrics_and_the_ci(tmp_path):
    gold = pd.DataFrame(
        {
            "id": ["1", "2"],
            "input": ["The cat sat .", "x y"],
            "target": ["( ( The cat ) ( sat . ) )", "( x y )"],
            "pos": ["DT NN VBD .", "NN NN"],
        }
    )
    pred = pd.DataFrame({"id": ["1", "2"], "label": ["( The ( cat ( sat . ) ) )", "( x y )"]})
    gold.to_parquet(tmp_path / "gold.parquet")
    pred.to_json(tmp_path / "pred.jsonl", orient="records", lines=True)
    result = CliRunner().invoke(
        app,
        [
            "eval",
            "--task",
            "constituency",
            "--gold",
            str(tmp_path / "gold.parquet"),
            "--pred",
            str(tmp_path / "pred.jsonl"),
        ],
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert metrics["f1"] == pytest.approx((50 + 100) / 2)  # the authors': '.' dropped by its gold tag
    # Kim et al.: on the words given ('.' kept), {(0,2), (2,4)} vs {(1,4), (2,4)}; the two-word sentence is skipped
    assert metrics["f1_kim"] == 50.0 and metrics["n_sentence_f1"] == 1
    assert len(metrics["ci95"]) == 2 and "rows" not in metrics


# --- benchmarks/quality.py: the CI pooled over seeds -------------------------------------------------------------


def _quality():
    spec = importlib.util.spec_from_file_location(
        "bench_quality", Path(__file__).resolve().parents[1] / "benchmarks" / "quality.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quality_pools_each_comparison_over_seeds():
    quality = _quality()
    rng = np.random.default_rng(9)
    runs = []
    for seed, n in enumerate((20, 24)):
        ids = [f"s{seed}-{i}" for i in range(n)]
        base = rng.random((n, 1)) * 0.5
        systems = {
            name: {"id": ids, "stats": (base + gain).tolist()}
            for name, gain in (
                ("teacher", 0.0),
                ("sft", 0.1),
                ("vanilla-kd", 0.2),
                ("mckd-2", 0.3),
                ("final", 0.3),
                ("sft-n", 0.4),
            )
        }
        runs.append({"task": "craft", "seed": seed, "test_rows": systems})  # as quality.json records them
    pooled = quality.pooled_comparisons(quality.per_row_stats(runs), "craft")
    assert list(pooled) == [
        "mckd-3 - teacher",
        "mckd-3 - sft",
        "mckd-3 - vanilla-kd",
        "mckd-3 - mckd-2",
        "mckd-3 - sft-n",
    ]
    assert pooled["mckd-3 - teacher"]["diff"] == pytest.approx(30.0) and pooled["mckd-3 - teacher"]["runs"] == 2
    assert pooled["mckd-3 - mckd-2"] == {
        "diff": 0.0,
        "ci95": [0.0, 0.0],
        "runs": 2,
        "ci95_seeds": [0.0, 0.0],
        "per_seed": [0.0, 0.0],
    }
    assert pooled["mckd-3 - sft-n"]["ci95"] == pytest.approx([-10.0, -10.0])
    assert pooled["mckd-3 - sft-n"]["ci95_seeds"] == pytest.approx([-10.0, -10.0])  # the seeds agree: no wider
    assert quality.pooled_interval(pooled["mckd-3 - sft-n"]) == "-10.0 [-10.0, -10.0] / [-10.0, -10.0] (-10.0, -10.0)"
    # a run without per-row statistics (recorded before them): no pooled CI
    assert quality.per_row_stats(runs + [{"task": "craft", "seed": 2}]) is None


def test_quality_reruns_runs_of_an_older_metric_or_recipe(tmp_path):
    quality = _quality()
    sizes = {"labeled": 50}
    guard = {"name": "final", "dev": {}}
    old = {"task": "craft", "seed": 0, "sizes": sizes, "deliverable": guard}  # before `metric`: f1 is Kim et al.'s
    old_atis = {"task": "atis", "seed": 0, "sizes": sizes}  # ATIS's metric did not change, its recipe did (dev rows)
    atis = {"task": "atis", "seed": 1, "sizes": sizes, "deliverable": guard, "t_disjoint": True}
    new = {
        "task": "craft",
        "seed": 1,
        "sizes": sizes,
        "metric": quality.METRIC["craft"],
        "deliverable": guard,
        "t_disjoint": True,
    }
    overlapping_t = {**new, "seed": 2, "t_disjoint": None}  # T drawn before issue #27: it may share sentences with U
    (tmp_path / "q.json").write_text(json.dumps({"runs": [old, old_atis, atis, new, overlapping_t]}))
    assert quality.finished_runs(tmp_path / "q.json", sizes) == [atis, new]
    assert len(quality.finished_runs(tmp_path / "q.json")) == 5  # all are kept in the file
    assert quality.current(overlapping_t)  # and still in the tables of what was measured
