"""Issue #27: benchmark sets drawn so that T shares no normalised input with anything a model trains, selects or is
prompted on, and repeats none within itself."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import pandas as pd

from mckd_core.data import draw_test, normalized_input, sample_sets


def _rows(prefix: str, inputs: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"id": [f"{prefix}{i}" for i in range(len(inputs))], "input": inputs, "target": inputs})


def _keys(df: pd.DataFrame) -> set[str]:
    return set(df["input"].map(normalized_input))


def test_t_shares_no_normalised_input_with_l_u_or_dev_and_repeats_none():
    pool = _rows("p", ["Figure 1", "Abstract", "Results", *[f"pool sentence {i}" for i in range(20)]])
    # The test split repeats the pool's section headers in other case and spacing, and itself.
    test = _rows(
        "t",
        [
            "figure  1",
            "ABSTRACT",
            " Results ",
            "Methods",
            "methods",
            "Discussion",
            "Discussion",
            *[f"test sentence {i}" for i in range(20)],
        ],
    )
    dev = _rows("d", ["Test sentence 3", "dev sentence"])
    for seed in range(5):
        sets = sample_sets(pool, test, 8, 15, 12, seed, dev=dev)
        t = sets["test"]
        assert len(t) == 12 and t["input"].map(normalized_input).is_unique
        for name in ("labeled", "unlabeled", "dev"):
            assert not _keys(t) & _keys(sets[name]), (seed, name)
    # With L and U taking the whole pool, no header of it is left in T, and only one "Methods" / "Discussion".
    everything = sample_sets(pool, test, 3, 20, 100, 0, dev=dev)["test"]
    assert not _keys(everything) & {"figure 1", "abstract", "results", "test sentence 3"}
    assert sorted(everything["input"].map(normalized_input).value_counts().unique()) == [1]
    assert len(everything) == len(test) - 3 - 2 - 1  # 3 in L/U, 2 repeats, 1 in dev


def test_where_nothing_overlaps_t_is_the_draw_it_was_before_the_rule():
    test = _rows("t", [f"sentence {i}" for i in range(300)])
    for seed in range(3):
        assert draw_test(test, 50, seed, exclude=set()).equals(test.sample(n=50, random_state=seed))
    # An excluded row is replaced by the next one of the same seeded order; the others stay.
    before = test.sample(n=50, random_state=0)
    after = draw_test(test, 50, 0, exclude={normalized_input(before["input"].iloc[4])})
    assert list(after["id"][:4]) == list(before["id"][:4]) and list(after["id"][4:49]) == list(before["id"][5:])


def _quality():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "quality.py"
    spec = importlib.util.spec_from_file_location("bench_quality", path)
    quality = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(quality)
    return quality


def test_the_quality_benchmark_sets_keep_t_apart_from_l_u_dev_and_sft_n():
    quality = _quality()
    args = argparse.Namespace(labeled=50, unlabeled=200, test=200, sft_n=200, dev=20, max_words=12, draw_unlabeled=None)
    sets = quality.task_sets("atis", args, 0)
    t = _keys(sets["test"])
    assert len(sets["test"]) == 200 and len(t) == 200
    for name in ("labeled", "unlabeled", "dev", "sft_n_labeled"):
        assert not t & _keys(sets[name]), name
    assert not _keys(sets["dev"]) & _keys(sets["sft_n_labeled"])


def test_the_points_of_a_u_curve_share_l_t_dev_and_sft_n_and_each_u_holds_the_smaller_ones():
    quality = _quality()
    sizes = dict(labeled=50, test=200, sft_n=200, dev=20, max_words=12, draw_unlabeled=800)
    points = {u: quality.task_sets("atis", argparse.Namespace(unlabeled=u, **sizes), 0) for u in (200, 400, 800)}
    for name in ("labeled", "test", "dev", "sft_n_labeled"):
        assert all(points[u][name]["id"].tolist() == points[800][name]["id"].tolist() for u in (200, 400)), name
    assert [len(points[u]["unlabeled"]) for u in (200, 400, 800)] == [200, 400, 800]
    assert points[400]["unlabeled"]["id"].tolist()[:200] == points[200]["unlabeled"]["id"].tolist()
    assert points[800]["unlabeled"]["id"].tolist()[:400] == points[400]["unlabeled"]["id"].tolist()
    # T and the dev rows stay apart from the largest U, so from every U.
    assert not _keys(points[800]["test"]) & _keys(points[800]["unlabeled"])
    assert not _keys(points[800]["dev"]) & _keys(points[800]["unlabeled"])
    # Without it, a run draws its dev rows after its own U: the sets of U=200 alone differ from the curve's.
    alone = quality.task_sets("atis", argparse.Namespace(unlabeled=200, **{**sizes, "draw_unlabeled": None}), 0)
    assert alone["unlabeled"]["id"].tolist() == points[200]["unlabeled"]["id"].tolist()
    assert alone["dev"]["id"].tolist() != points[200]["dev"]["id"].tolist()
