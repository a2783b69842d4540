"""Which 50 rows to label next (issue #29): `mckd suggest` against random rows and the final student's least sure ones.

Per (task, seed): one MCKD run on L / U+n / T (quality.py's samples and recipe, the sft baseline only);
then per strategy, n rows of its U are labeled by a simulated annotator (the gold targets U carries in the
benchmarks), join L and leave U, and MCKD runs again on the same T and dev rows. Strategies:
  suggest  `mckd suggest RUN --n n` (label changes, teacher invalid/repaired, final sureness; diverse rows)
  random   n rows of U drawn with the seed
  unsure   the n rows with the lowest mean token log-prob of the final student (report.json files: final)
  suggest-same-prompts  (with --same-prompts) suggest's rows, the re-run with data.demos = the base run's demo
           pool: its teacher prompts unchanged, so the teacher cache answers U and T (what paying for the teacher once
           costs; the teacher is not shown the new rows); in the table over the seeds that have it
Reports per strategy the test F1 of the deliverable and of MCKD-3 (the final student), and suggest minus each other
strategy pooled over seeds with paired CIs (test rows resampled within each run; `ci95_seeds` resamples the seeds
too), wall times, and the commands. Each run is added to --out as it ends; a seed stopped part-way goes on from its
next run (the rows each strategy picked are in the record, so the base run need not be re-run).

  .venv/bin/python benchmarks/suggest_strategies.py --tasks atis --seeds 0 1 2 --unlabeled 200 --test 200
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import harness  # noqa: E402
import quality  # noqa: E402  (its environment defaults, samples and recipe)

from mckd_core.config import RunConfig, parse_config  # noqa: E402
from mckd_core.data import write_sets  # noqa: E402
from mckd_core.formats import get_format  # noqa: E402
from mckd_core.scoring import TEST_ROWS_FILE, aligned, score_predictions  # noqa: E402
from mckd_core.suggest import load_run, suggest  # noqa: E402

STRATEGIES = ("suggest", "random", "unsure")  # the issue's: every seed has them
# Opt-in re-runs on another strategy's rows with another config (--same-prompts): the rows come from its record.
SAME_ROWS = {"suggest-same-prompts": "suggest"}
# The guard's candidates: the final student and SFT on L (trained anyway under the default first_labels: auto).
# Not vanilla-kd / mckd-2: two more students on all of U per run, and no strategy's question.
BASELINES = ["sft"]


def chosen_rows(strategy: str, run_dir: Path, n: int, seed: int) -> list[str]:
    """The ids of U the strategy sends to the annotator."""
    if strategy == "suggest":
        return [s.id for s in suggest(run_dir, n)[1]]
    final = load_run(run_dir).labelings["final"]
    if strategy == "random":
        return list(np.random.default_rng(seed).choice(final["id"].to_numpy(), size=n, replace=False))
    if strategy == "unsure":
        return list(final.sort_values("logprob", kind="stable")["id"].iloc[:n])
    raise ValueError(strategy)


def with_labels(sets: dict[str, pd.DataFrame], ids: list[str]) -> dict[str, pd.DataFrame]:
    """The sets after the simulated annotator: the rows `ids` of U, with their gold targets, appended to L."""
    unlabeled = sets["unlabeled"]
    picked = unlabeled[unlabeled["id"].isin(set(ids))]
    if len(picked) != len(set(ids)):
        raise RuntimeError(f"{len(set(ids)) - len(picked)} chosen ids are not rows of U")
    return {
        **sets,
        "labeled": pd.concat([sets["labeled"], picked], ignore_index=True),
        "unlabeled": unlabeled[~unlabeled["id"].isin(set(ids))].reset_index(drop=True),
    }


def config(task: str, paths: dict, args, seed: int, name: str):
    cfg = quality.run_config(task, paths, args, seed).model_dump(mode="json")
    cfg["run_name"], cfg["baselines"] = f"{quality.run_name(task, seed, args)}-{name}", BASELINES
    cfg["data"]["sft_n_labeled"] = None  # sampled by quality.task_sets for its SFT-N row; no row here
    # A seed's four runs may span sessions, and a session's machine may or may not have bf16 (`auto`): one precision
    # keeps the runs compared with each other comparable.
    cfg["student"]["precision"] = "fp32"
    return parse_config(cfg, source=f"suggest_strategies {task} seed {seed} {name}")


def one_run(
    task: str, seed: int, args, sets: dict, name: str, demos: pd.DataFrame | None = None
) -> tuple[dict, Path, float]:
    """One MCKD run on `sets`; `demos`: the teacher's demo pool (data.demos) instead of L."""
    from flows.mckd import mckd_flow

    directory = Path(args.runs_root) / "data" / f"{quality.run_name(task, seed, args)}-{name}"
    paths = write_sets(sets, directory)
    cfg = config(task, paths, args, seed, name)
    if demos is not None:
        if not cfg.data.dev:
            raise RuntimeError("data.demos = the base run's L needs the base run's dev rows outside L (data.dev)")
        demos.to_parquet(directory / "demos.parquet", index=False)
        cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"demos": str(directory / "demos.parquet")})})
    started = time.perf_counter()
    report = mckd_flow(cfg)
    return report, cfg.run_dir, round(time.perf_counter() - started, 1)


def record(report: dict, run_dir: Path, wall: float) -> dict:
    shipped = report["deliverable"]["name"]
    rows = json.loads((run_dir / TEST_ROWS_FILE).read_text())["systems"]
    tests = {"final": report["final_student"]["test"], **{k: v["test"] for k, v in report["baselines"].items()}}
    return {
        "wall_s": wall,
        "deliverable": shipped,
        "deliverable_f1": tests[shipped]["f1"],
        "mckd3_f1": tests["final"]["f1"],
        "counts": {k: report["counts"][k] for k in ("labeled", "unlabeled", "test")},
        # rows the teacher was asked (not answered by its cache); on another machine than the base run's, its cache
        # is not there
        "teacher_sent": report["teacher"].get("tokens", {}).get("total", {}).get("sent"),
        "machine": this_machine(),
        "test_rows": {"deliverable": rows[shipped], "mckd-3": rows["final"]},
    }


def picked_quality(run_dir: Path, ids: list[str] | None = None) -> dict:
    """How good the base run's labels were on the rows a strategy picked (every row of U: `ids` None): the teacher's
    and the final student's F1 against U's gold, and the rows' mean length in words. A strategy that picks rows its
    labels already get right sends the annotator little to teach."""
    run = load_run(run_dir)
    out = {}
    for name in ("teacher", "final"):
        df = run.labelings[name]
        if ids is not None:
            df = df[df["id"].isin(set(ids))]
        preds = [label if valid else None for label, valid in zip(df["label"], df["valid"])]
        out[f"{name}_f1"] = round(score_predictions(df, preds, run.task)["f1"], 2)
    out["words"] = round(float(df["input"].str.split().str.len().mean()), 2)
    return out


def base_args_of(args) -> argparse.Namespace:
    """The arguments of the runs: U holds the n rows the annotator will label too."""
    return argparse.Namespace(**{**vars(args), "unlabeled": args.unlabeled + args.n})


def this_machine() -> dict:
    machine = harness.machine()
    return {k: machine[k] for k in ("cpu", "cores", "cpu_capability")}


def wanted(args) -> tuple[str, ...]:
    return STRATEGIES + (tuple(SAME_ROWS) if args.same_prompts else ())


def run_seed(task: str, seed: int, args, entry: dict | None, save) -> dict:
    """One seed's runs, `save`d after each: the base run with every strategy's rows chosen from it at once (ids
    and `picked`), then each strategy's run. A seed recorded in part (`entry`) goes on where it stopped: the chosen
    ids are in the record, so its base run dir need not be on disk any more (runs/ is not committed)."""
    base_args = base_args_of(args)
    sets = quality.task_sets(task, base_args, seed)
    if entry is None:
        report, run_dir, wall = one_run(task, seed, base_args, sets, "base")
        base = record(report, run_dir, wall) | {"u_quality": picked_quality(run_dir)}
        entry = {"task": task, "seed": seed, "n": args.n, "command": sys.argv, "base": base, "strategies": {}}
        for strategy in STRATEGIES:
            ids = chosen_rows(strategy, run_dir, args.n, seed)
            entry["strategies"][strategy] = {"ids": ids, "picked": picked_quality(run_dir, ids)}
    for strategy in wanted(args)[len(STRATEGIES) :]:  # also for a seed recorded without it
        source = entry["strategies"][SAME_ROWS[strategy]]
        entry["strategies"].setdefault(strategy, {k: source[k] for k in ("ids", "picked")})
    save(entry)
    for strategy in wanted(args):
        chosen = entry["strategies"][strategy]
        if "wall_s" in chosen:
            continue
        # The base run's demo pool is its L: its dev rows are data.dev, none held out of L (quality.run_config).
        demos = sets["labeled"] if strategy == "suggest-same-prompts" else None
        report_s, dir_s, wall_s = one_run(task, seed, base_args, with_labels(sets, chosen["ids"]), strategy, demos)
        chosen.update(record(report_s, dir_s, wall_s))
        save(entry)
    return entry


def complete(run: dict, strategies: tuple[str, ...] = STRATEGIES) -> bool:
    return all("wall_s" in run["strategies"].get(strategy, {}) for strategy in strategies)


def summarize(runs: list[dict]) -> dict:
    summary = {}
    for task in sorted({r["task"] for r in runs}):
        mine = [r for r in runs if r["task"] == task]
        aggregate = get_format(quality.FORMAT[task]).aggregate
        # The opt-in strategies over the seeds that ran them; the over every seed.
        having = {s: [r for r in mine if complete(r, (s,))] for s in (*STRATEGIES, *SAME_ROWS)}
        table = {s: strategy_row(s, having[s]) for s in having if having[s]}
        diffs = {}
        pairs_of = [("suggest", "random"), ("suggest", "unsure"), *((s, src) for s, src in SAME_ROWS.items())]
        for one, other in pairs_of:
            for what in ("deliverable", "mckd-3"):
                pairs = [
                    aligned(r["strategies"][one]["test_rows"][what], r["strategies"][other]["test_rows"][what])
                    for r in having[one]
                ]
                if pairs:
                    diffs[f"{one} - {other} ({what})"] = quality.pooled_with_seeds(pairs, aggregate)
        summary[task] = {
            "seeds": [r["seed"] for r in mine],
            "n": mine[0]["n"],
            "base": {
                "deliverable": quality.mean_sd([r["base"]["deliverable_f1"] for r in mine]),
                "mckd-3": quality.mean_sd([r["base"]["mckd3_f1"] for r in mine]),
                "wall_s": statistics.mean(r["base"]["wall_s"] for r in mine),
                "shipped": [r["base"]["deliverable"] for r in mine],
                "labeled": mine[0]["base"]["counts"]["labeled"],
            },
            "shipped": {s: [r["strategies"][s]["deliverable"] for r in having[s]] for s in table},
            "table": table,
            "comparisons": diffs,
            "machines": sorted({m for r in mine for m in _machines(r)}),
            # seeds whose runs did not all run on one kind of machine (their pairs mix the CPUs' numerics)
            "mixed_seeds": [r["seed"] for r in mine if len(_machines(r)) > 1],
        }
    return summary


def strategy_row(strategy: str, runs: list[dict]) -> dict:
    """A strategy's row of the table: test F1 (mean ± sd over `runs`' seeds), wall, teacher rows sent, and what the
    base run's labels were worth on the rows it picked."""
    mine = [r["strategies"][strategy] for r in runs]
    row = {
        what: quality.mean_sd([m[f"{key}_f1"] for m in mine])
        for what, key in (("deliverable", "deliverable"), ("mckd-3", "mckd3"))
    }
    sent = [m.get("teacher_sent") for m in mine]
    row |= {
        "seeds": [r["seed"] for r in runs],
        "wall_s": statistics.mean(m["wall_s"] for m in mine),
        "teacher_sent": statistics.mean(sent) if None not in sent else None,
    }
    picked = [m.get("picked") for m in mine]
    if all(picked):
        row["picked"] = {k: round(statistics.mean(p[k] for p in picked), 2) for k in picked[0]}
    return row


def _machines(run: dict) -> set[str]:
    """The kinds of machine a seed's finished runs ran on."""
    return {_machine(e) for e in [run["base"], *run["strategies"].values()] if "wall_s" in e}


def _seeds_if_fewer(row: dict, task_summary: dict) -> str:
    return "" if row["seeds"] == task_summary["seeds"] else f" (seeds {', '.join(map(str, row['seeds']))})"


def _machine(entry: dict) -> str:
    m = entry.get("machine")
    return f"{m['cores']}-core {m['cpu']} ({m['cpu_capability']})" if m else "not recorded"


def markdown(summary: dict) -> str:
    """BENCHMARKS.md's strategy table: test F1 per strategy (mean ± sd over seeds), the base run's labels on the rows
    each picked, wall time; then suggest minus each other strategy with its CIs."""
    lines = [
        "| task (seeds) | L | rows added by | deliverable | MCKD-3 | teacher / final F1 on the added rows | "
        "teacher rows sent | wall |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for task, s in summary.items():
        b = s["base"]
        lines.append(
            f"| {task} ({len(s['seeds'])}) | {b['labeled']} | none (the base run) | {_mean_sd(b['deliverable'])} | "
            f"{_mean_sd(b['mckd-3'])} | | | {b['wall_s'] / 60:.0f} min |"
        )
        for strategy, row in s["table"].items():
            picked = row.get("picked")
            on_rows = f"{picked['teacher_f1']:.1f} / {picked['final_f1']:.1f}" if picked else "n/a"
            sent = "n/a" if row["teacher_sent"] is None else f"{row['teacher_sent']:.0f}"
            lines.append(
                f"| | {b['labeled'] + s['n']} | {strategy}{_seeds_if_fewer(row, s)} | {_mean_sd(row['deliverable'])} | "
                f"{_mean_sd(row['mckd-3'])} | {on_rows} | {sent} | {row['wall_s'] / 60:.0f} min |"
            )
    for task, s in summary.items():
        gaps = "; ".join(f"{name} {quality.pooled_interval(c)}" for name, c in s["comparisons"].items())
        lines.append(f"\n{task}, 95% CI over test rows / over seeds and test rows (per-seed gaps): {gaps}")
        mixed = f"; seeds {s['mixed_seeds']} ran on more than one" if s["mixed_seeds"] else ""
        lines.append(f"\n{task} ran on: {', '.join(s['machines'])}{mixed}.")
    return "\n".join(lines)


def _mean_sd(cell: dict) -> str:
    return f"{cell['mean']:.1f}" + (f" ± {cell['sd']:.1f}" if cell["sd"] is not None else "")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", choices=sorted(quality.FORMAT), default=["atis"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--n", type=int, default=50, help="Rows the annotator labels per strategy.")
    parser.add_argument("--labeled", type=int, default=50)
    parser.add_argument("--unlabeled", type=int, default=200, help="U after the n labeled rows leave it.")
    parser.add_argument("--test", type=int, default=200)
    parser.add_argument("--sft-n", type=int, default=100, help="Unused here (quality.py's sampler draws it).")
    parser.add_argument("--dev", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=None, help="Default: the product's (student.epochs).")
    parser.add_argument("--max-words", type=int, default=12)
    parser.add_argument("--teacher-demos", type=int, default=8)
    parser.add_argument("--demo-selection", choices=["bm25", "random-fixed"], default="bm25")
    parser.add_argument("--teacher-backend", choices=["transformers", "vllm-server"], default="transformers")
    parser.add_argument("--runs-root", type=Path, default=ROOT / "runs" / "suggest")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "suggest_strategies.json")
    parser.add_argument(
        "--same-prompts",
        action="store_true",
        help="Also re-run on suggest's rows with the base run's teacher prompts (data.demos): one more run per seed.",
    )
    parser.add_argument("--table", action="store_true", help="Print the recorded runs' table (markdown); run nothing.")
    args = parser.parse_args(argv)
    # quality.run_config's recipe options, at RunConfig's defaults ("re-run MCKD with defaults")
    defaults = RunConfig.model_validate({"data": {"labeled": "l", "unlabeled": "u"}})
    args.train_on_labeled, args.init = defaults.student.train_on_labeled, defaults.student.init
    args.first_labels, args.structured_outputs = defaults.stages.first_labels, defaults.teacher.structured_outputs
    args.epoch_choice = defaults.student.epoch_choice
    if args.epochs is None:
        args.epochs = defaults.student.epochs
    return args


def chosen_runs(runs: list[dict], args) -> list[dict]:
    """The finished seeds of --tasks / --seeds / --n (a seed recorded in part is left out of the table)."""
    return [r for r in runs if r["task"] in args.tasks and r["seed"] in args.seeds and r["n"] == args.n and complete(r)]


def main() -> None:
    args = parse_args()
    runs = json.loads(args.out.read_text())["runs"] if args.out.exists() else []
    if args.table:
        print(markdown(summarize(chosen_runs(runs, args))))
        return

    def save(entry: dict) -> None:
        if not any(r is entry for r in runs):
            runs.append(entry)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"runs": runs}, indent=1, default=str))

    for task in args.tasks:
        for seed in args.seeds:
            entry = next((r for r in runs if (r["task"], r["seed"], r["n"]) == (task, seed, args.n)), None)
            if entry is None or not complete(entry, wanted(args)):
                run_seed(task, seed, args, entry, save)
    print(json.dumps(summarize(chosen_runs(runs, args)), indent=2))


if __name__ == "__main__":
    os.environ.setdefault("DO_NOT_TRACK", "1")
    main()
