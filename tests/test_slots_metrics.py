"""The slots format: BIO <-> brackets, conlleval chunking, repair, and hand-computed chunk F1."""

from __future__ import annotations

import pytest

from mckd_core.formats import get_format
from mckd_core.formats.slots import SlotParseError, bio_to_bracketed, bracketed_to_bio, chunks

FMT = get_format("slots")


def test_round_trip_with_multi_word_slots():
    words = "flights from new york to san francisco".split()
    tags = ["O", "O", "B-fromloc.city_name", "I-fromloc.city_name", "O", "B-toloc.city_name", "I-toloc.city_name"]
    text = bio_to_bracketed(words, tags)
    assert text == "flights from [fromloc.city_name new york] to [toloc.city_name san francisco]"
    assert bracketed_to_bio(text) == (words, tags)
    assert chunks(tags) == [(2, 4, "fromloc.city_name"), (5, 7, "toloc.city_name")]


def test_adjacent_chunks_of_one_type_stay_two():
    tags = ["B-day", "B-day"]
    assert chunks(tags) == [(0, 1, "day"), (1, 2, "day")]
    text = bio_to_bracketed(["monday", "tuesday"], tags)
    assert text == "[day monday] [day tuesday]"
    assert bracketed_to_bio(text) == (["monday", "tuesday"], tags)


def test_i_without_b_starts_a_chunk_as_in_conlleval():
    assert chunks(["I-X", "I-X", "O"]) == [(0, 2, "X")]
    assert chunks(["O", "I-X"]) == [(1, 2, "X")]
    assert chunks(["B-X", "I-Y", "I-Y"]) == [(0, 1, "X"), (1, 3, "Y")]
    assert bio_to_bracketed(["a", "b"], ["I-X", "I-X"]) == "[X a b]"


@pytest.mark.parametrize("text", ["[X a", "a ]", "[ ]", "[X ]", "[X [Y a] ]"])
def test_malformed_brackets(text):
    with pytest.raises(SlotParseError):
        bracketed_to_bio(text)


def test_check_repairs_a_dropped_word():
    checked = FMT.check("from boston to dallas", "from [fromloc boston] [toloc dallas]")
    assert (checked.label, checked.valid, checked.repaired) == ("from [fromloc boston] to [toloc dallas]", True, True)
    # a word dropped inside a slot is outside the slot after repair
    assert FMT.check("to new york", "to [toloc york]").label == "to new [toloc york]"
    assert FMT.check("to new york", "to [toloc new york]").repaired is False


def test_target_error():
    assert FMT.target_error("to dallas", "to [toloc dallas]") is None
    assert "malformed" in FMT.target_error("to dallas", "to [toloc dallas")
    assert "differ" in FMT.target_error("to dallas", "to [toloc austin]")


def test_metrics_hand_computed_with_invalid_predictions():
    inputs = ["from boston to dallas", "flights to new york", "show me flights", "cheap flights"]
    golds = [
        "from [fromloc boston] to [toloc dallas]",
        "flights to [toloc new york]",
        "show me flights",
        "[cost cheap] flights",
    ]
    preds = [
        "from [fromloc boston] to [fromloc dallas]",  # 1 of 2 chunks right
        None,  # invalid: misses 1 gold chunk
        "show me [x flights",  # unparsable: invalid, no chunks
        "[cost cheap] flights",
    ]  # right
    m = FMT.metrics(inputs, golds, preds)
    assert m["precision"] == pytest.approx(100 * 2 / 3)
    assert m["recall"] == pytest.approx(100 * 2 / 4)
    assert m["f1"] == pytest.approx(100 * 4 / 7)
    assert m["invalid"] == 50.0
    assert m["exact_match"] == 25.0  # an invalid prediction is never an exact match, even with no gold slots
    assert m["n"] == 4


def test_metrics_with_no_predicted_chunks_is_zero():
    m = FMT.metrics(["to dallas"], ["to [toloc dallas]"], [None])
    assert (m["precision"], m["recall"], m["f1"], m["invalid"]) == (0.0, 0.0, 0.0, 100.0)


@pytest.mark.parametrize(
    "output, allowed",
    [
        ("flights from [fromloc.city_name new york] to [toloc.city_name san francisco]", True),
        (" [day monday] [day tuesday]", True),
        ("show flights", True),
        ("from [fromloc.city_name boston] to\nInput: next", False),  # rambling onto a new line
        ("from [boston] to", False),  # a span without a type
        ("from [a [b c]] d", False),  # nested spans
        ("", False),
    ],
)
def test_structured_output_regex(output, allowed):
    import re

    assert bool(re.fullmatch(FMT.regex, output)) is allowed


def test_structured_output_regex_allows_every_atis_target():
    from mckd_core.atis import load_atis

    targets = load_atis("train")["target"]
    assert len(targets) > 4000 and targets.str.fullmatch(FMT.regex).all()
