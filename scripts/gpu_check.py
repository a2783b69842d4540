"""One prepared device run that proves mckd's CUDA paths (issue #16); `--device cpu` is its CI path.

Every check calls the product code (mckd_core.student / failures / gpus), on a random-init student shaped like
SmolLM2-135M (hidden 576, 30 layers, 9 heads, 3 KV heads; `--shape tiny` for CPU) with the file-less byte-level
ByT5 tokenizer, on synthetic fixed-length rows (every batch has the same tokens):
  train_throughput  train() on the slot's device: bf16 autocast on CUDA (and on a CPU with native bf16), tokens/s
                    (steady: first step excluded)
  cpu_ratio         the same steps on CPU (CUDA hidden in a spawned child): CUDA / CPU steady tokens/s
  oom_backoff       a real CUDA OOM (this process holds all but the measured footprint of the normal micro-batch;
                    the student asks for --oom-factor times it) -> StudentOOM -> micro_batch(spec.student, attempt),
                    the loop of tasks/train_student.py (retries=3), until it completes with the same effective batch
  isolation         a device-side assert in one train_isolated child (vocab too small for the tokenizer), then the
                    next student in a fresh child on the same device trains
  device_slots      two students through device_slot(): on one device one after the other, on two side by side
  vllm_engine       skipped: vLLM is not on the device image and its wheel cannot travel (64 MiB per call)
Needs only torch, transformers and numpy, which the device image has (the mckd_core modules it imports need no
pydantic and no Prefect; tests/test_gpu_check.py checks that). Prints one JSON object, writes it to $OUT/gpu_check.json
when $OUT is set (or --out); exit 1 when a
check failed. BENCHMARKS.md "GPU check" has the device command.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import threading
import time
import traceback
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
GIB = 2**30
SHAPES = {  # SmolLM2-135M's config.json, minus what does not change the shape
    "smollm2": dict(
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        vocab_size=49152,
        max_position_embeddings=2048,
    ),
    "tiny": dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=384,
        max_position_embeddings=512,
    ),
}


def make_student(directory: Path, shape: str, vocab_size: int | None = None) -> dict:
    from transformers import ByT5Tokenizer, LlamaConfig, LlamaForCausalLM, set_seed

    set_seed(0)
    tok = ByT5Tokenizer()
    dims = {**SHAPES[shape], **({"vocab_size": vocab_size} if vocab_size else {})}
    config = LlamaConfig(
        **dims,
        tie_word_embeddings=True,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        bos_token_id=tok.eos_token_id,
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(directory)
    tok.save_pretrained(directory)
    return {"dir": str(directory), "shape": shape, "params": sum(p.numel() for p in model.parameters()), **dims}


def make_spec(model: str, out_dir: str, rows: int, batch_size: int):
    from types import SimpleNamespace

    from mckd_core.student import TrainSpec

    # StudentConfig's fields, spelt out: the device image has no pydantic.
    settings = SimpleNamespace(
        arch="auto",
        epochs=1,
        batch_size=batch_size,
        grad_accum=1,
        learning_rate=1e-4,
        weight_decay=0.0,
        warmup_ratio=0.0,
        max_input_tokens=128,
        max_target_tokens=128,
        eval_batch_size=16,
        precision="auto",
        attention="auto",
        select_on_dev=False,
        trust_remote_code=False,
        cpu_threads=None,
    )
    xs = [f"flights from city{i % 97:02d} to city{i * 7 % 89:02d} on day{i % 7}" for i in range(rows)]
    ys = [f"[ fromloc city{i % 97:02d} ] [ toloc city{i * 7 % 89:02d} ]" for i in range(rows)]
    return TrainSpec(model=model, out_dir=out_dir, task="text", train_inputs=xs, train_targets=ys, student=settings)


def timed_train(spec) -> dict:
    """train() with a timestamp per step (loss.item() syncs CUDA); runs in a child or in-process."""
    import torch

    from mckd_core.student import _autocast, pick_device, train

    stamps: list[float] = []
    m = train(spec, progress=lambda done, total: stamps.append(time.perf_counter()))
    device = pick_device()
    out = {k: m[k] for k in ("device", "train_tokens", "tokens_per_s", "seconds", "micro_batch", "grad_accum")}
    out.update(
        steps=len(stamps),
        loss=m["history"][-1]["loss"],
        bf16=getattr(_autocast(device, spec.student.precision), "fast_dtype", None) == torch.bfloat16,
    )
    if len(stamps) > 1:  # equal batches: tokens of steps 2..n over their time
        out["steady_tokens_per_s"] = m["train_tokens"] * (len(stamps) - 1) / len(stamps) / (stamps[-1] - stamps[0])
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info()
        out.update(
            peak_reserved_gib=torch.cuda.max_memory_reserved() / GIB,
            device_used_gib=(total - free) / GIB,
            gpu=torch.cuda.get_device_name(),
        )
    return out


def in_child(fn, *args, visible: str | None = None):
    """fn(*args) in a spawned child that sees only CUDA device `visible` ("" = none); in-process when None."""
    if visible is None:
        return fn(*args)
    with ProcessPoolExecutor(
        1, mp_context=get_context("spawn"), initializer=_set_env, initargs=({"CUDA_VISIBLE_DEVICES": visible},)
    ) as pool:
        return pool.submit(fn, *args).result()


def _set_env(env: dict) -> None:  # a bound os.environ.update cannot be pickled into a spawned child
    os.environ.update(env)


def cuda_id(slot) -> str | None:
    """The CUDA id of what device_slot() yields: a Slot (cuda=...) or, before the CPU-slot work, "cpu" / an id."""
    return getattr(slot, "cuda", None) if not isinstance(slot, str) else (None if slot == "cpu" else slot)


def in_process(slot) -> bool:
    return slot == "cpu" if isinstance(slot, str) else slot.in_process


def train_on(spec, slot) -> dict:
    """What the train-student task does with isolate=auto: in a child unless the slot is this whole process."""
    from mckd_core.student import train, train_isolated

    return train(spec) if in_process(slot) else train_isolated(spec, slot)


def skip(reason: str, **numbers) -> dict:
    return {"passed": None, "reason": reason, **numbers}


def check_train_throughput(ctx) -> dict:
    from mckd_core.gpus import device_slot
    from mckd_core.student import native_bf16_cpu

    spec = make_spec(ctx.model["dir"], ctx.tmp("throughput"), ctx.args.steps * ctx.args.batch_size, ctx.args.batch_size)
    with device_slot() as slot:
        r = in_child(timed_train, spec, visible=cuda_id(slot))
    ctx.gpu = r if ctx.cuda else None
    ok = (
        math.isfinite(r["loss"])
        and r["device"] == ("cuda" if ctx.cuda else "cpu")
        and r["bf16"] == (ctx.cuda or native_bf16_cpu())
    )
    return {
        "passed": ok,
        "detail": f"{r['steps']} steps of {ctx.args.batch_size} rows on {r['device']}, bf16 autocast {r['bf16']}",
        "slot": str(slot),
        **r,
    }


def check_cpu_ratio(ctx) -> dict:
    if not ctx.cuda or not ctx.gpu:
        return skip("skipped: no CUDA (the CPU run is train_throughput itself)")
    spec = make_spec(ctx.model["dir"], ctx.tmp("cpu"), ctx.args.steps * ctx.args.batch_size, ctx.args.batch_size)
    r = in_child(timed_train, spec, visible="")
    ratio = ctx.gpu.get("steady_tokens_per_s", 0) / r.get("steady_tokens_per_s", math.inf)
    return {
        "passed": r["device"] == "cpu" and ratio > 0,
        "detail": "same spec, CUDA hidden in the child",
        "cpu_steady_tokens_per_s": r.get("steady_tokens_per_s"),
        "cpu_tokens_per_s": r["tokens_per_s"],
        "cuda_over_cpu": ratio,
        "cpu_seconds": r["seconds"],
    }


def backoff_loop(spec, slot, attempts: int = 4) -> tuple[dict | None, list[dict]]:
    """tasks/train_student.py without Prefect: attempt n trains with micro_batch(spec.student, n); retried while
    is_transient."""
    import dataclasses

    from mckd_core.failures import is_transient
    from mckd_core.student import micro_batch

    log = []
    for attempt in range(1, attempts + 1):
        s = dataclasses.replace(spec, attempt=attempt)
        micro, accum = micro_batch(spec.student, attempt)
        entry = {"attempt": attempt, "micro_batch": micro, "grad_accum": accum}
        log.append(entry)
        try:
            return train_on(s, slot), log
        except Exception as exc:  # noqa: BLE001 - classified below, as retry_transient does
            entry.update(error=type(exc).__name__, message=str(exc)[:160], retried=is_transient(exc))
            if not entry["retried"]:
                break
    return None, log


def check_oom_backoff(ctx) -> dict:
    import torch

    from mckd_core.gpus import device_slot

    micro = ctx.args.batch_size * ctx.args.oom_factor
    spec = make_spec(ctx.model["dir"], ctx.tmp("oom"), 2 * micro, micro)
    with device_slot() as slot:
        if not ctx.cuda or not ctx.gpu:  # keeps the loop from rotting: on CPU it completes at attempt 1
            m, log = backoff_loop(spec, slot)
            return skip("skipped: no CUDA", attempts=log, completed=m is not None)
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        index = visible.split(",").index(cuda_id(slot)) if visible else int(cuda_id(slot))
        budget = int((ctx.gpu["device_used_gib"] * 1.25 + 0.5) * GIB)  # the normal micro-batch fits, 8x does not
        hog = torch.empty(torch.cuda.mem_get_info(index)[0] - budget, dtype=torch.uint8, device=index)
        try:
            m, log = backoff_loop(spec, slot)
        finally:
            del hog
            torch.cuda.empty_cache()
    ooms = [e for e in log if e.get("error") == "StudentOOM"]
    same = m is not None and m["micro_batch"] * m["grad_accum"] == micro
    return {
        "passed": bool(ooms) and same,
        "detail": f"left {budget / GIB:.1f} GiB free; micro-batch {micro} x1 -> "
        + (f"{m['micro_batch']} x{m['grad_accum']}" if m else "never completed"),
        "attempts": log,
    }


def check_isolation(ctx) -> dict:
    from mckd_core.gpus import device_slot
    from mckd_core.student import train_isolated

    with device_slot() as slot:
        broken = make_spec(ctx.broken["dir"], ctx.tmp("broken"), 2 * ctx.args.batch_size, ctx.args.batch_size)
        try:
            train_isolated(broken, slot)
            first = "no error"
        except Exception as exc:  # noqa: BLE001
            first = f"{type(exc).__name__}: {str(exc)[:160]}"
        good = make_spec(ctx.model["dir"], ctx.tmp("after"), 2 * ctx.args.batch_size, ctx.args.batch_size)
        m = train_isolated(good, slot)
    expected = "GPUError" if ctx.cuda else "IndexError"  # CPU: no CUDA context to poison, the plumbing only
    ok = first.startswith(expected) and m["device"] == ("cuda" if ctx.cuda else "cpu")
    return {
        "passed": ok,
        "detail": f"first child on {slot}: {first}; next child trained on {m['device']}",
        "expected_first": expected,
    }


def check_device_slots(ctx) -> dict:
    from mckd_core.gpus import device_slot

    runs: list[dict] = []

    def student(k: int) -> None:
        with device_slot() as slot:
            t0 = time.perf_counter()
            m = train_on(
                make_spec(ctx.model["dir"], ctx.tmp(f"slot{k}"), 2 * ctx.args.batch_size, ctx.args.batch_size), slot
            )
            runs.append(
                {
                    "student": k,
                    "slot": str(slot),
                    "cuda": cuda_id(slot),
                    "device": m["device"],
                    "start": t0,
                    "end": time.perf_counter(),
                }
            )

    threads = [threading.Thread(target=student, args=(k,)) for k in range(2)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    if len(runs) < 2:
        return {"passed": False, "detail": "a student failed (see stderr)", "runs": runs}
    a, b = runs
    overlap = a["start"] < b["end"] and b["start"] < a["end"]
    slots = {a["slot"], b["slot"]}
    ok = not (overlap and a["cuda"] is not None and a["cuda"] == b["cuda"])  # never two students on one GPU at once
    if ctx.devices > 1:
        ok = ok and len(slots) == 2 and overlap
    return {
        "passed": ok,
        "detail": f"{ctx.devices} device(s): slots {sorted(slots)}, ran side by side: {overlap}",
        "runs": [
            {**r, "start": round(r["start"] - a["start"], 2), "end": round(r["end"] - a["start"], 2)} for r in runs
        ],
    }


def check_vllm_engine(ctx) -> dict:
    return skip(
        "skipped: the device image has no vllm, its wheel (hundreds of MiB with its CUDA kernels) cannot "
        "travel in 64 MiB per call, nor can the pretrained weights an engine check needs"
    )


CHECKS = [
    check_train_throughput,
    check_cpu_ratio,
    check_oom_backoff,
    check_isolation,
    check_device_slots,
    check_vllm_engine,
]


class Context:
    def __init__(self, args, work: Path):
        import torch

        self.args, self.work, self.gpu = args, work, None
        self.cuda = torch.cuda.is_available()
        self.devices = torch.cuda.device_count() if self.cuda else 1
        self.model = make_student(work / "student", args.shape)
        self.broken = make_student(work / "broken", "tiny", vocab_size=64)  # byte ids >= 64 index past it

    def tmp(self, name: str) -> str:
        return str(self.work / "out" / name)


def environment() -> dict:
    import torch
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cuda": torch.cuda.is_available(),
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "cpu_count": os.cpu_count(),
        "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda", help="cpu: CUDA hidden, tiny student (CI)")
    p.add_argument("--shape", choices=sorted(SHAPES), help="student shape (default: smollm2 on cuda, tiny on cpu)")
    p.add_argument("--steps", type=int, default=10, help="optimizer steps of the throughput runs")
    p.add_argument("--batch-size", type=int, default=8, help="micro-batch (student.batch_size default: 8)")
    p.add_argument("--oom-factor", type=int, default=8, help="oom_backoff asks for this times the micro-batch")
    p.add_argument("--out", help="JSON file (default: $OUT/gpu_check.json when $OUT is set)")
    args = p.parse_args(argv)
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # before torch initializes CUDA; children inherit it
    args.shape = args.shape or ("smollm2" if args.device == "cuda" else "tiny")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    started = time.time()
    result = {
        "check": "gpu_check",
        "device_requested": args.device,
        "environment": environment(),
        "argv": sys.argv[1:],
        "checks": {},
    }
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as work:
        ctx = Context(args, Path(work))
        result["student"] = ctx.model
        if args.device == "cuda" and not ctx.cuda:
            print("warning: --device cuda but torch sees no CUDA: the CUDA checks are skipped", file=sys.stderr)
        for check in CHECKS:
            t0 = time.time()
            try:
                outcome = check(ctx)
            except Exception as exc:  # noqa: BLE001 - one broken check must not cost the others the device run
                outcome = {
                    "passed": False,
                    "detail": f"{type(exc).__name__}: {exc}"[:400],
                    "traceback": traceback.format_exc()[-1500:],
                }
            result["checks"][check.__name__.removeprefix("check_")] = {
                **outcome,
                "check_seconds": round(time.time() - t0, 1),
            }
    result["failed"] = [k for k, v in result["checks"].items() if v["passed"] is False]
    result["seconds"] = round(time.time() - started, 1)
    text = json.dumps(result, indent=2, default=str)
    out = args.out or (os.environ.get("OUT") and str(Path(os.environ["OUT"]) / "gpu_check.json"))
    if out:
        Path(out).write_text(text + "\n")
    print(text)
    return 1 if result["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
