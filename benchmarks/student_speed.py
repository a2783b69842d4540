"""Where one student's seconds go, and the trainer before / after a change (issue #18).

One student as the quality runs train it (SmolLM2-135M-Instruct on ATIS slot rows, micro-batch 4, lr 1e-4, epochs
chosen on dev rows by generation), each run in a fresh child process on `--threads` threads:

- `before`: `mckd_core` as of `--baseline-rev` (extracted with `git archive`), the trainer the change replaces;
- `after`: this checkout's trainer (its metrics.json has the phase split: load / forward / backward / optimizer /
  dev selection / save);
- `trainer`: `transformers.Trainer` on the same rows, precision, optimizer and schedule (load + train + save; it
  has no generation-based selection, so it is compared with `after`'s seconds without its dev selection).

The variants alternate (before, after, trainer, before, ...) over `--reps` repetitions; medians are reported.
`before` is also run once under cProfile to split its seconds into the same phases. The matmul rate the FLOP
utilization is measured against is taken in the same run, on the same threads.

Usage: .venv/bin/python benchmarks/student_speed.py [--rows 100 --dev 20 --epochs 2 --reps 3 --threads 2]
Prints one JSON object (also written to benchmarks/results/student-speed-<date>.json).
"""

from __future__ import annotations

import argparse
import cProfile
import datetime
import functools
import json
import os
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from harness import interleave, log, machine, median, peak_rss_mib, save_result  # noqa: E402

MODEL = "smollm2-135m-instruct"
VARIANTS = ["before", "after", "trainer"]
# What train() calls directly, by phase (cProfile names): the old trainer has no phase clock of its own.
PROFILE_PHASES = {
    "load": {
        "from_pretrained",
        "load_tokenizer",
        "resolve_model",
        "is_seq2seq",
        "<listcomp>",
        "seed_everything",
        "to",
        "_handle_fromlist",
        "_find_and_load",
    },  # the last two: transformers' lazy imports inside train()
    "forward": {"_wrapped_call_impl"},
    "backward": {"backward"},
    "optimizer": {"clip_grad_norm_", "_no_grad_wrapper", "wrapper", "step", "zero_grad", "_use_grad"},
    "dev_select": {"generate", "metrics", "<dictcomp>", "load_state_dict", "state_dict"},  # + keeping the best epoch
    "save": {"save_model"},
}


@functools.cache
def shuffled_pool(seed: int):
    """The ATIS training pool, deduplicated and shuffled by `seed`: train, dev (and held-out) rows in that order."""
    from mckd_core.atis import load_atis

    return load_atis("train").drop_duplicates("input").sample(frac=1.0, random_state=seed)


def student_spec(args, out_dir: str) -> dict:
    """The rows and options of one quality-run student: ATIS train rows (gold targets), dev rows after them."""
    pool = shuffled_pool(args.seed)
    train, dev = pool.iloc[: args.rows], pool.iloc[args.rows : args.rows + args.dev]
    return {
        "model": MODEL,
        "out_dir": out_dir,
        "task": "slots",
        "train_inputs": list(train["input"]),
        "train_targets": list(train["target"]),
        "dev_inputs": list(dev["input"]),
        "dev_targets": list(dev["target"]),
        "epochs": args.epochs,
        "batch_size": 4,
        "learning_rate": 1e-4,
        "max_target_tokens": 64,
        "eval_batch_size": 32,
        "seed": args.seed,
        "precision": args.precision,
    }


def baseline_tree(rev: str, into: Path) -> Path:
    """`mckd_core` as of `rev`, in a folder that goes first on the child's sys.path."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev, "mckd_core"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def run_child(variant: str, spec_file: Path, args, baseline: Path, profile: bool = False) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        variant,
        "--spec",
        str(spec_file),
        "--threads",
        str(args.threads),
    ] + (["--profile"] if profile else [])
    if variant == "before":
        cmd += ["--trainer-tree", str(baseline)]
    out = subprocess.run(cmd, cwd=str(ROOT), env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{variant} child failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def child(variant: str, spec_file: str, threads: int, profile: bool, trainer_tree: str | None) -> dict:
    """One student in this fresh process; the library imports come before any clock."""
    import torch
    import transformers  # noqa: F401

    if trainer_tree:
        assert "mckd_core" not in sys.modules, "mckd_core imported before the baseline tree went on sys.path"
        sys.path.insert(0, trainer_tree)
    import mckd_core.student as student

    torch.set_num_threads(threads)
    spec = json.loads(Path(spec_file).read_text())
    if variant == "trainer":
        return hf_trainer(spec)
    profiler = cProfile.Profile() if profile else None
    started = time.perf_counter()
    if profiler:
        profiler.enable()
    metrics = student.train(student.TrainSpec.flat(**spec))
    if profiler:
        profiler.disable()
    seconds = time.perf_counter() - started
    result = {
        "variant": variant,
        "trainer_file": student.__file__,
        "seconds": seconds,
        "tokens": metrics["train_tokens"],
        "tokens_per_s": metrics["train_tokens"] / seconds,
        "dev_f1": metrics["dev_f1"],
        "history": metrics["history"],
        "peak_rss_mib": peak_rss_mib(),
        "params": model_params(spec["model"]),
        "phases": metrics.get("phases") or (profile_phases(profiler, seconds) if profiler else None),
    }
    if variant == "after":  # the trainer's own rate helper (the `before` tree may lack it); both precisions
        result["matmul_gflops_per_s"] = {
            dtype: student.matmul_gflops(torch.device("cpu"), dtype == "bfloat16") for dtype in ("float32", "bfloat16")
        }
    for key in ("loss_path", "train_gflops_per_s", "flop_utilization"):
        if key in metrics:
            result[key] = metrics[key]
    return result


def model_params(name: str) -> int:
    from transformers import AutoConfig, AutoModelForCausalLM

    from mckd_core.models import resolve_model

    with __import__("torch").device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(resolve_model(name)))
    return sum(p.numel() for p in model.parameters())


def profile_phases(profiler: cProfile.Profile, seconds: float) -> dict:
    """The old trainer's seconds by phase: cProfile's cumulative time of each call made directly by `train()`
    (so the model calls inside generation count as dev selection, not as training forwards)."""
    calls: dict[str, float] = {}
    for (_, _, name), (_, _, _, _, callers) in pstats.Stats(profiler).stats.items():
        for (file, _, caller), (_, _, _, cumulative) in callers.items():
            if caller == "train" and file.endswith("mckd_core/student.py"):
                calls[name] = calls.get(name, 0.0) + cumulative
    phases = {
        phase: round(sum(t for name, t in calls.items() if name in names), 3) for phase, names in PROFILE_PHASES.items()
    }
    phases["other"] = round(seconds - sum(phases.values()), 3)
    return {
        **phases,
        "calls_of_train": {name: round(t, 3) for name, t in sorted(calls.items(), key=lambda kv: -kv[1])[:20]},
    }


def hf_trainer(spec: dict) -> dict:
    """transformers.Trainer with the same rows, model, batch, lr, schedule, clipping, optimizer and precision as
    `after`."""
    import torch
    from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

    from mckd_core.models import resolve_model
    from mckd_core.student import _Encoder, load_tokenizer, save_model, uses_bf16

    started = time.perf_counter()
    path = resolve_model(spec["model"])
    tok = load_tokenizer(path)
    encoder = _Encoder(tok, False, 128, spec["max_target_tokens"])
    rows = [encoder.example(x, y) for x, y in zip(spec["train_inputs"], spec["train_targets"])]
    torch.manual_seed(spec["seed"])
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    bf16 = uses_bf16(torch.device("cpu"), spec["precision"])
    args = TrainingArguments(
        output_dir=spec["out_dir"] + "-trainer",
        per_device_train_batch_size=spec["batch_size"],
        num_train_epochs=spec["epochs"],
        learning_rate=spec["learning_rate"],
        weight_decay=0.0,
        warmup_steps=0,
        lr_scheduler_type="linear",
        max_grad_norm=1.0,
        optim="adamw_torch_fused",
        bf16=bf16,
        logging_strategy="epoch",
        save_strategy="no",
        eval_strategy="no",
        report_to="none",
        use_cpu=True,
        seed=spec["seed"],
        dataloader_num_workers=0,
        train_sampling_strategy="group_by_length",
        remove_unused_columns=False,
        disable_tqdm=True,
    )
    Trainer(model=model, args=args, train_dataset=rows, data_collator=encoder.collate).train()
    save_model(model, tok, spec["out_dir"], {"trainer": "transformers.Trainer"})
    seconds = time.perf_counter() - started
    tokens = sum(len(r["input_ids"]) for r in rows) * spec["epochs"]
    return {
        "variant": "trainer",
        "seconds": seconds,
        "tokens": tokens,
        "tokens_per_s": tokens / seconds,
        "bf16": bf16,
        "peak_rss_mib": peak_rss_mib(),
    }


def summarize(runs: list[dict], profile: dict) -> dict:
    by = {v: [r for r in runs if r["variant"] == v] for v in VARIANTS if any(r["variant"] == v for r in runs)}
    med = {
        v: {"seconds": median([r["seconds"] for r in rs]), "tokens_per_s": median([r["tokens_per_s"] for r in rs])}
        for v, rs in by.items()
    }
    after = by["after"]
    # `after` without its generation-based dev selection: the work transformers.Trainer does.
    after_no_select = median([r["tokens"] / (r["seconds"] - r["phases"]["dev_select"]) for r in after])
    params = after[0]["params"]

    def gflops(r: dict) -> float:
        return 6 * params * r["tokens"] / r["seconds"] / 1e9

    rates = after[0]["matmul_gflops_per_s"]
    peak = max(rates.values())
    return {
        "median": med,
        "speedup_tokens_per_s_after_over_before": med["after"]["tokens_per_s"] / med["before"]["tokens_per_s"],
        "speedup_per_pair": [a["tokens_per_s"] / b["tokens_per_s"] for a, b in zip(after, by["before"])],
        "after_without_dev_select_over_trainer": after_no_select / med["trainer"]["tokens_per_s"]
        if "trainer" in med
        else None,
        "gflops_all_in": {v: median([gflops(r) for r in rs]) for v, rs in by.items() if v != "trainer"},
        "matmul_gflops_per_s": rates,
        "fraction_of_matmul_rate": {
            v: median([gflops(r) for r in rs]) / peak for v, rs in by.items() if v != "trainer"
        },
        "dev_f1": {v: [r["dev_f1"] for r in rs] for v, rs in by.items() if v != "trainer"},
        "phases_after_median": {p: median([r["phases"][p] for r in after]) for p in after[0]["phases"]},
        "phases_before_profiled": {k: v for k, v in profile["phases"].items() if k != "calls_of_train"}
        if profile
        else None,
        "targets": {
            "speedup": ">= 2x tokens/s all-in, or >= 50% of the matmul rate",
            "trainer": ">= 1.0x transformers.Trainer",
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100)
    parser.add_argument("--dev", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--precision",
        choices=["auto", "fp32", "bf16"],
        default="auto",
        help="student.precision of every variant (`before` had auto = fp32 on CPU as well)",
    )
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=VARIANTS)
    parser.add_argument("--no-profile", action="store_true", help="skip the cProfile run of `before`")
    parser.add_argument("--baseline-rev", default="c75f08f", help="git revision whose mckd_core is `before`")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    parser.add_argument("--profile", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--trainer-tree", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.spec, args.threads, args.profile, args.trainer_tree)))
        return
    with tempfile.TemporaryDirectory(prefix="mckd-student-speed-") as tmp:
        work = Path(tmp)
        baseline = baseline_tree(args.baseline_rev, work)
        spec_file = work / "spec.json"
        spec_file.write_text(json.dumps(student_spec(args, str(work / "student"))))
        profile = None
        if not args.no_profile:
            log("profiling `before` once under cProfile")
            profile = run_child("before", spec_file, args, baseline, profile=True)
        runs = []
        for rep, variant in interleave(args.variants, args.reps):
            runs.append({**run_child(variant, spec_file, args, baseline), "rep": rep})
            log(f"rep {rep} {variant}: {runs[-1]['seconds']:.1f} s, {runs[-1]['tokens_per_s']:.1f} tokens/s")
    result = {
        "date": datetime.date.today().isoformat(),
        "command": " ".join(sys.argv),
        "machine": machine(),
        "sizes": {k: getattr(args, k) for k in ("rows", "dev", "epochs", "reps", "threads", "seed", "precision")},
        "baseline_rev": args.baseline_rev,
        "summary": summarize(runs, profile),
        "profile_before": profile,
        "runs": runs,
    }
    save_result(result, "student-speed", args.out)


if __name__ == "__main__":
    main()
