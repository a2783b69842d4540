"""Student training and prediction with transformers: encoder-decoder (T5) or decoder-only models.

Decoder-only students see `Input: <x>\nOutput: <y><eos>` with the prompt tokens masked out of the loss.
The epoch kept is the one with the best F1 on the labeled dev data (never on gold of U).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import math
import os
import random
import shutil
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from .gpus import Slot, run_in_slot

if TYPE_CHECKING:  # pydantic stays out of the import: the GPU kit runs where only torch and transformers are
    from .config import StudentConfig

ProgressFn = Callable[[int, int], None]


def causal_prompt(text: str) -> str:
    return f"Input: {text}\nOutput:"


@dataclass
class TrainSpec:
    """Everything a training run needs, picklable so it can cross into a spawned child process: the rows, the
    weights to start from, and the student's config read whole (epochs, batch, learning rate, lengths, precision)."""

    model: str  # the weights it starts from: student.model, or a trained student's dir (student.init: sft)
    out_dir: str
    task: str
    train_inputs: list[str]
    train_targets: list[str]
    dev_inputs: list[str] = field(default_factory=list)
    dev_targets: list[str] = field(default_factory=list)
    #: The student's settings, read whole: a StudentConfig (None: its defaults), or any object with its fields.
    student: StudentConfig | None = None
    revision: str | None = None  # of `model`
    seed: int = 0
    #: Which try this is: a retry after a CUDA OOM trains with a smaller micro-batch (`micro_batch`).
    attempt: int = 1
    #: Facts about the rows that the caller knows and metrics.json keeps (gold rows, dev rows, dev overlap): a
    #: student read back from its dir (a dispatched run's) carries them too.
    record: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.student is None:
            from .config import StudentConfig

            self.student = StudentConfig()

    @classmethod
    def flat(cls, **fields) -> TrainSpec:
        """A spec from flat keywords, as scripts write them to JSON: StudentConfig's settings go into `student`
        (`model` and `revision` stay the spec's: the weights it starts from)."""
        from .config import StudentConfig

        settings = {
            k: fields.pop(k) for k in list(fields) if k in StudentConfig.model_fields and k not in ("model", "revision")
        }
        return cls(**fields, student=StudentConfig(**settings))


def micro_batch(student: StudentConfig, attempt: int) -> tuple[int, int]:
    """OOM back-off: (micro-batch, gradient accumulation) of try `attempt`; each retry halves the micro-batch and
    doubles accumulation, keeping the effective batch."""
    divisor = 2 ** (attempt - 1)
    if student.batch_size < divisor:
        # Not a StudentOOM: that would be retried again.
        raise RuntimeError(
            f"out of memory even with micro-batch 1 (effective batch {student.batch_size * student.grad_accum}); "
            "lower student.max_input_tokens / max_target_tokens or use a smaller student model"
        )
    return student.batch_size // divisor, student.grad_accum * divisor


def pick_device():
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_tokenizer(
    path: str, revision: str | None = None, trust_remote_code: bool = False, padding_side: str = "right"
):
    from transformers import AutoTokenizer, ByT5Tokenizer

    try:
        tok = AutoTokenizer.from_pretrained(path, revision=revision, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, TypeError):
        # Random-init T5 test models ship no tokenizer files: ByT5 needs none.
        tok = ByT5Tokenizer()
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = padding_side
    return tok


def is_seq2seq(path: str, arch: str, revision: str | None = None, trust_remote_code: bool = False) -> bool:
    if arch != "auto":
        return arch == "seq2seq"
    from transformers import AutoConfig

    return bool(
        AutoConfig.from_pretrained(path, revision=revision, trust_remote_code=trust_remote_code).is_encoder_decoder
    )


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class _Encoder:
    """Tokenizes (input, target) pairs into model inputs for either architecture."""

    def __init__(self, tokenizer, seq2seq: bool, max_in: int, max_out: int):
        self.tok, self.seq2seq, self.max_in, self.max_out = tokenizer, seq2seq, max_in, max_out

    def example(self, text: str, target: str) -> dict:
        if self.seq2seq:
            ids = self.tok(text, truncation=True, max_length=self.max_in)["input_ids"]
            labels = self.tok(text_target=target, truncation=True, max_length=self.max_out)["input_ids"]
            return {"input_ids": ids, "labels": labels}
        prompt = self.tok(causal_prompt(text), add_special_tokens=False, truncation=True, max_length=self.max_in)[
            "input_ids"
        ]
        answer = self.tok(" " + target, add_special_tokens=False, truncation=True, max_length=self.max_out - 1)[
            "input_ids"
        ]
        answer = answer + [self.tok.eos_token_id]
        return {"input_ids": prompt + answer, "labels": [-100] * len(prompt) + answer}

    def collate(self, rows: list[dict]):
        import torch

        pad = self.tok.pad_token_id
        width = max(len(r["input_ids"]) for r in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        if self.seq2seq:
            lwidth = max(len(r["labels"]) for r in rows)
            labels = torch.full((len(rows), lwidth), -100, dtype=torch.long)
        else:
            labels = torch.full((len(rows), width), -100, dtype=torch.long)
        for i, r in enumerate(rows):
            n = len(r["input_ids"])
            ids[i, :n] = torch.tensor(r["input_ids"])
            mask[i, :n] = 1
            labels[i, : len(r["labels"])] = torch.tensor(r["labels"])
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def length_grouped_batches(
    lengths: Sequence[int], batch_size: int, rng: random.Random, group: int = 32
) -> list[list[int]]:
    """Shuffled batches of similar length: sort inside random mega-batches, so padding is small but order is random."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    batches: list[list[int]] = []
    span = batch_size * group
    for start in range(0, len(order), span):
        chunk = sorted(order[start : start + span], key=lambda i: lengths[i])
        batches += [chunk[j : j + batch_size] for j in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def uses_bf16(device, precision: str) -> bool:
    """Mixed precision (fp32 weights, bf16 matmuls) for `bf16`, and for `auto` where the hardware has native bf16.

    `auto` means a CUDA device with bf16, or a CPU with AVX512-BF16 or AMX: there students train faster in bf16 and
    score as fp32 ones do (BENCHMARKS.md 'precision'). Other CPUs emulate bf16 and stay fp32.
    """
    import torch

    if precision != "auto":
        return precision == "bf16"
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and native_bf16_cpu()


def native_bf16_cpu() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AVX512-BF16 or AMX), as torch's own CPU checks report it."""
    import torch

    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def _autocast(device, precision: str):
    import torch

    return (
        torch.autocast(device_type=device.type, dtype=torch.bfloat16)
        if uses_bf16(device, precision)
        else contextlib.nullcontext()
    )


def training_attention(device, attention: str) -> str | None:
    """The attention kernel a student trains with; None: the model's own (SDPA where it has it).

    `auto` is eager attention on a CPU: at a student's short sequences torch's fused CPU SDPA kernel spends most of its
    time in a slow backward, and eager bf16 steps are faster (BENCHMARKS.md 'attention'). Generation keeps the model's
    own kernel, which decodes faster there.
    """
    if attention != "auto":
        return attention
    return "eager" if device.type == "cpu" else None


@contextlib.contextmanager
def attention_kernel(model, kernel: str | None):
    """`model` runs `kernel` inside the block and its own kernel again after it (dev selection, the saved config)."""
    own = model.config._attn_implementation
    switch = kernel is not None and kernel != own
    if switch:
        model.set_attn_implementation(kernel)
    try:
        yield
    finally:
        if switch:
            model.set_attn_implementation(own)


class PhaseClock:
    """Seconds per named phase of one training run (metrics.json `phases`): where a student's time goes.

    On a GPU each phase ends with a synchronize, else asynchronous kernels would be billed to the next phase.
    """

    def __init__(self, device):
        self.device, self.seconds = device, defaultdict(float)

    @contextlib.contextmanager
    def __call__(self, phase: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            if self.device.type == "cuda":
                import torch

                torch.cuda.synchronize(self.device)
            self.seconds[phase] += time.perf_counter() - start


def answer_only_loss(model, batch: dict):
    """The causal-LM loss with the LM head applied only where the loss is taken (the answer tokens).

    The prompt is a third or more of a student's tokens (ATIS: ~15 of ~44), and the head (hidden x vocabulary, a
    fifth of SmolLM2-135M's parameters) and its softmax over those masked-out positions are pure waste. Same mean
    cross-entropy as `model(**batch).loss`.
    """
    import torch

    hidden = model.base_model(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False
    ).last_hidden_state
    targets = batch["labels"][:, 1:]
    answer = targets != -100
    logits = model.get_output_embeddings()(hidden[:, :-1][answer])
    return torch.nn.functional.cross_entropy(logits.float(), targets[answer])


def full_loss(model, batch: dict):
    return model(**batch, use_cache=False).loss


def pick_loss(model, batch: dict, seq2seq: bool):
    """`answer_only_loss` where it equals the model's own loss on this first batch, else the model's own forward.

    Checked numerically rather than by architecture name: a model whose head does more than a linear layer (logit
    soft-capping, scaling) fails the check and keeps its own path. Encoder-decoders compute logits on targets only.
    """
    import torch

    if seq2seq or model.get_output_embeddings() is None or model.base_model is model:
        return full_loss
    model.eval()  # dropout would make the two differ (and draw from the training RNG)
    with torch.no_grad():
        reference, fast = full_loss(model, batch), answer_only_loss(model, batch)
    model.train()
    return answer_only_loss if torch.allclose(reference, fast, rtol=1e-4, atol=1e-5) else full_loss


def make_optimizer(model, spec: "TrainSpec"):
    """AdamW; fused (one kernel over all parameters) where torch has it for the device, else its default loop."""
    import torch

    try:
        return torch.optim.AdamW(
            model.parameters(), lr=spec.student.learning_rate, weight_decay=spec.student.weight_decay, fused=True
        )
    except RuntimeError:
        return torch.optim.AdamW(
            model.parameters(), lr=spec.student.learning_rate, weight_decay=spec.student.weight_decay
        )


def train(spec: TrainSpec, progress: ProgressFn | None = None) -> dict:
    """Train, keep the epoch student.epoch_choice picks on dev, save it (safetensors) with metrics.json to
    spec.out_dir."""
    with cpu_threads(getattr(spec.student, "cpu_threads", None)):
        return _train(spec, progress)


@contextlib.contextmanager
def cpu_threads(threads: int | None):
    """Run the block with `threads` torch threads on a CPU (restored after; GPUs and None leave them alone).

    A slot's worker does not decide it: its thread count follows the slot's share of the cores, and even that only
    where torch was not imported before the worker set OMP_NUM_THREADS (a launching script that imports torch gives
    every worker all the cores' threads)."""
    import torch

    if threads is None or pick_device().type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _train(spec: TrainSpec, progress: ProgressFn | None = None) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, get_linear_schedule_with_warmup

    from .formats import get_format
    from .models import resolve_model

    cfg = spec.student
    micro, accum = micro_batch(cfg, spec.attempt)
    started = time.time()
    device = pick_device()
    clock = PhaseClock(device)
    with clock("load"):
        seed_everything(spec.seed)
        path = resolve_model(spec.model)
        seq2seq = is_seq2seq(path, cfg.arch, spec.revision, cfg.trust_remote_code)
        tok = load_tokenizer(path, spec.revision, cfg.trust_remote_code)
        model_cls = AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM
        model = model_cls.from_pretrained(
            path, revision=spec.revision, dtype=torch.float32, trust_remote_code=cfg.trust_remote_code
        ).to(device)
        encoder = _Encoder(tok, seq2seq, cfg.max_input_tokens, cfg.max_target_tokens)
        rows = [encoder.example(x, y) for x, y in zip(spec.train_inputs, spec.train_targets)]
    lengths = [len(r["input_ids"]) + (len(r["labels"]) if seq2seq else 0) for r in rows]
    rng = random.Random(spec.seed)

    steps_per_epoch = math.ceil(math.ceil(len(rows) / micro) / accum)
    optimizer = make_optimizer(model, spec)
    total = steps_per_epoch * cfg.epochs
    scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * total), total)
    fmt = get_format(spec.task)

    history, best_state, best_f1, best_epoch, tokens, loss_fn = [], None, -1.0, 0, 0, None
    best_rows = None
    kernel = training_attention(device, cfg.attention)
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        batches = length_grouped_batches(lengths, micro, rng)
        epoch_loss = 0.0
        with attention_kernel(model, kernel):
            for step, batch_idx in enumerate(batches):
                batch = {k: v.to(device) for k, v in encoder.collate([rows[i] for i in batch_idx]).items()}
                loss_fn = loss_fn or pick_loss(model, batch, seq2seq)
                with clock("forward"), _autocast(device, cfg.precision):
                    loss = loss_fn(model, batch)
                with clock("backward"):
                    (loss / accum).backward()
                epoch_loss += loss.item()
                tokens += int(batch["attention_mask"].sum()) + (int((batch["labels"] != -100).sum()) if seq2seq else 0)
                if (step + 1) % accum == 0 or step + 1 == len(batches):
                    with clock("optimizer"):
                        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                        optimizer.step()
                        scheduler.step()
                        optimizer.zero_grad(set_to_none=True)
                if progress:
                    progress((epoch - 1) * len(batches) + step + 1, cfg.epochs * len(batches))
        record = {"epoch": epoch, "loss": epoch_loss / max(len(batches), 1)}
        if cfg.select_on_dev and spec.dev_inputs:
            with clock("dev_select"):
                preds = generate(
                    model,
                    tok,
                    seq2seq,
                    spec.dev_inputs,
                    cfg.eval_batch_size,
                    cfg.max_target_tokens,
                    device,
                    cfg.precision,
                )
                record["dev_f1"] = fmt.metrics(spec.dev_inputs, spec.dev_targets, preds)["f1"]
                dev_rows, last = fmt.row_stats(spec.dev_inputs, spec.dev_targets, preds), epoch == cfg.epochs
                if record["dev_f1"] >= best_f1:  # ties go to the later, longer-trained epoch
                    best_f1, best_epoch, best_rows = record["dev_f1"], epoch, dev_rows
                    # The last epoch's weights are the model in hand: no copy to load back.
                    best_state = (
                        None if last else {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
                    )
                elif last and not beats_last_epoch(cfg.epoch_choice, fmt, best_rows, dev_rows):
                    best_f1, best_epoch, best_state = record["dev_f1"], epoch, None
        history.append(record)
    if best_state is not None:
        model.load_state_dict(best_state)
    elif best_epoch == 0:
        best_epoch = cfg.epochs
    train_seconds = clock.seconds["forward"] + clock.seconds["backward"] + clock.seconds["optimizer"]
    metrics = {
        "task": spec.task,
        "train_rows": len(rows),
        "dev_f1": best_f1 if best_f1 >= 0 else None,
        "epochs": best_epoch,
        "epochs_run": cfg.epochs,
        "history": history,
        "train_tokens": tokens,
        "micro_batch": micro,
        "grad_accum": accum,
        "max_target_tokens": cfg.max_target_tokens,  # what `mckd predict` generates up to
        "arch": "seq2seq" if seq2seq else "causal",
        "device": device.type,
        "threads": torch.get_num_threads(),
        "started_at": started,  # wall clock: shows which students overlapped in time
        "loss_path": "answer-only head" if loss_fn is answer_only_loss else "model forward",
        "attention": kernel or model.config._attn_implementation,
        **spec.record,
        **flop_rates(model, tokens, train_seconds, device, uses_bf16(device, cfg.precision)),
    }
    save_started = time.perf_counter()
    return save_model(
        model,
        tok,
        spec.out_dir,
        metrics,
        finish=lambda m: timed(m, started, {**clock.seconds, "save": time.perf_counter() - save_started}),
    )


#: student.epoch_choice: last keeps an earlier epoch only where it beats the last at this one-sided p.
EPOCH_ALPHA = 0.05


def beats_last_epoch(choice: str, fmt, earlier_rows, last_rows) -> bool:
    """Whether the dev-best earlier epoch (its dev row stats) is kept over the last one: wherever it scored higher
    (`choice` best), or only where it scores higher beyond noise on the same dev rows (`choice` last)."""
    from .stats import paired_randomization_p

    return choice == "best" or paired_randomization_p(earlier_rows, last_rows, fmt.aggregate) <= EPOCH_ALPHA


def flop_rates(model, tokens: int, train_seconds: float, device, bf16: bool) -> dict:
    """Model FLOP/s of the training steps (6 x parameters x tokens, the usual dense estimate) and its fraction of the
    device's measured matmul rate in the precision trained: how far a student is from what the hardware can do."""
    params = sum(p.numel() for p in model.parameters())
    gflops = 6 * params * tokens / max(train_seconds, 1e-9) / 1e9
    peak = matmul_gflops(device, bf16)
    return {"train_gflops_per_s": gflops, "matmul_gflops_per_s": peak, "flop_utilization": gflops / peak}


def matmul_gflops(device, bf16: bool, reps: int = 5) -> float:
    """Measured matmul rate of this process's threads (or GPU) in fp32 or bf16, median of `reps` after a warm-up."""
    import torch

    size = 4096 if device.type == "cuda" else 1024
    dtype = torch.bfloat16 if bf16 else torch.float32
    a, b = (torch.randn(size, size, device=device, dtype=dtype) for _ in range(2))
    rates = []
    for _ in range(reps + 1):
        start = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        rates.append(2 * size**3 / (time.perf_counter() - start) / 1e9)
    return float(np.median(rates[1:]))


def timed(metrics: dict, started: float, phases: dict[str, float]) -> dict:
    """The run's wall seconds (load to saved weights), tokens/s over them and where they went (`phases`)."""
    seconds = time.time() - started
    phases = {name: round(value, 3) for name, value in phases.items()}
    phases["other"] = round(seconds - sum(phases.values()), 3)
    return {**metrics, "seconds": seconds, "tokens_per_s": metrics["train_tokens"] / seconds, "phases": phases}


def save_model(model, tokenizer, out_dir: str, metrics: dict, finish: Callable[[dict], dict] | None = None) -> dict:
    """Atomic save: a finished student dir either exists whole or not at all.

    Returns `metrics` plus `weights_sha256`, the fingerprint that later checks the dir against (`holds_student`);
    `finish` adds what is known only once the weights are written (the run's wall time).
    """
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}-"))
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    metrics = {**metrics, "weights_sha256": weights_fingerprint(tmp), "weights_stat": weights_stat(tmp)}
    if finish:
        metrics = finish(metrics)
    (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2))
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return metrics


def _fingerprinted_files(directory: Path) -> list[Path] | None:
    """config.json and the safetensors files; None when either is missing.

    Only these files: the report later writes a model card (README.md) into the final student's dir.
    """
    weights = sorted(directory.glob("*.safetensors"))
    if not (directory / "config.json").is_file() or not weights:
        return None
    return [directory / "config.json", *weights]


def weights_stat(model_dir: str | Path) -> dict | None:
    """{file name: [size, mtime_ns]} of the fingerprinted files: the quick check `holds_student` tries first."""
    files = _fingerprinted_files(Path(model_dir))
    if files is None:
        return None
    return {path.name: [(st := path.stat()).st_size, st.st_mtime_ns] for path in files}


def weights_fingerprint(model_dir: str | Path) -> str | None:
    """sha256 of a saved model's config.json and safetensors files; None when either is missing."""
    files = _fingerprinted_files(Path(model_dir))
    if files is None:
        return None
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode())
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def holds_student(model_dir: str | Path, metrics: dict) -> bool:
    """True while `model_dir` still holds the weights that `metrics` (of `train`) were recorded for.

    Files whose size and mtime are unchanged since the save are trusted without reading them (as make and rsync
    do): every cache check of a cached re-run would otherwise re-hash each student (~0.5 GB for SmolLM2-135M).
    Any other change (rewritten, copied, moved across filesystems) is decided by the full sha256.
    """
    recorded = metrics.get("weights_sha256")
    if recorded is None:
        return False
    if metrics.get("weights_stat") is not None and weights_stat(model_dir) == metrics["weights_stat"]:
        return True
    return weights_fingerprint(model_dir) == recorded


def generate(
    model,
    tok,
    seq2seq: bool,
    inputs: Sequence[str],
    batch_size: int,
    max_new_tokens: int,
    device,
    precision: str = "auto",
    logprobs: list[float] | None = None,
) -> list[str]:
    """Greedy outputs (first line) for `inputs`, batched longest-first to keep padding low; in bf16 weights where
    `precision` trains in bf16 (`generation_model`). With a `logprobs` list, it is filled with each output's mean token
    log-probability (`mean_logprobs`), in input order."""
    import torch

    model = generation_model(model, device, precision)
    model.eval()
    texts = list(inputs) if seq2seq else [causal_prompt(x) for x in inputs]
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    outputs = [""] * len(texts)
    scores = [0.0] * len(texts)
    previous_side = tok.padding_side
    tok.padding_side = "right" if seq2seq else "left"
    try:
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            enc = tok([texts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=seq2seq).to(device)
            prompt = 0 if seq2seq else enc["input_ids"].shape[1]
            with torch.inference_mode():
                out = model.generate(
                    **enc,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    num_beams=1,
                    pad_token_id=tok.pad_token_id,
                    stopping_criteria=[FirstLineDone(tok, prompt)],
                    **({"logits_processor": [chosen := ChosenLogprobs()]} if logprobs is not None else {}),
                )
            if logprobs is not None:
                ends = end_tokens(tok, model.generation_config)
                for i, score in zip(idx, mean_logprobs(tok, out, chosen.table(), ends)):
                    scores[i] = score
            new = out[:, prompt:]
            for row, i in enumerate(idx):
                text = tok.decode(new[row], skip_special_tokens=True).strip()
                outputs[i] = text.splitlines()[0].strip() if text else ""
    finally:
        tok.padding_side = previous_side
    if logprobs is not None:
        logprobs[:] = scores
    return outputs


class ChosenLogprobs:
    """A logits processor that keeps, at each greedy decoding step, the log-probability of the token greedy decoding
    then picks (the highest): batch floats a step, where `output_scores` would keep batch x vocabulary scores a step
    (GBs for a large vocabulary, and a relabel that fits at eval_batch_size would not)."""

    def __init__(self):
        self.steps: list = []

    def __call__(self, input_ids, scores):
        import torch

        # In fp32: bf16 logits would round the log-softmax.
        self.steps.append(torch.log_softmax(scores.float(), dim=-1).max(dim=-1).values.cpu())
        return scores

    def table(self):
        """(batch, steps) log-probabilities of the chosen tokens."""
        import torch

        return torch.stack(self.steps, dim=1)


def end_tokens(tok, generation_config=None) -> set[int]:
    """The ids that end a generated output: the tokenizer's end and pad tokens and the generation config's end tokens
    (`generate` stops on those; a chat model's often differ from its tokenizer's)."""
    configured = getattr(generation_config, "eos_token_id", None)
    configured = configured if isinstance(configured, (list, tuple)) else [configured]
    return {t for t in (tok.eos_token_id, tok.pad_token_id, *configured) if t is not None}


def mean_logprobs(tok, sequences, steps, ends: set[int] | None = None) -> list[float]:
    """Per row of greedy `generate` output `sequences` with its chosen tokens' log-probabilities `steps` (batch x
    generated steps, `ChosenLogprobs`): the mean log-probability of the generated tokens that make its output, the
    first line (through the token that ends it, an end token or a line break; what follows is dropped like the
    text). A mean, not a sum, so a long output is not "unsure" for its length alone. `ends`: `end_tokens(tok)`
    unless given."""
    import torch

    generated = sequences[:, -steps.shape[1] :].cpu()
    ends = end_tokens(tok) if ends is None else ends
    means = []
    for tokens, row in zip(generated.tolist(), steps):
        n = next((k for k, t in enumerate(tokens) if t in ends), len(tokens) - 1) + 1
        n = next((k for k in range(1, n) if first_line_done(tok.decode(tokens[:k], skip_special_tokens=True))), n)
        means.append(float(torch.nan_to_num(row[:n], neginf=-100.0).mean()))
    return means


def first_line_done(text: str) -> bool:
    """Whether `text`, stripped of leading whitespace, holds a whole first line (one followed by a line break)."""
    text = text.lstrip()
    return bool(text) and len(text.splitlines(keepends=True)[0]) > len(text.splitlines()[0])


class FirstLineDone:
    """Stops decoding a row once its output has a whole first line: `generate` keeps only that line, and a student
    that does not end with EOS tends to go on with a new line ("Input: ...") until max_new_tokens, which kept the
    whole batch decoding."""

    def __init__(self, tok, prompt_tokens: int):
        self.tok, self.prompt_tokens = tok, prompt_tokens

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        texts = self.tok.batch_decode(input_ids[:, self.prompt_tokens :], skip_special_tokens=True)
        return torch.tensor([first_line_done(t) for t in texts], device=input_ids.device)


def generation_model(model, device, precision: str):
    """`model` itself, or a bf16 copy of its weights where `precision` trains in bf16.

    One cast of a copy, not autocast: autocast re-casts every weight at every decoding step, which on a CPU made bf16
    generation slower than fp32 (BENCHMARKS.md 'precision'). A model already in bf16 (`predict` loads it so) is used as
    it is. Each tensor is cast as the
    module is copied (deepcopy's memo), so no transient fp32 copy of the model (0.5 GB) is made; tied weights stay tied.
    """
    import torch

    if not uses_bf16(device, precision) or next(model.parameters()).dtype == torch.bfloat16:
        return model

    def bf16(t):
        return t.detach().to(torch.bfloat16) if t.is_floating_point() else t.detach().clone()

    memo = {id(p): torch.nn.Parameter(bf16(p), requires_grad=False) for p in model.parameters()}
    memo.update({id(b): bf16(b) for b in model.buffers()})
    return copy.deepcopy(model, memo)


def predict(
    model_dir: str,
    inputs: Sequence[str],
    batch_size: int = 16,
    max_new_tokens: int = 128,
    precision: str = "auto",
    progress: ProgressFn | None = None,
    logprobs: list[float] | None = None,
) -> list[str]:
    """Load a trained student dir and generate one output per input; a `logprobs` list is filled with each output's
    mean token log-probability (`generate`)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    device = pick_device()
    seq2seq = is_seq2seq(model_dir, "auto")
    tok = load_tokenizer(model_dir)
    cls = AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM
    dtype = torch.bfloat16 if uses_bf16(device, precision) else torch.float32
    model = cls.from_pretrained(model_dir, dtype=dtype).to(device)
    outputs: list[str] = []
    scores: list[float] | None = [] if logprobs is not None else None
    chunk = max(batch_size * 4, 1)
    for start in range(0, len(inputs), chunk):
        part: list[float] | None = [] if logprobs is not None else None
        outputs += generate(
            model, tok, seq2seq, inputs[start : start + chunk], batch_size, max_new_tokens, device, precision, part
        )
        if scores is not None:
            scores += part
        if progress:
            progress(len(outputs), len(inputs))
    if logprobs is not None:
        logprobs[:] = scores
    return outputs


def train_isolated(spec: TrainSpec, slot: Slot = Slot()) -> dict:
    """Run `train` in a spawned child process bound to `slot` (a GPU or a share of the cores), so a poisoned
    CUDA context dies with it and concurrent CPU students do not share one thread pool (gpus.run_in_slot)."""
    return run_in_slot(slot, train, spec, child=True)
