#!/usr/bin/env bash
# README quick start, command 1: set up (idempotent), then run the MCKD demo on CPU (~11 min on 2 cores with native bf16, longer without).
# Extra arguments go to `mckd demo` (see `mckd demo --help`).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh"
cd "$root"
exec .venv/bin/mckd demo "$@"
