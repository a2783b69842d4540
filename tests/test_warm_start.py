"""Issue #13: warm-started students (student.init: sft) start from the SFT-on-L student's weights."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from flows import mckd_flow
from mckd_core.config import parse_config
from mckd_core.data import write_parquet
from mckd_core.errors import MckdInputError
from mckd_core.steps import StudentRef, gold_labels, train_student_on
from toy_data import PAIRS, toy_config


def test_a_student_starts_from_its_init_weights(tmp_path, tiny_models):
    """The same rows, one epoch: from a model that knows the mapping the first epoch's loss is a fraction of the loss
    from the random model `student.model` names; metrics.json says where the student started."""
    rows = pd.DataFrame({"id": [f"p{i}" for i in range(len(PAIRS))], "input": list(PAIRS), "target": list(PAIRS.values())})
    dev = write_parquet(rows, tmp_path / "dev", "dev")
    labels = gold_labels(dev, tmp_path / "gold")  # no epoch is selected on dev: one file serves as both
    cfg = parse_config(toy_config(tmp_path, tiny_models, student={"model": tiny_models["llama"], "epochs": 1,
                                                                  "select_on_dev": False, "precision": "fp32"})).student
    knows = StudentRef(dir=tiny_models["teacher"], metrics=json.loads((Path(tiny_models["teacher"]) / "metrics.json").read_text()))
    cold = train_student_on(labels, None, None, dev, cfg, "text", 0, tmp_path / "cold")
    warm = train_student_on(labels, None, None, dev, cfg, "text", 0, tmp_path / "warm", init=knows)
    assert warm.metrics["history"][0]["loss"] < cold.metrics["history"][0]["loss"] / 3
    assert (warm.metrics["init"], warm.metrics["init_weights_sha256"]) == (knows.dir, knows.metrics["weights_sha256"])
    assert "init" not in cold.metrics


def test_warm_started_run_starts_every_distilled_student_from_the_sft_student(tmp_path_factory, tiny_models):
    tmp = tmp_path_factory.mktemp("warm-start")
    cfg = parse_config(toy_config(tmp, tiny_models, data={"dev_holdout": 2}, student={"init": "sft", "max_dev": 1},
                                  stages={"num_stages": 2, "partitions": 2, "evaluate_students": False},
                                  baselines=["sft", "vanilla-kd"]))
    report = mckd_flow(cfg)
    sft = json.loads((cfg.run_dir / "baselines" / "sft" / "metrics.json").read_text())
    assert "init" not in sft and sft["train_rows"] == 6  # SFT itself starts from student.model, on L less the dev rows
    distilled = ["stage-1/student-0", "stage-1/student-1", "final/student", "baselines/vanilla-kd"]
    starts = {d: json.loads((cfg.run_dir / d / "metrics.json").read_text()) for d in distilled}
    assert {d: (m["init"], m["init_weights_sha256"]) for d, m in starts.items()} == \
        {d: (str(cfg.run_dir / "baselines" / "sft"), sft["weights_sha256"]) for d in distilled}
    assert report["config"]["student"]["init"] == "sft" and set(report["baselines"]) == {"sft", "vanilla-kd"}


def test_init_is_pretrained_or_sft():
    with pytest.raises(MckdInputError, match=r"student.init: Input should be 'pretrained' or 'sft'"):
        parse_config({"data": {"task": "text", "labeled": "a", "unlabeled": "b"}, "student": {"init": "teacher"}})
