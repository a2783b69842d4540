"""Few-shot prompts: demo selection (random-fixed or BM25) and prompt rendering (chat messages or plain text)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Sequence

from rank_bm25 import BM25Okapi


@dataclass(frozen=True)
class Demo:
    id: str
    input: str
    target: str


@dataclass(frozen=True)
class Prompt:
    """One teacher request. `messages` for chat backends; `text` for completion backends."""

    messages: tuple[dict, ...]
    text: str
    demo_ids: tuple[str, ...]
    #: (input, target) of each demo, in prompt order: what the answer depends on, so the response cache keys on it.
    demo_content: tuple[tuple[str, str], ...] = ()


class DemoSelector:
    """Chooses k demonstrations per input.

    random-fixed: one seeded draw shared by all inputs, so every prompt has the same prefix
    (vLLM's prefix cache serves it once). bm25: the k labeled examples most similar to the input.
    """

    def __init__(self, demos: Sequence[Demo], k: int, method: str, seed: int):
        self.demos = list(demos)
        self.k = min(k, len(self.demos))
        self.method = method
        self.fixed = random.Random(seed).sample(self.demos, self.k)
        self._bm25 = (
            BM25Okapi([d.input.lower().split() for d in self.demos]) if method == "bm25" and self.demos else None
        )

    def select(self, query: str) -> list[Demo]:
        if self.method == "random-fixed" or self._bm25 is None:
            return self.fixed
        scores = self._bm25.get_scores(query.lower().split())
        ranked = sorted(range(len(self.demos)), key=lambda i: (-scores[i], i))[: self.k]
        # Most similar demo last: closest to the query, where small models attend most.
        return [self.demos[i] for i in reversed(ranked)]


def build_prompt(instruction: str, demos: Sequence[Demo], query: str) -> Prompt:
    messages: list[dict] = [{"role": "system", "content": instruction}]
    lines = [instruction, ""]
    for demo in demos:
        messages += [{"role": "user", "content": demo.input}, {"role": "assistant", "content": demo.target}]
        lines += [f"Input: {demo.input}", f"Output: {demo.target}", ""]
    messages.append({"role": "user", "content": query})
    lines += [f"Input: {query}", "Output:"]
    return Prompt(
        tuple(messages), "\n".join(lines), tuple(d.id for d in demos), tuple((d.input, d.target) for d in demos)
    )


def extract_output(generation: str) -> str:
    """The model's answer: the first non-empty line, without a leading 'Output:'."""
    for line in generation.strip().splitlines():
        line = line.strip()
        if line.lower().startswith("output:"):
            line = line[len("output:") :].strip()
        if line:
            return line
    return ""
