"""Slot filling (ATIS) as bracketed spans: `from [fromloc.city_name boston] to [toloc.city_name dallas]`.

The bracketed form is what the LLM reads and writes; it converts losslessly to and from BIO tags, and the
metric is conlleval's chunk F1 computed on the BIO tags.
"""

from __future__ import annotations

import difflib
import re
from typing import Sequence

import numpy as np

from ..stats import micro_f1
from .base import Checked, register_format

_BRACKETS = re.compile(r"([\[\]])")
_WORD = r"[^\s\[\]]+"
_ITEM = rf"(?:{_WORD}|\[{_WORD} {_WORD}(?: {_WORD})*\])"


class SlotParseError(ValueError):
    pass


def chunks(tags: Sequence[str]) -> list[tuple[int, int, str]]:
    """(start, end, type) chunks of a BIO sequence with conlleval's rules.

    A chunk starts at B-X, or at I-X when the previous tag is not a B-X/I-X of the same type;
    it ends before O, before any B-, or before an I- of another type.
    """
    found: list[tuple[int, int, str]] = []
    start, kind = None, None
    for i, tag in enumerate(list(tags) + ["O"]):
        prefix, _, typ = tag.partition("-")
        continues = prefix == "I" and kind == typ
        if start is not None and not continues:
            found.append((start, i, kind))
            start, kind = None, None
        if prefix in ("B", "I") and not continues:
            start, kind = i, typ
    return found


def bio_to_bracketed(words: Sequence[str], tags: Sequence[str]) -> str:
    if len(words) != len(tags):
        raise SlotParseError(f"{len(words)} words but {len(tags)} tags")
    out: list[str] = []
    pos = 0
    for start, end, kind in chunks(tags):
        out.extend(words[pos:start])
        out.append(f"[{kind} " + " ".join(words[start:end]) + "]")
        pos = end
    out.extend(words[pos:])
    return " ".join(out)


def bracketed_to_bio(text: str) -> tuple[list[str], list[str]]:
    """Parse a bracketed string into (words, BIO tags); raises SlotParseError on malformed brackets."""
    tokens = _BRACKETS.sub(r" \1 ", text).split()
    words: list[str] = []
    tags: list[str] = []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok == "]":
            raise SlotParseError("']' without a matching '['")
        if tok != "[":
            words.append(tok)
            tags.append("O")
            i += 1
            continue
        if i + 1 >= len(tokens) or tokens[i + 1] in "[]":
            raise SlotParseError("'[' must be followed by a slot type")
        kind = tokens[i + 1]
        j = i + 2
        span: list[str] = []
        while j < len(tokens) and tokens[j] not in "[]":
            span.append(tokens[j])
            j += 1
        if j >= len(tokens) or tokens[j] != "]":
            raise SlotParseError(f"unclosed '[{kind}'")
        if not span:
            raise SlotParseError(f"empty slot '[{kind}]'")
        words.extend(span)
        tags.extend([f"B-{kind}"] + [f"I-{kind}"] * (len(span) - 1))
        i = j + 1
    return words, tags


def align_tags(input_words: Sequence[str], words: Sequence[str], tags: Sequence[str]) -> list[str]:
    """Carry predicted tags over to the input words; words the model dropped get O, added words are ignored."""
    aligned = ["O"] * len(input_words)
    matcher = difflib.SequenceMatcher(a=list(input_words), b=list(words), autojunk=False)
    for block in matcher.get_matching_blocks():
        for offset in range(block.size):
            aligned[block.a + offset] = tags[block.b + offset]
    return aligned  # an I- left without its B- starts a chunk, as conlleval reads it


class SlotsFormat:
    name = "slots"
    description = "Slot filling as bracketed spans, `from [fromloc.city_name boston]`; conlleval chunk F1 (micro)."
    #: For structured outputs: one line of words and [type words] spans (an optional leading space, which
    #: completion prompts ending in "Output:" produce). Word-for-word agreement with the input is left to check().
    regex = rf" ?{_ITEM}(?: {_ITEM})*"
    instruction = (
        "Mark the slots in the sentence. Copy the sentence word for word and wrap each slot value as "
        "[slot_type words]. Leave all other words unchanged."
    )

    def check(self, input: str, output: str) -> Checked:
        text = output.strip().splitlines()[0] if output.strip() else ""
        if not text:
            return Checked(None, False, error="empty output")
        try:
            words, tags = bracketed_to_bio(text)
        except SlotParseError as exc:
            return Checked(None, False, error=str(exc))
        input_words = input.split()
        if words == input_words:
            return Checked(bio_to_bracketed(words, tags), True)
        if not words:
            return Checked(None, False, error="no words in output")
        repaired = bio_to_bracketed(input_words, align_tags(input_words, words, tags))
        return Checked(repaired, True, repaired=True)

    def target_error(self, input: str, target: str) -> str | None:
        try:
            words, _ = bracketed_to_bio(target)
        except SlotParseError as exc:
            return f"malformed slot brackets: {exc}"
        if words != input.split():
            return "the words of the target differ from the words of the input"
        return None

    def tags(self, input: str, label: str | None) -> list[str]:
        """BIO tags of `label` on the words of `input` (all O when the label is missing or unparsable)."""
        input_words = input.split()
        if label is None:
            return ["O"] * len(input_words)
        try:
            words, tags = bracketed_to_bio(label)
        except SlotParseError:
            return ["O"] * len(input_words)
        return tags if words == input_words else align_tags(input_words, words, tags)

    def metrics(self, inputs: Sequence[str], golds: Sequence[str], preds: Sequence[str | None]) -> dict:
        rows = [self._score_row(inp, gold, pred) for inp, gold, pred in zip(inputs, golds, preds, strict=True)]
        correct, n_pred, n_gold, exact, invalid = (sum(column) for column in zip(*rows)) if rows else (0,) * 5
        return prf(correct, n_pred, n_gold) | {
            "exact_match": 100.0 * exact / max(len(golds), 1),
            "invalid": 100.0 * invalid / max(len(golds), 1),
            "n": len(golds),
        }

    def row_stats(self, inputs: Sequence[str], golds: Sequence[str], preds: Sequence[str | None]) -> np.ndarray:
        """Per sentence: (chunks right, chunks predicted, gold chunks); `aggregate` pools them into conlleval's F1."""
        rows = [self._score_row(inp, gold, pred)[:3] for inp, gold, pred in zip(inputs, golds, preds, strict=True)]
        return np.array(rows, dtype=float).reshape(-1, 3)

    aggregate = staticmethod(micro_f1)

    def _score_row(self, inp: str, gold: str, pred: str | None) -> tuple[int, int, int, bool, bool]:
        """(chunks right, predicted, gold, exact match, invalid) of one sentence."""
        gold_tags = self.tags(inp, gold)
        checked = self.check(inp, pred) if pred is not None else Checked(None, False)
        pred_tags = self.tags(inp, checked.label)
        gold_chunks, pred_chunks = set(chunks(gold_tags)), set(chunks(pred_tags))
        exact = checked.valid and gold_tags == pred_tags  # an invalid output is never an exact match
        return len(gold_chunks & pred_chunks), len(pred_chunks), len(gold_chunks), exact, not checked.valid


def prf(correct: int, n_pred: int, n_gold: int) -> dict:
    """Precision / recall / F1 in percent from counts (0 when undefined, as conlleval prints)."""
    p = 100.0 * correct / n_pred if n_pred else 0.0
    r = 100.0 * correct / n_gold if n_gold else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return {"precision": p, "recall": r, "f1": f}


SLOTS = register_format(SlotsFormat())
