"""The interface every task format implements, and how a format is found by name.

A name (`data.task`, `mckd eval --task`, a student's model card) is resolved the same way in every process, lazily,
inside `get_format`: (a) the built-ins (and formats a module registered with `register_format`), (b) the
`mckd.formats` entry-point group of installed packages, (c) a `module:attribute` import string (a module on the
Python path). So a CPU-slot child, a worker or a dispatched student run finds a plugin without importing it first.

A format bound to a JSON Schema travels as a *format reference*: `format_ref(name, schema)`, a JSON string
`{"format": name, "schema": {...}}` that `get_format` resolves to `get_format(name).with_schema(schema)`. It is what
the flow hands every node (and what a student's model card records), so the schema is part of every cache key.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import inspect
import json
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Protocol, Sequence

from ..errors import MckdInputError

#: Entry-point group of installed format plugins: `[project.entry-points."mckd.formats"] kv = "mypkg:KV"`.
ENTRY_POINT_GROUP = "mckd.formats"
#: What an object needs to be used as a task format.
REQUIRED = ("name", "instruction", "check", "target_error", "metrics")


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
    # description: one line for `mckd formats` (default: the first line of the class docstring).
    # regex: a regular expression every valid output matches, for structured outputs (teacher.structured_outputs).
    # with_schema(schema) -> TaskFormat: the format bound to a JSON Schema (data.schema); formats without it take none.
    # extract_output(generation) -> str: the part of a teacher's generation that check() reads (default: the first
    #   non-empty line, mckd_core.prompting.extract_output).
    # canonical_target(target) -> str: the form a valid gold target is stored and trained in (default: as written).


_REGISTRY: dict[str, TaskFormat] = {}


def register_format(fmt: TaskFormat) -> TaskFormat:
    """Make `fmt` available by name in this process (the built-ins call this at import time).

    A format of your own is best named by an entry point or an import string (see the module docstring): those are
    found in every process, where a registration happens only in processes that import your module.
    """
    _REGISTRY[fmt.name] = fmt
    return fmt


def format_ref(name: str, schema: dict | None = None) -> str:
    """The reference of format `name` bound to `schema` (just `name` without one); `get_format` resolves it."""
    if schema is None:
        return name
    return json.dumps({"format": name, "schema": schema}, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def split_ref(ref: str) -> tuple[str, dict | None]:
    """(format name, schema or None) of a format reference."""
    if ref.startswith("{"):
        try:
            parsed = json.loads(ref)
            return parsed["format"], parsed["schema"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise MckdInputError(
                f'{ref[:80]!r} is not a format reference ({{"format": name, "schema": {{...}}}})'
            ) from None
    return ref, None


def get_format(ref: str) -> TaskFormat:
    """The format a name, an entry point, an import string or a format reference (`format_ref`) stands for.

    Raises MckdInputError (one line) for an unknown name, naming the built-in and installed formats.
    """
    return _resolve(ref)


@functools.lru_cache(maxsize=64)
def _resolve(ref: str) -> TaskFormat:
    name, schema = split_ref(ref)
    fmt = _find(name)
    if schema is None:
        return fmt
    if not hasattr(fmt, "with_schema"):
        raise MckdInputError(
            f"data.schema: the {name!r} format takes no JSON Schema (use data.task: json, or drop data.schema)"
        )
    return fmt.with_schema(schema)


def _find(name: str) -> TaskFormat:
    _load_builtins()
    if name in _REGISTRY:
        return _REGISTRY[name]
    installed = _entry_points()
    if name in installed:
        return _as_format(
            installed[name].load(), f"entry point {name!r} ({installed[name].value}) of {ENTRY_POINT_GROUP}"
        )
    if ":" in name:
        return _import_format(name)
    raise MckdInputError(
        f"unknown task format {name!r}; built-in: {', '.join(sorted(_REGISTRY))}; installed "
        f"({ENTRY_POINT_GROUP} entry points): {', '.join(sorted(installed)) or 'none'}; or name your own "
        "as module:attribute (a TaskFormat in a module on the Python path)"
    )


def _import_format(name: str) -> TaskFormat:
    module_name, _, attribute = name.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise MckdInputError(
            f"task format {name!r}: cannot import module {module_name!r} ({exc}); put it on the Python "
            "path (PYTHONPATH, or pip install its package) of every process that runs mckd"
        ) from None
    obj = module
    for part in attribute.split("."):
        if not hasattr(obj, part):
            raise MckdInputError(f"task format {name!r}: module {module_name!r} has no attribute {attribute!r}")
        obj = getattr(obj, part)
    return _as_format(obj, f"import string {name!r}")


def _as_format(obj, where: str) -> TaskFormat:
    """A TaskFormat instance as it is, or what a class / factory returns."""
    if inspect.isclass(obj) or (callable(obj) and not all(hasattr(obj, a) for a in REQUIRED)):
        try:
            obj = obj()
        except Exception as exc:
            raise MckdInputError(
                f"{where} is not a task format: calling it (a class or factory takes no arguments) "
                f"failed: {type(exc).__name__}: {exc}"
            ) from None
    missing = [a for a in REQUIRED if not hasattr(obj, a)]
    if missing:
        raise MckdInputError(
            f"{where} is not a task format: it lacks {', '.join(missing)} (see README, 'Your own task')"
        )
    return obj


def _entry_points() -> dict:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def _load_builtins() -> None:
    from . import constituency, json_format, slots, text  # noqa: F401  (each registers its format)


def format_names() -> list[str]:
    """The built-in formats and those of installed packages (import strings are not listed: any module may be one)."""
    _load_builtins()
    return sorted(set(_REGISTRY) | set(_entry_points()))


def describe(fmt: TaskFormat) -> str:
    """One line about a format: its own `description`, else the first line of its class docstring (a subclass of
    another format without a description of its own is described by its docstring, not its parent's description)."""
    own = vars(fmt).get("description") if hasattr(fmt, "__dict__") else None
    text = own or vars(type(fmt)).get("description") or type(fmt).__doc__ or getattr(fmt, "description", None) or ""
    return text.strip().splitlines()[0] if text.strip() else ""


def available_formats() -> list[tuple[str, str, str]]:
    """(name, where from, description) of every built-in and installed format; a plugin that fails to load says why."""
    _load_builtins()
    rows = [(name, "built-in", describe(fmt)) for name, fmt in sorted(_REGISTRY.items())]
    for name, ep in sorted(_entry_points().items()):
        if name in _REGISTRY:
            continue
        try:
            rows.append((name, f"entry point {ep.value}", describe(get_format(name))))
        except Exception as exc:  # a broken plugin must not hide the others
            rows.append((name, f"entry point {ep.value}", f"cannot load: {type(exc).__name__}: {exc}"))
    return rows


def format_source_hash(ref: str) -> str:
    """sha256 of the source of the module(s) defining a format, for cache keys: a changed metric or check re-scores.

    Built-ins: their module plus this file (the lookup and protocol) and the modules they import from the package
    (slots' `prf`, `stats`); plugins: the module of the format's class (an import string's module too).
    """
    name, _ = split_ref(ref)
    fmt = _find(name)
    modules = {inspect.getmodule(type(fmt)), inspect.getmodule(_find)}
    if ":" in name:
        modules.add(importlib.import_module(name.partition(":")[0]))
    package = __name__.rpartition(".")[0].rpartition(".")[0]  # mckd_core
    for module in list(modules):
        if module is not None and module.__name__.startswith(package + "."):
            # The mckd modules it imports helpers from (slots' prf, stats' micro_f1) change its numbers too.
            modules |= {
                m
                for m in (inspect.getmodule(v) for v in vars(module).values())
                if m is not None and m.__name__.startswith(package + ".")
            }
    digest = hashlib.sha256()
    for path in sorted({_source_path(m) for m in modules if m is not None} - {None}):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _source_path(module) -> Path | None:
    try:
        source = inspect.getsourcefile(module)
    except TypeError:  # a built-in module
        return None
    return Path(source) if source else None
