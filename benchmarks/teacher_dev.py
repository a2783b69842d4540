"""Choose the teacher (model, prompt mode, demos) on dev data — never on the test set.

MCKD can only beat SFT on L when its teacher labels U better than L alone teaches a student; at CPU scale
the quality table showed the opposite (benchmarks/quality.py, BENCHMARKS.md). This script scores teacher
configurations on a dev sample disjoint from the quality run's sets of the same seed (ATIS: from the training
pool outside L, U, T and SFT-N; CRAFT: from the official dev split outside the students' dev sample), with
demonstrations from that run's L — the selection the quality run may use.

  .venv/bin/python benchmarks/teacher_dev.py --task atis --dev 30 --seed 1
Prints one JSON object: per configuration, F1 / precision / recall / invalid % on the dev sample and seconds per
row. A configuration whose model is missing is reported as such, not skipped silently.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from quality import CRAFT_DIR, FORMAT, OUTPUT_TOKENS, task_sets  # noqa: E402

from mckd_core.atis import load_atis  # noqa: E402
from mckd_core.config import TeacherConfig  # noqa: E402
from mckd_core.craft import load_craft  # noqa: E402
from mckd_core.data import within_words  # noqa: E402
from mckd_core.errors import MckdInputError  # noqa: E402
from mckd_core.formats.base import get_format  # noqa: E402
from mckd_core.prompting import Demo  # noqa: E402
from mckd_core.steps import teacher_backend  # noqa: E402
from mckd_core.teacher import GenParams, ResponseCache, annotate  # noqa: E402

# name → teacher settings; quality.py's default is the first.
CANDIDATES = {
    "smollm2-chat-k4-random": {
        "model": "smollm2-135m-instruct",
        "chat": True,
        "num_demos": 4,
        "demo_selection": "random-fixed",
    },
    "smollm2-chat-k8-bm25": {"model": "smollm2-135m-instruct", "chat": True, "num_demos": 8, "demo_selection": "bm25"},
    # The same prompt with fp32 and with bf16 weights (what `precision: auto` picks on a CPU with AVX512-BF16).
    "smollm2-chat-k8-bm25-fp32": {
        "model": "smollm2-135m-instruct",
        "chat": True,
        "num_demos": 8,
        "demo_selection": "bm25",
        "precision": "fp32",
    },
    "smollm2-chat-k8-bm25-bf16": {
        "model": "smollm2-135m-instruct",
        "chat": True,
        "num_demos": 8,
        "demo_selection": "bm25",
        "precision": "bf16",
    },
    "gemma3-270m-k4-random": {"model": "gemma3-270m", "chat": False, "num_demos": 4, "demo_selection": "random-fixed"},
    "gemma3-270m-k8-bm25": {"model": "gemma3-270m", "chat": False, "num_demos": 8, "demo_selection": "bm25"},
}


def dev_sample(args) -> tuple:
    """(demos from the seed's L, dev rows from the pool outside every set of that seed's quality run)."""
    # quality.py's --dev is its students' CRAFT dev sample; here --dev is the size of the teacher's dev sample.
    sets = task_sets(args.task, argparse.Namespace(**{**vars(args), "dev": args.dev_students}), args.seed)
    used = set().union(*(set(df["input"]) for df in sets.values()))
    source = load_atis("train") if args.task == "atis" else load_craft(CRAFT_DIR, "dev", max_words=args.max_words)
    pool = within_words(source, args.max_words).drop_duplicates("input")
    dev = pool[~pool["input"].isin(used)].sample(n=args.dev, random_state=args.seed).reset_index(drop=True)
    demos = [
        Demo(i, x, y) for i, x, y in zip(sets["labeled"]["id"], sets["labeled"]["input"], sets["labeled"]["target"])
    ]
    return demos, dev


def score(name: str, settings: dict, demos: list, dev, args, cache_dir: Path) -> dict:
    fmt = get_format(FORMAT[args.task])
    cfg = TeacherConfig(max_new_tokens=OUTPUT_TOKENS[args.task], batch_size=16, **settings)
    try:
        backend = teacher_backend(cfg)
    except MckdInputError as exc:
        return {"error": str(exc)}
    cache = ResponseCache(cache_dir / f"{name}.sqlite")
    started = time.perf_counter()
    labels, _ = annotate(
        dev,
        demos,
        fmt,
        backend,
        cache,
        k=cfg.num_demos,
        selection=cfg.demo_selection,
        seed=args.seed,
        params=GenParams(cfg.max_new_tokens, cfg.temperature),
        chat=cfg.chat,
    )
    seconds = time.perf_counter() - started
    cache.close()
    preds = [None if not valid else label for valid, label in zip(labels["valid"], labels["label"])]
    metrics = fmt.metrics(list(dev["input"]), list(dev["target"]), preds)
    return {k: round(metrics[k], 1) for k in ("f1", "precision", "recall", "invalid") if k in metrics} | {
        "s_per_row": round(seconds / len(dev), 2),
        "settings": settings,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=sorted(FORMAT), default="atis")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--dev", type=int, default=30)
    parser.add_argument("--candidates", nargs="+", choices=sorted(CANDIDATES), default=list(CANDIDATES))
    # The quality run's sizes, so that the dev sample avoids exactly its L / U / T / SFT-N.
    parser.add_argument("--labeled", type=int, default=50)
    parser.add_argument("--unlabeled", type=int, default=40)
    parser.add_argument("--test", type=int, default=20)
    parser.add_argument("--sft-n", type=int, default=100)
    parser.add_argument(
        "--students-dev",
        dest="dev_students",
        type=int,
        default=20,
        help="quality.py --dev: CRAFT dev sentences its students select on (kept out of this sample).",
    )
    parser.add_argument("--max-words", type=int, default=12)
    args = parser.parse_args()
    demos, dev = dev_sample(args)
    with tempfile.TemporaryDirectory(prefix="mckd-teacher-dev-") as tmp:
        results = {name: score(name, CANDIDATES[name], demos, dev, args, Path(tmp)) for name in args.candidates}
    print(json.dumps({"task": args.task, "seed": args.seed, "dev_rows": len(dev), "results": results}, indent=1))


if __name__ == "__main__":
    main()
