"""Structured extraction into one JSON object per target, optionally constrained by a JSON Schema (data.schema).

Targets are stored and trained in canonical form: one line, sorted keys, compact separators, non-ASCII kept.
Outputs: the first JSON object in the output is parsed; only safe repairs are made (code fences, text around the
object, trailing commas), and the label is then `repaired`; an output without a parsable object, a JSON value that
is not an object, or an object that violates the schema is invalid, with the reason in `error`.

Metric: gold and prediction flatten into leaf pairs (path, value). The path is the sequence of object keys from the
root; the elements of a list contribute their leaves under the list's path with `[]` appended (no index: order does
not matter); a leaf (string, number, boolean, null) is compared by its JSON text, so `1` and `1.0` differ; empty
objects and lists contribute no pair. Per row, correct = the size of the multiset intersection of gold and predicted
pairs; precision, recall and F1 are pooled over the rows (micro), in percent. An invalid prediction has no pairs.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import Any, Sequence

import numpy as np

from ..errors import MckdInputError
from ..stats import micro_f1
from .base import Checked, register_format
from .slots import prf

_FENCE = re.compile(r"```[A-Za-z0-9_-]*[ \t]*\n?(.*?)\n?```", re.DOTALL)
_MESSAGE_CHARS = 160
#: Keys of a nested object the teacher's instruction names.
_NESTED_KEYS = 12
_CLOSER = re.compile(r"\s*[}\]]")


def canonical(value: Any) -> str:
    """The canonical JSON text of a value: sorted keys, compact separators, non-ASCII characters kept."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _reject_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def _loads(text: str) -> Any:
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except RecursionError:  # thousands of nested brackets: the parser's own recursion gives up
        raise ValueError("nested too deeply") from None


def leaves(value: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], str]]:
    """The (path, value text) leaf pairs of a JSON value (see the module docstring)."""
    if isinstance(value, dict):
        return [pair for key, item in value.items() for pair in leaves(item, path + (key,))]
    if isinstance(value, list):
        return [pair for item in value for pair in leaves(item, path + ("[]",))]
    return [(path, json.dumps(value, ensure_ascii=False))]


def strip_trailing_commas(text: str) -> str:
    """`text` without the commas that directly precede a `}` or `]` (outside strings)."""
    out: list[str] = []
    in_string = escaped = False
    for i, char in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
            out.append(char)
            continue
        if char == '"':
            in_string = True
        elif char == "," and _CLOSER.match(text, i + 1):
            continue
        out.append(char)
    return "".join(out)


def first_object(output: str) -> tuple[Any, bool]:
    """The first JSON value starting at a `{` of `output` and whether a repair was needed to read it.

    Raises ValueError with the reason when there is none. The value may be a non-object only when the whole output
    is one JSON value (e.g. a list), so the caller can say what it got.
    """
    text = output.strip()
    try:
        return _loads(text), False
    except ValueError:
        pass
    fenced = _FENCE.search(text)
    inner = fenced.group(1).strip() if fenced else text
    start = inner.find("{")
    if start < 0:
        raise ValueError("no JSON object in the output")
    decoder = json.JSONDecoder(parse_constant=_reject_constant)
    try:
        value, _ = decoder.raw_decode(inner, start)
        return value, True
    except (ValueError, RecursionError) as exc:
        first_error = exc if isinstance(exc, ValueError) else "nested too deeply"
    try:
        value, _ = decoder.raw_decode(strip_trailing_commas(inner[start:]))
        return value, True
    except (ValueError, RecursionError):
        raise ValueError(f"invalid JSON: {first_error}") from None


class JsonFormat:
    """One JSON object per target, optionally constrained by a JSON Schema; F1 over leaf (path, value) pairs."""

    name = "json"
    description = (
        "One JSON object per target (optional JSON Schema in data.schema); micro F1 over leaf "
        "(path, value) pairs, lists as multisets."
    )

    def __init__(self, schema: dict | None = None):
        self.schema = schema
        self._validator = None
        if schema is not None:
            from jsonschema import validators
            from jsonschema.exceptions import SchemaError

            cls = validators.validator_for(schema)
            try:
                cls.check_schema(schema)
            except SchemaError as exc:
                where = "/".join(str(p) for p in exc.path) or "<root>"
                raise MckdInputError(
                    f"data.schema: not a valid JSON Schema at {where}: {_short(exc.message)}"
                ) from None
            self._validator = cls(schema)
        self.instruction = instruction(schema)

    def with_schema(self, schema: dict) -> JsonFormat:
        return JsonFormat(schema)

    @property
    def json_schema(self) -> dict | None:
        """For structured outputs (teacher.structured_outputs): the schema outputs follow (without one: any object)."""
        return self.schema if self.schema is not None else {"type": "object"}

    def extract_output(self, generation: str) -> str:
        """All of a teacher's generation (an object may span lines or sit in a code fence), less a leading 'Output:'."""
        text = generation.strip()
        return text[len("output:") :].strip() if text.lower().startswith("output:") else text

    def check(self, input: str, output: str) -> Checked:
        if not output.strip():
            return Checked(None, False, error="empty output")
        try:
            value, repaired = first_object(output)
            problem = self.problem(value)
            label = None if problem else canonical(value)
        except ValueError as exc:
            return Checked(None, False, error=_short(str(exc)))
        except RecursionError:  # parsed, but too deep for the schema validator or the encoder
            return Checked(None, False, error="JSON nested too deeply")
        if problem:
            return Checked(None, False, error=problem)
        return Checked(label, True, repaired=repaired)

    def problem(self, value: Any) -> str | None:
        """Why a parsed value is not a valid target: not an object, or a schema violation (None when valid)."""
        if not isinstance(value, dict):
            return f"a JSON {_json_type(value)}, not an object"
        if self._validator is None:
            return None
        from jsonschema.exceptions import best_match

        error = best_match(self._validator.iter_errors(value))
        if error is None:
            return None
        schema_path = "/".join(str(p) for p in error.schema_path)
        return f"violates the schema at {error.json_path} (schema path {schema_path}): {_short(error.message)}"

    def target_error(self, input: str, target: Any) -> str | None:
        if isinstance(target, dict):
            return self.problem(target)
        try:
            value = _loads(target)
        except ValueError as exc:
            return f"not one JSON object: invalid JSON ({_short(str(exc))})"
        return self.problem(value)

    def canonical_target(self, target: Any) -> str:
        """A valid gold target in canonical form (a dict, as a JSONL row may hold it, or its JSON text)."""
        return canonical(target if isinstance(target, dict) else _loads(target))

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
        """Per row: (pairs right, pairs predicted, gold pairs); `aggregate` pools them into the micro F1."""
        return np.array(
            [self._score_row(gold, pred)[:3] for gold, pred in zip(golds, preds, strict=True)], dtype=float
        ).reshape(-1, 3)

    aggregate = staticmethod(micro_f1)

    def _score_row(self, gold: Any, pred: str | None) -> tuple[int, int, int, bool, bool]:
        """(pairs right, predicted, gold, exact match, invalid) of one row."""
        gold_value = gold if isinstance(gold, dict) else _loads(gold)
        checked = self.check("", pred) if pred is not None else Checked(None, False)
        g = Counter(leaves(gold_value))
        p = Counter(leaves(_loads(checked.label))) if checked.valid else Counter()
        exact = checked.valid and checked.label == canonical(gold_value)
        return sum((g & p).values()), sum(p.values()), sum(g.values()), exact, not checked.valid


def instruction(schema: dict | None) -> str:
    """The teacher's instruction; with a schema it names the object's fields (and their allowed values)."""
    text = "Extract the information in the input as one JSON object, written on one line."
    fields = _fields(schema) if schema else []
    if fields:
        text += " Its fields: " + "; ".join(fields) + "."
    if schema and schema.get("description"):
        text += " " + str(schema["description"]).strip()
    return text + " Write only the JSON object."


def _fields(schema: dict, depth: int = 0) -> list[str]:
    """One phrase per property of an object schema: its type, whether required, description, allowed values."""
    required = set(schema.get("required", []))
    fields = []
    for key, sub in (schema.get("properties") or {}).items():
        sub = sub if isinstance(sub, dict) else {}
        parts = [_type_words(sub)]
        if key in required:
            parts.append("required")
        if sub.get("description"):
            parts.append(str(sub["description"]).strip())
        if "enum" in sub:
            parts.append("one of " + ", ".join(canonical(v) for v in sub["enum"]))
        nested = list(sub.get("properties") or {}) if depth < 1 and isinstance(sub.get("properties"), dict) else []
        if nested:
            # Keys of a nested object, not their details; a long list only in part (the demos show the rest in use).
            more = f" and {len(nested) - _NESTED_KEYS} more" if len(nested) > _NESTED_KEYS else ""
            parts.append("keys such as " + ", ".join(f'"{key}"' for key in nested[:_NESTED_KEYS]) + more)
        fields.append(f'"{key}" ({", ".join(p for p in parts if p)})')
    return fields


def _type_words(schema: dict) -> str:
    kinds = schema.get("type")
    if kinds is None and "anyOf" in schema:
        kinds = [s.get("type") for s in schema["anyOf"] if isinstance(s, dict) and s.get("type")]
    if isinstance(kinds, list):
        return " or ".join(kinds)
    return kinds or ""


def _json_type(value: Any) -> str:
    return {list: "array", str: "string", bool: "boolean", type(None): "null"}.get(type(value), "number")


def _short(message: str) -> str:
    message = " ".join(message.split())
    return message if len(message) <= _MESSAGE_CHARS else message[: _MESSAGE_CHARS - 3] + "..."


JSON = register_format(JsonFormat())
