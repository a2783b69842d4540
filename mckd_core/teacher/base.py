"""What every teacher backend shares: generation parameters, the backend protocol, the cache identity of local
weights."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple, Protocol, Sequence

from ..prompting import Prompt

ProgressFn = Callable[[int, int], None]


@dataclass(frozen=True)
class GenParams:
    max_new_tokens: int = 96
    temperature: float = 0.0
    #: Regex the output must match (structured outputs); backends that cannot constrain ignore it.
    regex: str | None = None
    #: JSON Schema (as canonical JSON text) the output must follow (structured outputs); instead of `regex`.
    json_schema: str | None = None

    def cache_fields(self) -> dict:
        """What identifies these parameters in the response cache; a constraint that is not set leaves the key as it
        was before that kind of constraint existed, so cached responses stay valid."""
        return {k: v for k, v in self.__dict__.items() if v is not None or k != "json_schema"}

    def structured_outputs(self) -> dict | None:
        """vLLM's `structured_outputs` (request field / StructuredOutputsParams arguments); None: unconstrained."""
        if self.json_schema is not None:
            import json

            # (vLLM 0.32 reads disable_any_whitespace from the engine's config only, not per request: a server
            # that should write compact JSON takes --structured-outputs-config '{"disable_any_whitespace": true}'.)
            return {"json": json.loads(self.json_schema)}
        return {"regex": self.regex} if self.regex else None


class Usage(NamedTuple):
    """The tokens one teacher request cost, as its server counted them."""

    prompt_tokens: int
    completion_tokens: int


class TeacherBackend(Protocol):
    #: Identifies the weights (model id + revision) in cache keys.
    model_key: str

    def generate(self, prompts: Sequence[Prompt], params: GenParams, progress: ProgressFn | None = None) -> list[str]:
        """One raw generation per prompt, in order. Raises TeacherTransportError on transient failures."""


def local_model_key(model: str, revision: str | None) -> str:
    """The response-cache identity of weights loaded in-process (transformers or vllm-offline): the same
    model + revision gives the same answers, so rows cached by either engine serve the other."""
    return f"{model}@{revision or 'main'}"
