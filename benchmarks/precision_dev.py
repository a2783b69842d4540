"""Does a student trained one way learn as well as one trained the other way? Decided on dev rows, over several seeds
(issue #18): `--compare precision` (fp32 vs bf16) or `--compare attention` (SDPA vs eager attention kernel, in the
default precision).

Per seed: one SmolLM2-135M student per variant as the quality runs train it (`student_speed.student_spec`: `--rows`
ATIS rows, epochs selected on `--dev` rows), then each scored on `--eval` further ATIS training-pool rows that
neither trained or selected on (never the test split). Reports each student's eval F1, the paired bootstrap CI of
second − first variant pooled over seeds, and each student's seconds.

Usage: .venv/bin/python benchmarks/precision_dev.py [--compare precision --seeds 0 1 2 --rows 100 --dev 20 --eval 100]
Prints one JSON object (also written to benchmarks/results/precision-dev-<date>.json).
"""

from __future__ import annotations

import argparse
import datetime
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from harness import log, machine, save_result  # noqa: E402
from student_speed import shuffled_pool, student_spec  # noqa: E402

# The two variants of each comparison: (name, spec fields), the second compared against the first.
COMPARISONS = {
    "precision": [("fp32", {"precision": "fp32"}), ("bf16", {"precision": "bf16"})],
    "attention": [("sdpa", {"attention": "sdpa"}), ("eager", {"attention": "eager"})],
}


def eval_rows(args, seed: int):
    """ATIS pool rows after the student's train and dev rows (the same shuffle `student_spec` draws from)."""
    pool = shuffled_pool(seed)
    start = args.rows + args.dev
    return pool.iloc[start : start + args.eval]


def one_student(args, seed: int, variant: str, fields: dict, work: Path) -> dict:
    from mckd_core.formats import get_format
    from mckd_core.student import TrainSpec, predict, train

    spec = {
        **student_spec(
            argparse.Namespace(**{**vars(args), "seed": seed, "precision": "auto"}), str(work / f"seed{seed}-{variant}")
        ),
        **fields,
    }
    metrics = train(TrainSpec.flat(**spec))
    rows = eval_rows(args, seed)
    preds = predict(spec["out_dir"], list(rows["input"]), 32, spec["max_target_tokens"], spec["precision"])
    fmt = get_format("slots")
    stats = fmt.row_stats(list(rows["input"]), list(rows["target"]), preds)
    return {
        "seed": seed,
        "variant": variant,
        "seconds": metrics["seconds"],
        "dev_f1": metrics["dev_f1"],
        "epochs": metrics["epochs"],
        "eval_f1": fmt.metrics(list(rows["input"]), list(rows["target"]), preds)["f1"],
        "eval_stats": stats.tolist(),
    }


def main() -> None:
    import torch

    from mckd_core.formats import get_format
    from mckd_core.stats import pooled_paired_bootstrap

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--compare", choices=sorted(COMPARISONS), default="precision")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--rows", type=int, default=100)
    parser.add_argument("--dev", type=int, default=20)
    parser.add_argument("--eval", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    runs = []
    with tempfile.TemporaryDirectory(prefix="mckd-precision-dev-") as tmp:
        for seed in args.seeds:
            for variant, fields in COMPARISONS[args.compare]:
                runs.append(one_student(args, seed, variant, fields, Path(tmp)))
                log(
                    f"seed {seed} {variant}: eval F1 {runs[-1]['eval_f1']:.1f}, dev F1 {runs[-1]['dev_f1']:.1f}, "
                    f"{runs[-1]['seconds']:.0f} s"
                )
    (first, _), (second, _) = COMPARISONS[args.compare]
    by = {(r["seed"], r["variant"]): r for r in runs}
    pairs = [(by[(s, second)]["eval_stats"], by[(s, first)]["eval_stats"]) for s in args.seeds]
    result = {
        "date": datetime.date.today().isoformat(),
        "command": " ".join(sys.argv),
        "machine": machine(),
        "sizes": {k: getattr(args, k) for k in ("compare", "seeds", "rows", "dev", "eval", "epochs", "threads")},
        f"{second}_minus_{first}_eval_f1": pooled_paired_bootstrap(pairs, get_format("slots").aggregate),
        "runs": [{k: v for k, v in r.items() if k != "eval_stats"} for r in runs],
    }
    save_result(result, "precision-dev", args.out)


if __name__ == "__main__":
    main()
