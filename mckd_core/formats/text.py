"""Free text: any non-empty first line is valid. For toy tasks and tests; metric is token-bag F1."""

from __future__ import annotations

from collections import Counter
from typing import Sequence

import numpy as np

from ..stats import micro_f1
from .base import Checked, register_format
from .slots import prf


class TextFormat:
    name = "text"
    description = "Free text: any non-empty first line is valid; token-bag F1. For toy tasks and tests."
    instruction = "Answer with the output for the input, on one line."

    def check(self, input: str, output: str) -> Checked:
        line = output.strip().splitlines()[0].strip() if output.strip() else ""
        return Checked(line, True) if line else Checked(None, False, error="empty output")

    def target_error(self, input: str, target: str) -> str | None:
        return None if target.strip() else "empty target"

    def metrics(self, inputs: Sequence[str], golds: Sequence[str], preds: Sequence[str | None]) -> dict:
        rows = [self._score_row(gold, pred) for gold, pred in zip(golds, preds, strict=True)]
        correct, n_pred, n_gold, exact, invalid = (sum(column) for column in zip(*rows)) if rows else (0,) * 5
        n = max(len(golds), 1)
        return prf(correct, n_pred, n_gold) | {
            "exact_match": 100.0 * exact / n,
            "invalid": 100.0 * invalid / n,
            "n": len(golds),
        }

    def row_stats(self, inputs: Sequence[str], golds: Sequence[str], preds: Sequence[str | None]) -> np.ndarray:
        """Per row: (tokens right, predicted, gold); `aggregate` pools them into the token-bag F1."""
        return np.array(
            [self._score_row(gold, pred)[:3] for gold, pred in zip(golds, preds, strict=True)], dtype=float
        ).reshape(-1, 3)

    aggregate = staticmethod(micro_f1)

    def _score_row(self, gold: str, pred: str | None) -> tuple[int, int, int, bool, bool]:
        label = self.check("", pred).label if pred is not None else None
        g, p = Counter(gold.split()), Counter((label or "").split())
        return sum((g & p).values()), sum(p.values()), sum(g.values()), label == gold.strip(), label is None


TEXT = register_format(TextFormat())
