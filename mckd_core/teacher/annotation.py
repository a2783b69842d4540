"""Few-shot annotation: build the prompts, ask the backend only for rows the cache lacks, validate every output."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import pandas as pd

from ..data import label_frame
from ..prompting import Demo, DemoSelector, build_prompt
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
    keys = [
        ResponseCache.key(backend.model_key, fmt.instruction, p.demo_content, params, text, chat)
        for p, text in zip(prompts, examples["input"])
    ]
    raws = cache.get_many(keys)
    missing = [i for i, key in enumerate(keys) if key not in raws]
    stats = AnnotationStats(requested=len(missing), cached=len(keys) - len(missing))
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
