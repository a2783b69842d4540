"""Few-shot annotation: build the prompts, ask the backend only for rows the cache lacks, validate every output."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import pandas as pd

from ..data import label_frame
from ..prompting import Demo, DemoSelector, Prompt, build_prompt
from .base import GenParams, ProgressFn, TeacherBackend, Usage
from .cache import ResponseCache, cacheable, output_of


@dataclass
class AnnotationStats:
    requested: int = 0
    cached: int = 0
    #: Tokens of the rows sent to the backend in this call (cached rows cost nothing), where it reports them.
    prompt_tokens: int = 0
    completion_tokens: int = 0
    metered: int = 0  # rows sent whose backend reported their usage
    #: What the rows served from the cache cost when they were generated, where the cache recorded it.
    cached_prompt_tokens: int = 0
    cached_completion_tokens: int = 0
    cached_metered: int = 0  # cached rows whose original cost is known

    def tokens(self) -> dict:
        """report.json's token entry of one set: rows sent / from cache and the tokens of each."""
        return token_entry(
            self.requested + self.cached,
            self.requested,
            (self.prompt_tokens, self.completion_tokens, self.metered),
            (self.cached_prompt_tokens, self.cached_completion_tokens, self.cached_metered),
        )


def token_entry(rows: int, sent: int, new: tuple[int, int, int], cached: tuple[int, int, int]) -> dict:
    """`new`, `cached`: (prompt tokens, completion tokens, rows whose cost is known) of the rows sent in this run and
    of those served from the cache (what they cost when generated: this run paid nothing for them)."""
    return {
        "rows": rows,
        "sent": sent,
        "from_cache": rows - sent,
        "prompt_tokens": new[0],
        "completion_tokens": new[1],
        "metered": new[2],
        "cached_prompt_tokens": cached[0],
        "cached_completion_tokens": cached[1],
        "cached_metered": cached[2],
    }


def all_from_cache(entry: dict) -> dict:
    """The token entry of a set whose labels were reused whole (a cached node): every row came from the cache and
    cost this run nothing; what the rows cost is the sum of what the recorded entry paid and reused."""
    return token_entry(
        entry["rows"],
        0,
        (0, 0, 0),
        tuple(entry[k] + entry[f"cached_{k}"] for k in ("prompt_tokens", "completion_tokens", "metered")),
    )


def total_tokens(entries: dict[str, dict]) -> dict:
    """The run's token entry: the sum over its sets."""
    return {key: sum(entry[key] for entry in entries.values()) for key in token_entry(0, 0, (0, 0, 0), (0, 0, 0))}


def few_shot_prompts(
    inputs: Sequence[str], demos: Sequence[Demo], instruction: str, *, k: int, selection: str, seed: int
) -> list[Prompt]:
    """The teacher's prompt of each input: `k` of `demos` (chosen by `selection`, `seed`) around it."""
    selector = DemoSelector(demos, k, selection, seed)
    return [build_prompt(instruction, selector.select(text), text) for text in inputs]


def requests(
    inputs: Sequence[str],
    demos: Sequence[Demo],
    fmt,
    model_key: str,
    *,
    k: int,
    selection: str,
    seed: int,
    params: GenParams,
    chat: bool,
) -> tuple[list[Prompt], list[str]]:
    """The prompt of each input and its response-cache key (what `annotate` asks, and what an estimate counts)."""
    prompts = few_shot_prompts(inputs, demos, fmt.instruction, k=k, selection=selection, seed=seed)
    keys = [
        ResponseCache.key(model_key, fmt.instruction, p.demo_content, params, text, chat)
        for p, text in zip(prompts, inputs)
    ]
    return prompts, keys


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
    prompts, keys = requests(
        examples["input"], demos, fmt, backend.model_key, k=k, selection=selection, seed=seed, params=params, chat=chat
    )
    raws = cache.get_many(keys)
    missing = [i for i, key in enumerate(keys) if key not in raws]
    stats = AnnotationStats(requested=len(missing), cached=len(keys) - len(missing))
    recorded = cache.usage_of([key for key in keys if key in raws])
    paid = [recorded[key] for key in keys if key in recorded]  # row by row: two rows may share a key
    stats.cached_prompt_tokens = sum(u.prompt_tokens for u in paid)
    stats.cached_completion_tokens = sum(u.completion_tokens for u in paid)
    stats.cached_metered = len(paid)
    done = stats.cached
    if progress:
        progress(done, len(keys))
    for start in range(0, len(missing), chunk_size):
        idx = missing[start : start + chunk_size]
        generated, usage = _generate(backend, [prompts[i] for i in idx], params)
        fresh = {keys[i]: text for i, text in zip(idx, generated)}
        metered = [u for u in usage if u is not None]
        stats.prompt_tokens += sum(u.prompt_tokens for u in metered)
        stats.completion_tokens += sum(u.completion_tokens for u in metered)
        stats.metered += len(metered)
        # Row by row, not over `fresh`: two rows of a chunk with the same key make `fresh` shorter than `idx`.
        kept = {
            keys[i]: text for i, text in zip(idx, generated) if cacheable(params, fmt, examples["input"].iloc[i], text)
        }
        cache.put_many(kept)
        cache.put_usage({keys[i]: u for i, u in zip(idx, usage) if u is not None and keys[i] in kept})
        raws.update(fresh)
        done += len(idx)
        if progress:
            progress(done, len(keys))
    labels, raw_list, valids, errors = [], [], [], []
    for key, text in zip(keys, examples["input"]):
        raw = raws[key]
        checked = fmt.check(text, output_of(fmt, raw))
        labels.append(checked.label)
        raw_list.append(raw)
        valids.append(checked.valid)
        errors.append(checked.error if not checked.valid else ("repaired" if checked.repaired else None))
    return label_frame(examples, labels, raw_list, valids, errors, source="teacher", stage=0), stats


def _generate(backend: TeacherBackend, prompts: list, params: GenParams) -> tuple[list[str], list[Usage | None]]:
    """The backend's answers and, where it reports them (`generate_with_usage`), the tokens each one cost."""
    with_usage = getattr(backend, "generate_with_usage", None)
    if with_usage is None:
        return backend.generate(prompts, params), [None] * len(prompts)
    answers = with_usage(prompts, params)
    return [text for text, _ in answers], [usage for _, usage in answers]
