"""The CRAFT biomedical treebank (CC BY 3.0) as unlabeled constituency examples.

Expects a CRAFT release root: `structural-annotation/treebank/penn/<pmid>.tree` (PTB trees, one document
per file) and the official document splits `articles/ids/craft-ids-{train,dev,test}.txt` (one PubMed
id a line). Targets use the `constituency` format; traces are removed, and punctuation too by default
because the paper evaluates without it. Each row keeps the gold POS tags of its words (`pos`), which the
constituency metric reads to drop non-word tokens (e.g. HYPH) as the MCKD authors' evaluation does.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Iterator

import pandas as pd

from .errors import MckdInputError
from .formats.constituency import BracketError, leaves, ptb_to_tree, render, tagged_words

SPLITS = ("train", "dev", "test")
TREE_DIR = Path("structural-annotation/treebank/penn")
IDS_DIR = Path("articles/ids")
_HOW_TO_GET = "get it from https://github.com/UCDenver-ccp/CRAFT/releases and pass the release root"


def split_ids(source_dir: str | Path, split: str) -> list[str]:
    """The PubMed ids of the documents in an official split."""
    if split not in SPLITS:
        raise MckdInputError(f"unknown CRAFT split {split!r}; use one of {', '.join(SPLITS)}")
    root = Path(source_dir)
    if not (root / TREE_DIR).is_dir():
        raise MckdInputError(f"no CRAFT treebank at {root / TREE_DIR}; {_HOW_TO_GET}")
    ids_file = root / IDS_DIR / f"craft-ids-{split}.txt"
    if not ids_file.is_file():
        raise MckdInputError(f"missing CRAFT split file {ids_file}; {_HOW_TO_GET}")
    ids = [line.strip() for line in ids_file.read_text().splitlines() if line.strip()]
    if not ids:
        raise MckdInputError(f"CRAFT split file {ids_file} lists no document ids")
    return ids


def iter_trees(text: str) -> Iterator[str]:
    """The bracket-balanced trees of a .tree file, in order (a tree may span several lines)."""
    depth, start = 0, None
    for pos, char in enumerate(text):
        if char == "(":
            if depth == 0:
                start = pos
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                yield text[start : pos + 1]
            elif depth < 0:
                raise BracketError(f"unbalanced ')' at character {pos}")
    if depth:
        raise BracketError("the file ends inside a tree")


def document_rows(tree_file: Path, drop_punct: bool) -> list[dict]:
    """One row per sentence that keeps at least one word; the index counts all trees, so ids stay stable."""
    pmid = tree_file.stem
    rows = []
    try:
        trees = list(iter_trees(tree_file.read_text()))
        for index, ptb in enumerate(trees):
            tree = ptb_to_tree(ptb, drop_punct)
            if tree is None:  # e.g. a sentence of punctuation only
                continue
            words = leaves(tree)
            rows.append(
                {
                    "id": f"{pmid}-{index}",
                    "input": " ".join(words),
                    "target": render(tree),
                    "pos": " ".join(tag for _, tag in tagged_words(ptb, drop_punct)),
                    "doc_id": pmid,
                    "n_words": len(words),
                }
            )
    except BracketError as exc:
        raise MckdInputError(f"{tree_file}: malformed PTB tree: {exc}") from None
    return rows


def load_craft(
    source_dir: str | Path, split: str, drop_punct: bool = True, max_words: int | None = None
) -> pd.DataFrame:
    """Sentences of the documents of one official split: id, input, target, pos, doc_id, n_words."""
    rows = []
    for pmid in split_ids(source_dir, split):
        tree_file = Path(source_dir) / TREE_DIR / f"{pmid}.tree"
        if not tree_file.is_file():
            raise MckdInputError(f"CRAFT document {pmid} of split {split!r} has no tree file {tree_file}")
        rows.extend(document_rows(tree_file, drop_punct))
    df = pd.DataFrame(rows, columns=["id", "input", "target", "pos", "doc_id", "n_words"])
    if max_words is not None:
        df = df[df["n_words"] <= max_words].reset_index(drop=True)
    return df


def write_craft_splits(
    source_dir: str | Path, out_dir: str | Path, drop_punct: bool = True, max_words: int | None = None
) -> dict[str, Path]:
    """Write train.parquet, dev.parquet and test.parquet into out_dir; returns split -> path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split in SPLITS:
        df = load_craft(source_dir, split, drop_punct=drop_punct, max_words=max_words)
        path = out / f"{split}.parquet"
        # Temp name + rename, so a crash never leaves a half-written split behind.
        fd, tmp = tempfile.mkstemp(dir=out, suffix=".parquet.tmp")
        os.close(fd)
        df.to_parquet(tmp, index=False)
        os.replace(tmp, path)
        paths[split] = path
    return paths
