"""The unlabeled constituency format: PTB conversion, validation, repair, and hand-computed span F1."""

from __future__ import annotations

import pytest

from mckd_core.formats import get_format
from mckd_core.formats.constituency import BracketError, parse_brackets, spans, collapse, tree_to_target

FMT = get_format("constituency")


@pytest.mark.parametrize("ptb, target", [
    ("(S (NP (DT The) (NN cat)) (VP (VBD sat)) (. .))", "( ( The cat ) sat . )"),
    # outer empty bracket of treebank files, unary chains collapse to the word
    ("( (S (NP (NP (NN cell)) (PP (IN in) (NP (NN culture)))) (VP (VBZ grows))) )", "( ( cell ( in culture ) ) grows )"),
    # traces go, and so does the node that only held a trace
    ("(S (NP-SBJ (-NONE- *PRO*)) (VP (TO to) (VP (VB go))))", "( to go )"),
    ("( (HEADING (NP (NN Abstract))) )", "( Abstract )"),
])
def test_tree_to_target(ptb, target):
    assert tree_to_target(ptb) == target


def test_tree_to_target_drops_punctuation_by_tag():
    ptb = "(S (NP (NNS Mice) (-LRB- -LRB-) (NN n) (SYM =) (CD 5) (-RRB- -RRB-)) (VP (VBD died)) (, ,) (`` ``) (. .))"
    assert tree_to_target(ptb) == "( ( Mice -LRB- n = 5 -RRB- ) died , `` . )"
    assert tree_to_target(ptb, drop_punct=True) == "( ( Mice n = 5 ) died )"
    # removing the punctuation leaves a unary root, which collapses
    assert tree_to_target("(S (NP (NN Results)) (. .))", drop_punct=True) == "( Results )"
    with pytest.raises(BracketError):
        tree_to_target("(S (. .))", drop_punct=True)


def test_parse_brackets_and_spans():
    tree = parse_brackets("((The cat) (sat))")
    assert tree == [["The", "cat"], ["sat"]]
    assert spans(collapse(tree)) == {(0, 2), (0, 3)}
    for bad in ["", "the cat", "( the cat", "( the ) cat )", "( a ) ( b )", "( ( ) )"]:
        with pytest.raises(BracketError):
            parse_brackets(bad)


def test_target_error():
    assert FMT.target_error("The cat sat", "( ( The cat ) sat )") is None
    assert "malformed" in FMT.target_error("The cat sat", "( ( The cat ) sat")
    assert "differ" in FMT.target_error("The cat sat", "( ( The dog ) sat )")
    assert "differ" in FMT.target_error("The cat sat", "( ( The cat ) )")


def test_check_valid_output_is_canonicalized_without_repair():
    checked = FMT.check("The cat sat", "\n((The cat) sat)\nsecond line is ignored")
    assert checked == FMT.check("The cat sat", "( ( The cat ) sat )")
    assert checked.label == "( ( The cat ) sat )" and checked.valid and not checked.repaired


def test_repair_dropped_word():
    checked = FMT.check("a long book", "( a book )")
    assert (checked.label, checked.valid, checked.repaired) == ("( a long book )", True, True)
    # the dropped word joins the node of the word before it
    assert FMT.check("he read a long book", "( he ( read ( a book ) ) )").label == "( he ( read ( a long book ) ) )"
    # at the very start it goes before the first aligned word
    assert FMT.check("so he left", "( he left )").label == "( so he left )"


def test_repair_duplicated_and_changed_words():
    assert FMT.check("the cat sat", "( ( the cat cat ) sat )").label == "( ( the cat ) sat )"
    # a changed word keeps its place; an empty node left behind collapses
    assert FMT.check("the colour faded", "( ( the color ) ( faded ( extra ) ) )").label == "( ( the colour ) faded )"
    assert FMT.check("the cat sat", "( ( the cat ) sat )").repaired is False


def test_repair_unbalanced_brackets():
    assert FMT.check("the cat sat", "( ( the cat ) sat").label == "( ( the cat ) sat )"
    assert FMT.check("the cat sat", "the cat ) sat )").label == "( ( the cat ) sat )"
    assert FMT.check("the cat sat", "( the cat ) sat").label == "( ( the cat ) sat )"  # missing outer pair
    assert FMT.check("the cat sat", "( ( the cat ) sat").repaired


@pytest.mark.parametrize("output, error", [("", "empty"), ("  \n ", "empty"), (")", "no words"), ("( ( ) )", "no words"),
                                           ("( x y )", "no word of the output"),
                                           ("( " * 5000 + "the cat sat", "nested deeper")])
def test_invalid_outputs(output, error):
    checked = FMT.check("the cat sat", output)
    assert not checked.valid and checked.label is None and error in checked.error


def test_metrics_hand_computed():
    inputs = ["The cat sat on the mat", "a b c d", "x y", "a b c"]
    golds = ["( ( The cat ) ( sat ( on ( the mat ) ) ) )",  # spans (0,2) (2,6) (3,6) (4,6)
             "( a ( b ( c d ) ) )",                          # spans (1,4) (2,4)
             "( x y )",                                      # no non-trivial span: not in sentence F1
             "( ( a b ) c )"]                                # span (0,2)
    preds = ["( ( ( The cat ) sat ) ( on ( the mat ) ) )",  # (0,2) (0,3) (3,6) (4,6): 3/4 right -> F1 75
             "( ( a b ) ( c d ) )",                          # (0,2) (2,4): 1/2 right -> F1 50
             None,
             None]                                           # invalid: no spans -> F1 0
    m = FMT.metrics(inputs, golds, preds)
    assert m["f1"] == pytest.approx((75 + 50 + 0) / 3)
    assert m["n_sentence_f1"] == 3
    assert m["precision"] == pytest.approx(100 * 4 / 6)
    assert m["recall"] == pytest.approx(100 * 4 / 7)
    assert m["f1_micro"] == pytest.approx(100 * 8 / 13)
    assert m["exact_match"] == 0.0
    assert m["invalid"] == 50.0
    assert m["n"] == 4


def test_metrics_perfect_flat_and_invalid():
    inputs, golds = ["a b c d", "x y"], ["( a ( b ( c d ) ) )", "( x y )"]
    perfect = FMT.metrics(inputs, golds, golds)
    assert (perfect["f1"], perfect["f1_micro"], perfect["exact_match"], perfect["invalid"]) == (100.0, 100.0, 100.0, 0.0)
    # a flat prediction has no spans: it scores 0, it is not skipped; an unparsable one is invalid, not exact
    flat = FMT.metrics(inputs, golds, ["( a b c d )", "garbage"])
    assert (flat["f1"], flat["f1_micro"], flat["exact_match"], flat["invalid"]) == (0.0, 0.0, 0.0, 50.0)
    # repaired predictions are scored on the input words: c joins b's node -> ( a ( b c d ) ), P 1/1, R 1/2
    assert FMT.metrics(["a b c d"], ["( a ( b ( c d ) ) )"], ["( a ( b ( d ) ) )"])["f1"] == pytest.approx(200 / 3)


def test_metrics_spans_of_flat_gold_count_as_false_positives_in_micro_only():
    m = FMT.metrics(["a b c", "a b c"], ["( a b c )", "( ( a b ) c )"], ["( ( a b ) c )", "( ( a b ) c )"])
    assert m["n_sentence_f1"] == 1 and m["f1"] == 100.0
    assert m["precision"] == 50.0 and m["recall"] == 100.0


def test_metrics_rejects_invalid_gold():
    with pytest.raises(BracketError, match="row 0"):
        FMT.metrics(["a b"], ["( a c )"], ["( a b )"])


@pytest.mark.parametrize("output, allowed", [
    ("( ( The cat ) ( sat ) . )", True),
    (" ( Abstract )", True),
    ("( ( The cat ) sat", True),  # unbalanced: left to check(), which repairs it
    ("The cat sat", False),  # no tree
    ("( The cat )\n( Input: more )", False),  # rambling onto a new line
    ("(The cat)", False),  # brackets must be tokens of their own
])
def test_structured_output_regex(output, allowed):
    import re

    assert bool(re.fullmatch(get_format("constituency").regex, output)) is allowed
