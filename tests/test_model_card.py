"""The shipped model's card: Hub metadata (huggingface_hub.ModelCard) in whichever candidate `deliverable/` names."""

from __future__ import annotations

import copy
import json

import pytest
from huggingface_hub import ModelCard
from toy_data import toy_config

from flows import mckd_flow
from mckd_core.config import parse_config
from mckd_core.report import card_data, write_report


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory, tiny_models):
    tmp = tmp_path_factory.mktemp("card-flow")
    cfg = parse_config(
        toy_config(
            tmp, tiny_models, stages={"num_stages": 1, "partitions": 2}, student={"epochs": 1}, baselines=["sft"]
        )
    )
    mckd_flow(cfg)
    return cfg, json.loads((cfg.run_dir / "report.json").read_text())


def test_the_deliverables_card_parses_with_huggingface_hub_and_carries_its_metrics(toy_run):
    cfg, report = toy_run
    card = ModelCard.load(cfg.run_dir / "deliverable" / "README.md")
    data = card.data.to_dict()
    test = report["final_student"]["test"]
    results = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert results == {"f1": round(test["f1"], 1), "exact_match": round(test["exact_match"], 1)}
    assert data["mckd"]["test"]["ci95"] == test["ci95"] and data["mckd"]["candidate"] == "final"
    assert data["mckd"]["teacher"]["model"] == cfg.teacher.model
    assert data["mckd"]["recipe"] == {
        "num_stages": 1,
        "partitions": 2,
        "first_labels": "auto",  # the default; with one stage (vanilla KD) it keeps the teacher's labels
        "train_on_labeled": True,
        "gold_share": None,
        "init": "pretrained",
    }
    assert data["mckd"]["deliverable"] and data["mckd"]["why"] == report["deliverable"]["why"]
    # The toy student is a local dir: the Hub rejects a path as base_model, so the card keeps it under mckd only.
    assert "base_model" not in data and data["mckd"]["student_model"] == cfg.student.model
    assert f"F1 {test['f1']:.1f}" in card.text


def test_a_student_from_the_hub_is_the_cards_base_model(toy_run):
    report = copy.deepcopy(toy_run[1])
    report["config"]["student"]["model"] = "google/t5-efficient-tiny"
    assert card_data(report).base_model == "google/t5-efficient-tiny"


def test_a_shipped_baseline_gets_its_own_card_with_the_guards_reason(toy_run, tmp_path):
    report = copy.deepcopy(toy_run[1])
    sft = report["baselines"]["sft"]
    report["deliverable"] = {**report["deliverable"], "name": "sft", "dir": sft["dir"], "why": "sft beats it"}
    write_report(report, tmp_path)
    card = ModelCard.load(tmp_path / "deliverable" / "README.md")
    assert card.data.mckd["candidate"] == "sft" and card.data.mckd["why"] == "sft beats it"
    assert card.data.mckd["train_rows"] == sft["train_rows"] and "fine-tuned on gold rows only" in card.text
    assert "The run's deliverable (`deliverable/`): sft beats it." in card.text
