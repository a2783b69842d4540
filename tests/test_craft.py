"""The CRAFT loader: on a tiny synthetic release (always) and on the real treebank (skipped when absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from mckd_core.craft import load_craft, write_craft_splits
from mckd_core.errors import MckdInputError
from mckd_core.formats import get_format

CRAFT_DIR = Path(os.environ.get("MCKD_CRAFT_DIR") or Path(__file__).parents[2] / "shared/data/craft")
FMT = get_format("constituency")

TINY_TREES = """( (S (NP-SBJ (DT The) (NN cell)) (VP (VBZ grows) (NP-1 (-NONE- *))) (. .)) )
( (S (NP-SBJ (NNS Mice)
        (-LRB- -LRB-) (CD 5) (-RRB- -RRB-))
     (VP (VBD died))) )

( (FRAG (. .)) )
( (HEADING (NP (NN Methods))) )
"""


def make_release(root: Path) -> Path:
    (root / "structural-annotation/treebank/penn").mkdir(parents=True)
    (root / "articles/ids").mkdir(parents=True)
    for split, pmid in [("train", "111"), ("dev", "222"), ("test", "333")]:
        (root / f"articles/ids/craft-ids-{split}.txt").write_text(pmid + "\n")
        (root / f"structural-annotation/treebank/penn/{pmid}.tree").write_text(TINY_TREES)
    return root


def test_tiny_release(tmp_path):
    root = make_release(tmp_path / "craft")
    df = load_craft(root, "train")
    # multi-line trees are read whole; the punctuation-only sentence is skipped but keeps its index
    assert list(df["id"]) == ["111-0", "111-1", "111-3"]
    assert list(df["input"]) == ["The cell grows", "Mice 5 died", "Methods"]
    assert list(df["target"]) == ["( ( The cell ) grows )", "( ( Mice 5 ) died )", "( Methods )"]
    assert list(df["n_words"]) == [3, 3, 1] and set(df["doc_id"]) == {"111"}
    with_punct = load_craft(root, "dev", drop_punct=False, max_words=3)
    assert list(with_punct["input"]) == [".", "Methods"]  # the others have 4 and 6 words with punctuation
    paths = write_craft_splits(root, tmp_path / "out", max_words=1)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["dev.parquet", "test.parquet", "train.parquet"]
    assert list(pd.read_parquet(paths["test"])["id"]) == ["333-3"]


def test_missing_inputs_are_clear_errors(tmp_path):
    with pytest.raises(MckdInputError, match="no CRAFT treebank"):
        load_craft(tmp_path, "train")
    root = make_release(tmp_path / "craft")
    with pytest.raises(MckdInputError, match="unknown CRAFT split"):
        load_craft(root, "validation")
    (root / "articles/ids/craft-ids-dev.txt").unlink()
    with pytest.raises(MckdInputError, match="missing CRAFT split file"):
        load_craft(root, "dev")
    (root / "structural-annotation/treebank/penn/333.tree").unlink()
    with pytest.raises(MckdInputError, match="333"):
        load_craft(root, "test")


@pytest.fixture(scope="module")
def craft_splits():
    if not (CRAFT_DIR / "structural-annotation/treebank/penn").is_dir():
        pytest.skip(f"CRAFT not found at {CRAFT_DIR} (set MCKD_CRAFT_DIR to a CRAFT release root)")
    return {split: load_craft(CRAFT_DIR, split) for split in ("train", "dev", "test")}


def test_real_craft_splits(craft_splits):
    docs = {split: set(df["doc_id"]) for split, df in craft_splits.items()}
    assert all(len(df) > 0 for df in craft_splits.values())
    assert not (docs["train"] & docs["dev"] or docs["train"] & docs["test"] or docs["dev"] & docs["test"])
    all_rows = pd.concat(craft_splits.values())
    assert all_rows["id"].is_unique
    assert not all_rows["input"].str.contains("-NONE-|\\*PRO\\*|\\*T\\*").any()
    assert (all_rows["n_words"] == all_rows["input"].str.split().str.len()).all()
    errors = [FMT.target_error(i, t) for i, t in zip(all_rows["input"], all_rows["target"])]
    assert errors == [None] * len(all_rows)
    assert all_rows["target"].str.fullmatch(FMT.regex).all()  # structured outputs never forbid a gold tree
