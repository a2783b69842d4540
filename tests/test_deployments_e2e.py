"""The Prefect product surface end to end, on tiny random-init models.

1. A throwaway `prefect server start` (own PREFECT_HOME, on a throwaway PostgreSQL: tests/prefect_server.py) → work
pool → `prefect deploy --all` →
   `prefect deployment run mckd-distill/mckd-distill --param config=...` → `prefect worker start --run-once`:
   the run completes and its artifacts (markdown `mckd-report`, table `mckd-stage-1`) exist; a Chromium
   screenshot of the run page when Chromium is installed.
2. `dispatch_student` through the `mckd-train-student` deployment (GPU pinning job variable included); a format
   plugin installed only in the worker's environment, used by such a dispatched run.
3. Re-distillation in-process: new rows → distilled (only they reach the teacher); none → "no new data";
   a failed run leaves the state untouched.
4. The evaluation flow on a saved model dir (metrics + markdown artifact `mckd-evaluate`).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sqlite3
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from prefect_server import REPO, Server
from toy_data import toy_config

pytestmark = pytest.mark.integration

sys.path.insert(0, str(REPO / "scripts"))


# ---- the session's PostgreSQL-backed Prefect server (tests/prefect_server.py) ---------------------------


def test_server_runs_on_postgresql(deployed, postgres):
    """The server fixture's database is the session's PostgreSQL: the deployments are rows there."""
    assert deployed.database == "postgresql"
    names = postgres.query("SELECT name FROM deployment ORDER BY name").split()
    assert names == ["mckd-distill", "mckd-evaluate", "mckd-redistill", "mckd-suggest", "mckd-train-student"]
    assert postgres.query("SELECT name FROM work_pool WHERE name = 'mckd-process'") == "mckd-process"
    print("\npostgres commands (README: A production server):\n  " + "\n  ".join(postgres.commands))


def _run_id(output: str) -> str:
    match = re.search(r"UUID:\s*([0-9a-f-]{36})", output)
    assert match, output
    return match.group(1)


async def _read_run(server: Server, flow_run_id: str):
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey, FlowRunFilter

    async with server.client() as client:
        run = await client.read_flow_run(flow_run_id)
        deployment = await client.read_deployment(run.deployment_id)
        children = await client.read_flow_runs(flow_run_filter=FlowRunFilter(parent_flow_run_id={"any_": [run.id]}))
        artifacts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["mckd-report", "mckd-stage-1"]))
        )
        deployments = await client.read_deployments()
    return run, deployment, children, artifacts, deployments


def test_deploy_and_run_from_the_work_pool(deployed, tiny_models, tmp_path_factory):
    server = deployed
    tmp = tmp_path_factory.mktemp("e2e-distill")
    config = toy_config(tmp, tiny_models, student={"epochs": 2}, stages={"num_stages": 2, "partitions": 2})
    out = server.cli(
        "deployment", "run", "mckd-distill/mckd-distill", "--param", f"config={json.dumps(config)}", name="run"
    ).stdout
    flow_run_id = _run_id(out)
    started = time.monotonic()
    server.run_once_worker("worker-distill")
    server.timings["distill_worker_s"] = time.monotonic() - started

    run, deployment, children, artifacts, deployments = asyncio.run(_read_run(server, flow_run_id))
    assert run.state.is_completed(), (
        f"{run.state.type}: {run.state.message}\n{(server.logs / 'worker-distill.log').read_text()[-4000:]}"
    )
    assert deployment.name == "mckd-distill" and deployment.work_pool_name == "mckd-process"
    assert deployment.pull_steps == [
        {"prefect.deployments.steps.set_working_directory": {"directory": str(REPO.resolve())}}
    ]
    assert deployment.parameter_openapi_schema["required"] == ["config"]  # the UI's typed launch form
    by_name = {d.name: d for d in deployments}
    redistill_schedules = by_name["mckd-redistill"].schedules
    assert len(redistill_schedules) == 1 and not redistill_schedules[0].active
    assert redistill_schedules[0].schedule.cron == "0 * * * *"
    by_key = {a.key: a for a in artifacts}
    assert by_key["mckd-report"].flow_run_id == run.id and by_key["mckd-report"].type == "markdown"
    assert by_key["mckd-stage-1"].type == "table"
    assert by_key["mckd-stage-1"].flow_run_id in {c.id for c in children}  # published by the stage subflow
    report = json.loads((Path(config["runs_root"]) / "toy" / "report.json").read_text())
    assert report["counts"]["unlabeled"] == 12 and [s["stage"] for s in report["stages"]] == [1]
    server.distill = {"run_id": flow_run_id, "config": config}


def test_ui_screenshot_of_the_run(deployed, tmp_path):
    """scripts/ui_screenshot.py renders the finished run's page in headless Chromium."""
    from ui_screenshot import find_chromium, flow_run_url, screenshot

    if not deployed.distill:
        pytest.skip("needs the run of test_deploy_and_run_from_the_work_pool")
    if find_chromium() is None:
        pytest.skip("no Chromium: UI screenshot not taken (apt-get install -y chromium)")
    started = time.monotonic()
    png = screenshot(
        flow_run_url(deployed.url, deployed.distill["run_id"]),
        tmp_path / "flow-run.png",
        budget_ms=15000,
        timeout_s=180,
    )
    deployed.timings["screenshot_s"] = time.monotonic() - started
    _assert_rendered(png)


def _assert_rendered(png: Path) -> None:
    """A real page, not a blank or error screen: a sizeable PNG of the window size with many colours."""
    from PIL import Image

    assert png.stat().st_size > 20_000, png.stat().st_size
    with Image.open(png) as img:
        assert img.size == (1400, 1000)
        colours = img.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is None or len(colours) > 50, f"{len(colours)} colours: a blank page?"


def test_dispatch_student_through_the_deployment(deployed, tmp_path_factory):
    """flows.train_student.dispatch_student → mckd-train-student run on the pool → the trained StudentRef."""
    from flows.train_student import heartbeat_seconds
    from mckd_core.config import StudentConfig
    from mckd_core.data import ParquetRef
    from mckd_core.jobs import StudentJob

    server = deployed
    if not server.distill:
        pytest.skip("needs the run of test_deploy_and_run_from_the_work_pool")
    run_dir = Path(server.distill["config"]["runs_root"]) / "toy"

    def ref(pattern: str) -> ParquetRef:
        return ParquetRef.of(next(run_dir.glob(pattern)))

    labels, dev = ref("teacher/labels-*.parquet"), ref("data/labeled-*.parquet")
    out_dir = str(tmp_path_factory.mktemp("e2e-dispatch") / "student")
    student = StudentConfig(**{**server.distill["config"]["student"], "epochs": 1, "min_valid_rows": 1})
    job = StudentJob(
        name="dispatch/student-0", task="text", student=student, seed=7, labels=labels, dev=dev, out_dir=out_dir
    )
    started = time.monotonic()
    student_ref, flow_run = _dispatch_on_a_worker(server, job, "worker-dispatch")
    server.timings["dispatch_s"] = time.monotonic() - started
    assert student_ref.dir == out_dir
    # metrics.json, with what train_student records about the rows (gold_rows, dev_rows, dev_overlap).
    assert student_ref.metrics == json.loads((Path(out_dir) / "metrics.json").read_text())
    assert {"gold_rows", "dev_rows", "dev_overlap"} <= student_ref.metrics.keys()
    assert student_ref.metrics["train_rows"] == int(labels.read()["valid"].sum())
    flow_run, from_result = asyncio.run(_finished_run(server, flow_run.id))
    assert flow_run.state.is_completed() and flow_run.name == "dispatch/student-0"
    # The GPU pin, and the heartbeat period dispatch_student's crash watchdog expects (this process's setting).
    assert flow_run.job_variables == {
        "env": {"CUDA_VISIBLE_DEVICES": "0", "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(heartbeat_seconds())}
    }
    assert from_result == student_ref  # the run's persisted result is what dispatch_student returned
    print("\ne2e timings (s): " + ", ".join(f"{k}={v:.1f}" for k, v in server.timings.items()))


def _dispatch_on_a_worker(server: Server, job, worker: str, env: dict | None = None):
    """`dispatch_student(job)` from a thread while a `--run-once` worker (with `env` added) runs it: the StudentRef it
    returned, and the flow run."""
    from flows.train_student import dispatch_student

    result: dict = {}

    def dispatch():
        from prefect.settings import PREFECT_API_URL, temporary_settings

        try:
            with temporary_settings(updates={PREFECT_API_URL: server.api}):
                result["ref"] = dispatch_student(job, gpu="0", poll_interval=1, timeout=600)
        except BaseException as exc:  # surfaced by the main thread
            result["error"] = exc

    thread = threading.Thread(target=dispatch, daemon=True)
    thread.start()
    flow_run = asyncio.run(_wait_for_run(server, "mckd-train-student"))
    server.run_once_worker(worker, env=env)
    thread.join(timeout=120)
    assert not thread.is_alive(), "dispatch_student did not return after the worker finished"
    if "error" in result:
        raise AssertionError(f"{(server.logs / f'{worker}.log').read_text()[-4000:]}") from result["error"]
    return result["ref"], flow_run


def test_a_student_dispatched_to_a_worker_uses_a_format_installed_only_there(deployed, tiny_models, tmp_path_factory):
    """The example plugin installed in the worker's environment alone (an entry point `kv` in a site dir on its
    PYTHONPATH): the mckd-train-student run looks the format up itself, checks the labels and selects its epoch with
    the plugin's metric; the dispatching process cannot even find the format."""
    from mckd_core.config import StudentConfig
    from mckd_core.data import write_parquet
    from mckd_core.errors import MckdInputError
    from mckd_core.formats import get_format
    from mckd_core.jobs import StudentJob

    tmp = tmp_path_factory.mktemp("e2e-plugin")
    site = tmp / "site"
    dist = site / "mckd_format_example-0.1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: mckd-format-example\nVersion: 0.1.0\n")
    (dist / "entry_points.txt").write_text("[mckd.formats]\nkv = mckd_format_example:KeyValueFormat\n")
    with pytest.raises(MckdInputError):
        get_format("kv")  # not here: only the worker has it

    cities = ["boston", "denver", "dallas", "austin", "miami", "reno"]
    inputs = [f"to {c} on day {i}" for i, c in enumerate(cities)]
    targets = [f"city={c};day={i}" for i, c in enumerate(cities)]
    raw = targets[:-1] + ["no fields here"]  # one teacher output the plugin finds invalid
    labels = pd.DataFrame(
        {
            "id": [f"u{i}" for i in range(6)],
            "input": inputs,
            "label": targets[:-1] + [None],
            "raw": raw,
            "valid": [True] * 5 + [False],
            "error": [None] * 5 + ["not key=value"],
            "source": "teacher",
            "stage": 0,
        }
    )
    dev = pd.DataFrame({"id": ["d0", "d1"], "input": inputs[:2], "target": targets[:2]})
    student = StudentConfig(
        model=tiny_models["t5"], epochs=2, batch_size=3, learning_rate=3e-3, max_target_tokens=16, min_valid_rows=1
    )
    job = StudentJob(
        name="dispatch/kv-student",
        task="kv",
        student=student,
        seed=3,
        labels=write_parquet(labels, tmp / "data", "labels"),
        dev=write_parquet(dev, tmp / "data", "dev"),
        out_dir=str(tmp / "student"),
    )
    example = REPO / "examples" / "mckd-format-example"
    path = os.pathsep.join(p for p in (str(site), str(example), deployed.env.get("PYTHONPATH")) if p)
    ref, _ = _dispatch_on_a_worker(server=deployed, job=job, worker="worker-plugin", env={"PYTHONPATH": path})
    assert ref.metrics["task"] == "kv" and ref.metrics["train_rows"] == 5  # the invalid teacher row left out
    assert len(ref.metrics["history"]) == 2 and all("dev_f1" in epoch for epoch in ref.metrics["history"])


async def _finished_run(server: Server, flow_run_id):
    async with server.client() as client:
        run = await client.read_flow_run(flow_run_id)
        return run, await run.state.aresult()


async def _wait_for_run(server: Server, flow_name: str, timeout: float = 120):
    """The deployment's scheduled run (runs other tests on the session's server left are all final)."""
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterName,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    deadline = time.monotonic() + timeout
    scheduled = FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED])))
    async with server.client() as client:
        while time.monotonic() < deadline:
            runs = await client.read_flow_runs(
                deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[flow_name])),
                flow_run_filter=scheduled,
            )
            if runs:
                return runs[0]
            await asyncio.sleep(0.5)
    raise AssertionError(f"no {flow_name} flow run was created within {timeout}s")


# ---- re-distillation (in-process, under the session's test harness) -------------------------------------


def _cache_rows(runs_root: Path) -> int:
    path = runs_root / ".teacher-cache.sqlite"
    if not path.exists():
        return 0
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT COUNT(*) FROM responses").fetchone()[0]


def test_redistill_sends_only_new_rows(tiny_models, tmp_path_factory):
    from flows.redistill import redistill_flow
    from mckd_core.config import parse_config

    tmp = tmp_path_factory.mktemp("redistill")
    raw = toy_config(
        tmp, tiny_models, student={"epochs": 2}, stages={"num_stages": 1, "partitions": 2}, run_name="redistill"
    )
    cfg = parse_config(raw)
    runs_root, watch = Path(raw["runs_root"]), tmp / "incoming"
    watch.mkdir()
    state_path = cfg.run_dir / "redistill-state.json"
    # First drop: 4 rows without ids (content-hash ids), one of them twice (deduplicated).
    first = ["cat sun red", "hot up big", "day yes cat", "moon sun day"]
    pd.DataFrame({"input": first + first[:1]}).to_json(watch / "a.jsonl", orient="records", lines=True)

    t0 = time.monotonic()
    out1 = redistill_flow(cfg, str(watch))
    t_first = time.monotonic() - t0
    # The seed set (data.unlabeled) + the folder, one row per distinct input: the toy seed set repeats 4 of its 12
    # inputs under other ids (u8-u11), and a.jsonl its first row.
    assert out1["status"] == "distilled" and out1["new_rows"] == 8 + 4
    assert out1["duplicates"]["count"] == 5 and {"file": str(watch / "a.jsonl"), "row": 4} in [
        {k: d[k] for k in ("file", "row")} for d in out1["duplicates"]["rows"]
    ]
    assert out1["counts"]["unlabeled"] == 12 and out1["final_student"]["dir"]
    incoming = pd.read_parquet(out1["unlabeled"])
    assert Path(out1["unlabeled"]).parent == cfg.run_dir / "incoming"
    assert incoming["id"].is_unique and len(incoming) == 12
    state1 = json.loads(state_path.read_text())
    assert state1["rows"] == 12 and state1["unlabeled"]["path"] == out1["unlabeled"]
    cache_after_first = _cache_rows(runs_root)

    # Second drop: 3 new rows with ids + one row whose id the seed set already has (kept under its content-hash id).
    added = ["red red hot", "big small up", "night yes no", "reused id"]
    pd.DataFrame({"id": ["n1", "n2", "n3", "u0"], "input": added}).to_parquet(watch / "b.parquet")
    (watch / ".partial.parquet").write_bytes(b"not parquet yet")  # hidden / in-flight files are ignored

    # A run that fails (a student model that does not exist) must not record these rows as used.
    bad = parse_config({**raw, "student": {**raw["student"], "model": str(tmp / "no-such-model")}})
    state = redistill_flow(bad, str(watch), return_state=True)
    assert state.is_failed()
    assert json.loads(state_path.read_text()) == state1

    t0 = time.monotonic()
    out2 = redistill_flow(cfg, str(watch))
    t_second = time.monotonic() - t0
    assert out2["status"] == "distilled" and out2["new_rows"] == 4
    assert out2["counts"]["unlabeled"] == 16 and out2["reassigned_ids"]["rows"][0]["id"] == "u0"
    assert _cache_rows(runs_root) - cache_after_first == 4  # exactly the new rows reached the teacher
    assert json.loads(state_path.read_text())["rows"] == 16

    t0 = time.monotonic()
    out3 = redistill_flow(cfg, str(watch))
    t_none = time.monotonic() - t0
    assert out3["status"] == "no new data" and out3["new_rows"] == 0 and out3["unlabeled_rows"] == 16
    assert _cache_rows(runs_root) - cache_after_first == 4
    assert t_none < 30, t_none
    print(f"\nredistill timings: first={t_first:.1f}s second={t_second:.1f}s no-new-data={t_none:.1f}s")


# ---- evaluation flow (in-process) -----------------------------------------------------------------------


def test_evaluate_flow_scores_a_student_dir(tiny_models, tmp_path_factory):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
    from toy_data import write_toy_sets

    from flows.evaluate import evaluate_flow
    from mckd_core.errors import MckdInputError

    paths = write_toy_sets(tmp_path_factory.mktemp("evaluate"))
    state = evaluate_flow(
        tiny_models["teacher"], paths["test"], "text", batch_size=4, max_new_tokens=6, return_state=True
    )
    metrics = state.result()
    assert {"f1", "precision", "recall", "exact_match", "invalid"} <= set(metrics)
    assert 0.0 <= metrics["f1"] <= 100.0

    async def artifacts():
        async with get_client() as client:
            return await client.read_artifacts(
                artifact_filter=ArtifactFilter(
                    flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])
                )
            )

    (artifact,) = [a for a in asyncio.run(artifacts()) if a.key == "mckd-evaluate"]
    assert artifact.type == "markdown" and "| f1 |" in artifact.data
    with pytest.raises(MckdInputError, match="not a saved student"):
        evaluate_flow(str(tmp_path_factory.mktemp("empty")), paths["test"], "text")
