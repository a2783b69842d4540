"""The paper's quality table at CPU scale: teacher / SFT-L / vanilla KD / MCKD-2 / MCKD-3 / SFT-N, mean ± sd over seeds.

Each (task, seed) is ONE real mckd run (Prefect flow, real SmolLM2 teacher and students, real data): the
3-stage MCKD run with `baselines: [sft, vanilla-kd, mckd-2, sft-n]`, so every row trains on the same
samples and the distillation rows share the teacher's labels and stage 1. Selection never sees the test
set: CRAFT students select epochs on the official dev split, ATIS students (since 2026-12-02; on L before) on
--dev pool rows outside L / U / T (ATIS has no dev split here); the same rows decide the run's deliverable. T shares
no normalised sentence with L, U, the dev rows or SFT-N, nor repeats one (issue #27; runs recorded before run again).

Usage (results are added to --out after every run; a re-run skips (task, seed) pairs finished with the same
sizes, and the Prefect cache skips finished nodes of an interrupted one):
  .venv/bin/python benchmarks/quality.py --tasks atis craft --seeds 0 1 2
Prints one JSON object: per task and row, test F1 mean/sd over seeds, wall times, and MCKD-3 minus every other row
pooled over seeds with two 95% CIs: `ci95`, a paired bootstrap of each run's test rows (the trained models held
fixed), and `ci95_seeds`, a hierarchical bootstrap that redraws the seeds too, beside the per-seed gaps (from the
per-row statistics each run records in --out).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))  # label_quality, however this script is loaded
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")  # loaded 2-core machine

from label_quality import label_quality  # noqa: E402  (benchmarks/, beside this file)

from mckd_core.atis import json_schema, load_atis, load_atis_json  # noqa: E402
from mckd_core.config import RunConfig, parse_config  # noqa: E402
from mckd_core.craft import load_craft  # noqa: E402
from mckd_core.data import normalized_input, sample_sets, within_words, write_sets  # noqa: E402
from mckd_core.formats import get_format  # noqa: E402
from mckd_core.formats.json_format import JsonFormat  # noqa: E402
from mckd_core.identity import source_hash  # noqa: E402
from mckd_core.report import choose_deliverable  # noqa: E402
from mckd_core.scoring import TEST_ROWS_FILE, aligned  # noqa: E402
from mckd_core.stats import hierarchical_paired_bootstrap, pooled_paired_bootstrap  # noqa: E402

CRAFT_DIR = Path(os.environ.get("MCKD_CRAFT_DIR", ROOT.parent / "shared" / "data" / "craft"))
FORMAT = {"atis": "slots", "craft": "constituency", "atis-json": "json"}
ROWS = ["teacher", "sft", "vanilla-kd", "mckd-2", "mckd-3", "sft-n"]
#: The row every other row is compared with, and each row's name in a run's comparisons / test-rows.json.
FINAL = "mckd-3"
SYSTEM = {row: "final" if row == FINAL else row for row in ROWS}
#: What a run's `f1` is. Runs recorded without `metric` hold the LEGACY one: CRAFT's `f1` was Kim et al.'s until
#: 2026-12-02 (BENCHMARKS.md), so such runs are not today's table and run again.
METRIC = {
    "atis": "conlleval chunk F1 (micro)",
    "craft": "MCKD authors' sentence-mean span F1 (whole sentence included, every sentence counted)",
    "atis-json": "micro F1 over leaf (path, value) pairs of intent + slots JSON (format json, ATIS schema)",
}
LEGACY_METRIC = {
    "atis": METRIC["atis"],
    "craft": "Kim et al. (2019) sentence-mean span F1",
    "atis-json": METRIC["atis-json"],
}
# Most tokens of one output (teacher generation and student targets): bracketed trees need more than slot spans.
OUTPUT_TOKENS = {"atis": 64, "craft": 80, "atis-json": 96}


#: Options added after the other benchmarks (teacher_structured, suggest_strategies, teacher_dev) started building
#: their own args for task_sets / run_config: read with `option`, so those args need not carry them.
NEWER_OPTIONS = {"draw_unlabeled": None, "epoch_choice": "last", "gold_share": None}

#: The recipe options a run is keyed by (`sizes_of`) and a table names them by (quality_table), in the order a
#: recipe's name lists them: each with the value every run had before the option existed (a run with that value is
#: keyed without the option, so records made before it keep their key) and its label (None: keyed, never named).
KEYED_OPTIONS = {
    "teacher_backend": ("transformers", None),
    "train_on_labeled": (False, "gold-aware"),
    "init": ("pretrained", "init {}"),
    "first_labels": ("teacher", "first_labels {}"),
    "epoch_choice": ("best", "epoch_choice {}"),
    "structured_outputs": (False, "structured outputs"),
    "gold_share": (None, "gold share {}"),
}


def option(args, name: str):
    """`args.<name>`, or the option's default where `args` was built without it."""
    return getattr(args, name, NEWER_OPTIONS[name])


def task_sets(task: str, args, seed: int) -> dict[str, pd.DataFrame]:
    """Seeded L / U / T (+ CRAFT dev) samples and the SFT-N gold set (L plus other pool rows, never U or T)."""
    if task == "atis":
        pool, test, dev = load_atis("train"), load_atis("test"), None
    elif task == "atis-json":
        pool, test, dev = atis_json_pool()
    else:
        splits = {s: load_craft(CRAFT_DIR, s, max_words=args.max_words) for s in ("train", "dev", "test")}
        pool, test, dev = splits["train"], splits["test"], splits["dev"].sample(n=args.dev, random_state=seed)
    # A U-curve's runs draw their sets as for its largest U and keep U's first rows: L, T, the dev rows and SFT-N are
    # then the same rows at every point, and each U holds the smaller ones.
    drawn = max(args.unlabeled, option(args, "draw_unlabeled") or 0)
    sets = sample_sets(pool, test, args.labeled, drawn, args.test, seed, args.max_words, dev=dev)
    # Compared normalised (data.normalized_input), so T shares no input with the dev rows or SFT-N either, and
    # SFT-N none with the dev rows.
    used = {normalized_input(text) for df in sets.values() for text in df["input"]}  # L, U, T (CRAFT: and dev)
    short = within_words(pool, args.max_words).drop_duplicates("input")
    unused = lambda: short[~short["input"].map(normalized_input).isin(used)]  # noqa: E731
    if task != "craft":
        # ATIS has no dev split: dev rows from the training pool outside L / U / T, so SFT keeps all of L and no
        # row of L is held out for selection (the run's data.dev).
        sets["dev"] = unused().sample(n=args.dev, random_state=seed).reset_index(drop=True)
        used |= set(sets["dev"]["input"].map(normalized_input))
    extra = unused().sample(n=args.sft_n - args.labeled, random_state=seed)
    sets["sft_n_labeled"] = pd.concat([sets["labeled"], extra]).reset_index(drop=True)
    sets["unlabeled"] = sets["unlabeled"].iloc[: args.unlabeled]
    return sets


def atis_json_pool() -> tuple[pd.DataFrame, pd.DataFrame, None]:
    """ATIS as intent + slots JSON: the training pool and the test sentences whose gold fits the schema drawn from
    the training split (a few test intents and slot types never occur in training)."""
    train, test = load_atis_json("train"), load_atis_json("test")
    fmt = JsonFormat(json_schema(train))
    return train, test[[fmt.target_error(x, t) is None for x, t in zip(test["input"], test["target"])]], None


def run_name(task: str, seed: int, args) -> str:
    """Unique per task, seed and sizes: runs of other sizes in the same --runs-root never share a directory."""
    digest = hashlib.sha256(json.dumps(sizes_of(args), sort_keys=True).encode()).hexdigest()[:6]
    return f"{task}-U{args.unlabeled}-e{args.epochs}-{digest}-seed{seed}"


def run_config(task: str, paths: dict[str, str], args, seed: int) -> RunConfig:
    return parse_config(
        {
            "run_name": run_name(task, seed, args),
            "runs_root": str(args.runs_root),
            "seed": seed,
            "data": {
                "task": FORMAT[task],
                **paths,
                **({"schema": json_schema(load_atis_json("train"))} if task == "atis-json" else {}),
            },
            "teacher": {
                "num_demos": args.teacher_demos,
                "demo_selection": args.demo_selection,
                "max_new_tokens": OUTPUT_TOKENS[task],
                "batch_size": 32,
                "structured_outputs": args.structured_outputs,
                **teacher_backend(args),
            },
            "student": {
                "epochs": args.epochs,
                "batch_size": 4,
                "learning_rate": 1e-4,
                "max_target_tokens": OUTPUT_TOKENS[task],
                "max_dev": args.dev,
                "eval_batch_size": 32,
                "train_on_labeled": args.train_on_labeled,
                "init": args.init,
                "epoch_choice": option(args, "epoch_choice"),
                "gold_share": option(args, "gold_share"),
            },
            "stages": {"num_stages": 3, "partitions": 2, "evaluate_students": False, "first_labels": args.first_labels},
            "baselines": ["sft", "vanilla-kd", "mckd-2", "sft-n"],
        },
        source=f"quality config {task} seed {seed}",
    )


def teacher_backend(args) -> dict:
    """The product's main path on request: a vLLM CPU server that mckd starts for the teacher phase of each run."""
    if args.teacher_backend == "transformers":
        return {}
    python = os.environ.get("MCKD_VLLM_PYTHON", str(ROOT / ".vllm-venv" / "bin" / "python"))
    return {"backend": "vllm-server", "vllm": {"cpu": True, "python": python}}


def scores(report: dict) -> dict[str, dict]:
    """Test F1 (with its 95% CI; CRAFT also Kim et al.'s) / exact match / invalid % of every row of the table."""
    tests = {
        "teacher": report["teacher"]["test"],
        "mckd-3": report["final_student"]["test"],
        **{name: base["test"] for name, base in report["baselines"].items()},
    }
    return {
        row: {k: tests[row].get(k) for k in ("f1", "ci95", "f1_kim", "f1_micro", "exact_match", "invalid")}
        for row in ROWS
    }


def deliverable(report: dict) -> dict:
    """Which candidate the run's deliverable guard shipped, its dev F1s, and the shipped model's test F1; and
    `with_l_only`: the guard's rule (`choose_deliverable`) over the candidates a user with only L has, i.e. without
    SFT-N, which trains on gold rows beyond L and is in the table as the upper bound."""
    chosen = report["deliverable"]
    tests = {
        "final": report["final_student"]["test"],
        **{name: base["test"] for name, base in report["baselines"].items()},
    }
    dev = {name: f1 for name, f1 in chosen["dev"].items() if name != "sft-n"}
    margins = {name: cmp for name, cmp in chosen.get("vs_final", {}).items() if name != "sft-n"}
    l_only = choose_deliverable(
        dev,
        {name: name for name in tests},
        chosen.get("dev_source", "dev"),
        vs_final=margins,
        dev_rows=chosen.get("dev_rows"),
    )["name"]
    return {
        "name": chosen["name"],
        "dev": chosen["dev"],
        "test_f1": tests[chosen["name"]]["f1"],
        "test_ci95": tests[chosen["name"]].get("ci95"),
        "with_l_only": {"name": l_only, "test_f1": tests[l_only]["f1"], "test_ci95": tests[l_only].get("ci95")},
    }


def run_one(task: str, seed: int, args) -> dict:
    from flows.mckd import mckd_flow

    sets = task_sets(task, args, seed)
    paths = write_sets(sets, Path(args.runs_root) / "data" / run_name(task, seed, args))
    cfg = run_config(task, paths, args, seed)
    started = time.perf_counter()
    report = mckd_flow(cfg)
    return {
        "task": task,
        "seed": seed,
        "wall_s": round(time.perf_counter() - started, 1),
        "load_end": os.getloadavg(),
        "sizes": sizes_of(args),
        "metric": METRIC[task],
        # T shares no normalised input with L, U, dev or SFT-N, nor repeats one (data.draw_test; issue #27).
        "t_disjoint": True,
        **recipe_of(args),
        "trainer": source_hash(["student"])[:12],
        "scores": scores(report),
        "comparisons": report["comparisons"],
        "deliverable": deliverable(report),
        # Per-row statistics of every row, for the CI pooled over seeds: kept here, since run dirs are not committed.
        "test_rows": json.loads((cfg.run_dir / TEST_ROWS_FILE).read_text())["systems"],
        "teacher_invalid": report["counts"]["teacher_invalid"],
        "unlabeled": report["counts"]["unlabeled"],
        "pseudolabel_f1": {
            "teacher": report["teacher"]["pseudolabel_f1"],
            **(
                {"sft": report["first_labels"]["pseudolabel_f1"]}
                if report["first_labels"].get("chosen") == "sft"
                else {}
            ),
            **{f"stage-{s['stage']}": s["pseudolabel_f1"] for s in report["stages"]},
        },
        "timings_s": {k: round(v, 1) for k, v in report["timings"].items()},
        # Precision / recall of every stage's labels of U and each distilled student's rows and kept epoch beside
        # them: what limits a point of the U-curve, read from the record (run dirs are not committed).
        "label_quality": {k: v for k, v in label_quality(cfg.run_dir, with_gains=False).items() if k != "run"},
    }


def mean_sd(values: list[float]) -> dict:
    return {
        "mean": round(statistics.mean(values), 2),
        "sd": round(statistics.stdev(values), 2) if len(values) > 1 else None,
        "n": len(values),
    }


def pooled_comparisons(runs_rows: list[dict], task: str) -> dict:
    """MCKD-3 minus every other row, pooled over seeds (`pooled_with_seeds`). `runs_rows`: per run, the `systems`
    of its test-rows.json (name -> {"id", "stats"})."""
    aggregate = get_format(FORMAT[task]).aggregate
    return {
        f"{FINAL} - {row}": pooled_with_seeds(
            [aligned(rows[SYSTEM[FINAL]], rows[SYSTEM[row]]) for rows in runs_rows], aggregate
        )
        for row in ROWS
        if row != FINAL
    }


def pooled_with_seeds(pairs: list[tuple], aggregate) -> dict:
    """One pooled comparison: `diff` and `ci95` with the trained models held fixed (stats.pooled_paired_bootstrap:
    each run's test rows resampled within that run), `ci95_seeds` with the seeds resampled too
    (stats.hierarchical_paired_bootstrap), and `per_seed`, the runs' own differences."""
    seeds = hierarchical_paired_bootstrap(pairs, aggregate)
    return {**pooled_paired_bootstrap(pairs, aggregate), "ci95_seeds": seeds["ci95"], "per_seed": seeds["per_seed"]}


def per_row_stats(runs: list[dict]) -> list[dict] | None:
    """Each run's per-row statistics (its test-rows.json systems); None when a run has none (an older run)."""
    rows = [r.get("test_rows") for r in runs]
    return rows if all(isinstance(r, dict) for r in rows) else None


def summarize(results: list[dict]) -> dict:
    """Per task: each row's test F1 (and exact match) mean ± sd over seeds; the paper's three checks on the means;
    MCKD-3 minus each row with a 95% CI pooled over seeds (None when a run's per-row statistics are missing)."""
    summary = {}
    for task in sorted({r["task"] for r in results}):
        runs = [r for r in results if r["task"] == task]
        f1 = {row: mean_sd([r["scores"][row]["f1"] for r in runs]) for row in ROWS}
        runs_rows = per_row_stats(runs)
        summary[task] = {
            "seeds": [r["seed"] for r in runs],
            "metric": METRIC[task],
            "f1": f1,
            "comparisons": pooled_comparisons(runs_rows, task) if runs_rows else None,
            "exact_match": {row: mean_sd([r["scores"][row]["exact_match"] for r in runs]) for row in ROWS},
            # What the runs shipped: the guard's pick, and its pick among what a user with only L trains.
            "deliverable": {
                "shipped": [r["deliverable"]["name"] for r in runs],
                "f1": mean_sd([r["deliverable"]["test_f1"] for r in runs]),
                "with_l_only": [r["deliverable"]["with_l_only"]["name"] for r in runs],
                "with_l_only_f1": mean_sd([r["deliverable"]["with_l_only"]["test_f1"] for r in runs]),
            }
            if all("with_l_only" in r.get("deliverable", {}) for r in runs)
            else None,
            "wall_s": mean_sd([r["wall_s"] for r in runs]),
            "paper_checks": {
                "mckd3_minus_teacher (paper: >= +7.5)": round(f1["mckd-3"]["mean"] - f1["teacher"]["mean"], 2),
                "mckd3_minus_vanilla_kd (paper: >= +3.7)": round(f1["mckd-3"]["mean"] - f1["vanilla-kd"]["mean"], 2),
                "mckd3_minus_sft_n (paper: ~0)": round(f1["mckd-3"]["mean"] - f1["sft-n"]["mean"], 2),
            },
        }
    return summary


def markdown(summary: dict) -> str:
    lines = ["| task | " + " | ".join(ROWS) + " | wall per seed |", "|---|" + "---:|" * (len(ROWS) + 1)]
    for task, s in summary.items():
        cells = [f"{s['f1'][row]['mean']:.1f} ± {s['f1'][row]['sd'] or 0:.1f}" for row in ROWS]
        lines.append(
            f"| {task} (n={len(s['seeds'])}) | " + " | ".join(cells) + f" | {s['wall_s']['mean'] / 60:.0f} min |"
        )
    for task, s in summary.items():
        pooled = (
            "; ".join(f"{name} {pooled_interval(c)}" for name, c in (s["comparisons"] or {}).items())
            or "no per-row statistics for a CI"
        )
        lines.append(
            f"\n{task}: test F1 is {s['metric']}. Pooled over seeds, 95% CI over test rows / over seeds and "
            f"test rows (per-seed gaps): {pooled}"
        )
    return "\n".join(lines)


def pooled_interval(cmp: dict) -> str:
    """ "+d [lo, hi] / [lo, hi] (g1, g2, ...)": the row-level CI, the CI that resamples seeds too, the per-seed gaps
    (the row-level CI alone for a comparison made without them)."""
    text = f"{cmp['diff']:+.1f} {_brackets(cmp['ci95'])}"
    if "ci95_seeds" in cmp:
        text += f" / {_brackets(cmp['ci95_seeds'])} ({', '.join(f'{gap:+.1f}' for gap in cmp['per_seed'])})"
    return text


def _brackets(ci: list[float]) -> str:
    return f"[{ci[0]:+.1f}, {ci[1]:+.1f}]"


def sizes_of(args) -> dict:
    """The settings a run's numbers depend on besides task and seed; runs with other sizes are other tables."""
    sizes = {
        k: getattr(args, k)
        for k in (
            "labeled",
            "unlabeled",
            "test",
            "sft_n",
            "dev",
            "epochs",
            "max_words",
            "teacher_demos",
            "demo_selection",
        )
    }
    if option(args, "draw_unlabeled"):
        sizes["draw_unlabeled"] = args.draw_unlabeled
    options = {k: option(args, k) if k in NEWER_OPTIONS else getattr(args, k) for k in KEYED_OPTIONS}
    return {**sizes, **{k: v for k, v in options.items() if v != KEYED_OPTIONS[k][0]}}


def recipe_of(args) -> dict:
    """The recipe options of a run and whether each is the product's default (RunConfig's), for quality.json."""
    defaults = RunConfig.model_validate({"data": {"labeled": "l", "unlabeled": "u"}})
    options = {
        "train_on_labeled": (args.train_on_labeled, defaults.student.train_on_labeled),
        "init": (args.init, defaults.student.init),
        "first_labels": (args.first_labels, defaults.stages.first_labels),
        "teacher_demos": (args.teacher_demos, defaults.teacher.num_demos),
        "demo_selection": (args.demo_selection, defaults.teacher.demo_selection),
        "structured_outputs": (args.structured_outputs, defaults.teacher.structured_outputs),
        "epoch_choice": (option(args, "epoch_choice"), defaults.student.epoch_choice),
        "gold_share": (option(args, "gold_share"), defaults.student.gold_share),
    }
    return {"recipe": {k: v for k, (v, _) in options.items()}, "defaults": all(v == d for v, d in options.values())}


def finished_runs(out: Path, sizes: dict | None = None) -> list[dict]:
    """The runs recorded in `out` (only those made with `sizes` and today's recipe when given, T drawn disjoint from
    every other set: a run made before that (issue #27) still counts in the tables, but runs again here)."""
    runs = json.loads(out.read_text())["runs"] if out.exists() else []
    return [r for r in runs if sizes is None or (r.get("sizes") == sizes and current(r) and r.get("t_disjoint"))]


def current(run: dict) -> bool:
    """Scored with today's METRIC, and made since 2026-12-02: dev rows no student trains on (ATIS: from the pool,
    before: L itself), the deliverable guard (`deliverable`), per-row statistics kept in the record.

    `trainer` (the hash that keys the students' cache) is recorded, not required: the trainer changes of 2026-12-02
    (answer-only LM head, fused AdamW) compute the same loss and update, so runs made before them still count."""
    return run.get("metric", LEGACY_METRIC[run["task"]]) == METRIC[run["task"]] and "deliverable" in run


def save_run(out: Path, run: dict) -> None:
    """Add one finished run to `out`, re-reading it first: several quality.py processes (other tasks, seeds or
    sizes, each with its own --runs-root) may share one results file."""
    key = lambda r: (r["task"], r["seed"], json.dumps(r.get("sizes"), sort_keys=True))  # noqa: E731
    runs = [r for r in finished_runs(out) if key(r) != key(run)] + [run]
    runs.sort(key=key)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps({"runs": runs}, indent=1, default=str))
    tmp.replace(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", choices=sorted(FORMAT), default=["atis", "craft"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--labeled", type=int, default=50)
    parser.add_argument("--unlabeled", type=int, default=40)
    parser.add_argument("--test", type=int, default=20)
    parser.add_argument(
        "--draw-unlabeled",
        type=int,
        default=NEWER_OPTIONS["draw_unlabeled"],
        help="Draw the sets as for this many unlabeled rows and keep the first --unlabeled of them (a U-curve: the "
        "same L, T, dev rows and SFT-N at every U).",
    )
    parser.add_argument(
        "--sft-n", type=int, default=100, help="Gold examples of the supervised upper bound (paper: 500)."
    )
    parser.add_argument(
        "--dev",
        type=int,
        default=20,
        help="Dev sentences for epoch selection and the deliverable guard "
        "(CRAFT: its dev split; ATIS: pool rows outside L/U/T).",
    )
    # At most 6 epochs, the best kept by dev F1: with 2, the ~20-row stage students of ATIS seed 1 reached dev F1
    # 0.0 / 39.4 (stage 1) and 0.0 / 0.0 (stage 2) and MCKD collapsed; with 6, 59.3 / 69.0 and 67.4 / 51.9.
    parser.add_argument("--epochs", type=int, default=6, help="Most epochs per student (the best is kept on dev).")
    parser.add_argument("--max-words", type=int, default=12)
    # Chosen on ATIS dev rows outside L/U/T (benchmarks/teacher_dev.py, seed 1): k=8 BM25-retrieved demos gave the
    # SmolLM2 teacher dev F1 64.2 (recall 50.0), the former k=4 random-fixed 42.1 (recall 27.9).
    parser.add_argument("--teacher-demos", type=int, default=8, help="Teacher demonstrations per prompt.")
    parser.add_argument("--demo-selection", choices=["bm25", "random-fixed"], default="bm25")
    parser.add_argument(
        "--teacher-backend",
        choices=["transformers", "vllm-server"],
        default="transformers",
        help="vllm-server: a vLLM CPU server per run ($MCKD_VLLM_PYTHON, default .vllm-venv; "
        "scripts/setup_vllm_cpu.sh builds it).",
    )
    parser.add_argument(
        "--train-on-labeled", action="store_true", help="Gold-aware students (student.train_on_labeled)."
    )
    parser.add_argument(
        "--init",
        choices=["pretrained", "sft"],
        default="pretrained",
        help="sft: distilled students start from the SFT-on-L student (student.init).",
    )
    parser.add_argument(
        "--first-labels",
        choices=["teacher", "sft", "auto"],
        default="auto",
        help="Y_0 (stages.first_labels; default auto, the product's): teacher, sft (the SFT-on-L student's labels "
        "of U) or auto (whichever labels the dev rows better).",
    )
    parser.add_argument(
        "--structured-outputs",
        action="store_true",
        help="Constrain the teacher's decoding (teacher.structured_outputs).",
    )
    parser.add_argument(
        "--epoch-choice",
        choices=["best", "last"],
        default=NEWER_OPTIONS["epoch_choice"],
        help="Which epoch a student keeps (student.epoch_choice): best on dev, or the last unless an earlier one "
        "beats it beyond noise.",
    )
    parser.add_argument(
        "--gold-share",
        type=float,
        default=NEWER_OPTIONS["gold_share"],
        help="Repeat the gold rows of gold-aware students to at least this share of their rows (student.gold_share).",
    )
    parser.add_argument("--runs-root", type=Path, default=ROOT / "runs" / "quality")
    # Committed, so finished seeds outlive the machine (runs/ does not).
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "quality.json")
    args = parser.parse_args()

    for task in args.tasks:
        for seed in args.seeds:
            if not any(r["task"] == task and r["seed"] == seed for r in finished_runs(args.out, sizes_of(args))):
                save_run(args.out, run_one(task, seed, args))
    results = [
        r for r in finished_runs(args.out, sizes_of(args)) if r["task"] in args.tasks and r["seed"] in args.seeds
    ]
    summary = summarize(results)
    print(
        json.dumps(
            {
                "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
                "args": {k: str(v) for k, v in vars(args).items()},
                "summary": summary,
            },
            indent=1,
        )
    )
    print(markdown(summary))


if __name__ == "__main__":
    main()
