"""What every teacher backend shares: generation parameters, the backend protocol, the cache identity of local
weights."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

from ..prompting import Prompt

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
