"""An example mckd task format: key=value records, `city=boston;day=monday`.

A target is a `;`-separated list of `key=value` fields on one line. The canonical form sorts the fields by key, so
`day=monday;city=boston` and `city=boston;day=monday` are the same label. The metric is micro F1 over the
(key, value) fields, with per-row statistics so mckd can put bootstrap intervals and paired comparisons on it.
"""

from __future__ import annotations

from collections import Counter
from typing import Sequence

import numpy as np

from mckd_core.formats import Checked
from mckd_core.stats import micro_f1


class FieldError(ValueError):
    pass


def parse(text: str) -> list[tuple[str, str]]:
    """The (key, value) fields of a record; raises FieldError when a field is not key=value."""
    fields = []
    for part in text.strip().split(";"):
        key, sep, value = part.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise FieldError(f"{part.strip()!r} is not key=value")
        fields.append((key.strip(), value.strip()))
    return fields


def render(fields: list[tuple[str, str]]) -> str:
    return ";".join(f"{k}={v}" for k, v in sorted(fields))


class KeyValueFormat:
    """key=value records separated by ';'; micro F1 over the (key, value) fields."""

    name = "kv"
    description = "key=value records separated by ';' (an example plugin); micro F1 over the fields."
    instruction = (
        "Write the facts of the input as key=value fields separated by ';' on one line, e.g. city=boston;day=monday."
    )
    #: For structured outputs (teacher.structured_outputs): one line of key=value fields.
    regex = r" ?[^=;\n]+=[^=;\n]+(?:;[^=;\n]+=[^=;\n]+)*"

    def check(self, input: str, output: str) -> Checked:
        line = next((line for line in output.splitlines() if line.strip()), "")
        if not line:
            return Checked(None, False, error="empty output")
        try:
            fields = parse(line)
        except FieldError as exc:
            return Checked(None, False, error=str(exc))
        label = render(fields)
        return Checked(label, True, repaired=label != line.strip())

    def target_error(self, input: str, target: str) -> str | None:
        try:
            parse(target)
        except FieldError as exc:
            return str(exc)
        return None

    def canonical_target(self, target: str) -> str:
        return render(parse(target))

    def metrics(self, inputs: Sequence[str], golds: Sequence[str], preds: Sequence[str | None]) -> dict:
        stats = self.row_stats(inputs, golds, preds)
        right, predicted, gold = stats.sum(axis=0) if len(stats) else (0, 0, 0)
        n = max(len(golds), 1)
        precision = 100.0 * right / predicted if predicted else 0.0
        recall = 100.0 * right / gold if gold else 0.0
        checked = [self.check(x, p) if p is not None else Checked(None, False) for x, p in zip(inputs, preds)]
        return {
            "precision": precision,
            "recall": recall,
            "f1": float(self.aggregate(stats)),
            "exact_match": 100.0 * sum(c.label == render(parse(g)) for c, g in zip(checked, golds)) / n,
            "invalid": 100.0 * sum(not c.valid for c in checked) / n,
            "n": len(golds),
        }

    def row_stats(self, inputs: Sequence[str], golds: Sequence[str], preds: Sequence[str | None]) -> np.ndarray:
        """Per row: (fields right, fields predicted, gold fields); `aggregate` pools them into the micro F1."""
        rows = []
        for x, gold, pred in zip(inputs, golds, preds, strict=True):
            checked = self.check(x, pred) if pred is not None else Checked(None, False)
            g = Counter(parse(gold))
            p = Counter(parse(checked.label)) if checked.valid else Counter()
            rows.append((sum((g & p).values()), sum(p.values()), sum(g.values())))
        return np.array(rows, dtype=float).reshape(-1, 3)

    aggregate = staticmethod(micro_f1)


#: For an import string: `data.task: mckd_format_example:KV`.
KV = KeyValueFormat()
