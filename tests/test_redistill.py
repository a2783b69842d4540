"""Re-distillation decides on content: reused ids, duplicate inputs, edited and removed rows (issue #26 item 5)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from toy_data import toy_config

import flows.redistill as redistill
from mckd_core.config import parse_config
from mckd_core.data import input_id, one_line
from mckd_core.errors import MckdInputError
from mckd_core.incoming import changes, combine_sources


def rows(ids, inputs):
    return pd.DataFrame({"id": ids, "input": inputs}) if ids is not None else pd.DataFrame({"input": inputs})


def test_a_new_file_reusing_ids_gets_content_ids_and_is_reported():
    first = combine_sources([("seed.jsonl", rows(["0", "1"], ["cat sun", "red hot"]))])
    previous = dict(zip(first.frame["id"], first.frame["input"]))
    combined = combine_sources(
        [
            ("seed.jsonl", rows(["0", "1"], ["cat sun", "red hot"])),
            ("new.jsonl", rows(["0", "1"], ["big day", "yes up"])),
        ],
        previous,
    )
    assert list(combined.frame["id"]) == ["0", "1", input_id("big day"), input_id("yes up")]
    found = changes(combined, previous)
    assert found["new_rows"] == 2 and found["edited"]["count"] == found["removed"]["count"] == 0
    assert found["reassigned_ids"]["rows"][0] == {
        "file": "new.jsonl",
        "row": 0,
        "id": "0",
        "new_id": input_id("big day"),
        "why": "id taken",
        "id_taken_by": {"file": "seed.jsonl", "row": 0, "id": "0"},
    }


def test_a_row_of_the_last_set_keeps_its_id_when_a_file_sorted_before_it_reuses_that_id():
    previous = {"0": "cat sun"}
    combined = combine_sources([("a.jsonl", rows(["0"], ["big day"])), ("b.jsonl", rows(["0"], ["cat sun"]))], previous)
    assert dict(zip(combined.frame["id"], combined.frame["input"])) == {input_id("big day"): "big day", "0": "cat sun"}
    assert changes(combined, previous)["edited"]["count"] == 0


def test_a_new_id_for_an_input_seen_before_is_a_reported_duplicate_compared_on_one_line_text():
    combined = combine_sources(
        [("seed.jsonl", rows(["0"], ["cat sun"])), ("new.jsonl", rows(["n7", None], ["cat sun", "cat \n sun"]))]
    )
    assert list(combined.frame["id"]) == ["0"]
    assert [(d["file"], d["row"], d["duplicate_of"]["id"]) for d in combined.duplicates] == [
        ("new.jsonl", 0, "0"),
        ("new.jsonl", 1, "0"),
    ]


def test_rows_without_ids_get_the_one_line_content_id_data_py_gives():
    combined = combine_sources([("a.jsonl", rows(None, ["cat\tsun\n"]))])
    assert list(combined.frame["id"]) == [input_id("cat sun")] == [input_id("cat\tsun\n")]
    assert list(combined.frame["input"]) == [one_line("cat\tsun\n")]


def test_edited_and_removed_rows_are_reported_and_only_new_text_counts_as_new():
    previous = {"0": "cat sun", "1": "red hot", "2": "big day"}
    combined = combine_sources([("seed.jsonl", rows(["0", "1"], ["cat sun", "red cold"]))], previous)
    found = changes(combined, previous)
    assert found["new_rows"] == 1 and found["new_ids"] == ["1"]
    assert found["edited"]["rows"] == [{"file": "seed.jsonl", "row": 1, "id": "1", "was": "red hot", "now": "red cold"}]
    assert found["removed"]["rows"] == [{"id": "2", "input": "big day"}]


def test_a_reassigned_id_that_is_taken_too_is_an_error_naming_both_files_and_rows():
    taken = input_id("big day")
    with pytest.raises(
        MckdInputError,
        match=r"new.jsonl row 0: id '0' is taken by seed.jsonl row 0 and its content id "
        rf"'{taken}' by seed.jsonl row 1",
    ):
        combine_sources(
            [("seed.jsonl", rows(["0", taken], ["cat sun", "red hot"])), ("new.jsonl", rows(["0"], ["big day"]))]
        )


def test_redistilling_a_new_file_that_reuses_ids_distills_its_rows_and_reports_them(tmp_path, tiny_models, monkeypatch):
    """The flow end to end around the MCKD subflow (recorded here, not run: its own tests train students)."""
    distilled = []

    def fake_mckd_flow(config):
        distilled.append(pd.read_parquet(config.data.unlabeled))
        return {"counts": {"unlabeled": len(distilled[-1])}}

    monkeypatch.setattr(redistill, "mckd_flow", fake_mckd_flow)
    raw = toy_config(tmp_path, tiny_models, run_name="redistill")
    watch = tmp_path / "incoming"
    watch.mkdir()
    seed = pd.read_parquet(raw["data"]["unlabeled"])
    cfg = parse_config(raw | {"data": {**raw["data"], "unlabeled": str(watch)}})  # the folder only
    seed.iloc[:2].assign(id=["0", "1"]).to_json(watch / "a.jsonl", orient="records", lines=True)
    first = redistill.redistill_flow(cfg, str(watch))
    assert first["status"] == "distilled" and first["new_rows"] == 2

    reused = pd.DataFrame({"id": ["0", "1"], "input": ["big day", "yes up"]})  # ids a.jsonl already uses
    reused.to_json(watch / "b.jsonl", orient="records", lines=True)
    second = redistill.redistill_flow(cfg, str(watch))
    assert second["status"] == "distilled" and second["new_rows"] == 2
    assert set(distilled[-1]["input"]) == set(seed["input"].iloc[:2]) | {"big day", "yes up"}
    assert second["reassigned_ids"]["count"] == 2
    assert [r["file"] for r in second["reassigned_ids"]["rows"]] == [str(watch / "b.jsonl")] * 2

    (watch / "a.jsonl").write_text(json.dumps({"id": "0", "input": "cat cat"}) + "\n")  # edit row 0, remove row 1
    third = redistill.redistill_flow(cfg, str(watch))
    assert third["status"] == "distilled" and third["new_rows"] == 1
    assert third["edited"]["rows"][0]["id"] == "0" and third["edited"]["rows"][0]["now"] == "cat cat"
    assert [r["id"] for r in third["removed"]["rows"]] == ["1"] and third["edited"]["count"] == 1
    assert {r["new_id"] for r in third["reassigned_ids"]["rows"]} == {input_id("big day"), input_id("yes up")}
    again = redistill.redistill_flow(cfg, str(watch))
    assert again["status"] == "no new data" and again["new_rows"] == 0 and len(distilled) == 3
