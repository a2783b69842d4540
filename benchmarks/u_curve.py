"""The curve toward SFT-N (issue #27 item 8): MCKD-3 (today's defaults) and vanilla KD at U = 200, 400, 800, one seed
per task, with SFT-50, SFT-200 and SFT-500 as lines. Where, if anywhere, does MCKD reach SFT-200?

Every point is one `quality.py` run whose sets are drawn as for the largest U (`--draw-unlabeled`): L, T, the dev
rows and the SFT-N gold rows are the same rows at every point and each U holds the smaller ones, so the points differ
only in U. The U=200 run trains SFT-200, the others SFT-500 (the same 500 rows, so the U=800 run finds them trained
when the Prefect cache holds them).

  .venv/bin/python benchmarks/u_curve.py run --tasks atis craft --seed 0 -- --teacher-backend vllm-server
      (one quality.py run per point, one at a time; each is added to quality.json when it ends, a re-run skips
      finished points; what follows `--` goes to quality.py)
  .venv/bin/python benchmarks/u_curve.py report [--figure benchmarks/results/u-curve.png] [--with gold_share=0.2]
      (the table, as markdown, and the figure, from quality.json; --with: the points run with that quality.py option
      after `--`, e.g. `-- --gold-share 0.2`)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import quality  # noqa: E402  (the recipe options its runs are keyed by)

POINTS = (200, 400, 800)
#: SFT-N of each point's run: the U=200 run gives the SFT-200 line, the others SFT-500.
SFT_N = {200: 200, 400: 500, 800: 500}
QUALITY = ROOT / "benchmarks" / "results" / "quality.json"
#: The keyed options of every point of the curve (the command's --train-on-labeled, quality.py's defaults); a run
#: keyed otherwise (`--with`, another epoch choice) is another curve. Where the teacher runs is not an option.
CURVE_OPTIONS = {"train_on_labeled": True, "first_labels": "auto", "epoch_choice": "last"}


def commands(tasks: list[str], seed: int, extra: list[str]) -> list[list[str]]:
    """The quality.py runs of the curve, smallest U first (its teacher rows are the larger runs' first rows)."""
    return [
        [
            sys.executable,
            str(ROOT / "benchmarks" / "quality.py"),
            *("--tasks", task, "--seeds", str(seed)),
            *("--unlabeled", str(u), "--draw-unlabeled", str(max(POINTS)), "--sft-n", str(SFT_N[u])),
            *("--test", "200", "--epochs", "4", "--train-on-labeled"),
            *extra,
        ]
        for task in tasks
        for u in POINTS
    ]


def variant(sizes: dict) -> dict:
    """The keyed recipe options of a run where they differ from the curve's: {} for a point of today's defaults."""
    keyed = [k for k in quality.KEYED_OPTIONS if k != "teacher_backend"]
    return {k: sizes.get(k) for k in keyed if sizes.get(k) != CURVE_OPTIONS.get(k)}


def curve(runs: list[dict], task: str, seed: int, options: dict | None = None) -> dict | None:
    """One task's curve from quality.json's records (the runs with `options`, e.g. {"gold_share": 0.2}; none: today's
    defaults): per U the distilled rows and the labels they learned from, and the SFT lines (each from the runs that
    trained it, their mean where several did)."""
    mine = [
        r
        for r in runs
        if r["task"] == task
        and r["seed"] == seed
        and r.get("sizes", {}).get("draw_unlabeled") == max(POINTS)
        and variant(r["sizes"]) == (options or {})
    ]
    if not mine:
        return None
    points = {}
    for r in sorted(mine, key=lambda r: r["sizes"]["unlabeled"]):
        s = r["scores"]
        points[r["sizes"]["unlabeled"]] = {
            "mckd-3": s["mckd-3"]["f1"],
            "mckd-3_ci95": s["mckd-3"]["ci95"],
            "vanilla-kd": s["vanilla-kd"]["f1"],
            "vanilla-kd_ci95": s["vanilla-kd"]["ci95"],
            "teacher": s["teacher"]["f1"],
            "deliverable": r["deliverable"]["with_l_only"]["test_f1"],
            "labels_f1": r.get("pseudolabel_f1", {}),
            "wall_s": r["wall_s"],
            **limits(r),
        }
    lines: dict[str, list[float]] = {}
    for r in mine:
        lines.setdefault(f"SFT-{r['sizes']['labeled']}", []).append(r["scores"]["sft"]["f1"])
        lines.setdefault(f"SFT-{r['sizes']['sft_n']}", []).append(r["scores"]["sft-n"]["f1"])
    return {
        "task": task,
        "seed": seed,
        "options": options or {},
        "points": points,
        "lines": {name: sum(v) / len(v) for name, v in sorted(lines.items(), key=lambda kv: int(kv[0][4:]))},
    }


def limits(run: dict) -> dict:
    """What the run's files say limits a point (recorded by quality.py since 2026-12-07): the teacher labels' precision
    and recall on U, and the final student's training rows and kept epoch (of how many)."""
    found = run.get("label_quality")
    if not found:
        return {}
    final = next(s for s in found["students"] if s["model"].endswith("(final)"))
    return {
        "teacher_pr": [found["labels"]["teacher"]["precision"], found["labels"]["teacher"]["recall"]],
        "final_student": {k: final.get(k) for k in ("train_rows", "gold_repeats", "epoch", "epochs")},
    }


def reaches(c: dict, line: str) -> int | None:
    """The smallest U whose MCKD-3 reaches `line` (an SFT-N line's F1), None where none does."""
    target = c["lines"].get(line)
    if target is None:
        return None
    return next((u for u, p in c["points"].items() if p["mckd-3"] >= target), None)


def markdown(curves: list[dict]) -> str:
    out = []
    for c in curves:
        lines = ", ".join(f"{name} {f1:.1f}" for name, f1 in c["lines"].items())
        recipe = "".join(f", {k} {v}" for k, v in c.get("options", {}).items())
        out.append(f"**{c['task']}**, seed {c['seed']}{recipe} (lines: {lines})\n")
        out.append(
            "| U | teacher | vanilla KD [95% CI] | MCKD-3 [95% CI] | deliverable | labels F1 by stage "
            "| teacher labels P / R | final student: rows, epoch kept | minutes |"
        )
        out.append("|---:|---:|---:|---:|---:|---|---:|---:|---:|")
        for u, p in c["points"].items():
            labels = " → ".join(f"{v:.1f}" for v in p["labels_f1"].values())
            teacher_pr = " / ".join(f"{v:.1f}" for v in p["teacher_pr"]) if "teacher_pr" in p else "–"
            final = _final(p["final_student"]) if "final_student" in p else "–"
            out.append(
                f"| {u} | {p['teacher']:.1f} | {p['vanilla-kd']:.1f} {_ci(p['vanilla-kd_ci95'])} | "
                f"{p['mckd-3']:.1f} {_ci(p['mckd-3_ci95'])} | {p['deliverable']:.1f} | {labels} | {teacher_pr} | "
                f"{final} | {p['wall_s'] / 60:.0f} |"
            )
        reached = reaches(c, "SFT-200")
        out.append(
            "\nMCKD-3 reaches SFT-200 at U = "
            + (f"{reached}" if reached is not None else f"none of {', '.join(map(str, c['points']))}")
            + ".\n"
        )
    return "\n".join(out)


def _final(student: dict) -> str:
    repeats = student.get("gold_repeats") or 1  # student.gold_share: the rows count each gold copy
    copies = f" (gold x{repeats})" if repeats > 1 else ""
    return f"{student['train_rows']}{copies}, {student['epoch']} of {student['epochs']}"


def _ci(ci: list[float]) -> str:
    return f"[{ci[0]:.1f}, {ci[1]:.1f}]"


def figure(curves: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 4), squeeze=False)
    for ax, c in zip(axes[0], curves):
        us = list(c["points"])
        for row, style in (("mckd-3", "o-"), ("vanilla-kd", "s--"), ("teacher", "x:")):
            ax.plot(us, [c["points"][u][row] for u in us], style, label=row)
        low = [c["points"][u]["mckd-3_ci95"][0] for u in us]
        high = [c["points"][u]["mckd-3_ci95"][1] for u in us]
        ax.fill_between(us, low, high, alpha=0.15)
        for name, f1 in c["lines"].items():
            ax.axhline(f1, color="grey", linewidth=0.8)
            ax.annotate(name, (us[-1], f1), textcoords="offset points", xytext=(4, 2), fontsize=8)
        ax.set_xscale("log", base=2)
        ax.set_xticks(us, [str(u) for u in us])
        ax.set_xlabel("U (unlabeled rows the teacher labels)")
        ax.set_ylabel("test F1")
        ax.set_title(f"{c['task']}, seed {c['seed']}, T=200")
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run")
    run.add_argument("--tasks", nargs="+", default=["atis", "craft"])
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("extra", nargs=argparse.REMAINDER, help="after --: options for quality.py")
    report = sub.add_parser("report")
    report.add_argument("--tasks", nargs="+", default=["atis", "craft"])
    report.add_argument("--seed", type=int, default=0)
    report.add_argument("--figure", type=Path, default=ROOT / "benchmarks" / "results" / "u-curve.png")
    report.add_argument(
        "--with",
        dest="options",
        action="append",
        default=[],
        metavar="OPTION=VALUE",
        help="The curve of runs made with this quality.py option too (e.g. gold_share=0.2); repeatable.",
    )
    args = parser.parse_args()
    if args.command == "run":
        for argv in commands(args.tasks, args.seed, [a for a in args.extra if a != "--"]):
            print(" ".join(argv[1:]), flush=True)
            subprocess.run(argv, check=True)
        return
    runs = json.loads(QUALITY.read_text())["runs"]
    options = {name: _value(value) for name, _, value in (o.partition("=") for o in args.options)}
    curves = [c for c in (curve(runs, task, args.seed, options) for task in args.tasks) if c]
    print(markdown(curves))
    if curves:
        figure(curves, args.figure)
        print(f"figure: {args.figure}")


def _value(text: str):
    """A `--with` value as quality.json keys it: a number or boolean as such, else the text."""
    try:
        return json.loads(text)
    except ValueError:
        return text


if __name__ == "__main__":
    main()
