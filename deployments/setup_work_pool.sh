#!/usr/bin/env bash
# Create the process work pool that prefect.yaml's deployments use (idempotent), then say how to start a
# worker. Needs a reachable Prefect API: `prefect server start` in another shell, or PREFECT_API_URL set.
#   bash deployments/setup_work_pool.sh [POOL]          (default pool: mckd-process)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
pool="${1:-${MCKD_WORK_POOL:-mckd-process}}"
if [[ -n "${PREFECT:-}" ]]; then prefect_cmd="$PREFECT"
elif [[ -x "$root/.venv/bin/prefect" ]]; then prefect_cmd="$root/.venv/bin/prefect"
else prefect_cmd="$(command -v prefect || true)"; fi
if [[ -z "$prefect_cmd" ]]; then
  echo "error: no prefect command (run scripts/setup.sh first, or set PREFECT=/path/to/prefect)" >&2
  exit 1
fi

if "$prefect_cmd" work-pool inspect "$pool" >/dev/null 2>&1; then
  echo "work pool '$pool' already exists"
else
  "$prefect_cmd" work-pool create "$pool" --type process
fi

rel="${prefect_cmd#"$root"/}"
cat <<MSG

Next, from the repo root ($root):
  $rel --no-prompt deploy --all             # register the deployments of prefect.yaml
  $rel worker start --pool $pool     # run what you launch (UI, schedules, dispatch_student)
A worker runs flows with its own Python, so start it from the venv that has mckd installed.
MSG
