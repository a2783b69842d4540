"""Unlabeled constituency parsing as bare bracketed words: `( ( The cat ) sat . )`.

The target format of the MCKD authors: words are bare tokens, every node with two or more children is
wrapped in `( … )`, unary nodes (preterminals, unary chains) collapse to their single child, and the
whole sentence is always wrapped in one pair (`( Abstract )` for a one-word sentence). Words cannot
contain `(` or `)`; treebanks write them as -LRB- / -RRB-.

Metric (Kim et al. 2019, compound PCFG conventions): unlabeled span F1 over non-trivial spans, i.e.
spans of two or more words that are not the whole sentence. `f1` is the sentence-level F1 averaged
over the sentences whose gold tree has at least one non-trivial span (sentences of <= 2 words and
flat gold trees are skipped, as Kim et al.'s eval.py skips them); `f1_micro` / `precision` / `recall`
pool span counts over all sentences (sentences without gold spans add their predicted spans as false
positives; for <= 2 words there can be none). Punctuation is not removed here: loaders drop it from
input and target at load time (see PUNCT_TAGS), so the metric works on the words it is given.
"""

from __future__ import annotations

import difflib
import re
from typing import Iterator, Sequence, Union

from .base import Checked, register_format
from .slots import prf

#: POS tags of punctuation removed before evaluation (Kim et al. 2019 preprocessing of the PTB).
PUNCT_TAGS = frozenset({"``", "''", ",", ".", ":", "-LRB-", "-RRB-", "#", "$"})

#: An unlabeled tree: a word, or a list of children.
Node = Union[str, list]

_TOKEN = re.compile(r"\(|\)|[^\s()]+")
#: Deeper outputs (degenerate generations) are invalid: the tree functions recurse once per level.
MAX_DEPTH = 500


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
    if isinstance(tree, str):
        return [tree]
    return [word for child in tree for word in leaves(child)]


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
        if _depth(tokens) > MAX_DEPTH:
            return Checked(None, False, error=f"brackets nested deeper than {MAX_DEPTH}")
        # A missing outer pair or stray items after it are read as one sentence-level group.
        tree = collapse(_read_groups(_balance(tokens)))
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
        try:
            tree = parse_brackets(target)
        except BracketError as exc:
            return f"malformed brackets: {exc}"
        if leaves(tree) != input.split():
            return "the words of the target differ from the words of the input"
        return None

    def metrics(self, inputs: Sequence[str], golds: Sequence[str], preds: Sequence[str | None]) -> dict:
        sentence_f1: list[float] = []
        correct = n_pred = n_gold = exact = invalid = 0
        for row, (inp, gold, pred) in enumerate(zip(inputs, golds, preds, strict=True)):
            error = self.target_error(inp, gold)
            if error:
                raise BracketError(f"gold target of row {row} is not valid: {error}")
            n_words = len(inp.split())
            gold_spans = _nontrivial(gold, n_words)
            checked = self.check(inp, pred) if pred is not None else Checked(None, False)
            invalid += not checked.valid
            # An invalid prediction has no spans (no right-branching fallback is substituted).
            pred_spans = _nontrivial(checked.label, n_words) if checked.valid else set()
            hits = len(gold_spans & pred_spans)
            correct += hits
            n_pred += len(pred_spans)
            n_gold += len(gold_spans)
            exact += checked.valid and pred_spans == gold_spans
            if gold_spans:
                sentence_f1.append(prf(hits, len(pred_spans), len(gold_spans))["f1"])
        micro = prf(correct, n_pred, n_gold)
        n = max(len(golds), 1)
        return {
            "f1": sum(sentence_f1) / len(sentence_f1) if sentence_f1 else 0.0,
            "f1_micro": micro["f1"],
            "precision": micro["precision"],
            "recall": micro["recall"],
            "exact_match": 100.0 * exact / n,
            "invalid": 100.0 * invalid / n,
            "n": len(golds),
            "n_sentence_f1": len(sentence_f1),
        }


def _nontrivial(label: str, n_words: int) -> set[tuple[int, int]]:
    """Spans of a valid label minus the whole-sentence span (single-word spans never occur)."""
    return spans(collapse(parse_brackets(label))) - {(0, n_words)}


CONSTITUENCY = register_format(ConstituencyFormat())
