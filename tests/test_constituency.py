"""The unlabeled constituency format: PTB conversion, validation, repair, and hand-computed span F1."""

from __future__ import annotations

import pytest

from mckd_core.formats import get_format
from mckd_core.formats.constituency import (
    BracketError,
    authors_sentence_f1,
    collapse,
    leaves,
    parse_brackets,
    ptb_to_tree,
    spans,
    tagged_words,
    tree_to_target,
)

FMT = get_format("constituency")


@pytest.mark.parametrize(
    "ptb, target",
    [
        ("(S (NP (DT The) (NN cat)) (VP (VBD sat)) (. .))", "( ( The cat ) sat . )"),
        # outer empty bracket of treebank files, unary chains collapse to the word
        (
            "( (S (NP (NP (NN cell)) (PP (IN in) (NP (NN culture)))) (VP (VBZ grows))) )",
            "( ( cell ( in culture ) ) grows )",
        ),
        # traces go, and so does the node that only held a trace
        ("(S (NP-SBJ (-NONE- *PRO*)) (VP (TO to) (VP (VB go))))", "( to go )"),
        ("( (HEADING (NP (NN Abstract))) )", "( Abstract )"),
    ],
)
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


@pytest.mark.parametrize(
    "output, error",
    [
        ("", "empty"),
        ("  \n ", "empty"),
        (")", "no words"),
        ("( ( ) )", "no words"),
        ("( x y )", "no word of the output"),
        ("( " * 5000 + "the cat sat", "nested deeper"),
    ],
)
def test_invalid_outputs(output, error):
    checked = FMT.check("the cat sat", output)
    assert not checked.valid and checked.label is None and error in checked.error


def test_metrics_hand_computed():
    inputs = ["The cat sat on the mat", "a b c d", "x y", "a b c"]
    golds = [
        "( ( The cat ) ( sat ( on ( the mat ) ) ) )",  # spans (0,2) (2,6) (3,6) (4,6)
        "( a ( b ( c d ) ) )",  # spans (1,4) (2,4)
        "( x y )",  # no non-trivial span: not in sentence F1
        "( ( a b ) c )",
    ]  # span (0,2)
    preds = [
        "( ( ( The cat ) sat ) ( on ( the mat ) ) )",  # (0,2) (0,3) (3,6) (4,6): 3/4 right -> F1 75
        "( ( a b ) ( c d ) )",  # (0,2) (2,4): 1/2 right -> F1 50
        None,
        None,
    ]  # invalid: no spans -> F1 0
    m = FMT.metrics(inputs, golds, preds)
    assert m["f1_kim"] == pytest.approx((75 + 50 + 0) / 3)
    assert m["n_sentence_f1"] == 3
    # the authors' metric: the whole-sentence span counts (4/5 and 2/3 right), every sentence in the mean
    assert m["f1"] == pytest.approx(100 * (0.8 + 2 / 3 + 0 + 0) / 4)
    assert m["precision"] == pytest.approx(100 * 4 / 6)
    assert m["recall"] == pytest.approx(100 * 4 / 7)
    assert m["f1_micro"] == pytest.approx(100 * 8 / 13)
    assert m["exact_match"] == 0.0
    assert m["invalid"] == 50.0
    assert m["n"] == 4


def test_metrics_perfect_flat_and_invalid():
    inputs, golds = ["a b c d", "x y"], ["( a ( b ( c d ) ) )", "( x y )"]
    perfect = FMT.metrics(inputs, golds, golds)
    assert (perfect["f1"], perfect["f1_kim"], perfect["f1_micro"], perfect["exact_match"], perfect["invalid"]) == (
        100.0,
        100.0,
        100.0,
        100.0,
        0.0,
    )
    # a flat prediction has no non-trivial spans: Kim's F1 0, not skipped; the authors' F1 still counts its root
    # span (P 1/1, R 1/3); an unparsable one is invalid, not exact, and 0 for both
    flat = FMT.metrics(inputs, golds, ["( a b c d )", "garbage"])
    assert (flat["f1_kim"], flat["f1_micro"], flat["exact_match"], flat["invalid"]) == (0.0, 0.0, 0.0, 50.0)
    assert flat["f1"] == pytest.approx((50 + 0) / 2)
    # repaired predictions are scored on the input words: c joins b's node -> ( a ( b c d ) ), P 1/1, R 1/2
    repaired = FMT.metrics(["a b c d"], ["( a ( b ( c d ) ) )"], ["( a ( b ( d ) ) )"])
    assert repaired["f1_kim"] == pytest.approx(200 / 3)
    assert repaired["f1"] == pytest.approx(80.0)  # root span too: P 2/2, R 2/3


def test_metrics_spans_of_flat_gold_count_as_false_positives_in_micro_only():
    m = FMT.metrics(["a b c", "a b c"], ["( a b c )", "( ( a b ) c )"], ["( ( a b ) c )", "( ( a b ) c )"])
    assert m["n_sentence_f1"] == 1 and m["f1_kim"] == 100.0
    assert m["f1"] == pytest.approx((200 / 3 + 100) / 2)  # the flat gold's sentence counts in the authors' mean
    assert m["precision"] == 50.0 and m["recall"] == 100.0


# --- the MCKD authors' metric (their parserlib.run_eval), computed by hand --------------------------------------


def authors(inputs, golds, preds, pos=None) -> float:
    return FMT.metrics(inputs, golds, preds, pos=pos)["f1"]


def test_authors_f1_counts_the_whole_sentence_span():
    # gold {(0,2), (0,3)}, prediction {(1,3), (0,3)}: only the root matches -> P 1/2, R 1/2
    assert authors(["a b c"], ["( ( a b ) c )"], ["( a ( b c ) )"]) == pytest.approx(50.0)
    assert FMT.metrics(["a b c"], ["( ( a b ) c )"], ["( a ( b c ) )"])["f1_kim"] == 0.0


def test_authors_f1_of_one_and_two_word_sentences():
    # one word: no span of two words, so no span matches -> 0, and the sentence stays in the mean
    assert authors(["Abstract"], ["( Abstract )"], ["( Abstract )"]) == 0.0
    # two words: the root is the only span, any valid tree gets it -> 100
    assert authors(["x y"], ["( x y )"], ["( x y )"]) == 100.0
    m = FMT.metrics(["Abstract", "x y"], ["( Abstract )", "( x y )"], ["( Abstract )", "( x y )"])
    assert (m["f1"], m["n_sentence_f1"], m["f1_kim"], m["exact_match"]) == (50.0, 0, 0.0, 100.0)


def test_authors_f1_failed_parse_counts_zero():
    inputs, golds = ["a b c", "x y"], ["( ( a b ) c )", "( x y )"]
    assert authors(inputs, golds, [None, "( x y )"]) == 50.0  # no output
    assert authors(inputs, golds, ["q r s", "( x y )"]) == 50.0  # no word of the input: check() rejects it


def test_authors_f1_removes_punctuation_by_gold_pos():
    inputs, golds = ["The cat sat ."], ["( ( The cat ) ( sat . ) )"]
    pred = ["( The ( cat ( sat . ) ) )"]
    # without '.': gold ( ( The cat ) sat ) {(0,2), (0,3)}, prediction ( The ( cat sat ) ) {(1,3), (0,3)}
    assert authors(inputs, golds, pred, pos=["DT NN VBD ."]) == pytest.approx(50.0)
    # without POS every token is a word: gold {(0,2), (2,4), (0,4)}, prediction {(2,4), (1,4), (0,4)}
    assert authors(inputs, golds, pred) == pytest.approx(100 * 2 / 3)
    # leading and inner punctuation: both trees become ( Yes ( he said ) )
    quote = ["`` Yes , he said"], ["( `` ( Yes , ) ( he said ) )"], ["( ( `` Yes ) ( , he said ) )"]
    assert authors(*quote, pos=["`` UH , PRP VBD"]) == 100.0
    assert authors(*quote) == pytest.approx(100 / 3)  # {(1,3), (3,5), (0,5)} vs {(0,2), (2,5), (0,5)}
    # CRAFT's HYPH is not a word tag (Kim et al.'s PUNCT_TAGS would keep it): ( ( wild type ) mice ) vs ( wild ( type
    # mice ) )
    assert authors(
        ["wild - type mice"], ["( ( wild - type ) mice )"], ["( wild ( - type mice ) )"], pos=["JJ HYPH NN NNS"]
    ) == pytest.approx(50.0)
    # rows without tags (None, NaN from Parquet) keep every word; a tag count that differs from the words is an error
    assert authors(inputs, golds, pred, pos=[float("nan")]) == pytest.approx(100 * 2 / 3)
    with pytest.raises(BracketError, match="gold POS of row 0: 3 tags for 4 words"):
        authors(inputs, golds, pred, pos=["DT NN VBD"])


def test_authors_sentence_f1_applies_the_gold_mask_by_position():
    gold = [["The", "cat"], ["sat", "."]]
    is_word = [True, True, True, False]
    # run_eval masks the predicted leaves by position and compares word counts only: a prediction without the '.'
    # keeps 3 words like the gold and is scored ({(1,3), (0,3)} vs {(0,2), (0,3)})
    assert authors_sentence_f1(gold, ["The", ["cat", "sat"]], is_word) == pytest.approx(0.5)
    assert authors_sentence_f1(gold, ["The", "cat"], is_word) == 0.0  # 2 words left against 3
    assert authors_sentence_f1(gold, ["The", "cat", "sat", ".", "x"], is_word) == 0.0  # more leaves than words
    assert authors_sentence_f1([".", ","], [".", ","], [False, False]) == 0.0  # no word left
    assert authors_sentence_f1(gold, None, is_word) == 0.0
    assert authors_sentence_f1(gold, gold, is_word) == 1.0


def test_row_stats_aggregate_to_the_corpus_f1():
    inputs = ["The cat sat on the mat", "a b c d", "x y", "Abstract", "The cat sat ."]
    golds = [
        "( ( The cat ) ( sat ( on ( the mat ) ) ) )",
        "( a ( b ( c d ) ) )",
        "( x y )",
        "( Abstract )",
        "( ( The cat ) ( sat . ) )",
    ]
    preds = [
        "( ( ( The cat ) sat ) ( on ( the mat ) ) )",
        "( ( a b ) ( c d ) )",
        None,
        "( Abstract )",
        "( The ( cat ( sat . ) ) )",
    ]
    pos = [None, None, None, None, "DT NN VBD ."]
    stats = FMT.row_stats(inputs, golds, preds, pos=pos)
    assert stats.shape == (5, 1)
    assert stats[:, 0].tolist() == pytest.approx([0.8, 2 / 3, 0.0, 0.0, 0.5])
    assert float(FMT.aggregate(stats)) == FMT.metrics(inputs, golds, preds, pos=pos)["f1"]


def test_tagged_words_follow_the_words_of_the_target():
    ptb = (
        "(S (NP-SBJ (-NONE- *)) (NP (NNS Mice) (-LRB- -LRB-) (NN n) (SYM =) (CD 5) (-RRB- -RRB-)) (VP (VBD died)) (. "
        ".))"
    )
    assert tagged_words(ptb, drop_punct=True) == [
        ("Mice", "NNS"),
        ("n", "NN"),
        ("=", "SYM"),
        ("5", "CD"),
        ("died", "VBD"),
    ]
    for drop_punct in (True, False):
        assert [w for w, _ in tagged_words(ptb, drop_punct)] == leaves(ptb_to_tree(ptb, drop_punct))


def test_metrics_rejects_invalid_gold():
    with pytest.raises(BracketError, match="row 0"):
        FMT.metrics(["a b"], ["( a c )"], ["( a b )"])


@pytest.mark.parametrize(
    "output, allowed",
    [
        ("( ( The cat ) ( sat ) . )", True),
        (" ( Abstract )", True),
        ("( ( The cat ) sat", True),  # unbalanced: left to check(), which repairs it
        ("The cat sat", False),  # no tree
        ("( The cat )\n( Input: more )", False),  # rambling onto a new line
        ("(The cat)", False),  # brackets must be tokens of their own
    ],
)
def test_structured_output_regex(output, allowed):
    import re

    assert bool(re.fullmatch(get_format("constituency").regex, output)) is allowed
