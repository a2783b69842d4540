"""The interface every task format implements, and the registry flows look formats up in."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence


@dataclass(frozen=True)
class Checked:
    """A generation after validation and repair.

    `label` is the canonical target string (None when the output could not be made valid);
    `repaired` says the label differs from what the model wrote but was fixed up to be valid.
    """

    label: str | None
    valid: bool
    repaired: bool = False
    error: str | None = None


class TaskFormat(Protocol):
    name: str
    #: One-paragraph instruction put at the top of the few-shot prompt.
    instruction: str

    def check(self, input: str, output: str) -> Checked:
        """Parse, validate and (where possible) repair a model output for `input`."""

    def target_error(self, input: str, target: str) -> str | None:
        """Why a gold target is not a valid target for `input` (None when it is)."""

    def metrics(self, inputs: Sequence[str], golds: Sequence[str], preds: Sequence[str | None]) -> dict:
        """Corpus metrics; always has `f1`, `precision`, `recall`, `exact_match`, `invalid`, all in percent (0-100)."""

    # Optional, for confidence intervals and paired comparisons (without them a run reports none):
    #   row_stats(inputs, golds, preds) -> (rows, k) array: per-example statistics of `f1`;
    #   aggregate(stats) -> `f1` of stats shaped (..., rows, k), reducing axis -2 (mckd_core.stats), so that
    #   aggregate(row_stats(...)) == metrics(...)["f1"] and a bootstrap resample is scored like the full set.
    # metric_columns: names of extra gold columns of the example rows that metrics() and row_stats() take as keyword
    # arguments (lists, one value per row) where the data has them, e.g. constituency's gold POS tags `pos`.


_REGISTRY: dict[str, TaskFormat] = {}


def register_format(fmt: TaskFormat) -> TaskFormat:
    """Make `fmt` available by name to configs and flows (user formats call this at import time)."""
    _REGISTRY[fmt.name] = fmt
    return fmt


def get_format(name: str) -> TaskFormat:
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise KeyError(f"unknown task format {name!r}; known formats: {known}") from None


def format_names() -> list[str]:
    return sorted(_REGISTRY)
