"""Every registered format's `check` and `metrics` survive any string a model can write (issue #26 item 6).

A degenerate generation must become an invalid row, never an exception: inside annotate an exception is not
transient, and the cached greedy output would crash every re-run.
"""

from __future__ import annotations

import json
import random

import pandas as pd
import pytest
from typer.testing import CliRunner

from flows.cli import app
from mckd_core.formats import Checked, format_names, get_format

INPUTS = [
    "a b",
    "the cat sat on the mat",
    "x",
    "",
    "  ",
    "naïve café 東京 🙂",
    "a ( b ) c",
    "from [x boston]",
    " ".join(f"w{i}" for i in range(2000)),
]
ALPHABET = list('()[]{}":,. \n\t\r\\') + [
    "a",
    "b",
    "cat",
    "the",
    "x",
    "é",
    "東",
    "🙂",
    "\u2028",
    "\x00",
    "\x1c",
    "Output:",
    "B-x",
    "I-",
    "null",
    "true",
    "1e999",
    "-",
]


def adversarial(input: str) -> list[str]:
    words = input.split() or ["a"]
    return [
        "",
        " ",
        "\n\n",
        "\t \r\n",
        input,
        f"( {input} )",
        f"[{input}]",
        input + "\n" + input,
        ")" * 1200 + " " + input,
        "(" * 1200 + " " + input,
        "( " * 5000 + input,
        input + " )" * 5000,
        "( " * 200 + input + " )" * 200,
        "( " * 201 + input + " )" * 201,
        "(" * 100_000,
        ")" * 100_000,
        "[" * 100_000,
        "]" * 100_000,
        "{" * 50_000,
        "}" * 50_000,
        "()",
        "( )",
        "( ( ) )",
        "[]",
        "[ ]",
        "[x]",
        "[x y",
        "x y]",
        "[ [x a] ]",
        "] [",
        ") (",
        "( " + " ".join(f"( {w}" for w in words) + " )",  # nested one level per word, never closed
        " ".join(f"[{w}]" for w in words),
        " ".join(f"[t {w}]" for w in words),
        "B-x I-x O",
        "Output:",
        "Output: " + input,
        "a" * 200_000,
        " ".join(["word"] * 20_000),
        "東京 🙂 naïve",
        "\u2028" + input,
        "\x00\x1c\x1d\x1e\x85",
        "\ud800",  # a lone surrogate
        '{"a": 1}',
        "[1, 2, 3]",
        "null",
        '{"a": [{"b": ' * 2000,
        '"' * 3,
        "1e999",
    ]


def fuzz_outputs(seed: int, n: int) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 60))) for _ in range(n)]


def gold_for(fmt, input: str, outputs: list[str]) -> str | None:
    """A valid target for `input`: the format's own label of the input or of a fuzz output, checked by target_error."""
    for candidate in [input, f"( {input} )", *outputs]:
        checked = fmt.check(input, candidate)
        if checked.valid and fmt.target_error(input, checked.label) is None:
            return checked.label
    return None


@pytest.mark.parametrize("name", format_names())
def test_check_never_raises_on_any_string_and_always_returns_a_consistent_verdict(name):
    fmt = get_format(name)
    for seed, input in enumerate(INPUTS):
        for output in adversarial(input) + fuzz_outputs(seed, 200):
            checked = fmt.check(input, output)
            assert isinstance(checked, Checked), (input[:40], output[:40])
            if checked.valid:
                assert isinstance(checked.label, str), (input[:40], output[:40])
            else:
                assert checked.label is None and isinstance(checked.error, str), (input[:40], output[:40])


@pytest.mark.parametrize("name", format_names())
def test_metrics_never_raise_on_any_prediction(name):
    fmt = get_format(name)
    scored = 0
    for seed, input in enumerate(INPUTS):
        outputs = adversarial(input) + fuzz_outputs(seed, 50)
        gold = gold_for(fmt, input, outputs)
        if gold is None:
            continue  # this format accepts no target for this input (e.g. an empty one)
        preds = [*outputs, None]
        metrics = fmt.metrics([input] * len(preds), [gold] * len(preds), preds)
        assert 0.0 <= metrics["f1"] <= 100.0 and 0.0 <= metrics["invalid"] <= 100.0
        if hasattr(fmt, "row_stats"):
            assert len(fmt.row_stats([input] * len(preds), [gold] * len(preds), preds)) == len(preds)
        scored += 1
    assert scored >= 3  # the metric was exercised, not skipped


def test_the_reported_recursion_output_is_an_invalid_constituency_row():
    checked = get_format("constituency").check("a b", ")" * 1200 + " a b")
    assert not checked.valid and "nested deeper" in checked.error


def test_a_tree_at_the_depth_limit_is_valid_and_scores_full_marks():
    fmt = get_format("constituency")
    words = [f"w{i}" for i in range(201)]
    tree = "( " * 200 + " ".join(words[:1]) + "".join(f" {w} )" for w in words[1:])  # left-branching, depth 200
    checked = fmt.check(" ".join(words), tree)
    assert checked.valid and not checked.repaired
    assert fmt.metrics([" ".join(words)], [tree], [tree])["f1"] == 100.0


def test_eval_of_a_degenerate_constituency_prediction_prints_metrics_with_zero_for_that_row(tmp_path):
    gold = pd.DataFrame(
        {"id": ["1", "2"], "input": ["a b", "the cat sat"], "target": ["( a b )", "( ( the cat ) sat )"]}
    )
    pred = pd.DataFrame({"id": ["1", "2"], "label": [")" * 1200, "( ( the cat ) sat )"]})
    gold.to_json(tmp_path / "gold.jsonl", orient="records", lines=True)
    pred.to_json(tmp_path / "pred.jsonl", orient="records", lines=True)
    result = CliRunner().invoke(
        app,
        [
            "eval",
            "--task",
            "constituency",
            "--gold",
            str(tmp_path / "gold.jsonl"),
            "--pred",
            str(tmp_path / "pred.jsonl"),
        ],
    )
    assert result.exit_code == 0 and result.exception is None, result.output
    metrics = json.loads(result.output[result.output.index("{") :])
    assert metrics["invalid"] == 50.0 and metrics["f1"] == 50.0  # the degenerate row 0, the right one 100
