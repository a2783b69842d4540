"""Free text: any non-empty first line is valid. For toy tasks and tests; metric is token-bag F1."""

from __future__ import annotations

from collections import Counter
from typing import Sequence

from .base import Checked, register_format
from .slots import prf


class TextFormat:
    name = "text"
    instruction = "Answer with the output for the input, on one line."

    def check(self, input: str, output: str) -> Checked:
        line = output.strip().splitlines()[0].strip() if output.strip() else ""
        return Checked(line, True) if line else Checked(None, False, error="empty output")

    def target_error(self, input: str, target: str) -> str | None:
        return None if target.strip() else "empty target"

    def metrics(self, inputs: Sequence[str], golds: Sequence[str], preds: Sequence[str | None]) -> dict:
        correct = n_pred = n_gold = exact = invalid = 0
        for gold, pred in zip(golds, preds, strict=True):
            label = self.check("", pred).label if pred is not None else None
            invalid += label is None
            g, p = Counter(gold.split()), Counter((label or "").split())
            correct += sum((g & p).values())
            n_pred += sum(p.values())
            n_gold += sum(g.values())
            exact += label == gold.strip()
        n = max(len(golds), 1)
        return prf(correct, n_pred, n_gold) | {"exact_match": 100.0 * exact / n, "invalid": 100.0 * invalid / n, "n": len(golds)}


TEXT = register_format(TextFormat())
