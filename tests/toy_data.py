"""A toy word-mapping task written by the tests themselves (format `text`)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

PAIRS = {
    "cat": "dog",
    "sun": "moon",
    "red": "blue",
    "hot": "cold",
    "up": "down",
    "big": "small",
    "day": "night",
    "yes": "no",
}


def write_toy_sets(directory: Path, n_unlabeled: int = 12, n_test: int = 4) -> dict[str, str]:
    directory.mkdir(parents=True, exist_ok=True)
    words = list(PAIRS)
    labeled = pd.DataFrame(
        {"id": [f"l{i}" for i in range(len(words))], "input": words, "target": [PAIRS[w] for w in words]}
    )
    unlabeled = pd.DataFrame(
        {
            "id": [f"u{i}" for i in range(n_unlabeled)],
            "input": [f"{words[i % 8]} {words[(i + 3) % 8]}" for i in range(n_unlabeled)],
        }
    )
    test = pd.DataFrame(
        {"id": [f"t{i}" for i in range(n_test)], "input": words[:n_test], "target": [PAIRS[w] for w in words[:n_test]]}
    )
    paths = {}
    for name, df in {"labeled": labeled, "unlabeled": unlabeled, "test": test}.items():
        paths[name] = str(directory / f"{name}.parquet")
        df.to_parquet(paths[name])
    return paths


def toy_config(tmp: Path, models: dict, **overrides) -> dict:
    paths = write_toy_sets(tmp / "data")
    cfg = {
        "run_name": "toy",
        "runs_root": str(tmp / "runs"),
        "data": {"task": "text", **paths},
        "teacher": {"model": models["teacher"], "num_demos": 2, "max_new_tokens": 6, "chat": False},
        "student": {
            "model": models["t5"],
            "epochs": 15,
            "batch_size": 4,
            "learning_rate": 3e-3,
            "max_target_tokens": 8,
            "max_dev": 4,
        },
        "stages": {"num_stages": 2, "partitions": 2},
    }
    for key, value in overrides.items():
        cfg[key] = {**cfg.get(key, {}), **value} if isinstance(value, dict) else value
    return cfg
