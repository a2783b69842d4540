"""benchmarks/ scripts' pure helpers (no timing is asserted anywhere)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
if str(BENCHMARKS) not in sys.path:  # the measurement modules import harness as their sibling, as when run.py runs
    sys.path.insert(0, str(BENCHMARKS))


def _load(name: str):
    """A benchmarks/ script as a module (they are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


harness = _load("harness")


def test_linear_fit_recovers_slope_intercept_and_r2():
    fit = harness.linear_fit([1, 2, 3, 4], [2.5, 4.5, 6.5, 8.5])
    assert (
        fit["slope"] == pytest.approx(2.0)
        and fit["intercept"] == pytest.approx(0.5)
        and fit["r2"] == pytest.approx(1.0)
    )
    noisy = harness.linear_fit([0, 1, 2, 3], [0.0, 1.0, 1.0, 3.0])
    assert noisy["slope"] == pytest.approx(0.9) and noisy["r2"] == pytest.approx(4.5**2 / (5 * 4.75))
    with pytest.raises(ValueError):
        harness.linear_fit([1, 1], [1, 2])


def test_interleave_and_verdicts():
    assert harness.interleave(["a", "b"], 2) == [(0, "a"), (0, "b"), (1, "a"), (1, "b")]
    assert harness.verdict(0.04, 0.05, "max") == "met" and harness.verdict(0.06, 0.05, "max") == "missed"
    assert harness.verdict(0.9, 1.0, "min") == "missed"


def test_toy_pool_inputs_are_distinct():
    pool = harness.toy_pool(100)
    assert pool["input"].is_unique and pool["id"].is_unique and len(pool) == 100


def test_union_of_node_intervals_counts_each_busy_second_once():
    union = _load("overhead").union_seconds
    assert union([]) == 0.0
    assert union([(5.0, 6.0), (0.0, 2.0)]) == pytest.approx(3.0)  # disjoint, given out of order
    assert union([(0.0, 2.0), (1.0, 4.0)]) == pytest.approx(4.0)  # overlapping
    assert union([(0.0, 10.0), (2.0, 3.0), (4.0, 5.0)]) == pytest.approx(10.0)  # nested
    # the three kinds at once: one nested in the first, one overlapping and reaching past it, one apart
    assert union([(0.0, 4.0), (1.0, 2.0), (3.0, 6.0), (8.0, 9.0)]) == pytest.approx(7.0)


def test_label_quality_scores_each_stage_of_a_run_dir(tmp_path):
    import json

    import pandas as pd

    quality = _load("label_quality")
    run = tmp_path / "run"
    (run / "teacher").mkdir(parents=True)
    (run / "stage-1").mkdir()
    (run / "report.json").write_text(json.dumps({"config": {"data": {"task": "slots"}}}))
    gold = "flights from [fromloc.city_name boston] to [toloc.city_name denver]"
    rows = lambda label, valid: pd.DataFrame(
        {
            "id": ["a", "b"],
            "input": ["flights from boston to denver"] * 2,  # noqa: E731
            "target": [gold] * 2,
            "label": label,
            "valid": valid,
        }
    )
    # Teacher: one row tags only the first slot, one is invalid (an empty prediction): 1 of 4 gold chunks.
    rows(["flights from [fromloc.city_name boston] to denver", "garbage"], [True, False]).to_parquet(
        run / "teacher" / "labels-a.parquet"
    )
    rows([gold, gold], [True, True]).to_parquet(run / "stage-1" / "labels-b.parquet")
    # Stage 2 falls back to the teacher's first row on both rows: 2 of 4 gold chunks.
    (run / "stage-2").mkdir()
    rows(["flights from [fromloc.city_name boston] to denver"] * 2, [True, True]).to_parquet(
        run / "stage-2" / "labels-d.parquet"
    )
    result = quality.label_quality(run)
    labels = result["labels"]
    assert list(labels) == ["teacher", "stage-1", "stage-2"]
    assert {k: labels["teacher"][k] for k in ("f1", "precision", "recall", "invalid")} == {
        "f1": 40.0,
        "precision": 100.0,
        "recall": 25.0,
        "invalid": 50.0,
    }
    assert labels["stage-1"]["recall"] == 100.0 and labels["stage-1"]["invalid"] == 0.0
    assert labels["stage-1"]["ci95"] == [100.0, 100.0]
    # Gains are paired on U's rows: stage 1 vs the teacher only; stage 2 vs the teacher and vs stage 1.
    assert set(result["gain"]["stage-1"]) == {"vs teacher"}
    assert result["gain"]["stage-1"]["vs teacher"]["diff"] == 60.0
    assert result["gain"]["stage-2"]["vs teacher"]["diff"] == pytest.approx(66.7 - 40.0, abs=0.1)
    assert result["gain"]["stage-2"]["vs previous"]["diff"] == pytest.approx(66.7 - 100.0, abs=0.1)
    assert quality.label_quality(run, with_gains=False) == {k: v for k, v in result.items() if k != "gain"}
    (run / "stage-2" / "labels-d.parquet").unlink()
    (run / "stage-2").rmdir()
    # stages.first_labels: sft: the SFT student's Y_0 sits between the teacher's labels and stage 1's.
    (run / "sft-labels").mkdir()
    rows([gold, "flights from boston to denver"], [True, True]).to_parquet(run / "sft-labels" / "labels-e.parquet")
    result = quality.label_quality(run)
    assert list(result["labels"]) == ["teacher", "sft", "stage-1"] and result["labels"]["sft"]["recall"] == 50.0
    assert result["gain"]["stage-1"]["vs previous"]["diff"] == pytest.approx(100.0 - 66.7, abs=0.1)
    # A node the cache answered: report.json names its file in the run that wrote it, not in this run's dir.
    elsewhere = tmp_path / "earlier-run" / "sft-labels"
    elsewhere.mkdir(parents=True)
    (run / "sft-labels" / "labels-e.parquet").rename(elsewhere / "labels-e.parquet")
    files = {"teacher": "teacher/labels-a.parquet", "sft": str(elsewhere / "labels-e.parquet")}
    files |= {"stage-1": "stage-1/labels-b.parquet", "final": "final/labels/relabels-x.parquet"}
    (run / "report.json").write_text(
        json.dumps({"config": {"data": {"task": "slots"}}, "files": {"labels_of_unlabeled": files}})
    )
    assert quality.label_quality(run)["labels"]["sft"]["recall"] == 50.0
    (run / "report.json").write_text(json.dumps({"config": {"data": {"task": "slots"}}}))
    (elsewhere / "labels-e.parquet").rename(run / "sft-labels" / "labels-e.parquet")
    (run / "sft-labels" / "labels-e.parquet").unlink()
    (run / "sft-labels").rmdir()
    (run / "stage-1" / "labels-c.parquet").write_bytes((run / "stage-1" / "labels-b.parquet").read_bytes())
    with pytest.raises(SystemExit, match="stage-1: expected one labels"):
        quality.label_quality(run)
    (run / "stage-1" / "labels-c.parquet").unlink()
    rows([gold, gold], [True, True]).assign(target=None).to_parquet(run / "stage-1" / "labels-b.parquet")
    with pytest.raises(SystemExit, match="no gold `target`"):  # a user's run: U without gold
        quality.label_quality(run)


def test_gold_partition_takes_the_stage_students_rows_with_gold_labels(tmp_path):
    import pandas as pd

    gold_partition = _load("gold_partition")
    run = tmp_path / "run"
    for sub in ("teacher", "data", "stage-1"):
        (run / sub).mkdir(parents=True)
    ids = ["a", "b", "c", "d"]
    teacher = pd.DataFrame(
        {
            "id": ids,
            "input": ["w1", "w2", "w3", "w4"],
            "target": ["( w1 )", "( w2 )", "( w3 )", "( w4 )"],
            "label": ["T1", "T2", "T3", None],
            "raw": ["T1", "T2", "T3", "x"],
            "valid": [True, True, True, False],
            "error": None,
            "source": "teacher",
            "stage": 0,
        }
    )
    teacher.to_parquet(run / "teacher" / "labels-t.parquet")
    pd.DataFrame({"id": ids, "part": [0, 1, 0, 1]}).to_parquet(run / "data" / "partition-p.parquet")
    # Student 0 trains on part 1 (b, d) and keeps only the valid teacher label (b); its label becomes b's gold.
    rows = gold_partition.gold_rows(run, stage=1, student=0, partitions=2)
    assert list(rows["id"]) == ["b"] and list(rows["label"]) == ["( w2 )"] and set(rows["source"]) == {"gold"}
    # Stage 2 students train on the stage-1 labels.
    teacher.assign(label=["S1", "S2", "S3", "S4"], valid=True).to_parquet(run / "stage-1" / "labels-s.parquet")
    assert list(gold_partition.gold_rows(run, stage=2, student=1, partitions=2)["id"]) == ["a", "c"]


def _quality_run(seed: int, final_right: int) -> dict:
    """A quality.json run record on 4 test rows: every system finds 1 of 2 gold chunks per row, the final student
    `final_right` of 2."""
    quality = _load("quality")
    rows = lambda right: {"id": ["a", "b", "c", "d"], "stats": [[right, right, 2]] * 4}  # noqa: E731
    systems = {quality.SYSTEM[row]: rows(final_right if row == quality.FINAL else 1) for row in quality.ROWS}
    scores = {
        row: {"f1": 100.0 if row == quality.FINAL and final_right == 2 else 66.7, "exact_match": 0.0}
        for row in quality.ROWS
    }
    return {"task": "atis", "seed": seed, "wall_s": 60.0, "scores": scores, "test_rows": systems}


def test_quality_pools_the_seeds_from_the_rows_each_run_recorded():
    quality = _load("quality")
    summary = quality.summarize([_quality_run(0, 2), _quality_run(1, 2)])["atis"]
    better = summary["comparisons"]["mckd-3 - teacher"]
    assert better["diff"] == pytest.approx(100.0 - 200 / 3) and better["ci95"][0] > 0
    older = dict(_quality_run(2, 2), test_rows="runs/quality/x/test-rows.json")  # recorded as a path before 2026-12-02
    assert quality.summarize([_quality_run(0, 2), older])["atis"]["comparisons"] is None


def test_quality_records_the_shipped_candidate_and_its_test_score():
    quality = _load("quality")
    beyond_noise = {"sft": {"diff": 10.0, "ci95": [2.0, 18.0]}}
    report = {
        "deliverable": {"name": "sft", "dev": {"final": 50.0, "sft": 60.0}, "vs_final": beyond_noise},
        "final_student": {"test": {"f1": 55.0, "ci95": [50.0, 60.0]}},
        "baselines": {"sft": {"test": {"f1": 65.0, "ci95": [60.0, 70.0]}}},
    }
    assert quality.deliverable(report) == {
        "name": "sft",
        "dev": {"final": 50.0, "sft": 60.0},
        "test_f1": 65.0,
        "test_ci95": [60.0, 70.0],
        "with_l_only": {"name": "sft", "test_f1": 65.0, "test_ci95": [60.0, 70.0]},
    }
    report["deliverable"]["name"] = "final"
    assert quality.deliverable(report)["test_f1"] == 55.0
    # SFT-N (gold rows beyond L) shipped: a user with only L gets what the guard picks from the rest; sft's lead
    # within noise leaves the final student.
    report["baselines"]["sft-n"] = {"test": {"f1": 80.0, "ci95": [75.0, 85.0]}}
    report["deliverable"] = {
        "name": "sft-n",
        "dev": {"final": 60.0, "sft": 65.0, "sft-n": 90.0},
        "vs_final": {"sft": {"diff": 5.0, "ci95": [-3.0, 13.0]}, "sft-n": {"diff": 30.0, "ci95": [20.0, 40.0]}},
    }
    assert quality.deliverable(report)["with_l_only"] == {"name": "final", "test_f1": 55.0, "test_ci95": [50.0, 60.0]}


def test_quality_table_has_one_line_per_task_and_recipe_over_the_runs_that_count():
    quality = _load("quality")
    table_of = _load("quality_table").table
    base = {"unlabeled": 200, "test": 200}
    shipped = {"name": "final", "test_f1": 100.0, "with_l_only": {"name": "final", "test_f1": 100.0}}
    current = lambda seed, right, **sizes: dict(
        _quality_run(seed, right),
        sizes={**base, **sizes},
        deliverable=shipped,  # noqa: E731
        metric=quality.METRIC["atis"],
    )
    weak_sft = current(0, 1, train_on_labeled=True, first_labels="sft")
    weak_sft["test_rows"]["sft"] = {"id": ["a", "b", "c", "d"], "stats": [[0, 0, 2]] * 4}  # its SFT-50 finds nothing
    runs = [
        current(0, 2),
        current(1, 2),
        weak_sft,
        current(0, 2, unlabeled=400),
        current(1, 2, epoch_choice="last"),  # another recipe on a seed the paper recipe ran: never pooled with it
        dict(current(2, 2), sizes={**base, "test": 20}),  # too few test rows to count
        dict(current(3, 2), metric="an older metric"),
    ]
    lines = table_of(runs).splitlines()[2:]
    assert [line.split(" | ")[1:3] for line in lines] == [
        ["epoch_choice last", "1"],
        ["gold-aware + first_labels sft", "0"],
        ["paper recipe", "0,1"],
        ["paper recipe, U=400", "0"],
    ]
    # The paper recipe's final student finds every chunk where the rest find half: MCKD-3 100.0, gaps with CIs.
    assert "**100.0**" in lines[2] and "100.0 / 100.0" in lines[2]
    # Against every SFT-50 of its seeds: seed 0's two SFT-50 trainings averaged per row (F1 40.0), seed 1's one (66.7).
    gap = f"{100 - (40.0 + 200 / 3) / 2:+.1f}"  # every row alike: each row resample gives the same gap
    # ... but the seeds' gaps differ (+60.0 and +33.3), and the interval that redraws the seeds spans them.
    assert lines[2].endswith(f"| {gap} [{gap}, {gap}] / [+33.3, +60.0] (+60.0, +33.3), 3 trainings |"), lines[2]
    assert "+33.3 [+33.3, +33.3] / [+33.3, +33.3] (+33.3, +33.3)" in lines[2]


def test_an_options_effect_pairs_each_run_with_the_run_of_its_seed_made_without_it():
    quality = _load("quality")
    effect = _load("quality_table").effect
    run = lambda seed, right, **sizes: dict(  # noqa: E731
        _quality_run(seed, right),
        sizes={"unlabeled": 200, "test": 200, **sizes},
        deliverable={"name": "final", "with_l_only": {"name": "final", "test_f1": 100.0 if right == 2 else 66.7}},
        metric=quality.METRIC["atis"],
    )
    runs = [
        run(0, 1),
        run(0, 2, epoch_choice="last"),  # the final student finds every chunk with the option, half without
        run(1, 1),
        run(1, 1, epoch_choice="last"),  # no change on seed 1
        run(2, 2, epoch_choice="last"),  # no partner without the option: not counted
        run(3, 1, unlabeled=400),
        run(3, 2, epoch_choice="last"),  # its partner has other sizes: not counted either
    ]
    lines = {line.split(" | ")[2]: line for line in effect(runs, "epoch_choice", "last").splitlines()[2:]}
    assert set(lines) == {"sft", "vanilla-kd", "mckd-2", "mckd-3", "L-only deliverable"}
    assert all(" | 2 (0,1) | " in line for line in lines.values())
    assert "| +0.0 [+0.0, +0.0] / [+0.0, +0.0] (+0.0, +0.0) |" in lines["sft"]
    gain = f"{(100 - 200 / 3) / 2:+.1f}"  # the mean of the seeds' gains (+33.3 and +0.0)
    assert f"| 83.3 / 66.7 | {gain} [{gain}, {gain}] / [+0.0, +33.3] (+33.3, +0.0) |" in lines["mckd-3"], lines[
        "mckd-3"
    ]
    assert lines["L-only deliverable"].endswith(lines["mckd-3"].split(" | ", 3)[3])


def test_the_guard_ships_an_equal_candidate_less_often_than_the_bar_and_a_clearly_better_one_mostly():
    """guard_sim's model of dev rows, fixed seeds: the real guard (dev_margins + choose_deliverable) against the rule
    before issue #27 (a percentile-bootstrap CI above 0 per candidate) on the same draws."""
    sim = _load("guard_sim")
    import numpy as np

    equal, better = sim.skill_for("slots", 65.0, rows=20_000), sim.skill_for("slots", 85.0, rows=20_000)
    old, new = sim.cell("slots", 20, np.full(4, equal), sim.CANDIDATES[:3], draws=300, seed=0, target=None)
    assert new <= 5.0 < old  # three candidates as good as the final student: the old rule shipped one too often
    names = [sim.BETTER, "sft", "mckd-2", "sft-n"]
    _, caught = sim.cell(
        "slots", 30, np.array([equal, better, equal, equal, equal]), names, draws=50, seed=1, target=sim.BETTER
    )
    assert caught >= 80.0  # +20 F1 on 30 dev rows, among three equal candidates


def test_suggest_strategies_send_the_chosen_rows_of_u_to_l_with_their_gold_and_rerun_with_defaults(tmp_path):
    """benchmarks/suggest_strategies.py: each strategy's rows, the simulated annotator, the re-run's config."""
    import pandas as pd
    from test_suggest import L_TEXT, make_run, stages

    from mckd_core.config import RunConfig
    from mckd_core.suggest import suggest

    bench = _load("suggest_strategies")
    rows = [("u0", "red hot", "blue cold"), ("u1", "big day", "small night"), ("u2", "up yes", "down no")]
    changed = [rows[0], ("u1", "big day", "large night"), rows[2]]
    labelings = stages({"teacher": rows, "final": changed}, logprobs=[-0.1, -0.2, -3.0])
    for df in labelings.values():
        df["target"] = ["blue cold", "large night", "down no"]  # U's gold: the final student mended u1
    run = make_run(tmp_path, "text", L_TEXT, labelings)
    # What the base run's labels were worth on the picked rows (the "why" of the strategy table)
    assert bench.picked_quality(run, ["u1"]) == {"teacher_f1": 50.0, "final_f1": 100.0, "words": 2.0}
    assert bench.picked_quality(run)["final_f1"] == 100.0 > bench.picked_quality(run)["teacher_f1"]
    assert bench.chosen_rows("suggest", run, 2, 0) == [s.id for s in suggest(run, 2)[1]]
    assert bench.chosen_rows("unsure", run, 1, 0) == ["u2"]
    drawn = bench.chosen_rows("random", run, 2, 0)
    assert len(set(drawn)) == 2 and set(drawn) <= {"u0", "u1", "u2"} and drawn == bench.chosen_rows("random", run, 2, 0)

    inputs = ["red hot", "big day", "up yes"]
    unlabeled = pd.DataFrame({"id": ["u0", "u1", "u2"], "input": inputs, "target": list("abc")})
    sets = bench.with_labels({"labeled": L_TEXT, "unlabeled": unlabeled}, ["u1"])
    assert list(zip(sets["labeled"]["id"], sets["labeled"]["target"])) == [("l0", "dog"), ("l1", "moon"), ("u1", "b")]
    assert list(sets["unlabeled"]["id"]) == ["u0", "u2"]

    args = bench.parse_args(["--runs-root", str(tmp_path / "runs")])
    paths = {name: f"{name}.parquet" for name in ("labeled", "unlabeled", "test", "dev", "sft_n_labeled")}
    cfg = bench.config("atis", paths, args, 1, "random")
    defaults = RunConfig.model_validate({"data": {"labeled": "l", "unlabeled": "u"}})
    assert cfg.baselines == ["sft"] and cfg.data.sft_n_labeled is None
    assert (cfg.student.train_on_labeled, cfg.stages.first_labels) == (
        defaults.student.train_on_labeled,
        defaults.stages.first_labels,
    )
    assert (cfg.student.epochs, cfg.student.epoch_choice) == (defaults.student.epochs, defaults.student.epoch_choice)
    assert cfg.run_name.endswith("-seed1-random") and cfg.seed == 1
    assert cfg.student.precision == "fp32"  # not `auto`: a seed's runs may span sessions on CPUs with and without bf16


def test_a_strategy_seed_stopped_part_way_goes_on_from_its_next_run_without_the_base_run_dir(tmp_path, monkeypatch):
    import json

    import pandas as pd

    bench = _load("suggest_strategies")
    unlabeled = pd.DataFrame({"id": ["u0", "u1", "u2"], "input": ["a b", "c d", "e f"], "target": ["x", "y", "z"]})
    sets = {"labeled": pd.DataFrame({"id": ["l0"], "input": ["g"], "target": ["w"]}), "unlabeled": unlabeled}
    monkeypatch.setattr(bench.quality, "task_sets", lambda task, args, seed: sets)
    monkeypatch.setattr(
        bench, "chosen_rows", lambda strategy, run_dir, n, seed: {"suggest": ["u0"]}.get(strategy, ["u1"])
    )
    monkeypatch.setattr(bench, "picked_quality", lambda run_dir, ids=None: {"rows": ids})
    monkeypatch.setattr(bench, "record", lambda report, run_dir, wall: {"wall_s": wall, "labeled": report})
    ran, stop_at, demo_pools = [], ["random"], {}

    def one_run(task, seed, args, run_sets, name, demos=None):  # the edge: the MCKD run itself
        if name in stop_at and not stop_at.remove(name):
            raise RuntimeError("the session ended")  # during the second strategy's run
        ran.append(name)
        demo_pools[name] = None if demos is None else list(demos["id"])
        return list(run_sets["labeled"]["id"]), tmp_path, 1.0

    monkeypatch.setattr(bench, "one_run", one_run)
    saved = []
    args = bench.parse_args(["--n", "1"])
    with pytest.raises(RuntimeError, match="the session ended"):
        bench.run_seed("atis", 0, args, None, lambda entry: saved.append(json.loads(json.dumps(entry))))
    entry = saved[-1]
    assert ran == ["base", "suggest"] and not bench.complete(entry)
    assert entry["strategies"]["suggest"]["labeled"] == ["l0", "u0"] and "wall_s" not in entry["strategies"]["random"]
    bench.run_seed("atis", 0, args, entry, lambda e: None)
    assert ran == ["base", "suggest", "random", "unsure"] and bench.complete(entry)
    assert entry["strategies"]["unsure"] == {
        "ids": ["u1"],
        "picked": {"rows": ["u1"]},
        "wall_s": 1.0,
        "labeled": ["l0", "u1"],
    }
    assert set(entry["strategies"]) == {"suggest", "random", "unsure"}  # suggest-same-prompts is opt-in
    # --same-prompts on the complete seed: that run alone, suggest's rows again, the teacher's demos the base run's L
    # (its prompts, so its teacher cache answers)
    ran.clear()
    with_it = bench.parse_args(["--n", "1", "--same-prompts"])
    assert not bench.complete(entry, bench.wanted(with_it))
    bench.run_seed("atis", 0, with_it, entry, lambda e: None)
    assert ran == ["suggest-same-prompts"] and bench.complete(entry, bench.wanted(with_it))
    assert entry["strategies"]["suggest-same-prompts"]["labeled"] == ["l0", "u0"]
    assert demo_pools == {"base": None, "suggest": None, "random": None, "unsure": None, "suggest-same-prompts": ["l0"]}


def test_the_strategy_table_pairs_each_strategy_with_suggest_on_the_same_test_rows():
    from mckd_core.formats import get_format

    bench = _load("suggest_strategies")
    fmt = get_format("slots")
    inputs = ["flights from boston", "to denver"]
    golds = ["flights from [fromloc.city_name boston]", "to [toloc.city_name denver]"]

    def rows(preds):
        return {"id": ["t0", "t1"], "stats": fmt.row_stats(inputs, golds, preds).tolist()}

    def entry(preds, picked, isa="AVX2"):
        f1 = fmt.metrics(inputs, golds, preds)["f1"]
        run = {"wall_s": 600.0, "deliverable": "final", "deliverable_f1": f1, "mckd3_f1": f1, "counts": {"labeled": 50}}
        run["teacher_sent"] = 0 if picked and picked["words"] == 11.0 else 420
        machine = {"cpu": "AMD EPYC", "cores": 2, "cpu_capability": isa}
        return run | {
            "test_rows": {"deliverable": rows(preds), "mckd-3": rows(preds)},
            "picked": picked,
            "machine": machine,
        }

    right, half = golds, [golds[0], "to denver"]
    runs = [
        {
            "task": "atis",
            "seed": seed,
            "n": 50,
            "base": entry(half, None) | {"u_quality": {"teacher_f1": 50.0, "final_f1": 60.0, "words": 9.0}},
            "strategies": {
                "suggest": entry(right, {"teacher_f1": 20.0, "final_f1": 30.0, "words": 11.0}),
                "random": entry(half, {"teacher_f1": 50.0, "final_f1": 60.0, "words": 9.0}),
                "unsure": entry(half, {"teacher_f1": 40.0, "final_f1": 40.0, "words": 10.0}, ["AVX2", "AVX512"][seed]),
                "suggest-same-prompts": entry(half, {"teacher_f1": 20.0, "final_f1": 30.0, "words": 11.0}),
            },
        }
        for seed in (0, 1)
    ]
    del runs[1]["strategies"]["suggest-same-prompts"]  # opt-in: run on seed 0 only
    summary = bench.summarize(runs)["atis"]
    gap = summary["comparisons"]["suggest - random (mckd-3)"]
    assert gap["diff"] > 0 and gap["per_seed"] == [gap["diff"]] * 2
    table = bench.markdown(bench.summarize(runs))
    assert "| | 100 | suggest | 100.0 ± 0.0 | 100.0 ± 0.0 | 20.0 / 30.0 | 0 | 10 min |" in table
    assert "| | 100 | random | 66.7 ± 0.0 | 66.7 ± 0.0 | 50.0 / 60.0 | 420 | 10 min |" in table
    assert "suggest - random (mckd-3) +" in table and "none (the base run)" in table
    # what keeping the teacher's prompts cost: the same rows added, the teacher not shown them
    kept = summary["comparisons"]["suggest-same-prompts - suggest (mckd-3)"]
    assert kept["diff"] == -gap["diff"] and len(kept["per_seed"]) == 1
    assert "| | 100 | suggest-same-prompts (seeds 0) | 66.7 | 66.7 | 20.0 / 30.0 | 0 | 10 min |" in table
    # seed 1's last run resumed on another kind of machine: said, not hidden
    assert summary["mixed_seeds"] == [1]
    assert "atis ran on: 2-core AMD EPYC (AVX2), 2-core AMD EPYC (AVX512); seeds [1] ran on more than one." in table


def test_label_quality_sets_each_student_beside_the_labels_it_trained_on(tmp_path):
    import json

    import pandas as pd

    quality = _load("label_quality")
    run = tmp_path / "run"
    gold = "flights from [fromloc.city_name boston] to [toloc.city_name denver]"
    half = "flights from [fromloc.city_name boston] to denver"
    for directory, label in {"teacher": "flights from boston to denver", "sft-labels": half, "stage-1": gold}.items():
        (run / directory).mkdir(parents=True)
        frame = {"id": ["a"], "input": ["flights from boston to denver"], "target": [gold], "label": [label]}
        pd.DataFrame({**frame, "valid": [True]}).to_parquet(run / directory / "labels-x.parquet")
    test = lambda f1: {  # noqa: E731
        "test": {"f1": f1, "precision": f1, "recall": f1},
        "epochs": 1,
        "dev_f1": 50.0,
        "train_rows": 12,
    }
    report = {
        "config": {"data": {"task": "slots"}, "student": {"epochs": 3}},
        "first_labels": {"chosen": "sft"},  # Y_0 is SFT's labels: MCKD-1 ... would train on them, not the teacher's
        "stages": [{"stage": 1}],
        "baselines": {"vanilla-kd": test(10.0), "sft": test(20.0), "sft-n": test(90.0)},
        "final_student": test(30.0),
    }
    (run / "report.json").write_text(json.dumps(report))
    students = quality.label_quality(run)["students"]
    assert [(s["model"], s["trained_on"], s["labels"]["recall"], s["test"]["f1"]) for s in students] == [
        ("vanilla-kd", "teacher", 0.0, 10.0),
        ("mckd-2 (final)", "stage-1", 100.0, 30.0),
    ]
    report["baselines"]["mckd-1"] = test(25.0)
    (run / "report.json").write_text(json.dumps(report))
    by_model = {s["model"]: s for s in quality.label_quality(run)["students"]}
    assert by_model["mckd-1"]["trained_on"] == "sft" and by_model["mckd-1"]["labels"]["recall"] == 50.0
    assert by_model["mckd-1"]["epochs"] == 3 and by_model["mckd-1"]["epoch"] == 1
    assert by_model["mckd-1"]["train_rows"] == 12


def _curve_run(u: int, mckd: float, sft_n: int, sft_n_f1: float, draw: int | None = 800) -> dict:
    f1s = {"teacher": 55.0, "sft": 60.0, "vanilla-kd": mckd - 2, "mckd-3": mckd, "sft-n": sft_n_f1}
    scores = {name: {"f1": f1, "ci95": [f1 - 3, f1 + 3]} for name, f1 in f1s.items()}
    sizes = {"labeled": 50, "unlabeled": u, "sft_n": sft_n, **({"draw_unlabeled": draw} if draw else {})}
    # keyed as quality.py keys today's defaults (with --train-on-labeled), wherever the teacher ran
    sizes |= {
        "teacher_backend": "vllm-server",
        "train_on_labeled": True,
        "first_labels": "auto",
        "epoch_choice": "last",
    }
    return {
        "task": "atis",
        "seed": 0,
        "sizes": sizes,
        "scores": scores,
        "deliverable": {"with_l_only": {"test_f1": mckd}},
        "pseudolabel_f1": {"teacher": 60.0, "stage-1": 65.0},
        "comparisons": {"final - sft-n": {"diff": mckd - sft_n_f1}},
        "wall_s": 60.0 * u / 10,
    }


def test_the_u_curve_takes_its_own_runs_and_says_where_mckd_reaches_sft_200(tmp_path):
    u_curve = _load("u_curve")
    runs = [
        _curve_run(200, 66.0, 200, 72.0),
        dict(  # recorded with the labels' precision / recall and each student's rows and epoch (since 2026-12-07)
            _curve_run(400, 71.0, 500, 80.0),
            label_quality={
                "labels": {"teacher": {"f1": 60.0, "precision": 80.0, "recall": 48.0}},
                "students": [
                    {"model": "vanilla-kd", "train_rows": 430, "epoch": 2, "epochs": 4},
                    {"model": "mckd-3 (final)", "train_rows": 450, "epoch": 4, "epochs": 4},
                ],
            },
        ),
        _curve_run(800, 73.5, 500, 82.0),
        _curve_run(200, 99.0, 200, 72.0, draw=None),  # a run of the 3-seed table, not drawn for the curve
        dict(
            _curve_run(400, 50.0, 500, 80.0),
            sizes={**_curve_run(400, 0, 500, 0)["sizes"], "gold_share": 0.2},
            label_quality={
                "labels": {"teacher": {"f1": 60.0, "precision": 80.0, "recall": 48.0}},
                "students": [
                    {"model": "mckd-3 (final)", "train_rows": 500, "gold_repeats": 2, "epoch": 4, "epochs": 4}
                ],
            },
        ),
        # epoch_choice best (keyed by its absence): another recipe, on neither curve
        dict(
            _curve_run(400, 40.0, 500, 80.0),
            sizes={k: v for k, v in _curve_run(400, 0, 500, 0)["sizes"].items() if k != "epoch_choice"},
        ),
    ]
    c = u_curve.curve(runs, "atis", 0)
    assert list(c["points"]) == [200, 400, 800] and c["points"][200]["mckd-3"] == 66.0
    # SFT-500 trained by two points: their mean; SFT-50 by all three.
    assert c["lines"] == {"SFT-50": 60.0, "SFT-200": 72.0, "SFT-500": 81.0}
    assert u_curve.reaches(c, "SFT-200") == 800 and u_curve.reaches(c, "SFT-500") is None
    table = u_curve.markdown([c])
    assert (
        "| 400 | 55.0 | 69.0 [66.0, 72.0] | 71.0 [68.0, 74.0] | 71.0 | 60.0 → 65.0 | 80.0 / 48.0 | 450, 4 of 4 | 40 |"
        in table
    )
    assert "| 200 | 55.0 | 64.0 [61.0, 67.0] | 66.0 [63.0, 69.0] | 66.0 | 60.0 → 65.0 | – | – | 20 |" in table
    assert "MCKD-3 reaches SFT-200 at U = 800." in table
    assert u_curve.curve(runs, "craft", 0) is None
    # A run with another keyed option is another curve: shown with --with, never mixed into the defaults' points.
    shared = u_curve.curve(runs, "atis", 0, {"gold_share": 0.2})
    assert list(shared["points"]) == [400] and shared["points"][400]["mckd-3"] == 50.0
    assert "**atis**, seed 0, gold_share 0.2 (lines:" in u_curve.markdown([shared])
    assert "| 500 (gold x2), 4 of 4 |" in u_curve.markdown([shared])
    u_curve.figure([c], tmp_path / "curve.png")
    assert (tmp_path / "curve.png").stat().st_size > 10_000
    # Every point draws its sets as for the largest U, and only the U=200 run trains SFT-200.
    argvs = u_curve.commands(["atis"], 1, ["--teacher-backend", "vllm-server"])
    assert [a[a.index("--unlabeled") + 1] for a in argvs] == ["200", "400", "800"]
    assert all(a[a.index("--draw-unlabeled") + 1] == "800" for a in argvs)
    assert all(a[-2:] == ["--teacher-backend", "vllm-server"] for a in argvs)
    assert [a[a.index("--sft-n") + 1] for a in argvs] == ["200", "500", "500"]
