"""Student trainer throughput (issue #7): mckd_core.student.train vs transformers.Trainer on the same rows, model,
effective batch, epochs, learning rate and seed; tokens/s, examples/s and peak RSS, each run in a child process.

  .venv/bin/python benchmarks/run.py --only trainer [--trainer-rows 256]
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from harness import TARGETS, interleave, log, median, peak_rss_mib, run_child, verdict

# Trainer variants: transformers' default (random order, the baseline the target names) and with its own
# length grouping switched on (the lever mckd's trainer relies on, so the stricter comparison).
TRAINER_BASELINES = {"hf_trainer": "random", "hf_trainer_grouped": "group_by_length"}


def bench_trainer(mode: dict, models: dict, data: dict, work: Path) -> dict:
    """mckd_core.student.train vs transformers.Trainer (default sampler and group_by_length): same rows, model,
    effective batch, epochs, lr, seed; each measurement in its own child process (peak RSS = the child's)."""
    t = mode["trainer"]
    rows = data["pool"].iloc[: t["rows"]]
    spec = {
        "model": models["causal"],
        "task": data["task"],
        "inputs": list(rows["input"]),
        "targets": list(rows["target"]),
        "epochs": t["epochs"],
        "batch_size": t["batch_size"],
        "grad_accum": t["grad_accum"],
        "learning_rate": mode["student"]["learning_rate"],
        "max_target_tokens": mode["student"]["max_target_tokens"],
    }
    spec_file = work / "trainer-spec.json"
    spec_file.write_text(json.dumps(spec))
    variants = ["mckd", *TRAINER_BASELINES]
    results: dict[str, list[dict]] = {v: [] for v in variants}
    for rep, variant in interleave(variants, t["reps"]):
        res = run_child(
            "--train-child", str(spec_file), "--variant", variant, "--out-dir", str(work / f"trainer-{variant}-{rep}")
        )
        results[variant].append(res)
        log(
            f"   trainer rep {rep} {variant}: {res['seconds']:.1f}s {res['tokens_per_s']:.0f} tok/s rss "
            f"{res['peak_rss_mib']:.0f} MiB"
        )

    def summary(runs: list[dict]) -> dict:
        return {
            "seconds": [r["seconds"] for r in runs],
            "tokens_per_s_median": median([r["tokens_per_s"] for r in runs]),
            "examples_per_s_median": median([r["examples_per_s"] for r in runs]),
            "train_loop_tokens_per_s_median": median([r["loop_tokens_per_s"] for r in runs]),
            "peak_rss_mib_median": median([r["peak_rss_mib"] for r in runs]),
            "final_loss": [r.get("loss") for r in runs],
            "tokens": runs[0]["tokens"],
            "examples": runs[0]["examples"],
        }

    summaries = {v: summary(results[v]) for v in variants}
    mckd = summaries["mckd"]

    def versus(base: str) -> dict:
        speedup = mckd["tokens_per_s_median"] / summaries[base]["tokens_per_s_median"]
        return {
            "speedup_tokens_per_s": speedup,
            "speedup_per_pair": [a["tokens_per_s"] / b["tokens_per_s"] for a, b in zip(results["mckd"], results[base])],
            "loop_speedup": mckd["train_loop_tokens_per_s_median"] / summaries[base]["train_loop_tokens_per_s_median"],
            "rss_ratio": mckd["peak_rss_mib_median"] / summaries[base]["peak_rss_mib_median"],
            "verdict": verdict(speedup, TARGETS["trainer_speedup_min"], "min"),
        }

    return {
        "model": Path(models["causal"]).name,
        "rows": t["rows"],
        "epochs": t["epochs"],
        "micro_batch": t["batch_size"],
        "grad_accum": t["grad_accum"],
        **summaries,
        "versus": {base: versus(base) for base in TRAINER_BASELINES},
        "target": f">= {TARGETS['trainer_speedup_min']}x of transformers.Trainer tokens/s",
    }


def train_child(spec_file: str, variant: str, out_dir: str) -> dict:
    """One training run (load + train + save), timed inside a fresh process (run.py --train-child)."""
    spec = json.loads(Path(spec_file).read_text())
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, Trainer, TrainingArguments

    from mckd_core.student import TrainSpec, _Encoder, is_seq2seq, load_tokenizer, save_model, train

    # transformers imports lazily: what train() uses is loaded now, before either clock, as Trainer's classes are above.
    for name in ("AutoConfig", "AutoTokenizer", "get_linear_schedule_with_warmup"):
        getattr(transformers, name)

    path = spec["model"]
    prep_started = (
        time.perf_counter()
    )  # Trainer's clock starts here: its tokenizer load and encoding count, as in train()
    seq2seq = is_seq2seq(path, "auto")
    tok = load_tokenizer(path)
    encoder = _Encoder(tok, seq2seq, 128, spec["max_target_tokens"])
    rows = [encoder.example(x, y) for x, y in zip(spec["inputs"], spec["targets"])]
    tokens_per_epoch = sum(len(r["input_ids"]) + (len(r["labels"]) if seq2seq else 0) for r in rows)
    tokens, examples = tokens_per_epoch * spec["epochs"], len(rows) * spec["epochs"]
    if variant == "mckd":
        started = time.perf_counter()
        metrics = train(
            TrainSpec.flat(
                model=path,
                out_dir=out_dir,
                task=spec["task"],
                train_inputs=spec["inputs"],
                train_targets=spec["targets"],
                epochs=spec["epochs"],
                batch_size=spec["batch_size"],
                grad_accum=spec["grad_accum"],
                learning_rate=spec["learning_rate"],
                precision="fp32",
                max_target_tokens=spec["max_target_tokens"],
                select_on_dev=False,
                seed=0,
            )
        )
        seconds = time.perf_counter() - started
        loop = metrics["seconds"] - metrics["phases"]["save"]  # load + train (before save)
        loss = metrics["history"][-1]["loss"]
    else:
        started = prep_started
        torch.manual_seed(0)
        cls = AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM
        model = cls.from_pretrained(path, dtype=torch.float32)
        args = TrainingArguments(
            output_dir=out_dir + "-trainer",
            per_device_train_batch_size=spec["batch_size"],
            gradient_accumulation_steps=spec["grad_accum"],
            num_train_epochs=spec["epochs"],
            learning_rate=spec["learning_rate"],
            weight_decay=0.0,
            warmup_steps=0,
            lr_scheduler_type="linear",
            max_grad_norm=1.0,
            optim="adamw_torch",
            logging_strategy="epoch",
            save_strategy="no",
            eval_strategy="no",
            report_to="none",
            use_cpu=True,
            seed=0,
            dataloader_num_workers=0,
            train_sampling_strategy=TRAINER_BASELINES[variant],
            remove_unused_columns=False,
            disable_tqdm=True,
        )
        trainer = Trainer(model=model, args=args, train_dataset=rows, data_collator=encoder.collate)
        out = trainer.train()
        loop = time.perf_counter() - started
        loss = out.training_loss
        save_model(model, tok, out_dir, {"trainer": "transformers.Trainer"})
        seconds = time.perf_counter() - started
    peak = peak_rss_mib()
    return {
        "variant": variant,
        "seconds": seconds,
        "tokens": tokens,
        "examples": examples,
        "tokens_per_s": tokens / seconds,
        "examples_per_s": examples / seconds,
        "loop_tokens_per_s": tokens / loop,
        "peak_rss_mib": peak,
        "loss": loss,
    }
