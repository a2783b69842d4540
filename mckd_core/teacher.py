"""Teacher backends and few-shot annotation with a per-row response cache.

A backend turns prompts into raw generations. `annotate` builds the prompts, asks the backend only for
rows the cache does not hold, validates/repairs every output with the task format, and returns label
rows (one per input row, invalid rows flagged).
"""

from __future__ import annotations

import copy
import hashlib
import json
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol, Sequence

import pandas as pd

from .data import label_frame
from .prompting import Demo, DemoSelector, Prompt, build_prompt, extract_output

ProgressFn = Callable[[int, int], None]


@dataclass(frozen=True)
class GenParams:
    max_new_tokens: int = 96
    temperature: float = 0.0
    #: Regex the output must match (structured outputs); backends that cannot constrain ignore it.
    regex: str | None = None


class TeacherBackend(Protocol):
    #: Identifies the weights (model id + revision) in cache keys.
    model_key: str

    def generate(self, prompts: Sequence[Prompt], params: GenParams, progress: ProgressFn | None = None) -> list[str]:
        """One raw generation per prompt, in order. Raises TeacherTransportError on transient failures."""


def local_model_key(model: str, revision: str | None) -> str:
    """The response-cache identity of weights loaded in-process (transformers or vllm-offline): the same
    model + revision gives the same answers, so rows cached by either engine serve the other."""
    return f"{model}@{revision or 'main'}"


class TransformersTeacher:
    """In-process batched greedy generation with a `transformers` causal LM."""

    def __init__(self, model: str, revision: str | None = None, chat: bool = True, batch_size: int = 8,
                 trust_remote_code: bool = False):
        from .models import resolve_model
        from .student import load_tokenizer, pick_device

        import torch
        from transformers import AutoModelForCausalLM

        self.model_key = local_model_key(model, revision)
        path = resolve_model(model)
        self.device = pick_device()
        self.tokenizer = load_tokenizer(path, revision=revision, trust_remote_code=trust_remote_code, padding_side="left")
        dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        self.model = AutoModelForCausalLM.from_pretrained(
            path, revision=revision, dtype=dtype, trust_remote_code=trust_remote_code, use_safetensors=None
        ).to(self.device).eval()
        self.chat = chat and self.tokenizer.chat_template is not None
        self.batch_size = batch_size

    def render(self, prompt: Prompt) -> str:
        if self.chat:
            return self.tokenizer.apply_chat_template(list(prompt.messages), tokenize=False, add_generation_prompt=True)
        return prompt.text

    def generate(self, prompts, params, progress=None):
        import torch

        ids = [self.tokenizer(self.render(p), add_special_tokens=False)["input_ids"] for p in prompts]
        prefix = shared_prefix(ids)
        # The few-shot prefix (instruction + demos) is the same for every prompt with random-fixed demos:
        # encode it once and reuse its KV cache, so each prompt costs only its own tokens (5-10x fewer here).
        prefix_cache = self._encode_prefix(prefix) if len(prefix) >= 16 else None
        cut = len(prefix) if prefix_cache is not None else 0
        # Longest first: batches have similar lengths, and a memory problem shows on the first batch.
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
        outputs: list[str] = [""] * len(ids)
        sampling = {"do_sample": True, "temperature": params.temperature} if params.temperature > 0 else {"do_sample": False}
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            input_ids, mask = self._batch([ids[i] for i in idx], cut)
            extra = {}
            if prefix_cache is not None:
                extra["past_key_values"] = copy.deepcopy(prefix_cache)
                extra["past_key_values"].batch_repeat_interleave(len(idx))
            with torch.inference_mode():
                out = self.model.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=params.max_new_tokens,
                                          pad_token_id=self.tokenizer.pad_token_id, **sampling, **extra)
            for row, i in enumerate(idx):
                outputs[i] = self.tokenizer.decode(out[row, input_ids.shape[1]:], skip_special_tokens=True)
            if progress:
                progress(min(start + self.batch_size, len(order)), len(order))
        return outputs

    def _encode_prefix(self, prefix: list[int]):
        import torch

        with torch.inference_mode():
            return self.model(input_ids=torch.tensor([prefix], device=self.device), use_cache=True).past_key_values

    def _batch(self, rows: list[list[int]], cut: int):
        """[shared prefix][left padding][own tokens]: padding sits after the cached prefix, masked out."""
        import torch

        width = max(len(r) - cut for r in rows)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.full((len(rows), cut + width), pad, dtype=torch.long)
        mask = torch.zeros_like(input_ids)
        for row, tokens in enumerate(rows):
            own = tokens[cut:]
            input_ids[row, :cut] = torch.tensor(tokens[:cut], dtype=torch.long)
            input_ids[row, cut + width - len(own):] = torch.tensor(own, dtype=torch.long)
            mask[row, :cut] = 1
            mask[row, cut + width - len(own):] = 1
        return input_ids.to(self.device), mask.to(self.device)


def shared_prefix(rows: Sequence[Sequence[int]]) -> list[int]:
    """The longest token prefix common to all rows, leaving every row at least one token of its own."""
    if not rows:
        return []
    first = rows[0]
    n = min(len(r) for r in rows) - 1
    for r in rows[1:]:
        i = 0
        while i < n and r[i] == first[i]:
            i += 1
        n = i
    return list(first[:max(n, 0)])


class ResponseCache:
    """Per-row teacher responses in SQLite, keyed by everything that determines the response."""

    def __init__(self, path: str | Path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(str(path), check_same_thread=False, timeout=60)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, raw TEXT NOT NULL)")
        self._lock = threading.Lock()

    @staticmethod
    def key(model_key: str, template: str, demo_ids: Sequence[str], params: GenParams, input: str, chat: bool) -> str:
        payload = json.dumps([model_key, template, list(demo_ids), params.__dict__, input, chat], sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()

    def get_many(self, keys: Sequence[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        with self._lock:
            for start in range(0, len(keys), 500):
                chunk = list(keys[start:start + 500])
                rows = self._conn.execute(f"SELECT key, raw FROM responses WHERE key IN ({','.join('?' * len(chunk))})", chunk)
                found.update(rows.fetchall())
        return found

    def put_many(self, items: dict[str, str]) -> None:
        with self._lock, self._conn:
            self._conn.executemany("INSERT OR REPLACE INTO responses VALUES (?, ?)", items.items())

    def close(self) -> None:
        self._conn.close()


def cacheable(params: GenParams, fmt, input: str, raw: str) -> bool:
    """Valid outputs are always cached. Invalid ones only under greedy decoding, where asking again would
    return the same answer; when sampling, a later run gets a fresh chance at them."""
    return params.temperature == 0 or fmt.check(input, extract_output(raw)).valid


@dataclass
class AnnotationStats:
    requested: int = 0
    cached: int = 0


def annotate(
    examples: pd.DataFrame,
    demos: Sequence[Demo],
    fmt,
    backend: TeacherBackend,
    cache: ResponseCache,
    *,
    k: int,
    selection: str,
    seed: int,
    params: GenParams,
    chat: bool,
    chunk_size: int = 64,
    progress: ProgressFn | None = None,
) -> tuple[pd.DataFrame, AnnotationStats]:
    """Few-shot label every row of `examples`; only rows missing from the cache reach the backend.

    Responses are cached chunk by chunk as they arrive, so a crash loses at most one chunk. Transport
    failures never reach the cache; invalid outputs are flagged in the label rows (see `cacheable`).
    """
    selector = DemoSelector(demos, k, selection, seed)
    prompts = [build_prompt(fmt.instruction, selector.select(text), text) for text in examples["input"]]
    keys = [ResponseCache.key(backend.model_key, fmt.instruction, p.demo_ids, params, text, chat)
            for p, text in zip(prompts, examples["input"])]
    raws = cache.get_many(keys)
    missing = [i for i, key in enumerate(keys) if key not in raws]
    stats = AnnotationStats(requested=len(missing), cached=len(keys) - len(missing))
    done = stats.cached
    if progress:
        progress(done, len(keys))
    for start in range(0, len(missing), chunk_size):
        idx = missing[start:start + chunk_size]
        generated = backend.generate([prompts[i] for i in idx], params)
        fresh = {keys[i]: text for i, text in zip(idx, generated)}
        cache.put_many({key: text for (key, text), i in zip(fresh.items(), idx)
                        if cacheable(params, fmt, examples["input"].iloc[i], text)})
        raws.update(fresh)
        done += len(idx)
        if progress:
            progress(done, len(keys))
    labels, raw_list, valids, errors = [], [], [], []
    for key, text in zip(keys, examples["input"]):
        raw = raws[key]
        checked = fmt.check(text, extract_output(raw))
        labels.append(checked.label)
        raw_list.append(raw)
        valids.append(checked.valid)
        errors.append(checked.error if not checked.valid else ("repaired" if checked.repaired else None))
    return label_frame(examples, labels, raw_list, valids, errors, source="teacher", stage=0), stats
