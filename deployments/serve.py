"""Serve every mckd deployment from this process: no work pool, no worker.

    python deployments/serve.py [--limit N] [--only mckd-distill ...]

Reads the deployments (names, descriptions, tags, parameters, schedules, concurrency) from the repo's
prefect.yaml, so `prefect deploy --all` + a worker and this script expose the same deployments. Flow runs
execute in subprocesses of this process, from the repo root. Needs a Prefect API (`prefect server start`,
PREFECT_API_URL). Per-run job variables (e.g. `env.CUDA_VISIBLE_DEVICES` from dispatch_student) are not
applied by `serve`; use a work pool for GPU pinning.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
PREFECT_YAML = REPO / "prefect.yaml"


def deployment_specs(path: Path = PREFECT_YAML) -> list[dict]:
    return list((yaml.safe_load(path.read_text()) or {}).get("deployments") or [])


def schedules_of(spec: dict) -> list:
    """prefect.yaml schedule entries → prefect.schedules objects (cron / interval / rrule, `active` kept)."""
    from datetime import datetime, timedelta

    from prefect.schedules import Cron, Interval, RRule

    out = []
    for item in spec.get("schedules") or []:
        common = {
            "timezone": item.get("timezone"),
            "active": item.get("active", True),
            "parameters": item.get("parameters") or {},
            "slug": item.get("slug"),
        }
        if "cron" in item:
            out.append(Cron(item["cron"], day_or=item.get("day_or", True), **common))
        elif "interval" in item:
            anchor = item.get("anchor_date")
            anchor = datetime.fromisoformat(anchor) if isinstance(anchor, str) else anchor
            out.append(Interval(timedelta(seconds=float(item["interval"])), anchor, **common))
        elif "rrule" in item:
            out.append(RRule(item["rrule"], **common))
        else:
            raise ValueError(f"{spec['name']}: schedule {item} has no cron, interval or rrule")
    return out


def concurrency_of(spec: dict):
    from prefect.client.schemas.objects import ConcurrencyLimitConfig

    limit = spec.get("concurrency_limit")
    if isinstance(limit, dict):
        return ConcurrencyLimitConfig(**limit)
    return limit


def build_deployments(names: list[str] | None = None) -> list:
    """RunnerDeployments for the prefect.yaml entries (all, or those named)."""
    from prefect.flows import load_flow_from_entrypoint

    deployments = []
    for spec in deployment_specs():
        if names and spec["name"] not in names:
            continue
        flow = load_flow_from_entrypoint(str(REPO / spec["entrypoint"]))
        deployments.append(
            flow.to_deployment(
                name=spec["name"],
                description=spec.get("description"),
                tags=spec.get("tags"),
                parameters=spec.get("parameters") or {},
                schedules=schedules_of(spec) or None,
                concurrency_limit=concurrency_of(spec),
                enforce_parameter_schema=spec.get("enforce_parameter_schema", True),
            )
        )
    if names and len(deployments) != len(set(names)):
        known = [s["name"] for s in deployment_specs()]
        raise SystemExit(f"unknown deployment name(s) in {names}; known: {', '.join(known)}")
    return deployments


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=None, help="Most flow runs at a time (default: no limit).")
    parser.add_argument("--only", nargs="+", default=None, help="Serve only these deployment names.")
    args = parser.parse_args(argv)
    os.chdir(REPO)  # relative data paths in parameters resolve against the repo, as with the work pool
    sys.path.insert(0, str(REPO))
    from prefect import serve

    serve(*build_deployments(args.only), limit=args.limit)


if __name__ == "__main__":
    main()
