"""The teacher's labels with and without structured outputs (issue #28): the same prompts, demos and rows of U and T
as a quality run of the seed, sent to the vLLM CPU server once free and once with the task's schema as JSON structured
outputs (`teacher.structured_outputs`). Per set and mode: invalid % (and why), repaired %, label F1 / precision /
recall against the gold targets, seconds and tokens.

  MCKD_VLLM_PYTHON=.vllm-venv/bin/python .venv/bin/python benchmarks/teacher_structured.py --task atis-json --seed 0

Resumable: the response cache lives under --runs-root (runs/teacher-structured), one per mode, so a re-run sends
only the rows that are missing. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
from argparse import Namespace
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import quality  # noqa: E402  (puts the repo root on sys.path)

from mckd_core.data import ParquetRef, write_parquet  # noqa: E402
from mckd_core.formats import get_format  # noqa: E402
from mckd_core.jobs import AnnotateJob  # noqa: E402
from mckd_core.steps import annotate_rows  # noqa: E402


def measure(task: str, seed: int, sets: dict, root: Path, structured: bool) -> dict:
    args = Namespace(
        teacher_demos=8,
        demo_selection="bm25",
        structured_outputs=structured,
        teacher_backend="vllm-server",
        epochs=4,
        dev=20,
        train_on_labeled=True,
        init="pretrained",
        first_labels="auto",
        runs_root=root,
        labeled=50,
        unlabeled=len(sets["unlabeled"]),
        test=len(sets["test"]),
        sft_n=200,
        max_words=12,
    )
    mode = "structured" if structured else "free"
    data = root / f"{task}-seed{seed}" / "data"
    paths = {
        name: str(write_parquet(sets[name], data, name).path)
        for name in ("labeled", "unlabeled", "test", "dev", "sft_n_labeled")
    }
    cfg = quality.run_config(task, paths, args, seed)
    fmt, out = get_format(cfg.data.format_ref), {}  # (a whole run's config: the teacher's part is what is used)
    for which in ("unlabeled", "test"):
        job = AnnotateJob(
            examples=ParquetRef.of(paths[which]),
            demos=ParquetRef.of(paths["labeled"]),
            teacher=cfg.teacher,
            task=cfg.data.format_ref,
            seed=seed,
            out_dir=str(root / f"{task}-seed{seed}" / mode),
            cache_path=str(root / f"cache-{mode}.sqlite"),
            what=which,
        )
        ref, stats = annotate_rows(job)
        labels = ref.read()
        gold = sets[which].set_index("id")["target"]
        scored = fmt.metrics(
            list(labels["input"]),
            list(gold[labels["id"]]),
            [label if ok else None for label, ok in zip(labels["label"], labels["valid"])],
        )
        n = len(labels)
        out[which] = {
            "rows": n,
            "invalid": round(100 * (~labels["valid"]).sum() / n, 1),
            "repaired": round(100 * stats["repaired"] / n, 1),
            "why_invalid": Counter(
                str(e).split(":")[0][:60] for e in labels.loc[~labels["valid"], "error"]
            ).most_common(4),
            **{k: round(scored[k], 1) for k in ("f1", "precision", "recall", "exact_match")},
            "seconds": round(stats["seconds"], 1),
            "sent": stats["requested"],
            "tokens": stats["tokens"],
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="atis-json", choices=sorted(quality.FORMAT))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--unlabeled", type=int, default=200)
    parser.add_argument("--test", type=int, default=200)
    parser.add_argument("--runs-root", type=Path, default=ROOT / "runs" / "teacher-structured")
    args = parser.parse_args()
    sample = Namespace(labeled=50, unlabeled=args.unlabeled, test=args.test, sft_n=200, dev=20, max_words=12)
    sets = quality.task_sets(args.task, sample, args.seed)
    result = {
        "task": args.task,
        "seed": args.seed,
        **{
            mode: measure(args.task, args.seed, sets, args.runs_root, mode == "structured")
            for mode in ("free", "structured")
        },
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
