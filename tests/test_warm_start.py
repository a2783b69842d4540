"""Issue #13: the SFT-on-L student as a start: warm-started students (student.init: sft) start from its weights;
stages.first_labels: sft makes its labels of U the labels stage 1 learns from."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from toy_data import PAIRS, toy_config

from flows import mckd_flow
from mckd_core.config import parse_config
from mckd_core.data import write_parquet
from mckd_core.errors import MckdInputError
from mckd_core.jobs import StudentJob, StudentRef
from mckd_core.steps import gold_labels, train_student


def test_a_student_starts_from_its_init_weights(tmp_path, tiny_models):
    """The same rows, one epoch: from a model that knows the mapping the first epoch's loss is a fraction of the loss
    from the random model `student.model` names; metrics.json says where the student started."""
    rows = pd.DataFrame(
        {"id": [f"p{i}" for i in range(len(PAIRS))], "input": list(PAIRS), "target": list(PAIRS.values())}
    )
    dev = write_parquet(rows, tmp_path / "dev", "dev")
    labels = gold_labels(dev, tmp_path / "gold")  # no epoch is selected on dev: one file serves as both
    cfg = parse_config(
        toy_config(
            tmp_path,
            tiny_models,
            student={"model": tiny_models["llama"], "epochs": 1, "select_on_dev": False, "precision": "fp32"},
        )
    ).student
    knows = StudentRef(
        dir=tiny_models["teacher"], metrics=json.loads((Path(tiny_models["teacher"]) / "metrics.json").read_text())
    )
    job = StudentJob(
        name="student", task="text", student=cfg, seed=0, labels=labels, dev=dev, out_dir=str(tmp_path / "cold")
    )
    cold = train_student(job)
    warm = train_student(job.model_copy(update={"out_dir": str(tmp_path / "warm"), "init": knows}))
    assert warm.metrics["history"][0]["loss"] < cold.metrics["history"][0]["loss"] / 3
    assert (warm.metrics["init"], warm.metrics["init_weights_sha256"]) == (knows.dir, knows.metrics["weights_sha256"])
    assert "init" not in cold.metrics


def test_warm_started_run_starts_every_distilled_student_from_the_sft_student(tmp_path_factory, tiny_models):
    tmp = tmp_path_factory.mktemp("warm-start")
    cfg = parse_config(
        toy_config(
            tmp,
            tiny_models,
            data={"dev_holdout": 2},
            student={"init": "sft", "max_dev": 1},
            stages={"num_stages": 2, "partitions": 2, "evaluate_students": False},
            baselines=["sft", "vanilla-kd"],
        )
    )
    report = mckd_flow(cfg)
    sft = json.loads((cfg.run_dir / "baselines" / "sft" / "metrics.json").read_text())
    assert "init" not in sft and sft["train_rows"] == 6  # SFT itself starts from student.model, on L less the dev rows
    distilled = ["stage-1/student-0", "stage-1/student-1", "final/student", "baselines/vanilla-kd"]
    starts = {d: json.loads((cfg.run_dir / d / "metrics.json").read_text()) for d in distilled}
    assert {d: (m["init"], m["init_weights_sha256"]) for d, m in starts.items()} == {
        d: (str(cfg.run_dir / "baselines" / "sft"), sft["weights_sha256"]) for d in distilled
    }
    assert report["config"]["student"]["init"] == "sft" and set(report["baselines"]) == {"sft", "vanilla-kd"}


def test_init_is_pretrained_or_sft():
    with pytest.raises(MckdInputError, match=r"student.init: Input should be 'pretrained' or 'sft'"):
        parse_config({"data": {"task": "text", "labeled": "a", "unlabeled": "b"}, "student": {"init": "teacher"}})


def test_first_labels_sft_are_the_sft_students_labels_of_u_and_the_teachers_where_it_writes_nothing_valid(
    tmp_path_factory, tiny_models
):
    """stages.first_labels: sft: Y_0 is what the SFT-on-L student writes for U (the teacher's label where its output is
    invalid); the stage-1 students learn from Y_0, vanilla KD still from the teacher's labels."""
    from mckd_core.formats import get_format
    from mckd_core.student import predict

    tmp = tmp_path_factory.mktemp("first-labels")
    cfg = parse_config(
        toy_config(
            tmp,
            tiny_models,
            data={"dev_holdout": 2},
            student={"max_dev": 1},
            stages={"num_stages": 2, "partitions": 2, "evaluate_students": False, "first_labels": "sft"},
            baselines=["vanilla-kd"],
        )
    )
    report = mckd_flow(cfg)
    run = cfg.run_dir
    teacher = pd.read_parquet(next((run / "teacher").glob("labels-*.parquet"))).set_index("id")
    first = pd.read_parquet(next((run / "sft-labels").glob("labels-*.parquet"))).set_index("id").loc[teacher.index]
    written = predict(
        str(run / "baselines" / "sft"),
        list(teacher["input"]),
        cfg.student.eval_batch_size,
        cfg.student.max_target_tokens,
        cfg.student.precision,
    )
    sft_valid = pd.Series(
        [get_format("text").check(x, r).valid for x, r in zip(teacher["input"], written)], index=teacher.index
    )
    from_sft = first["source"] == "baseline/sft"
    assert list(first.loc[from_sft, "raw"]) == [r for r, s in zip(written, from_sft) if s]
    assert (from_sft | ~sft_valid).all() and from_sft[sft_valid].all()
    kept = ~sft_valid & teacher["valid"]
    assert (first.loc[kept, "label"] == teacher.loc[kept, "label"]).all() and (
        first.loc[kept, "source"] == teacher.loc[kept, "source"]
    ).all()
    assert report["first_labels"]["source"] == "sft" and 0.0 <= report["first_labels"]["changed_fraction"] <= 1.0
    # `mckd suggest` reads Y_0 as its own labeling of U, between the teacher's and stage 1's.
    labelings = report["files"]["labels_of_unlabeled"]
    assert list(labelings) == ["teacher", "sft", "stage-1", "final"]
    assert pd.read_parquet(run / labelings["sft"]).set_index("id").loc[teacher.index].equals(first)
    # Stage-1 student k learns from the valid Y_0 labels of the other part, plus L's 6 training rows.
    parts = pd.read_parquet(next((run / "data").glob("partition-*.parquet"))).set_index("id")["part"].loc[teacher.index]
    trained = [s["train_rows"] for s in report["stages"][0]["students"]]
    assert trained == [6 + int((first["valid"] & (parts != k)).sum()) for k in (0, 1)]
    assert report["baselines"]["vanilla-kd"]["train_rows"] == report["counts"]["teacher_valid"] + 6


def test_first_labels_is_teacher_sft_or_auto():
    with pytest.raises(MckdInputError, match=r"stages.first_labels: Input should be 'teacher', 'sft' or 'auto'"):
        parse_config({"data": {"task": "text", "labeled": "a", "unlabeled": "b"}, "stages": {"first_labels": "gold"}})


def test_first_labels_sft_needs_a_stage_to_distill_through():
    with pytest.raises(
        MckdInputError,
        match=r"stages.first_labels: sft needs stages.num_stages >= 2 .*set stages.first_labels: teacher",
    ):
        parse_config(
            {
                "data": {"task": "text", "labeled": "a", "unlabeled": "b"},
                "stages": {"first_labels": "sft", "num_stages": 1},
            }
        )


def test_first_labels_auto_takes_the_source_that_labels_a_hand_made_dev_set_better():
    from mckd_core.formats import get_format
    from mckd_core.plan import choose_first_labels

    fmt = get_format("text")
    words, gold = ["cat", "sun", "red", "hot"], ["dog", "moon", "blue", "cold"]
    teacher = fmt.metrics(words, gold, ["dog", "moon", "x", "y"])["f1"]  # half right
    sft = fmt.metrics(words, gold, ["dog", "moon", "blue", "y"])["f1"]  # three of four
    assert choose_first_labels(teacher, sft)["chosen"] == "sft"
    assert choose_first_labels(sft, teacher)["chosen"] == "teacher"
    assert choose_first_labels(teacher, teacher)["chosen"] == "teacher"  # a tie keeps the paper's recipe
    assert "vanilla KD" in choose_first_labels(None, None, one_stage=True)["why"]
    unseen = choose_first_labels(teacher, None)
    assert unseen["chosen"] == "teacher" and "no dev rows held out" in unseen["why"]


def test_a_first_labels_auto_run_reports_both_dev_scores_and_follows_them(tmp_path_factory, tiny_models):
    tmp = tmp_path_factory.mktemp("first-labels-auto")
    cfg = parse_config(
        toy_config(
            tmp,
            tiny_models,
            data={"dev_holdout": 2},
            student={"max_dev": 2, "epochs": 2},
            stages={"num_stages": 2, "partitions": 2, "evaluate_students": False, "first_labels": "auto"},
        )
    )
    entry = mckd_flow(cfg)["first_labels"]
    dev = entry["dev"]
    assert entry["source"] == "auto" and set(dev) == {"teacher", "sft"} and None not in dev.values()
    assert entry["chosen"] == ("sft" if dev["sft"] > dev["teacher"] else "teacher")
    assert (entry["changed_fraction"] == 0.0) == (entry["chosen"] == "teacher") or entry["changed_fraction"] == 0.0
    # The default with one stage is vanilla KD: nothing to choose, the teacher's labels.
    assert parse_config(toy_config(tmp, tiny_models, stages={"num_stages": 1})).stages.first_labels == "auto"
