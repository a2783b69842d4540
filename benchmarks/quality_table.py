"""Issue #13's table: every recipe measured by quality.py side by side, per task, from benchmarks/results/quality.json.

One line per (task, recipe): the paper's recipe and each option (gold-aware students, init sft, first_labels sft) and
U, over the seeds that recipe ran; test F1 means of teacher / SFT-L / vanilla KD / MCKD-3 / the deliverable / SFT-N,
(the guard's pick, and its pick among what a user with only L trains, i.e. without SFT-N), and MCKD-3 minus teacher,
SFT-L and vanilla KD pooled over those seeds (quality.summarize) with two 95% CIs, over test rows / over seeds and
test rows (hierarchical bootstrap), and the per-seed gaps. SFT-L is retrained in every run (its
config holds the run's options), and on 50 rows its epoch choice on 20 dev rows is noisy: the last column pairs each
run's MCKD-3 with the mean of every distinct SFT-L trained on the same seed and test rows in any recipe (per test
row), so a gap that comes from one run's weak SFT-L shows. Only runs
with T >= 200 test rows and today's metric and dev-row recipe (quality.current) count: smaller tables cannot resolve
the differences in question.

`--effect OPTION=VALUE` prints what one option changes instead: every run keyed with it paired with the run of the
same task and seed whose sizes are the same but for that option (absent, i.e. its value before the option existed),
and per task and system, with − without pooled over the pairs with both CIs and the per-seed differences.

Usage:
  .venv/bin/python benchmarks/quality_table.py [benchmarks/results/quality.json] [--effect epoch_choice=last]
Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
import quality  # noqa: E402  (puts the repo root on sys.path)

from mckd_core.formats import get_format  # noqa: E402
from mckd_core.scoring import aligned  # noqa: E402

MIN_TEST = 200
#: The options that name a recipe, in the order a recipe's name lists them: every option quality.sizes_of keys (a run
#: keyed with one is another recipe, never pooled with the runs without it), and the sets drawn as for a larger U.
OPTIONS = {k: label for k, (_, label) in quality.KEYED_OPTIONS.items() if label}
OPTIONS["draw_unlabeled"] = "drawn as for U={}"
GAPS = ("teacher", "sft", "vanilla-kd")


def recipe(sizes: dict) -> str:
    names = [label.format(sizes[key]) for key, label in OPTIONS.items() if key in sizes]
    return (" + ".join(names) or "paper recipe") + (f", U={sizes['unlabeled']}" if sizes["unlabeled"] != 200 else "")


def table(runs: list[dict]) -> str:
    groups: dict[tuple[str, str], list[dict]] = {}
    for run in runs:
        if quality.current(run) and run["sizes"]["test"] >= MIN_TEST:
            groups.setdefault((run["task"], recipe(run["sizes"])), []).append(run)
    lines = [
        "| task | recipe | seeds | teacher | SFT-50 | vanilla KD | **MCKD-3** | deliverable: guard / L only | SFT-N | "
        + " | ".join(f"MCKD-3 − {quality_name(row)} [CI rows] / [CI seeds] (per seed)" for row in GAPS)
        + " | MCKD-3 − every SFT-50 of its seeds |",
        "|---|---|---|" + "---:|" * (7 + len(GAPS)),
    ]
    counted = [run for group in groups.values() for run in group]
    for (task, name), group in sorted(groups.items()):
        s = quality.summarize(sorted(group, key=lambda r: r["seed"]))[task]
        means = [f"{s['f1'][row]['mean']:.1f}" for row in ("teacher", "sft", "vanilla-kd", "mckd-3")]
        shipped = (
            s["deliverable"]
            and f"{s['deliverable']['f1']['mean']:.1f} / {s['deliverable']['with_l_only_f1']['mean']:.1f}"
        )
        gaps = [_gap(s["comparisons"], row) for row in GAPS]
        lines.append(
            f"| {task} | {name} | {','.join(map(str, s['seeds']))} | "
            + " | ".join(means[:3])
            + f" | **{means[3]}** | "
            + (shipped or "–")
            + f" | {s['f1']['sft-n']['mean']:.1f} | "
            + " | ".join(gaps)
            + f" | {against_every_sft(group, counted)} |"
        )
    return "\n".join(lines)


def against_every_sft(group: list[dict], runs: list[dict]) -> str:
    """MCKD-3 minus SFT-L averaged over every distinct SFT-L trained on the run's task, seed and test rows (in any
    recipe; the per-row statistics averaged, one comparator per seed), pooled over the group's seeds:
    "diff [lo, hi] (SFT-L trainings)"."""
    pairs, trainings = [], 0
    for run in group:
        final = run["test_rows"][quality.SYSTEM[quality.FINAL]]
        distinct = {
            json.dumps(other["test_rows"]["sft"], sort_keys=True): other["test_rows"]["sft"]
            for other in runs
            if (other["task"], other["seed"]) == (run["task"], run["seed"])
            and set(other["test_rows"]["sft"]["id"]) == set(final["id"])
        }
        stats = [aligned(final, sft)[1] for sft in distinct.values()]
        pairs.append((np.asarray(final["stats"], dtype=float), np.mean(stats, axis=0)))
        trainings += len(stats)
    pooled = quality.pooled_with_seeds(pairs, get_format(quality.FORMAT[group[0]["task"]]).aggregate)
    return f"{quality.pooled_interval(pooled)}, {trainings} trainings"


#: The systems an option's effect is shown on (the teacher's rows do not depend on a student option), and the
#: deliverable a user with only L gets (the guard's pick among the rest, whichever system that is in each run).
DELIVERABLE = "L-only deliverable"
EFFECT_ROWS = ("sft", "vanilla-kd", "mckd-2", quality.FINAL, DELIVERABLE)


def effect(runs: list[dict], option: str, value) -> str:
    """The option's effect, one line per task and system: "with − without [CI rows] / [CI seeds] (per seed)"."""
    counted = [run for run in runs if quality.current(run) and run["sizes"]["test"] >= MIN_TEST]
    without = {(r["task"], r["seed"], json.dumps(r["sizes"], sort_keys=True)): r for r in counted}
    pairs: dict[str, list[tuple[dict, dict]]] = {}
    for run in counted:
        if run["sizes"].get(option) != value:
            continue
        rest = {k: v for k, v in run["sizes"].items() if k != option}
        other = without.get((run["task"], run["seed"], json.dumps(rest, sort_keys=True)))
        if other:
            pairs.setdefault(run["task"], []).append((run, other))
    lines = [
        f"| task | {option}={value} vs without: runs paired (seeds) | system | F1 with / without | "
        "with − without [CI rows] / [CI seeds] (per seed) |",
        "|---|---|---|---:|---:|",
    ]
    for task, both in sorted(pairs.items()):
        both.sort(key=lambda pair: pair[0]["seed"])
        aggregate = get_format(quality.FORMAT[task]).aggregate
        seeds = f"{len(both)} ({','.join(str(run['seed']) for run, _ in both)})"
        for row in EFFECT_ROWS:
            stats = [aligned(_rows(run, row), _rows(other, row)) for run, other in both]
            means = [np.mean([_f1(pair[side], row) for pair in both]) for side in (0, 1)]
            cmp = quality.pooled_with_seeds(stats, aggregate)
            lines.append(
                f"| {task} | {seeds} | {row} | {means[0]:.1f} / {means[1]:.1f} | {quality.pooled_interval(cmp)} |"
            )
    return "\n".join(lines)


def _rows(run: dict, row: str) -> dict:
    """A row's per-test-row statistics; the deliverable's are those of whichever system the guard shipped without
    SFT-N."""
    name = run["deliverable"]["with_l_only"]["name"] if row == DELIVERABLE else quality.SYSTEM[row]
    return run["test_rows"][name]


def _f1(run: dict, row: str) -> float:
    return run["deliverable"]["with_l_only"]["test_f1"] if row == DELIVERABLE else run["scores"][row]["f1"]


def quality_name(row: str) -> str:
    return {"sft": "SFT-50", "vanilla-kd": "vanilla KD"}.get(row, row)


def _gap(comparisons: dict | None, row: str) -> str:
    cmp = (comparisons or {}).get(f"{quality.FINAL} - {row}")
    return quality.pooled_interval(cmp) if cmp else "–"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path", nargs="?", type=Path, default=HERE / "results" / "quality.json")
    parser.add_argument("--effect", metavar="OPTION=VALUE", help="What one option changes (e.g. epoch_choice=last).")
    args = parser.parse_args()
    if not args.path.is_file():
        raise SystemExit(
            f"{args.path}: no such file; give quality.py's --out file (default benchmarks/results/quality.json)"
        )
    runs = json.loads(args.path.read_text())["runs"]
    if args.effect:
        option, _, value = args.effect.partition("=")
        print(effect(runs, option, json.loads(value) if value in ("true", "false") or value.isdigit() else value))
    else:
        print(table(runs))
