"""A whole MCKD flow on tiny random-init models: row conservation, report contract, cached re-run."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pandas as pd
import pytest
from tests_support import final_task_runs
from toy_data import toy_config

from flows import mckd_flow
from mckd_core.config import parse_config


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory, tiny_models):
    tmp = tmp_path_factory.mktemp("toy-flow")
    cfg = parse_config(
        toy_config(
            tmp, tiny_models, stages={"num_stages": 3, "partitions": 2}, baselines=["sft", "vanilla-kd", "mckd-2"]
        )
    )
    state = mckd_flow(cfg, return_state=True)
    return cfg, state


def test_flow_completes_and_report_follows_contract(toy_run):
    cfg, state = toy_run
    assert state.is_completed()
    report = json.loads((cfg.run_dir / "report.json").read_text())
    counts = report["counts"]
    assert (counts["labeled"], counts["unlabeled"], counts["test"]) == (8, 12, 4)
    assert counts["teacher_valid"] + counts["teacher_invalid"] == counts["unlabeled"]
    # Counted with the T5 student's tokenizer before any model loaded; the transformers teacher's context is not known.
    assert report["overlong"] == {
        "student": {"limit": 128, "rows": {"labeled": 0, "unlabeled": 0, "test": 0}},
        "student_target": {"limit": 8, "rows": {"labeled": 0, "test": 0}},
    }
    assert [s["stage"] for s in report["stages"]] == [1, 2]
    # Y_0 by default (stages.first_labels: auto): the random-init teacher and SFT student both score 0.0 on the toy's
    # held-out dev rows, and a tie keeps the teacher's labels, scored once.
    assert report["first_labels"] == {
        "source": "auto",
        "chosen": "teacher",
        "dev": {"teacher": 0.0, "sft": 0.0},
        "why": "dev F1: sft 0.0, teacher 0.0",
        "pseudolabel_f1": report["teacher"]["pseudolabel_f1"],
        "changed_fraction": 0.0,
    }
    for stage in report["stages"]:
        assert [s["partition"] for s in stage["students"]] == [0, 1]
        assert 0.0 <= stage["changed_fraction"] <= 1.0
        assert all(s["test"] is not None for s in stage["students"])
    assert report["final_student"]["test"]["f1"] >= 0
    assert set(report["baselines"]) == {"sft", "vanilla-kd", "mckd-2"}
    # One fifth of L (1 of 8 rows) is held out as dev (data.dev_holdout: null): SFT trains on the rest, everyone
    # selects there.
    assert (counts["labeled_train"], counts["dev"]) == (7, 1)
    assert report["baselines"]["sft"]["train_rows"] == counts["labeled_train"]
    # Gold-aware by default (student.train_on_labeled): vanilla KD learns from the teacher's valid labels and L's 7
    # rows.
    assert report["baselines"]["vanilla-kd"]["train_rows"] == counts["teacher_valid"] + counts["labeled_train"]
    table = (cfg.run_dir / "report.md").read_text()
    order = ["teacher (few-shot)", "SFT on L (7 gold)", "vanilla KD (MCKD-1)", "| MCKD-2 |", "MCKD-3 — final student"]
    assert sorted(order, key=table.index) == order
    assert {"teacher", "stage-1", "stage-2", "final", "evaluate", "total"} <= set(report["timings"])
    # issue #17: the final student against the teacher and each baseline (paired bootstrap CIs), per-row data outside
    assert set(report["comparisons"]) == {"final - teacher", "final - sft", "final - vanilla-kd", "final - mckd-2"}
    assert all(c["ci95"][0] <= c["ci95"][1] for c in report["comparisons"].values())
    assert "rows" not in report["final_student"]["test"] and len(report["teacher"]["test"]["ci95"]) == 2
    rows = json.loads((cfg.run_dir / "test-rows.json").read_text())["systems"]
    assert set(rows) == {"final", "teacher", "sft", "vanilla-kd", "mckd-2"} and {
        len(r["id"]) for r in rows.values()
    } == {4}
    for name in (
        "report.md",
        "f1_by_stage.png",
        "final/student/metrics.json",
        "final/student/config.json",
        "final/student/README.md",
    ):
        assert (cfg.run_dir / name).exists(), name
    # issue #13: the deliverable guard scored every candidate on the dev rows, each against the final student row by
    # row; the toy run holds out 1 of its 8 labeled rows, too few to ship anything but the final student
    shipped = report["deliverable"]
    assert set(shipped["dev"]) == {"final", "sft", "vanilla-kd", "mckd-2"} and shipped["excluded"] == {}
    assert set(shipped["vs_final"]) == {"sft", "vanilla-kd", "mckd-2"}
    for name, cmp in shipped["vs_final"].items():
        assert (
            cmp["diff"] == pytest.approx(shipped["dev"][name] - shipped["dev"]["final"])
            and cmp["ci95"][0] <= cmp["ci95"][1]
        )
        assert 0 < cmp["p"] <= 1  # issue #27: the randomization test the guard decides by
    assert shipped["dev_rows"] == 1 and shipped["name"] == "final" and "only 1 dev rows" in shipped["why"]
    assert (cfg.run_dir / "deliverable").resolve() == Path(shipped["dir"]).resolve()
    card = (cfg.run_dir / "final/student/README.md").read_text()
    assert f"F1 {report['final_student']['test']['f1']:.1f}" in card and "12 rows" in card


def test_report_names_every_labeling_of_u_and_suggest_ranks_the_run(toy_run):
    """issue #29: report.json `files` holds U's labelings in run order, the final student's with how sure it was of
    each row; `mckd suggest` reads the run from them."""
    from mckd_core.suggest import suggest

    cfg, _ = toy_run
    report = json.loads((cfg.run_dir / "report.json").read_text())
    labelings = report["files"]["labels_of_unlabeled"]
    assert list(labelings) == ["teacher", "stage-1", "stage-2", "final"]
    assert not any(Path(p).is_absolute() for p in labelings.values())  # a moved runs root keeps them
    ids = set(pd.read_parquet(cfg.run_dir / report["files"]["unlabeled"])["id"])
    final = pd.read_parquet(cfg.run_dir / labelings["final"])
    assert set(final["id"]) == ids and set(final["source"]) == {"final/student"} and set(final["stage"]) == {3}
    assert final["logprob"].between(-100, 0).all()
    _, picked = suggest(cfg.run_dir, 5)
    assert len(picked) == 5 and {s.id for s in picked} <= ids
    assert [s.score for s in picked] == sorted((s.score for s in picked), reverse=True)


def test_every_node_conserves_rows(toy_run):
    cfg, _ = toy_run
    ids = set(pd.read_parquet(next((cfg.run_dir / "data").glob("unlabeled-*.parquet")))["id"])
    for stage_dir in [cfg.run_dir / "teacher", cfg.run_dir / "stage-1", cfg.run_dir / "stage-2"]:
        labels = pd.read_parquet(next(stage_dir.glob("labels-*.parquet")))
        assert set(labels["id"]) == ids and len(labels) == len(ids)
        assert {"label", "raw", "valid", "error", "source", "stage"} <= set(labels.columns)
    for stage in (1, 2):
        parts = [
            pd.read_parquet(next((cfg.run_dir / f"stage-{stage}" / f"partition-{k}").glob("relabels-*.parquet")))
            for k in (0, 1)
        ]
        assert set(parts[0]["id"]).isdisjoint(parts[1]["id"])
        assert set(parts[0]["id"]) | set(parts[1]["id"]) == ids
        assert set(parts[0]["source"]) == {f"stage-{stage}/student-0"}


def test_the_estimate_counted_the_prompt_tokens_the_teacher_then_reported(toy_run, tmp_path):
    from mckd_core.estimate import estimate_teacher
    from mckd_core.steps import prepare_inputs

    cfg, _ = toy_run
    tokens = json.loads((cfg.run_dir / "report.json").read_text())["teacher"]["tokens"]["total"]
    # Whether or not the run was repeated since: what its rows cost, sent now or recorded when they were.
    counts = json.loads((cfg.run_dir / "report.json").read_text())["counts"]
    asked = counts["unlabeled"] + counts["test"] + counts["dev"]  # first_labels: auto has the teacher label dev rows
    assert tokens["sent"] + tokens["from_cache"] == asked == tokens["metered"] + tokens["cached_metered"]
    paid = tokens["prompt_tokens"] + tokens["cached_prompt_tokens"]
    fresh = cfg.model_copy(update={"runs_root": tmp_path / "runs"})  # an empty teacher cache: every row to send
    before = estimate_teacher(fresh, prepare_inputs(fresh))
    assert (before.to_send, before.prompt_tokens) == (asked, paid)
    assert tokens["completion_tokens"] + tokens["cached_completion_tokens"] <= before.completion_tokens_max
    after = estimate_teacher(cfg, prepare_inputs(cfg))  # this run's root: the cache answers every row
    assert (after.to_send, after.prompt_tokens, after.completion_tokens_max) == (0, 0, 0)


def test_after_merge_labels_data_demos_keeps_the_runs_prompts_so_the_teacher_cache_answers_u_and_t(toy_run, tmp_path):
    """issue #29: rows labeled after `mckd suggest` join L and leave U; a larger L changes the prompts' demos, so the
    next run would ask the teacher again. merge-labels names the run's demo pool, and with it as data.demos only the
    new dev rows are left to send: U and T come from the teacher cache."""
    from typer.testing import CliRunner

    from flows.cli import app
    from mckd_core.estimate import estimate_teacher
    from mckd_core.steps import prepare_inputs

    cfg, _ = toy_run
    report = json.loads((cfg.run_dir / "report.json").read_text())
    unlabeled = pd.read_parquet(cfg.data.unlabeled)
    picked = unlabeled.iloc[:4].assign(target=lambda df: df["input"].str.split().str[0])
    export = tmp_path / "labeled-rows.jsonl"
    picked.to_json(export, orient="records", lines=True)
    new_l, new_u = tmp_path / "labeled-2.parquet", tmp_path / "unlabeled-2.parquet"
    args = ["data", "merge-labels", "--labeled", cfg.data.labeled, "--from", str(export), "--run", str(cfg.run_dir)]
    result = CliRunner().invoke(
        app, [*args, "--out", str(new_l), "--unlabeled", cfg.data.unlabeled, "--unlabeled-out", str(new_u)]
    )
    assert result.exit_code == 0, result.output
    demos = (cfg.run_dir / report["files"]["demos"]).resolve()
    assert f"set data.demos: {demos}\n" in result.output  # one line, the path whole
    assert len(pd.read_parquet(demos)) == report["counts"]["labeled_train"]

    def estimate(**data):
        grown = cfg.model_copy(
            update={"data": cfg.data.model_copy(update={"labeled": str(new_l), "unlabeled": str(new_u), **data})}
        )
        inputs = prepare_inputs(grown)
        return inputs, estimate_teacher(grown, inputs)

    inputs, kept = estimate(demos=str(demos))
    assert (kept.sets["unlabeled"].to_send, kept.sets["test"].to_send) == (0, 0)
    assert inputs.teacher_demos.read()["id"].tolist() == pd.read_parquet(demos)["id"].tolist()
    # 12 rows of L: 2 dev rows, held out of the 5 that are not demos (the old dev row and the 4 new ones)
    dev = set(inputs.dev.read()["id"])
    assert len(dev) == 2 and not dev & set(pd.read_parquet(demos)["id"])
    assert kept.sets["dev"].to_send <= 2
    _, asked_again = estimate()  # the default demo pool: L less the new dev rows
    assert asked_again.sets["unlabeled"].to_send > 0


def test_rerun_same_config_is_cached(toy_run):
    cfg, first = toy_run
    second = mckd_flow(cfg, return_state=True)
    assert second.is_completed()
    runs = asyncio.run(final_task_runs(second.state_details.flow_run_id))
    heavy = [r for r in runs if r.name.startswith(("annotate", "train-student", "evaluate-student"))]
    assert {r.name.rsplit("-", 1)[0] for r in heavy} == {"annotate", "train-student", "evaluate-student"}
    assert (
        len([r for r in heavy if r.name.startswith("train-student")]) == 1 + 2 * 2 + 1 + 3
    )  # SFT first (first_labels: auto; the sft baseline is the same job), 2 stages x K=2, final, 3 baselines
    assert all(r.state.name == "Cached" for r in heavy), [(r.name, r.state.name) for r in heavy]
    assert (
        json.loads((cfg.run_dir / "report.json").read_text())["final_student"]["test"]
        == second.result()["final_student"]["test"]
    )


def test_mckd_2_baseline_is_the_final_student_of_a_2_stage_run(toy_run, tmp_path_factory, tiny_models):
    """The baseline reuses stage 1 of the 3-stage run; a separate num_stages=2 run must train the same student."""
    cfg, state = toy_run
    baseline = state.result()["baselines"]["mckd-2"]
    two_stage = parse_config(
        {
            **cfg.model_dump(mode="json"),
            "run_name": "two-stage",
            "baselines": [],
            "stages": {**cfg.stages.model_dump(), "num_stages": 2},
        }
    )
    final = mckd_flow(two_stage)["final_student"]
    same = ("test", "train_rows", "dev_f1", "epochs")
    assert {k: baseline[k] for k in same} == {k: final[k] for k in same}


def test_gold_aware_students_train_on_l_train_and_never_on_their_dev_rows(tmp_path_factory, tiny_models):
    """student.train_on_labeled: every stage student, the final student and vanilla KD learn from L less the 2 held-out
    dev rows plus their pseudolabels; no student trains on a dev row (train_student refuses to select on one)."""
    tmp = tmp_path_factory.mktemp("gold-aware")
    # max_dev 1: every candidate selects on 1 of the 2 dev rows, so the guard scores each on both (evaluate tasks).
    cfg = parse_config(
        toy_config(
            tmp,
            tiny_models,
            data={"dev_holdout": 2},
            student={"train_on_labeled": True, "max_dev": 1},
            stages={"num_stages": 2, "partitions": 2, "evaluate_students": False},
            baselines=["sft", "vanilla-kd"],
        )
    )
    report = mckd_flow(cfg)
    data = cfg.run_dir / "data"
    dev = set(pd.read_parquet(next(data.glob("dev-*.parquet")))["id"])
    l_train = set(pd.read_parquet(next(data.glob("labeled_train-*.parquet")))["id"])
    assert len(dev) == 2 and len(l_train) == 6 and dev.isdisjoint(l_train)
    students = [*report["stages"][0]["students"], report["final_student"], report["baselines"]["vanilla-kd"]]
    assert [s["gold_rows"] for s in students] == [6, 6, 6, 6]
    assert all(s["train_rows"] > 6 for s in students)  # gold rows plus valid pseudolabels
    assert (report["baselines"]["sft"]["gold_rows"], report["baselines"]["sft"]["train_rows"]) == (0, 6)
    assert report["deliverable"]["excluded"] == {} and set(report["deliverable"]["dev"]) == {
        "final",
        "sft",
        "vanilla-kd",
    }


def test_no_teacher_prompt_shows_a_dev_row(tmp_path, tiny_models, monkeypatch):
    """The teacher's demos come from L's training rows: a dev row in a prompt would flatter every distilled
    candidate's dev score against SFT's (issue #27)."""
    from mckd_core.teacher.transformers import TransformersTeacher

    shown: list[tuple[str, ...]] = []
    generate = TransformersTeacher.generate_with_usage  # what annotate() calls: the answers and their tokens

    def recording(self, prompts, params, progress=None):
        shown.extend(p.demo_ids for p in prompts)
        return generate(self, prompts, params, progress)

    monkeypatch.setattr(TransformersTeacher, "generate_with_usage", recording)
    cfg = parse_config(
        toy_config(
            tmp_path,
            tiny_models,
            data={"dev_holdout": 2},
            teacher={"num_demos": 6},
            stages={"num_stages": 1, "partitions": 2},
            student={"epochs": 1},
        )
    )
    mckd_flow(cfg)
    dev = set(pd.read_parquet(next((cfg.run_dir / "data").glob("dev-*.parquet")))["id"])
    assert len(dev) == 2 and shown and all(len(ids) == 6 for ids in shown)  # every other row of L is shown
    assert not any(dev & set(ids) for ids in shown)
