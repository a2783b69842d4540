"""The json format: canonical targets, safe repairs, the leaf-pair metric on hand-computed cases, JSON Schemas for
gold and outputs, structured outputs, and ATIS as JSON."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from flows.cli import app
from mckd_core.config import parse_config
from mckd_core.errors import MckdInputError
from mckd_core.formats import format_ref, get_format
from mckd_core.formats.json_format import leaves
from mckd_core.steps import prepare_inputs, structured_constraint
from mckd_core.teacher import GenParams
from mckd_core.teacher.cache import ResponseCache

JSON = get_format("json")
SCHEMA = {
    "type": "object",
    "properties": {
        "intent": {"enum": ["flight", "fare"]},
        "slots": {"type": "object", "additionalProperties": {"type": "string"}},
    },
    "required": ["intent"],
    "additionalProperties": False,
}
BOUND = get_format(format_ref("json", SCHEMA))


def score(golds: list[str], preds: list[str | None], fmt=JSON) -> dict:
    return fmt.metrics([""] * len(golds), golds, preds)


# ---- outputs: canonical form, repairs, invalid ---------------------------------------------------------


def test_a_valid_object_becomes_its_canonical_form_without_counting_as_a_repair():
    checked = JSON.check("", '{"b": [1, 2], "a": "é"}')
    assert checked == type(checked)('{"a":"é","b":[1,2]}', True, False, None)


@pytest.mark.parametrize(
    "output",
    [
        '```json\n{"a": 1}\n```',  # a code fence
        'Here it is: {"a": 1} - hope that helps',  # text around the object
        '{"a": 1,}',  # a trailing comma
        '```\n{\n  "a": 1,\n}\n```\nDone.',  # all three, over several lines
    ],
)
def test_fences_surrounding_text_and_trailing_commas_are_repaired(output):
    checked = JSON.check("", output)
    assert (checked.label, checked.valid, checked.repaired) == ('{"a":1}', True, True)


def test_a_comma_inside_a_string_is_kept():
    assert JSON.check("", '{"a": "x,}", "b": [1,],}').label == '{"a":"x,}","b":[1]}'


@pytest.mark.parametrize(
    "output, reason",
    [
        ("", "empty output"),
        ("no object here", "no JSON object"),
        ('{"a": 1', "invalid JSON"),
        ('{"a": NaN}', "invalid JSON"),
        ("[1, 2]", "a JSON array, not an object"),
        ('"text"', "a JSON string, not an object"),
    ],
)
def test_what_cannot_be_safely_repaired_is_invalid_with_the_reason(output, reason):
    checked = JSON.check("", output)
    assert not checked.valid and checked.label is None and reason in checked.error


def test_an_output_that_violates_the_schema_is_invalid_naming_where():
    checked = BOUND.check("", '{"intent": "hotel", "slots": {}}')
    assert not checked.valid
    assert "$.intent" in checked.error and "properties/intent/enum" in checked.error
    assert BOUND.check("", '{"intent": "fare"}').valid


# ---- the metric ----------------------------------------------------------------------------------------


def test_leaves_are_paths_of_keys_with_lists_as_brackets():
    value = {"a": {"b": [1, {"c": True}], "d": None}, "e": {}, "f": []}
    assert sorted(leaves(value)) == [(("a", "b", "[]"), "1"), (("a", "b", "[]", "c"), "true"), (("a", "d"), "null")]


def test_nested_objects_score_their_leaf_pairs():
    gold = '{"intent":"flight","slots":{"from":"boston","to":"denver"}}'
    pred = '{"intent":"flight","slots":{"from":"boston","to":"dallas"}}'
    m = score([gold], [pred])
    # 3 gold pairs, 3 predicted, 2 right.
    assert (m["precision"], m["recall"]) == pytest.approx((200 / 3, 200 / 3))
    assert m["f1"] == pytest.approx(200 / 3) and m["exact_match"] == 0 and m["invalid"] == 0


def test_list_order_does_not_matter_but_counts_do():
    gold = '{"days":["mon","tue","tue"]}'
    assert score([gold], ['{"days":["tue","mon","tue"]}'])["f1"] == 100.0
    m = score([gold], ['{"days":["tue","mon"]}'])  # multiset: 2 of 3 gold pairs, both predictions right
    assert (m["precision"], m["recall"]) == pytest.approx((100.0, 200 / 3))
    assert m["exact_match"] == 0  # exact match compares the canonical objects, list order included


def test_missing_and_extra_keys_lower_recall_and_precision():
    gold = '{"a":1,"b":2}'
    missing = score([gold], ['{"a":1}'])
    assert (missing["precision"], missing["recall"]) == pytest.approx((100.0, 50.0))
    extra = score([gold], ['{"a":1,"b":2,"c":3,"d":4}'])
    assert (extra["precision"], extra["recall"]) == pytest.approx((50.0, 100.0))


def test_a_value_of_another_type_is_wrong():
    m = score(['{"n":1,"s":"1","t":true,"z":null}'], ['{"n":"1","s":1,"t":1,"z":"null"}'])
    assert (m["precision"], m["recall"], m["f1"]) == (0.0, 0.0, 0.0)


def test_one_and_one_point_zero_are_different_values():
    assert score(['{"n":1}'], ['{"n":1.0}'])["f1"] == 0.0
    assert score(['{"n":1.0}'], ['{"n":1.0}'])["f1"] == 100.0


def test_an_invalid_prediction_misses_every_gold_pair_and_counts_as_invalid():
    m = score(['{"a":1,"b":2}', '{"a":1}'], ['{"a":1,"b":2', '{"a":1}'])
    # Row 1: 2 gold, nothing predicted; row 2: 1 of 1. Pooled: P 1/1, R 1/3.
    assert (m["precision"], m["recall"]) == pytest.approx((100.0, 100 / 3))
    assert (m["invalid"], m["exact_match"]) == (50.0, 50.0)
    assert score(['{"a":1}'], [None])["invalid"] == 100.0


def test_empty_objects_have_no_pairs_but_match_exactly():
    m = score(["{}", '{"a":1}'], ["{}", "{}"])
    assert (m["precision"], m["recall"], m["exact_match"], m["invalid"]) == (0.0, 0.0, 50.0, 0.0)


def test_row_stats_aggregate_to_the_corpus_f1():
    golds = ['{"a":1,"b":[1,2]}', '{"a":2}', '{"c":{"d":"x"}}']
    preds = ['{"b":[2,1],"a":1}', "oops", '{"c":{"d":"y"},"e":1}']
    stats = JSON.row_stats([""] * 3, golds, preds)
    assert stats.tolist() == [[3, 3, 3], [0, 0, 1], [0, 2, 1]]
    assert float(JSON.aggregate(stats)) == pytest.approx(score(golds, preds)["f1"])
    assert JSON.aggregate(np.stack([stats, stats[[0, 0, 0]]])).shape == (2,)  # resamples scored at once


# ---- gold targets and the run config -------------------------------------------------------------------


def _sets(tmp_path, labeled_targets) -> dict:
    rows = [{"id": f"l{i}", "input": f"sentence {i}", "target": t} for i, t in enumerate(labeled_targets)]
    with open(tmp_path / "l.jsonl", "w") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in rows)
    pd.DataFrame({"id": ["u0", "u1"], "input": ["a", "b"]}).to_parquet(tmp_path / "u.parquet")
    return {"labeled": str(tmp_path / "l.jsonl"), "unlabeled": str(tmp_path / "u.parquet")}


def _config(tmp_path, data: dict, **extra) -> dict:
    return {
        "runs_root": str(tmp_path / "runs"),
        "data": {"task": "json", **data},
        "teacher": {"model": "x", "num_demos": 1},
        "student": {"model": "x"},
        **extra,
    }


def test_gold_that_violates_the_schema_stops_the_run_naming_file_row_and_schema_path(tmp_path):
    data = _sets(tmp_path, ['{"intent":"flight"}', {"intent": "flight", "slots": {"to": 3}}, '{"intent":"fare"}'])
    (tmp_path / "schema.json").write_text(json.dumps(SCHEMA))
    cfg = parse_config(_config(tmp_path, {**data, "schema": str(tmp_path / "schema.json")}))
    with pytest.raises(MckdInputError) as info:
        prepare_inputs(cfg)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(
        f"labeled ({tmp_path / 'l.jsonl'}): row 1 (id 'l1'): field 'target' is not a valid json target"
    )
    assert "$.slots.to" in message and "schema path properties/slots/additionalProperties/type" in message
    assert not (tmp_path / "runs").exists()  # stopped before writing anything, let alone loading a model


def test_gold_that_is_not_one_json_object_stops_the_run(tmp_path):
    cfg = parse_config(_config(tmp_path, _sets(tmp_path, ['{"a":1}', "[1, 2]"])))
    with pytest.raises(MckdInputError, match=r"row 1 \(id 'l1'\).*a JSON array, not an object"):
        prepare_inputs(cfg)
    cfg = parse_config(_config(tmp_path, _sets(tmp_path, ['{"a":1}', '{"a": 1']), run_name="b"))
    with pytest.raises(MckdInputError, match=r"row 1 \(id 'l1'\).*not one JSON object: invalid JSON"):
        prepare_inputs(cfg)


def test_gold_targets_are_stored_canonical_whether_written_as_text_or_as_objects(tmp_path, monkeypatch):
    monkeypatch.setattr("mckd_core.steps.check_model_ref", lambda *a: None)
    monkeypatch.setattr("mckd_core.steps.check_lengths", lambda cfg, sets: ({}, []))
    data = _sets(tmp_path, ['{ "slots": {}, "intent": "fare" }', {"intent": "flight", "slots": {"to": "denver"}}])
    cfg = parse_config(
        _config(
            tmp_path, {**data, "schema": SCHEMA, "dev_holdout": 0}, student={"model": "x", "train_on_labeled": False}
        )
    )
    inputs = prepare_inputs(cfg)
    assert list(inputs.labeled.read()["target"]) == [
        '{"intent":"fare","slots":{}}',
        '{"intent":"flight","slots":{"to":"denver"}}',
    ]


def test_the_schema_may_be_inline_a_file_or_json_text_and_rides_in_the_format_reference(tmp_path):
    (tmp_path / "s.yaml").write_text("type: object\nrequired: [intent]\n")
    for schema in (
        {"type": "object", "required": ["intent"]},
        str(tmp_path / "s.yaml"),
        '{"type": "object", "required": ["intent"]}',
    ):
        data = parse_config(_config(tmp_path, {"labeled": "l", "unlabeled": "u", "schema": schema})).data
        assert json.loads(data.format_ref) == {"format": "json", "schema": {"type": "object", "required": ["intent"]}}
        assert not get_format(data.format_ref).check("", '{"a": 1}').valid
    assert parse_config(_config(tmp_path, {"labeled": "l", "unlabeled": "u"})).data.format_ref == "json"


@pytest.mark.parametrize(
    "schema, message",
    [
        ({"type": "objekt"}, "data.schema: not a valid JSON Schema at type"),
        ("missing.json", "data.schema: file not found: missing.json"),
        ("[1]", "data.schema: file not found"),
    ],
)
def test_a_bad_schema_is_a_config_error(tmp_path, schema, message):
    with pytest.raises(MckdInputError, match=message):
        parse_config(_config(tmp_path, {"labeled": "l", "unlabeled": "u", "schema": schema}))


def test_a_format_without_schemas_refuses_one(tmp_path):
    with pytest.raises(MckdInputError, match="the 'slots' format takes no JSON Schema"):
        parse_config(
            _config(tmp_path, {"task": "slots", "labeled": "l", "unlabeled": "u", "schema": {"type": "object"}})
        )


def test_the_config_round_trips_with_its_schema(tmp_path):
    cfg = parse_config(_config(tmp_path, {"labeled": "l", "unlabeled": "u", "schema": SCHEMA}))
    dumped = cfg.model_dump(mode="json")
    assert dumped["data"]["schema"] == SCHEMA
    assert parse_config(dumped).data.format_ref == cfg.data.format_ref


# ---- the teacher ---------------------------------------------------------------------------------------


def test_the_instruction_names_the_schemas_fields_and_allowed_values():
    text = BOUND.instruction
    assert '"intent" (required, one of "flight", "fare")' in text and '"slots" (object' in text
    assert JSON.instruction != text


def test_structured_outputs_carry_the_schema_and_keep_old_cache_keys():
    params = GenParams(32, **structured_constraint(BOUND))
    assert params.structured_outputs() == {"json": SCHEMA}
    assert GenParams(32, **structured_constraint(JSON)).structured_outputs() == {"json": {"type": "object"}}
    assert GenParams(32, **structured_constraint(get_format("slots"))).structured_outputs() == {
        "regex": get_format("slots").regex
    }
    # Parameters without a schema key the response cache with the fields they had before the schema existed.
    plain = GenParams(32, regex="[a-z]+")
    demos = [("d", "e")]
    payload = json.dumps(
        ["m", "t", [["d", "e"]], {"max_new_tokens": 32, "temperature": 0.0, "regex": "[a-z]+"}, "x", True],
        sort_keys=True,
    )
    import hashlib

    assert ResponseCache.key("m", "t", demos, plain, "x", True) == hashlib.sha256(payload.encode()).hexdigest()
    assert ResponseCache.key("m", "t", demos, params, "x", True) != ResponseCache.key(
        "m", "t", demos, GenParams(32), "x", True
    )


def test_the_teacher_reads_a_whole_multi_line_answer():
    assert BOUND.extract_output('Output: ```json\n{"intent":\n "fare"}\n```') == '```json\n{"intent":\n "fare"}\n```'
    assert (
        BOUND.check("", BOUND.extract_output('Output: ```json\n{"intent":\n "fare"}\n```')).label == '{"intent":"fare"}'
    )


# ---- mckd eval --schema and ATIS as JSON ---------------------------------------------------------------


def test_mckd_eval_scores_json_with_a_schema(tmp_path):
    gold = pd.DataFrame(
        {
            "id": ["1", "2"],
            "input": ["a", "b"],
            "target": ['{"intent":"flight","slots":{"to":"denver"}}', '{"intent":"fare"}'],
        }
    )
    pred = pd.DataFrame(
        {"id": ["1", "2"], "label": ['{"slots":{"to":"denver"},"intent":"flight"}', '{"intent":"hotel"}']}
    )
    gold.to_json(tmp_path / "gold.jsonl", orient="records", lines=True)
    pred.to_json(tmp_path / "pred.jsonl", orient="records", lines=True)
    (tmp_path / "schema.json").write_text(json.dumps(SCHEMA))
    args = ["eval", "--task", "json", "--gold", str(tmp_path / "gold.jsonl"), "--pred", str(tmp_path / "pred.jsonl")]
    with_schema = json.loads(CliRunner().invoke(app, args + ["--schema", str(tmp_path / "schema.json")]).stdout)
    without = json.loads(CliRunner().invoke(app, args).stdout)
    assert (with_schema["invalid"], with_schema["exact_match"]) == (50.0, 50.0)  # "hotel" breaks the schema
    assert with_schema["recall"] == pytest.approx(200 / 3) and with_schema["precision"] == 100.0
    assert without["invalid"] == 0.0 and without["precision"] == pytest.approx(200 / 3)
    assert "ci95" in with_schema


def test_mckd_data_atis_json_writes_valid_targets_and_their_schema(tmp_path):
    result = CliRunner().invoke(
        app,
        [
            "data",
            "atis-json",
            "--out",
            str(tmp_path),
            "--labeled",
            "20",
            "--unlabeled",
            "30",
            "--test",
            "40",
            "--seed",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    schema = json.loads((tmp_path / "schema.json").read_text())
    fmt = get_format(format_ref("json", schema))
    sets = {name: pd.read_parquet(tmp_path / f"{name}.parquet") for name in ("labeled", "unlabeled", "test")}
    assert [len(df) for df in sets.values()] == [20, 30, 40]
    for df in sets.values():
        for text, target in zip(df["input"], df["target"]):
            assert fmt.target_error(text, target) is None
            assert fmt.check(text, target).label == target  # stored canonical
            value = json.loads(target)
            assert set(value) == {"intent", "slots"}
            words = text.split()
            for slot in value["slots"].values():  # slot values are words of the sentence
                for span in slot if isinstance(slot, list) else [slot]:
                    assert " ".join(words).find(span) >= 0
    intents = schema["properties"]["intent"]["enum"]
    assert "atis_flight" in intents and set(sets["labeled"]["intent"]) <= set(intents)
    assert not set(sets["labeled"]["id"]) & set(sets["unlabeled"]["id"])
    example = json.loads(sets["labeled"]["target"].iloc[0])
    assert example["intent"] == sets["labeled"]["intent"].iloc[0]
