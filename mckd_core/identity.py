"""What a node's result depends on, in a form cache keys can hold: the content of its inputs (not their location),
the source of the mckd code it runs, the versions of the packages that do its numerics, the weights it loads.

The rule (README "Caching and re-runs"): a key holds what changes a result and nothing that only changes where or how
it runs: absolute paths, run names, ports, thread counts, timeouts, retries, the python of a vLLM venv.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
from pathlib import Path
from typing import Any, Iterable

from pydantic import BaseModel

from .config import StudentConfig, TeacherConfig, VLLMConfig
from .data import ParquetRef
from .jobs import StudentRef

_CORE = Path(__file__).resolve().parent

#: Fields of a config or job that say where or how a node runs, never what it computes.
NOT_IN_KEY: dict[type, frozenset[str]] = {
    StudentConfig: frozenset({"isolate"}),
    TeacherConfig: frozenset(
        {
            "base_url",
            "api_key_env",
            "api_key_secret",
            "concurrency",
            "timeout_s",
            "max_retries",
            "batch_size",
            "max_prompt_tokens",  # a budget: it stops a run or not, it changes no answer
        }
    ),
    VLLMConfig: frozenset(
        {"python", "startup_timeout_s", "max_restarts", "env", "gpu_memory_utilization", "tensor_parallel_size"}
    ),
}
#: Task parameters that say where a node writes or which slots it runs in.
WHERE_PARAMETERS = frozenset({"out_dir", "cache_path", "slots", "name", "what"})

#: vLLM server arguments that say where or how it serves (their values follow them), never what it generates.
_SERVING_FLAGS = frozenset(
    {"--host", "--port", "--api-key", "--uvicorn-log-level", "--ssl-keyfile", "--ssl-certfile", "--root-path"}
    | {"--allowed-origins", "--served-model-name", "--max-log-len"}
)
_SERVING_SWITCHES = frozenset(
    {"--disable-log-requests", "--enable-log-requests", "--disable-log-stats", "--disable-uvicorn-access-log"}
)


def generating_args(args: Iterable[str]) -> list[str]:
    """`vllm.extra_args` less the arguments that only say where or how the server listens and logs: a port or a
    log level never changes an answer, a --seed or --quantization does."""
    kept, skip_value = [], False
    for arg in args:
        if skip_value and not arg.startswith("--"):
            skip_value = False
            continue
        skip_value = False
        flag = arg.split("=", 1)[0]
        if flag in _SERVING_SWITCHES:
            continue
        if flag in _SERVING_FLAGS:
            skip_value = "=" not in arg
            continue
        kept.append(arg)
    return kept


def key_view(value: Any) -> Any:
    """`value` as a key sees it: a Parquet file by its content hash, a student by its weights' hash, a config or job
    without its where/how fields (NOT_IN_KEY, WHERE_PARAMETERS)."""
    if isinstance(value, ParquetRef):
        return {"parquet": value.sha256, "rows": value.rows}
    if isinstance(value, StudentRef):
        return {"student": value.metrics.get("weights_sha256")}
    if isinstance(value, BaseModel):
        dropped = NOT_IN_KEY.get(type(value), frozenset()) | WHERE_PARAMETERS
        fields = {name: getattr(value, name) for name in type(value).model_fields if name not in dropped}
        if isinstance(value, (StudentConfig, TeacherConfig)):  # a local model by its files, not the folder's path
            fields["model"] = weights_identity(value.model, value.revision)
        if isinstance(value, VLLMConfig):
            fields["extra_args"] = generating_args(value.extra_args)
        return {type(value).__name__: {name: key_view(v) for name, v in fields.items()}}
    if isinstance(value, dict):
        return {str(k): key_view(v) for k, v in value.items() if k not in WHERE_PARAMETERS}
    if isinstance(value, (list, tuple)):
        return [key_view(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def _file_digest(path: str) -> str:
    stat = Path(path).stat()
    return _digest_of(path, stat.st_size, stat.st_mtime_ns)


@functools.cache  # per (path, size, mtime): an edited file is read again
def _digest_of(path: str, size: int, mtime_ns: int) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def source_hash(modules: Iterable[str]) -> str:
    """sha256 over the source files of mckd_core modules ("steps", "teacher", "formats.base"; a package means every
    file in it), so a node's key changes with the code it runs."""
    digest = hashlib.sha256()
    for module in sorted(modules):
        path = _CORE.joinpath(*module.split("."))
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path.with_suffix(".py")]
        for file in files:
            digest.update(str(file.relative_to(_CORE)).encode())
            digest.update(_file_digest(str(file)).encode())
    return digest.hexdigest()


@functools.cache
def package_versions(*names: str) -> dict[str, str | None]:
    """Installed versions of the packages that do a node's numerics (torch, transformers, ...)."""
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def weights_identity(model: str, revision: str | None = None) -> str:
    """What identifies the weights `model` names: a pip-shipped alias by its package's version, a local folder by the
    sha256 of its files (config, tokenizer, chat template, weights), a hub id by its name and revision (a commit
    when `revision` pins one)."""
    from .models import GGUF_ALIASES

    if model in GGUF_ALIASES:
        package = GGUF_ALIASES[model][0].replace("_", "-")
        return f"{model}:{package}=={package_versions(package)[package]}"
    path = Path(model).expanduser()
    if path.is_dir():
        return f"dir:{_folder_digest(path.resolve())}"
    # A hub id by name and revision, not by the snapshot a hub cache holds: that would change the key once the model
    # is downloaded, and differ between nodes with other caches. Pin a commit in `revision` to follow the weights.
    return f"{model}@{revision or 'main'}"


def _folder_digest(folder: Path) -> str:
    """sha256 of a model folder's files (weights, config, tokenizer, chat template: all change what it generates),
    remembered per (path, size, mtime) for this process: a 7B teacher's weights are read once per process, not once
    per key. A student dir's own card and metrics (README.md, metrics.json) are left out."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name not in ("README.md", "metrics.json"))
    stats = [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    return _digest_files(json.dumps(stats))


@functools.cache
def _digest_files(stats_json: str) -> str:
    digest = hashlib.sha256()
    for path, _, _ in json.loads(stats_json):
        digest.update(Path(path).name.encode())
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()
