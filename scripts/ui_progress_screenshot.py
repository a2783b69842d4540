#!/usr/bin/env python
"""README figure: the Prefect UI while students train, taken twice a few seconds apart so the progress rings on
the students' task bars visibly advance.

Starts a toy mckd run (tests' tiny random-init models; students trained for many epochs so they take a minute)
against the Prefect server at --url, waits until both stage-1 students are between 10 % and 90 %, and saves the
stage's run graph at two moments, with the progress the API held at each, stacked into one PNG.

    PREFECT_HOME=/tmp/ph .venv/bin/prefect server start --port 4200 &
    pip install playwright pillow   # in any venv; Chromium comes from the system (apt-get install -y chromium)
    python scripts/ui_progress_screenshot.py --url http://127.0.0.1:4200 --out docs/ui-student-progress.png
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TOY_RUN = """
import sys
from pathlib import Path
sys.path.insert(0, {tests!r})
from tiny_models import make_tiny_llama, make_tiny_t5
from toy_data import toy_config
from flows.mckd import mckd_flow

if __name__ == "__main__":
    tmp = Path({tmp!r})
    models = {{"t5": make_tiny_t5(tmp / "t5"), "teacher": make_tiny_llama(tmp / "llama")}}
    student = {{"epochs": 120, "batch_size": 1, "max_dev": 4, "min_valid_rows": 1}}
    mckd_flow(toy_config(tmp, models, student=student, stages={{"num_stages": 2, "partitions": 2}}))
"""


def progress(api: str, old: set = frozenset()) -> list[dict]:
    body = json.dumps({"artifacts": {"type": {"any_": ["progress"]}}}).encode()
    request = urllib.request.Request(f"{api}/artifacts/filter", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request) as response:
        return [
            a for a in json.load(response) if a["description"].startswith("Training stage-1/") and a["id"] not in old
        ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:4200")
    parser.add_argument("--out", default=str(REPO / "docs" / "ui-student-progress.png"))
    parser.add_argument("--python", default=str(REPO / ".venv" / "bin" / "python"), help="mckd's interpreter")
    parser.add_argument("--gap", type=float, default=15.0, help="seconds between the two shots")
    args = parser.parse_args()
    from PIL import Image, ImageDraw, ImageFont
    from playwright.sync_api import sync_playwright

    api = f"{args.url.rstrip('/')}/api"
    tmp = tempfile.mkdtemp(prefix="mckd-ui-progress-")
    env = {**os.environ, "PREFECT_API_URL": api, "PYTHONPATH": str(REPO)}
    code = TOY_RUN.format(tests=str(REPO / "tests"), tmp=tmp)
    old = {a["id"] for a in progress(api)}  # earlier runs' students on this server
    run = subprocess.Popen(
        [args.python, "-c", code],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 600
        while not (len(bars := progress(api, old)) == 2 and all(10 < float(a["data"]) < 60 for a in bars)):
            if time.monotonic() > deadline or run.poll() is not None:
                raise SystemExit("the toy run's students were never both between 10 % and 60 %")
            time.sleep(0.5)
        shots = []
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000}, device_scale_factor=2)
            page.goto(f"{args.url.rstrip('/')}/runs/flow-run/{bars[0]['flow_run_id']}")
            page.wait_for_timeout(4000)
            for i in range(2):
                at = sorted((a["description"].split()[-1], float(a["data"])) for a in progress(api, old))
                png = Path(tmp) / f"shot-{i}.png"
                page.screenshot(path=str(png), clip={"x": 270, "y": 0, "width": 1130, "height": 500})
                shots.append((png, time.strftime("%H:%M:%S"), at))
                page.wait_for_timeout(args.gap * 1000)
            browser.close()
    finally:
        run.terminate()
    images = [Image.open(png) for png, _, _ in shots]
    width, band = images[0].width, 60
    figure = Image.new("RGB", (width, sum(im.height + band for im in images)), (24, 24, 27))
    draw, y = ImageDraw.Draw(figure), 0
    for image, (_, clock, at) in zip(images, shots):
        caption = f"{clock}   " + "   ".join(f"{name}: {value:.0f} %" for name, value in at) + "   (API)"
        draw.text((20, y + 16), caption, fill=(230, 230, 230), font=ImageFont.load_default(size=28))
        figure.paste(image, (0, y + band))
        y += image.height + band
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    figure.save(args.out, optimize=True)
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
