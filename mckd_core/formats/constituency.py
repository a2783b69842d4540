"""Unlabeled constituency parsing as bare bracketed words: `( ( The cat ) sat . )`.

The target format of the MCKD authors: words are bare tokens, every node with two or more children is
wrapped in `( … )`, unary nodes (preterminals, unary chains) collapse to their single child, and the
whole sentence is always wrapped in one pair (`( Abstract )` for a one-word sentence). Words cannot
contain `(` or `)`; treebanks write them as -LRB- / -RRB-.

Metrics. A prediction is scored as the label check() makes of it (brackets balanced, words aligned to the input);
an output check() rejects has no tree.

`f1` — the MCKD authors' metric, the paper's numbers (`run_eval` in src/parserlib.py of their repository,
andotalao24/Multistage-Collaborative-Knowledge-Distillation; re-implemented here, see `authors_sentence_f1`):
unlabeled span F1 over every span of two or more words *including the whole sentence*, after removing the words
whose gold POS tag is not a word tag (WORD_TAGS) from gold and prediction alike, averaged over *every* sentence;
a sentence scores 0 when the prediction is missing or invalid, when its word count differs from the gold's after
that removal, or when no span matches (so a one-word sentence always scores 0, and a two-word one 100 with any
valid tree). Gold POS comes from the rows' `pos` column (space-separated tags of the input words, written by the
CRAFT loader); rows without it count every word as a word. Where run_eval repairs raw outputs with its own
fixup_prediction (closing brackets, splitting merged tokens) and scores 0 whatever still differs in word count,
this format's check() repairs instead (it also aligns dropped, added or changed words to the input), so an output
run_eval would reject for a missing word scores here on its repaired tree.

`f1_kim` (Kim et al. 2019, compound PCFG conventions; this format's `f1` before the authors' metric): unlabeled span F1
over
non-trivial spans, i.e. spans of two or more words that are not the whole sentence, averaged over the sentences
whose gold tree has at least one non-trivial span (sentences of <= 2 words and flat gold trees are skipped, as Kim
et al.'s eval.py skips them; `n_sentence_f1` counts the rest); `f1_micro` / `precision` / `recall` pool those span
counts over all sentences (sentences without gold spans add their predicted spans as false positives; for <= 2
words there can be none). These work on the words they are given: loaders drop punctuation from input and target
at load time (see PUNCT_TAGS), and `pos` is not read.
"""

from __future__ import annotations

import difflib
import re
from typing import Iterator, NamedTuple, Sequence, Union

import numpy as np

from ..stats import mean_f1
from .base import Checked, register_format
from .slots import prf

#: POS tags of punctuation removed before evaluation (Kim et al. 2019 preprocessing of the PTB).
PUNCT_TAGS = frozenset({"``", "''", ",", ".", ":", "-LRB-", "-RRB-", "#", "$"})
#: The tags the MCKD authors' metric keeps (their parserlib.word_tags, Kim et al.'s list): the PTB tags minus
#: PUNCT_TAGS. Other tags go too, e.g. CRAFT's HYPH (the "-" of "wild - type") and AFX, which PUNCT_TAGS keeps.
WORD_TAGS = frozenset(
    {
        "CC",
        "CD",
        "DT",
        "EX",
        "FW",
        "IN",
        "JJ",
        "JJR",
        "JJS",
        "LS",
        "MD",
        "NN",
        "NNS",
        "NNP",
        "NNPS",
        "PDT",
        "POS",
        "PRP",
        "PRP$",
        "RB",
        "RBR",
        "RBS",
        "RP",
        "SYM",
        "TO",
        "UH",
        "VB",
        "VBD",
        "VBG",
        "VBN",
        "VBP",
        "VBZ",
        "WDT",
        "WP",
        "WP$",
        "WRB",
    }
)

#: An unlabeled tree: a word, or a list of children.
Node = Union[str, list]

_TOKEN = re.compile(r"\(|\)|[^\s()]+")
#: Deeper outputs (degenerate generations) are invalid and deeper gold targets rejected: the tree functions recurse
#: up to twice per level (a comprehension is a frame of its own before Python 3.12), and what calls them (a Prefect
#: task thread, a test runner) needs room below Python's default limit of 1000 frames.
MAX_DEPTH = 200


class BracketError(ValueError):
    pass


def _tokens(text: str) -> list[str]:
    return _TOKEN.findall(text)


def _read_groups(tokens: Sequence[str]) -> list[Node]:
    """The top-level items of a balanced token sequence, as nested lists (empty groups kept)."""
    stack: list[list] = [[]]
    for tok in tokens:
        if tok == "(":
            stack.append([])
        elif tok == ")":
            if len(stack) == 1:
                raise BracketError("')' without a matching '('")
            group = stack.pop()
            stack[-1].append(group)
        else:
            stack[-1].append(tok)
    if len(stack) > 1:
        raise BracketError(f"{len(stack) - 1} unclosed '('")
    return stack[0]


def parse_brackets(text: str) -> Node:
    """Parse `( ( w w ) w )` into nested lists (raw: unary and empty groups are kept).

    Raises BracketError unless the text is exactly one balanced group holding at least one word.
    """
    items = _read_groups(_tokens(text))
    if len(items) != 1 or isinstance(items[0], str):
        raise BracketError("the parse must be one bracketed group: ( ... )")
    if not leaves(items[0]):
        raise BracketError("the parse has no words")
    return items[0]


def leaves(tree: Node) -> list[str]:
    words: list[str] = []
    stack = [tree]
    while stack:  # iterative: called on every tree, however deep, before and after the depth checks
        node = stack.pop()
        if isinstance(node, str):
            words.append(node)
        else:
            stack.extend(reversed(node))
    return words


def collapse(tree: Node) -> Node | None:
    """Drop empty groups and collapse unary nodes; None when no word is left."""
    if isinstance(tree, str):
        return tree
    kept = [c for c in map(collapse, tree) if c is not None]
    if not kept:
        return None
    return kept[0] if len(kept) == 1 else kept


def render(tree: Node) -> str:
    """The canonical string of a collapsed tree; the root is always wrapped."""
    if isinstance(tree, str):
        return f"( {tree} )"
    return "( " + " ".join(c if isinstance(c, str) else render(c) for c in tree) + " )"


def spans(tree: Node) -> set[tuple[int, int]]:
    """(start, end) word spans of every multi-word node of a collapsed tree, the root included."""
    found: set[tuple[int, int]] = set()

    def walk(node: Node, start: int) -> int:
        if isinstance(node, str):
            return start + 1
        end = start
        for child in node:
            end = walk(child, end)
        if end - start > 1:
            found.add((start, end))
        return end

    walk(tree, 0)
    return found


# --- PTB trees -> targets ---------------------------------------------------------------------------


def _read_ptb(tokens: Sequence[str], pos: int) -> tuple[tuple[str, list], int]:
    """One `(LABEL child ...)` node starting at tokens[pos] == '('; children are nodes or words."""
    pos += 1
    label = ""
    if pos < len(tokens) and tokens[pos] not in ("(", ")"):
        label, pos = tokens[pos], pos + 1
    children: list = []
    while pos < len(tokens) and tokens[pos] != ")":
        if tokens[pos] == "(":
            child, pos = _read_ptb(tokens, pos)
            children.append(child)
        else:
            children.append(tokens[pos])
            pos += 1
    if pos >= len(tokens):
        raise BracketError("unbalanced PTB tree: missing ')'")
    return (label, children), pos + 1


def parse_ptb(text: str) -> tuple[str, list]:
    """A PTB tree string (`(S (NP (DT The) ...))` or with an outer empty bracket) as (label, children)."""
    tokens = _tokens(text)
    if not tokens or tokens[0] != "(":
        raise BracketError("a PTB tree starts with '('")
    tree, end = _read_ptb(tokens, 0)
    if end != len(tokens):
        raise BracketError("text after the end of the PTB tree")
    return tree


def _unlabeled(node: tuple[str, list] | str, drop_punct: bool) -> Node | None:
    if isinstance(node, str):
        return node
    label, children = node
    if len(children) == 1 and isinstance(children[0], str):  # preterminal: label is the POS tag
        if label == "-NONE-" or (drop_punct and label in PUNCT_TAGS):
            return None  # traces always go; punctuation when asked
        return children[0]
    # Phrase labels (and their functional tags, NP-SBJ-1) are dropped here: the target is unlabeled.
    kept = [c for c in (_unlabeled(child, drop_punct) for child in children) if c is not None]
    if not kept:
        return None  # a node left with no words (e.g. one that only held a trace)
    return kept[0] if len(kept) == 1 else kept


def ptb_to_tree(ptb: str, drop_punct: bool = False) -> Node | None:
    """The collapsed unlabeled tree of a PTB tree string, without traces; None when no word is left."""
    return _unlabeled(parse_ptb(ptb), drop_punct)


def tagged_words(ptb: str, drop_punct: bool = False) -> list[tuple[str, str]]:
    """(word, POS tag) of the words ptb_to_tree keeps, in order; a word outside a preterminal gets the label of
    the node holding it, as nltk's Tree.pos() (which the authors' metric reads tags with) gives it."""

    def walk(node: tuple[str, list]) -> Iterator[tuple[str, str]]:
        label, children = node
        if len(children) == 1 and isinstance(children[0], str):
            if not (label == "-NONE-" or (drop_punct and label in PUNCT_TAGS)):  # the rule of _unlabeled
                yield children[0], label
            return
        for child in children:
            if isinstance(child, str):
                yield child, label
            else:
                yield from walk(child)

    return list(walk(parse_ptb(ptb)))


def tree_to_target(ptb: str, drop_punct: bool = False) -> str:
    """`(S (NP (DT The) (NN cat)) (VP (VBD sat)) (. .))` -> `( ( The cat ) sat . )`."""
    tree = ptb_to_tree(ptb, drop_punct)
    if tree is None:
        raise BracketError("the PTB tree has no words left")
    return render(tree)


# --- repair -------------------------------------------------------------------------------------


def _balance(tokens: list[str]) -> list[str]:
    """Add the missing '(' at the start and ')' at the end that make the brackets balance."""
    depth = lowest = 0
    for tok in tokens:
        depth += (tok == "(") - (tok == ")")
        lowest = min(lowest, depth)
    return ["("] * -lowest + tokens + [")"] * (depth - lowest)


def _depth(tokens: list[str]) -> int:
    depth = deepest = 0
    for tok in tokens:
        depth += (tok == "(") - (tok == ")")
        deepest = max(deepest, depth)
    return deepest


def _align(tree: Node, input_words: list[str]) -> Node | None:
    """Carry the bracket structure over to the input words; None when no output word matches the input.

    Output words matched to input words (equal blocks, and replace blocks position by position) keep
    their place; extra output words are removed; each dropped input word is put right after the input
    word before it (before the first aligned word at the start), as a sibling in the same node.
    """
    words = leaves(tree)
    owner: list[int | None] = [None] * len(input_words)  # output leaf that carries input word i
    matcher = difflib.SequenceMatcher(a=input_words, b=words, autojunk=False)
    opcodes = matcher.get_opcodes()
    if not any(tag == "equal" for tag, *_ in opcodes):
        return None
    for tag, i1, i2, j1, j2 in opcodes:
        if tag in ("equal", "replace"):
            for i, j in zip(range(i1, i2), range(j1, j2)):
                owner[i] = j
    carried: list[list[str]] = [[] for _ in words]
    last = next(j for j in owner if j is not None)
    for i, j in enumerate(owner):
        last = last if j is None else j
        carried[last].append(input_words[i])
    return collapse(_splice(tree, iter(carried)))


def _splice(node: Node, carried: Iterator[list[str]]) -> list[Node]:
    """`node` as the items that replace it in its parent: a leaf becomes the input words it carries."""
    if isinstance(node, str):
        return next(carried)
    return [[item for child in node for item in _splice(child, carried)]]


class ConstituencyFormat:
    name = "constituency"
    description = (
        "Unlabeled constituency trees of bare bracketed words, `( ( The cat ) sat )`; the MCKD authors' "
        "sentence-mean span F1 (and Kim et al.'s as f1_kim)."
    )
    #: For structured outputs: one line of "(", ")" and words, opening with "(". Balance (not regular) and
    #: agreement with the input words are left to check(), which repairs both.
    regex = r" ?\((?: (?:\(|\)|[^\s()]+))+"
    instruction = (
        "Parse the sentence into its unlabeled constituency tree. Copy the sentence word for word and "
        "wrap every phrase of two or more words in round brackets ( ... ), with the whole sentence in one "
        "outer pair. Write no labels, only brackets and the words."
    )

    def check(self, input: str, output: str) -> Checked:
        text = next((line.strip() for line in output.splitlines() if line.strip()), "")
        if not text:
            return Checked(None, False, error="empty output")
        tokens = _tokens(text)
        # A missing outer pair or stray items after it are read as one sentence-level group. Depth is measured
        # after balancing: the '(' that balancing adds for stray ')' nest too.
        balanced = _balance(tokens)
        if _depth(balanced) > MAX_DEPTH:
            return Checked(None, False, error=f"brackets nested deeper than {MAX_DEPTH}")
        tree = collapse(_read_groups(balanced))
        if tree is None:
            return Checked(None, False, error="no words in output")
        input_words = input.split()
        if leaves(tree) != input_words:
            tree = _align(tree, input_words)
            if tree is None:
                return Checked(None, False, error="no word of the output matches the input")
        label = render(tree)
        return Checked(label, True, repaired=_tokens(label) != tokens)

    def target_error(self, input: str, target: str) -> str | None:
        if _depth(_tokens(target)) > MAX_DEPTH:
            return f"brackets nested deeper than {MAX_DEPTH}"
        try:
            tree = parse_brackets(target)
        except BracketError as exc:
            return f"malformed brackets: {exc}"
        if leaves(tree) != input.split():
            return "the words of the target differ from the words of the input"
        return None

    #: Extra gold columns metrics() and row_stats() read where the rows have them (see the module docstring).
    metric_columns = ("pos",)

    def metrics(
        self,
        inputs: Sequence[str],
        golds: Sequence[str],
        preds: Sequence[str | None],
        pos: Sequence[str | None] | None = None,
    ) -> dict:
        rows = self._score_rows(inputs, golds, preds, pos)
        kim = [r.kim_f1 for r in rows if r.kim_f1 is not None]
        micro = prf(sum(r.kim_right for r in rows), sum(r.kim_predicted for r in rows), sum(r.kim_gold for r in rows))
        n = max(len(golds), 1)
        return {
            "f1": float(mean_f1(np.array([[r.authors_f1] for r in rows]))) if rows else 0.0,
            "f1_kim": sum(kim) / len(kim) if kim else 0.0,
            "f1_micro": micro["f1"],
            "precision": micro["precision"],
            "recall": micro["recall"],
            "exact_match": 100.0 * sum(r.exact for r in rows) / n,
            "invalid": 100.0 * sum(not r.valid for r in rows) / n,
            "n": len(golds),
            "n_sentence_f1": len(kim),
        }

    def row_stats(
        self,
        inputs: Sequence[str],
        golds: Sequence[str],
        preds: Sequence[str | None],
        pos: Sequence[str | None] | None = None,
    ) -> np.ndarray:
        """Per sentence: the authors' F1 (a fraction); `aggregate`, their sentence mean in percent, is `f1`."""
        return np.array([[r.authors_f1] for r in self._score_rows(inputs, golds, preds, pos)], dtype=float).reshape(
            -1, 1
        )

    aggregate = staticmethod(mean_f1)

    def _score_rows(
        self, inputs: Sequence[str], golds: Sequence[str], preds: Sequence[str | None], pos: Sequence[str | None] | None
    ) -> list[_SentenceScore]:
        tags = [None] * len(golds) if pos is None else pos
        return [
            self._score_row(row, inp, gold, pred, row_tags)
            for row, (inp, gold, pred, row_tags) in enumerate(zip(inputs, golds, preds, tags, strict=True))
        ]

    def _score_row(self, row: int, inp: str, gold: str, pred: str | None, tags: str | None) -> _SentenceScore:
        error = self.target_error(inp, gold)
        if error:
            raise BracketError(f"gold target of row {row} is not valid: {error}")
        n_words = len(inp.split())
        gold_tree = collapse(parse_brackets(gold))
        checked = self.check(inp, pred) if pred is not None else Checked(None, False)
        # An invalid prediction has no tree (no right-branching fallback is substituted).
        pred_tree = collapse(parse_brackets(checked.label)) if checked.valid else None
        gold_spans = spans(gold_tree) - {(0, n_words)}
        pred_spans = spans(pred_tree) - {(0, n_words)} if pred_tree is not None else set()
        right = len(gold_spans & pred_spans)
        return _SentenceScore(
            authors_f1=authors_sentence_f1(gold_tree, pred_tree, _is_word(tags, n_words, row)),
            kim_f1=prf(right, len(pred_spans), len(gold_spans))["f1"] if gold_spans else None,
            kim_right=right,
            kim_predicted=len(pred_spans),
            kim_gold=len(gold_spans),
            exact=checked.valid and pred_spans == gold_spans,
            valid=checked.valid,
        )


class _SentenceScore(NamedTuple):
    authors_f1: float  # fraction, 0-1
    kim_f1: float | None  # percent; None: no non-trivial gold span, the sentence is skipped
    kim_right: int
    kim_predicted: int
    kim_gold: int
    exact: bool
    valid: bool


def _is_word(tags: str | None, n_words: int, row: int) -> list[bool]:
    """Which words the authors' metric keeps: those with a word tag; all of them when the row has no gold POS."""
    if not isinstance(tags, str):  # None, or NaN from a Parquet column with gaps
        return [True] * n_words
    tag_list = tags.split()
    if len(tag_list) != n_words:
        raise BracketError(f"gold POS of row {row}: {len(tag_list)} tags for {n_words} words")
    return [tag in WORD_TAGS for tag in tag_list]


def without_words(tree: Node, keep: Sequence[bool]) -> Node | None:
    """The tree minus the leaves whose position (left to right) has keep False; a node left with one child becomes
    that child, one left with none vanishes (None when no word is left). `keep` must cover every leaf."""
    position = 0

    def walk(node: Node) -> Node | None:
        nonlocal position
        if isinstance(node, str):
            position += 1
            return node if keep[position - 1] else None
        kept = [c for c in map(walk, node) if c is not None]
        if not kept:
            return None
        return kept[0] if len(kept) == 1 else kept

    return walk(tree)


def authors_sentence_f1(gold: Node, pred: Node | None, is_word: Sequence[bool]) -> float:
    """One sentence's F1 (a fraction) as the MCKD authors' run_eval computes it (src/parserlib.py).

    Both trees lose the words whose gold POS is not a word tag (`is_word`, positional: the prediction's i-th leaf is
    taken as the sentence's i-th word, as run_eval applies the gold mask to the predicted leaves) and collapse the
    nodes left unary or empty. The score is 0 when there is no prediction, when it has more leaves than the sentence
    has words, when the two trees then differ in word count, when no word is left, or when no span matches;
    otherwise the F1 of the sets of (start, end) spans of two or more words, the whole sentence included.
    """
    if pred is None or len(leaves(pred)) > len(is_word):
        return 0.0
    gold_kept, pred_kept = without_words(gold, is_word), without_words(pred, is_word)
    if gold_kept is None or pred_kept is None or len(leaves(gold_kept)) != len(leaves(pred_kept)):
        return 0.0
    gold_spans, pred_spans = spans(gold_kept), spans(pred_kept)
    right = len(gold_spans & pred_spans)
    if not right:
        return 0.0
    precision, recall = right / len(pred_spans), right / len(gold_spans)
    return 2 * precision * recall / (precision + recall)


CONSTITUENCY = register_format(ConstituencyFormat())
