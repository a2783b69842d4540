"""How often the deliverable guard ships a candidate no better than the final student, and catches a better one.

Every draw simulates the per-row dev statistics of the final student and of m candidates on n dev rows, scores
them with the guard's own code (`mckd_core.scoring.dev_margins`, as the flow's `_dev_scores` does) and lets
`mckd_core.report.choose_deliverable` pick. The same margins without their p-values give the rule before issue #27
(a paired percentile-bootstrap 95% CI above 0 per candidate, no correction for m), so both rules see the same draws.

Generative model (one draw): dev row i has g_i gold units: slot chunks, g_i = 1 + Binomial(5, 0.32) (1-6, mean 2.6,
like ATIS sentences of <= 12 words), or constituency spans, g_i = 1 + Binomial(9, 0.45). Unit j of row i has a
difficulty d_ij = r_i + 0.8 e_ij (r_i, e_ij standard normal) that every system shares; system k, of skill a_k,
finds it when a_k - d_ij + 0.15 l_kij > 0 (l logistic, the system's own noise). A missed unit is predicted wrongly
(a false positive) when it is one of the 30% of units every system mislabels, or with probability 0.05 on its own.
A system's output on a row is invalid (nothing predicted) when v_i + 0.3 w_ki - 0.4 a_k > 1.3 (v, w standard normal;
hard rows fail for every system). Per row, right / predicted / gold give the slots statistics (conlleval micro F1
over the rows, ATIS's metric) and 2 right / (predicted + gold) the sentence F1 (its mean over the rows, CRAFT's).
The skill a_k is set by bisection on 100,000 simulated rows so that a system scores 65 F1 (equal candidates and
the final student), 70 (+5) or 75 (+10). With equal skills the model matches what the quality runs' students show
on T (BENCHMARKS.md, ATIS seed 0: 72% of rows with identical statistics for final vs mckd-2, row-F1 correlation
0.83 vs 0.84; precision 82 vs 80-87, recall 55 vs 44-56; 17% of rows empty vs 9-20%; CRAFT row-F1 correlation
0.84 vs 0.88-0.90). Under it, swapping two equal systems on a row leaves the joint distribution unchanged.

Usage:
  .venv/bin/python benchmarks/guard_sim.py [--draws 2000] [--seed 0] [--rows 10 20 50]
Prints a markdown table: for m candidates equal to the final student, how often one ships (false ship, bar <= 5%),
and, with one candidate +5 or +10 F1 better among 3 equal ones (the flow's four: sft, vanilla-kd, mckd-2, sft-n),
how often that one ships (detection); old rule / new rule.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mckd_core.report import choose_deliverable  # noqa: E402
from mckd_core.scoring import dev_margins  # noqa: E402
from mckd_core.stats import mean_f1, micro_f1  # noqa: E402

#: Per kind of statistic: the mckd task format whose aggregate scores it, and its numpy aggregate (for calibration).
KINDS = {"slots": ("slots", micro_f1), "sentence": ("constituency", mean_f1)}
UNITS = {"slots": (5, 0.32), "sentence": (9, 0.45)}
BASE_F1 = 65.0
CANDIDATES = ["sft", "vanilla-kd", "mckd-2", "sft-n"]
#: The better candidate of the detection cells (a name the guard knows, for its tie-break).
BETTER = "vanilla-kd"


def simulate(rng: np.random.Generator, rows: int, skills: np.ndarray, kind: str) -> np.ndarray:
    """Per-row statistics of len(skills) systems on the same `rows` dev rows: (systems, rows, k); see the docstring."""
    systems = len(skills)
    trials, p = UNITS[kind]
    gold = 1 + rng.binomial(trials, p, size=rows)
    present = np.arange(trials + 1)[None, :] < gold[:, None]
    difficulty = rng.normal(size=rows)[:, None] + 0.8 * rng.normal(size=(rows, trials + 1))
    own_noise = 0.15 * rng.logistic(size=(systems, rows, trials + 1))
    found = (skills[:, None, None] - difficulty[None] + own_noise > 0) & present
    mislabelled = rng.random((rows, trials + 1)) < 0.3
    wrong = ~found & present & (mislabelled[None] | (rng.random((systems, rows, trials + 1)) < 0.05))
    invalid = rng.normal(size=rows)[None] + 0.3 * rng.normal(size=(systems, rows)) - 0.4 * skills[:, None] > 1.3
    right = np.where(invalid, 0, found.sum(-1))
    predicted = np.where(invalid, 0, found.sum(-1) + wrong.sum(-1))
    gold = np.broadcast_to(gold, (systems, rows))
    if kind == "slots":
        return np.stack([right, predicted, gold], axis=-1).astype(float)
    return (2 * right / (predicted + gold))[..., None].astype(float)


def skill_for(kind: str, f1: float, rows: int = 100_000) -> float:
    """The skill at which a system scores `f1` on `rows` simulated rows (bisection; the F1 rises with skill)."""
    aggregate = KINDS[kind][1]
    lo, hi = -4.0, 6.0
    for _ in range(25):  # +-0.3e-6 in skill: far below the F1 resolution of 100,000 rows
        mid = (lo + hi) / 2
        score = float(aggregate(simulate(np.random.default_rng(12345), rows, np.array([mid]), kind)[0]))
        lo, hi = (mid, hi) if score < f1 else (lo, mid)
    return (lo + hi) / 2


def guard_picks(stats: np.ndarray, kind: str, names: list[str]) -> tuple[str, str]:
    """What the guard ships for one draw (`stats[0]` the final student, the rest `names`), with today's rule and with
    the rule before issue #27 (the same margins without their p-values)."""
    ids = [str(i) for i in range(stats.shape[1])]
    aggregate = KINDS[kind][1]
    scored = {
        name: {"f1": float(aggregate(s)), "rows": {"id": ids, "stats": s}} for name, s in zip(["final", *names], stats)
    }
    margins = dev_margins(scored, KINDS[kind][0])
    dev = {name: result["f1"] for name, result in scored.items()}
    dirs = {name: name for name in scored}
    rows = stats.shape[1]
    new = choose_deliverable(dev, dirs, "simulated dev rows", vs_final=margins, dev_rows=rows)["name"]
    before = {name: {k: v for k, v in cmp.items() if k != "p"} for name, cmp in margins.items()}
    old = choose_deliverable(dev, dirs, "simulated dev rows", vs_final=before, dev_rows=rows)["name"]
    return old, new


def cell(
    kind: str, rows: int, skills: np.ndarray, names: list[str], draws: int, seed: int, target: str | None
) -> tuple[float, float]:
    """% of draws in which the guard ships another candidate than the final student (`target` None) or ships
    `target`: (old rule, new rule)."""
    rng = np.random.default_rng(seed)
    hits = np.zeros(2)
    for _ in range(draws):
        picks = guard_picks(simulate(rng, rows, skills, kind), kind, names)
        hits += [(pick != "final") if target is None else (pick == target) for pick in picks]
    return float(100.0 * hits[0] / draws), float(100.0 * hits[1] / draws)


def run(draws: int, seed: int, rows_list: list[int], kinds: list[str]) -> list[dict]:
    results = []
    for kind in kinds:
        base = skill_for(kind, BASE_F1)
        better = {gain: skill_for(kind, BASE_F1 + gain) for gain in (5, 10)}
        for rows in rows_list:
            for m in range(1, 5):
                old, new = cell(kind, rows, np.full(m + 1, base), CANDIDATES[:m], draws, seed, None)
                results.append(
                    {"kind": kind, "rows": rows, "case": f"{m} equal", "measure": "false ship", "old": old, "new": new}
                )
            for gain, skill in better.items():
                names = [BETTER, *[name for name in CANDIDATES if name != BETTER]]
                skills = np.array([base, skill, base, base, base])
                old, new = cell(kind, rows, skills, names, draws, seed + 1, BETTER)
                results.append(
                    {
                        "kind": kind,
                        "rows": rows,
                        "case": f"+{gain} among 3 equal",
                        "measure": "detection",
                        "old": old,
                        "new": new,
                    }
                )
    return results


def markdown(results: list[dict], rows_list: list[int]) -> str:
    kinds = list(dict.fromkeys(r["kind"] for r in results))
    cases = list(dict.fromkeys((r["case"], r["measure"]) for r in results))
    head = [f"{kind} n={rows}" for kind in kinds for rows in rows_list]
    lines = [
        "| candidates vs the final student | measure | " + " | ".join(head) + " |",
        "|---|---|" + "---:|" * len(head),
    ]
    at = {(r["kind"], r["rows"], r["case"]): r for r in results}
    for case, measure in cases:
        cells = [
            f"{at[kind, rows, case]['old']:.1f} / **{at[kind, rows, case]['new']:.1f}**"
            for kind in kinds
            for rows in rows_list
        ]
        lines.append(f"| {case} | {measure} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--draws", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rows", type=int, nargs="+", default=[10, 20, 50])
    parser.add_argument("--kinds", nargs="+", choices=sorted(KINDS), default=["slots", "sentence"])
    args = parser.parse_args()
    started = time.perf_counter()
    results = run(args.draws, args.seed, args.rows, args.kinds)
    print(markdown(results, args.rows))
    print(
        f"\n{args.draws} draws per cell, seed {args.seed}; {time.perf_counter() - started:.0f} s on "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; cells: old rule / **new rule** (%)"
    )


if __name__ == "__main__":
    main()
