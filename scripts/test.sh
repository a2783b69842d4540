#!/usr/bin/env bash
# README quick start, command 2: set up (idempotent), then run every test tier: the fast tier, then the
# integration tier (real SmolLM2 teacher/students, a real vLLM CPU server). Extra arguments go to pytest.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh"
cd "$root"
MCKD_VLLM_PYTHON="$(bash scripts/setup_vllm_cpu.sh)"
# Headless Chromium for the UI screenshot test (Debian package; needs root, as on CI).
if ! command -v chromium >/dev/null 2>&1 && [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >&2
fi
export MCKD_VLLM_PYTHON DO_NOT_TRACK=1 PREFECT_SERVER_ANALYTICS_ENABLED=false
exec .venv/bin/pytest -m "integration or not integration" "$@"
