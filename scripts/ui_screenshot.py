#!/usr/bin/env python
"""Headless-Chromium screenshot of a flow run's page in the Prefect UI (state, DAG timeline with the
artifact badges, logs).

    python scripts/ui_screenshot.py http://127.0.0.1:4200 <flow-run-id> --out run.png

Needs Chromium (Debian/Ubuntu: `apt-get install -y chromium`; or set CHROMIUM=/path/to/chrome). The UI is
a single-page app: `--virtual-time-budget` lets it fetch the run from the API before the shot is taken.
Exit status 0 and the PNG path on stdout when a PNG was written; 1 with the reason otherwise.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def find_chromium() -> str | None:
    explicit = os.environ.get("CHROMIUM")
    if explicit:
        return explicit if Path(explicit).exists() else None
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None


def flow_run_url(base_url: str, flow_run_id: str) -> str:
    """The run page. (A `?tab=Artifacts` query is reset by the UI while the run loads, and the artifact
    pages render only their header headless, so the run page is the one worth a screenshot.)"""
    return f"{base_url.rstrip('/')}/runs/flow-run/{flow_run_id}"


def screenshot(
    url: str,
    out: str | Path,
    *,
    width: int = 1400,
    height: int = 1000,
    budget_ms: int = 15000,
    timeout_s: float = 120,
    chromium: str | None = None,
) -> Path:
    """Save a PNG of `url`; raises RuntimeError (with Chromium's stderr tail) when no PNG comes out."""
    binary = chromium or find_chromium()
    if not binary:
        raise RuntimeError("no Chromium found: apt-get install -y chromium (or set CHROMIUM=/path/to/chrome)")
    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="mckd-chromium-") as profile:
        cmd = [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            f"--virtual-time-budget={budget_ms}",
            f"--window-size={width},{height}",
            f"--screenshot={out}",
            url,
        ]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"Chromium did not finish within {timeout_s}s for {url}") from None
    if not out.is_file() or out.read_bytes()[:8] != PNG_MAGIC:
        tail = "\n".join((proc.stderr or "").strip().splitlines()[-15:])
        raise RuntimeError(f"Chromium wrote no PNG for {url} (exit {proc.returncode}):\n{tail}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Screenshot a Prefect flow run page with headless Chromium.")
    parser.add_argument("url", help="Prefect server URL, e.g. http://127.0.0.1:4200")
    parser.add_argument("flow_run_id", help="The flow run to show")
    parser.add_argument("--out", default="flow-run.png", help="PNG to write (default: flow-run.png)")
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=1000)
    parser.add_argument("--budget-ms", type=int, default=15000, help="Chromium --virtual-time-budget")
    parser.add_argument("--timeout", type=float, default=120)
    args = parser.parse_args(argv)
    try:
        path = screenshot(
            flow_run_url(args.url, args.flow_run_id),
            args.out,
            width=args.width,
            height=args.height,
            budget_ms=args.budget_ms,
            timeout_s=args.timeout,
        )
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
