"""Issue #13: the dev rows no student trains on (data.dev or a held-out slice of L) and gold-aware students."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from mckd_core.config import parse_config
from mckd_core.data import write_parquet
from mckd_core.errors import MckdInputError
from mckd_core.jobs import StudentJob
from mckd_core.report import trained_line
from mckd_core.steps import gold_labels, gold_repeats, prepare_inputs, train_student, training_rows

LABELED = pd.DataFrame(
    {
        "id": [f"l{i}" for i in range(10)],
        "input": [f"word{i}" for i in range(10)],
        "target": [f"WORD{i}" for i in range(10)],
    }
)
UNLABELED = pd.DataFrame({"id": [f"u{i}" for i in range(6)], "input": [f"other{i}" for i in range(6)]})


def config(tmp_path, labeled=LABELED, dev=None, sft_n=None, **sections):
    sets = {"labeled": labeled, "unlabeled": UNLABELED, "dev": dev, "sft_n_labeled": sft_n}
    if sft_n is not None:  # its baseline needs a test set
        sets["test"] = pd.DataFrame({"id": ["t0"], "input": ["test0"], "target": ["TEST0"]})
    data = {name: str(tmp_path / f"{name}.jsonl") for name, df in sets.items() if df is not None}
    for name, path in data.items():
        sets[name].to_json(path, orient="records", lines=True)
    (tmp_path / "config.json").write_text("{}")  # a stand-in model dir: only its presence is checked here
    raw = {
        "runs_root": str(tmp_path / "runs"),
        "data": {"task": "text", **data},
        "teacher": {"num_demos": 2, "model": str(tmp_path)},
        "student": {"model": str(tmp_path)},
    }
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
    return parse_config(raw)


def pseudolabels(tmp_path):
    """Teacher labels of U: five valid, one invalid; U split into parts 0 and 1."""
    labels = UNLABELED.assign(
        target=None,
        label=[f"OTHER{i}" for i in range(6)],
        raw="",
        valid=[True] * 5 + [False],
        error=None,
        source="teacher",
        stage=0,
    )
    assignment = pd.DataFrame({"id": UNLABELED["id"], "part": [0, 1] * 3})
    return write_parquet(labels, tmp_path / "labels", "labels"), write_parquet(
        assignment, tmp_path / "labels", "partition"
    )


def ids(ref) -> set[str]:
    return set(ref.read()["id"])


def test_a_fifth_of_l_is_held_out_seeded_and_the_rest_is_what_students_train_on(tmp_path):
    inputs = prepare_inputs(config(tmp_path))
    assert (inputs.dev.rows, inputs.labeled_train.rows, inputs.labeled.rows) == (2, 8, 10)
    assert ids(inputs.dev).isdisjoint(ids(inputs.labeled_train)) and ids(inputs.dev) | ids(inputs.labeled_train) == set(
        LABELED["id"]
    )
    assert inputs.dev_held_out and inputs.dev_source == "2 rows held out of L (data.dev_holdout)"
    assert prepare_inputs(config(tmp_path)).dev == inputs.dev  # seeded: the same rows every time
    assert prepare_inputs(config(tmp_path, seed=1)).dev != inputs.dev
    assert prepare_inputs(config(tmp_path, data={"dev_holdout": 3})).dev.rows == 3


def test_no_slice_with_dev_holdout_0_or_a_dev_set(tmp_path):
    paper = prepare_inputs(config(tmp_path, data={"dev_holdout": 0}, student={"train_on_labeled": False}))
    assert paper.dev == paper.labeled == paper.labeled_train and not paper.dev_held_out
    dev = pd.DataFrame({"id": ["d0", "d1"], "input": ["x", "y"], "target": ["X", "Y"]})
    given = prepare_inputs(config(tmp_path, dev=dev, student={"train_on_labeled": True}))
    assert given.labeled_train == given.labeled and ids(given.dev) == {"d0", "d1"} and given.dev_held_out


def test_sft_n_never_trains_on_the_dev_rows(tmp_path):
    sft_n = pd.concat([LABELED, pd.DataFrame({"id": ["x0"], "input": ["extra"], "target": ["EXTRA"]})])
    inputs = prepare_inputs(config(tmp_path, sft_n=sft_n, baselines=["sft-n"]))
    assert ids(inputs.sft_n) == set(sft_n["id"]) - ids(inputs.dev) and inputs.sft_n.rows == 9


@pytest.mark.parametrize(
    "case, message",
    [
        ("holdout_all", "labeled: data.dev_holdout=10 holds out all 10 rows of L as dev and leaves none to train on"),
        (
            "too_small",
            "labeled: 4 rows are too few to hold out a fifth as the dev rows student.train_on_labeled (on by default) "
            "needs",
        ),
        ("dev_in_u", "dev: 1 id(s) also in unlabeled (e.g. 'u0'); students train on the unlabeled rows"),
        ("dev_in_l", "dev: 1 id(s) also in labeled (e.g. 'l0'); students train on the labeled rows"),
    ],
)
def test_dev_row_errors_are_one_line(tmp_path, case, message):
    cfg = {
        "holdout_all": lambda: config(tmp_path, data={"dev_holdout": 10}),
        "too_small": lambda: config(tmp_path, labeled=LABELED.iloc[:4], student={"train_on_labeled": True}),
        "dev_in_u": lambda: config(tmp_path, dev=pd.DataFrame({"id": ["u0"], "input": ["other0"], "target": ["O"]})),
        "dev_in_l": lambda: config(tmp_path, dev=LABELED.iloc[:1], student={"train_on_labeled": True}),
    }[case]()
    with pytest.raises(MckdInputError) as info:
        prepare_inputs(cfg)
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_gold_aware_rows_are_l_train_plus_valid_pseudolabels_never_a_dev_row(tmp_path):
    inputs = prepare_inputs(config(tmp_path, student={"train_on_labeled": True}))
    ref, assignment = pseudolabels(tmp_path)
    rows = training_rows(ref, assignment, [0], 1, "stage-1/student-1", gold=inputs.labeled_train)
    assert set(rows["id"]) == ids(inputs.labeled_train) | {"u0", "u2", "u4"}
    assert set(rows["id"]).isdisjoint(ids(inputs.dev))
    gold = rows[rows["source"] == "gold"]
    assert list(gold["label"]) == list(gold["target"]) and len(gold) == 8  # gold rows keep their targets
    assert set(training_rows(ref, None, None, 1, "final")["id"]) == {f"u{i}" for i in range(5)}  # option off: U only


def test_gold_share_repeats_the_gold_rows_until_they_make_that_share_of_a_students_rows(tmp_path):
    assert [gold_repeats(50, 200, 0.2), gold_repeats(50, 400, 0.2), gold_repeats(50, 800, 0.2)] == [1, 2, 4]
    assert gold_repeats(50, 800, None) == 1 and gold_repeats(0, 800, 0.5) == 1
    inputs = prepare_inputs(config(tmp_path, student={"train_on_labeled": True}))
    ref, _ = pseudolabels(tmp_path)  # 5 valid pseudolabels beside 8 gold rows
    rows = training_rows(ref, None, None, 1, "final", gold=inputs.labeled_train, gold_share=0.75)
    gold = rows[rows["source"] == "gold"]
    assert len(gold) == 16 and gold["id"].value_counts().eq(2).all()  # 16 / 21 >= 0.75; 8 / 13 is not
    assert len(rows) - len(gold) == 5 and set(gold["id"]) == ids(inputs.labeled_train)


def test_gold_share_without_gold_aware_students_is_a_one_line_config_error(tmp_path):
    with pytest.raises(MckdInputError, match=r"student.gold_share: 0.3 repeats the gold rows of gold-aware students"):
        config(tmp_path, student={"train_on_labeled": False, "gold_share": 0.3})


def test_a_student_never_selects_on_a_row_it_trained_on(tmp_path, tiny_models):
    inputs = prepare_inputs(config(tmp_path, student={"train_on_labeled": True}))
    cfg = config(tmp_path, student={"model": tiny_models["t5"], "epochs": 1, "max_target_tokens": 8}).student
    labels, _ = pseudolabels(tmp_path)

    def train(out, dev, gold=None, name="final/student", student=cfg, labels=labels):
        out_dir = str(tmp_path / out)
        return train_student(
            StudentJob(
                name=name, task="text", student=student, seed=0, labels=labels, dev=dev, gold=gold, out_dir=out_dir
            )
        )

    m = train("s", inputs.dev, gold=inputs.labeled_train).metrics
    assert (m["gold_rows"], m["gold_repeats"], m["dev_rows"], m["dev_overlap"], m["train_rows"]) == (8, 1, 2, 0, 5 + 8)
    # Kept in metrics.json too: a student read back from its dir (a dispatched one's) tells the guard the same.
    assert json.loads((tmp_path / "s" / "metrics.json").read_text())["dev_overlap"] == 0
    with pytest.raises(MckdInputError, match=r"final/student: trains on 10 of its 10 dev rows \(e.g. 'l0'\)"):
        train("s2", inputs.labeled, gold=inputs.labeled)
    unselected = train(
        "s3",
        inputs.labeled,
        name="student",
        student=cfg.model_copy(update={"select_on_dev": False}),
        labels=gold_labels(inputs.labeled, tmp_path / "gold"),
    )
    assert (unselected.metrics["dev_rows"], unselected.metrics["dev_overlap"]) == (0, 10)  # the guard leaves it out
    repeated = train("s4", inputs.dev, gold=inputs.labeled_train, student=cfg.model_copy(update={"gold_share": 0.75}))
    m = repeated.metrics
    assert (m["gold_rows"], m["gold_repeats"], m["train_rows"]) == (8, 2, 21)
    assert trained_line("final/student", repeated.metrics).startswith("final/student: 21 rows (8 gold x2), kept epoch")


def test_dev_rows_in_l_fail_before_the_teacher_when_the_sft_student_makes_the_first_labels(tmp_path):
    """stages.first_labels: sft trains the SFT student on L, so data.dev may not share a row with L (issue #26)."""
    cfg = config(tmp_path, dev=LABELED.iloc[:1], student={"train_on_labeled": False}, stages={"first_labels": "sft"})
    with pytest.raises(MckdInputError, match=r"^dev: 1 id\(s\) also in labeled \(e.g. 'l0'\); students train on"):
        prepare_inputs(cfg)


def test_sft_init_with_no_dev_rows_held_out_is_a_one_line_config_error(tmp_path):
    with pytest.raises(MckdInputError) as info:
        config(tmp_path, data={"dev_holdout": 0}, student={"train_on_labeled": False, "init": "sft"})
    assert "student.init: sft starts every distilled student from the SFT student" in str(info.value)
    lines = str(info.value).splitlines()
    assert lines[0] == "invalid config (1 error):" and len(lines) == 2 and "give data.dev, or leave" in lines[1]
    config(tmp_path, data={"dev_holdout": 2}, student={"train_on_labeled": False, "init": "sft"})  # held-out rows: fine


def test_gold_share_leaves_the_sft_students_and_their_labels_keyed_as_without_it(tmp_path):
    from mckd_core.identity import key_view
    from mckd_core.plan import RunPlan

    def jobs(**student):
        cfg = config(tmp_path, student={"train_on_labeled": True, **student})
        plan = RunPlan(cfg, prepare_inputs(cfg))
        labels, _ = pseudolabels(tmp_path)
        return plan.supervised("sft"), plan.first_labels_by_sft(labels), plan.distilled("final", labels, 3, None)

    plain, shared = jobs(), jobs(gold_share=0.2)
    assert key_view(shared[0]) == key_view(plain[0]) and key_view(shared[1]) == key_view(plain[1])
    assert key_view(shared[2]) != key_view(plain[2])  # the distilled students are what it changes
