"""prefect.yaml is valid: known keys only (Prefect ignores typos), entrypoints load, parameters fit the flows,
schedules build. Fast: no server, nothing runs."""

from __future__ import annotations

import copy
from pathlib import Path

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]

TOP_KEYS = {"name", "prefect-version", "build", "push", "pull", "deployments"}
DEPLOYMENT_KEYS = {
    "name",
    "version",
    "version_type",
    "tags",
    "description",
    "entrypoint",
    "flow_name",
    "parameters",
    "work_pool",
    "schedule",
    "schedules",
    "paused",
    "concurrency_limit",
    "enforce_parameter_schema",
    "pull",
    "build",
    "push",
    "triggers",
}
SCHEDULE_KEYS = {
    "cron",
    "interval",
    "rrule",
    "timezone",
    "active",
    "anchor_date",
    "parameters",
    "slug",
    "day_or",
    "replaces",
}
WORK_POOL_KEYS = {"name", "work_queue_name", "job_variables"}
CONCURRENCY_KEYS = {"limit", "collision_strategy", "grace_period_seconds"}
PROCESS_JOB_VARIABLES = {"command", "env", "labels", "name", "stream_output", "working_dir"}
STEP_FUNCTIONS = {
    "prefect.deployments.steps.run_shell_script",
    "prefect.deployments.steps.set_working_directory",
    "prefect.deployments.steps.git_clone",
    "prefect.deployments.steps.pip_install_requirements",
}
EXPECTED = {
    "mckd-distill": "flows/mckd.py:mckd_flow",
    "mckd-redistill": "flows/redistill.py:redistill_flow",
    "mckd-evaluate": "flows/evaluate.py:evaluate_flow",
    "mckd-train-student": "flows/train_student.py:train_student_flow",
    "mckd-suggest": "flows/suggest.py:suggest_flow",
}


@pytest.fixture(scope="module")
def spec() -> dict:
    return yaml.safe_load((REPO / "prefect.yaml").read_text())


@pytest.fixture(scope="module")
def deployments(spec) -> dict[str, dict]:
    return {d["name"]: d for d in spec["deployments"]}


def _flow(entrypoint: str):
    from prefect.flows import load_flow_from_entrypoint

    return load_flow_from_entrypoint(str(REPO / entrypoint))


def test_allow_lists_are_known_to_this_prefect():
    """Our allow-lists never accept a key the installed Prefect does not know."""
    models = pytest.importorskip("prefect.cli.deploy._models")
    assert DEPLOYMENT_KEYS <= set(models.DeploymentConfig.model_fields)
    assert SCHEDULE_KEYS <= set(models.RawScheduleConfig.model_fields)
    assert WORK_POOL_KEYS <= set(models.WorkPoolConfig.model_fields)
    assert CONCURRENCY_KEYS <= set(models.ConcurrencyLimitSpec.model_fields)


def test_only_known_keys(spec, deployments):
    assert set(spec) <= TOP_KEYS, set(spec) - TOP_KEYS
    assert set(deployments) == set(EXPECTED)
    for name, d in deployments.items():
        assert set(d) <= DEPLOYMENT_KEYS, f"{name}: unknown keys {set(d) - DEPLOYMENT_KEYS}"
        assert set(d["work_pool"]) <= WORK_POOL_KEYS, f"{name}: work_pool keys {set(d['work_pool']) - WORK_POOL_KEYS}"
        assert set(d["work_pool"].get("job_variables") or {}) <= PROCESS_JOB_VARIABLES
        assert d["work_pool"]["name"] == "mckd-process"
        for item in d.get("schedules") or []:
            assert set(item) <= SCHEDULE_KEYS, f"{name}: schedule keys {set(item) - SCHEDULE_KEYS}"
        if isinstance(d.get("concurrency_limit"), dict):
            assert set(d["concurrency_limit"]) <= CONCURRENCY_KEYS
            assert d["concurrency_limit"].get("collision_strategy", "ENQUEUE") in {"ENQUEUE", "CANCEL_NEW"}


def test_steps_are_known_and_chain(spec):
    steps = [step for section in ("build", "push", "pull") for step in (spec.get(section) or [])]
    ids = set()
    for step in steps:
        ((function, args),) = step.items()
        assert function in STEP_FUNCTIONS, function
        ids.add(args.get("id"))
    # The pull step's directory comes from the build step's output: the placeholder must name a real step.
    (pull,) = spec["pull"]
    directory = pull["prefect.deployments.steps.set_working_directory"]["directory"]
    assert directory.replace(" ", "") == "{{repo.stdout}}" and "repo" in ids


def test_build_step_prints_the_repo_dir(spec, tmp_path, monkeypatch):
    """The build step's script (run at deploy time) yields the directory `prefect deploy` runs in, or $MCKD_REPO."""
    import asyncio

    from prefect.deployments.steps.utility import run_shell_script

    (step,) = spec["build"]
    args = {k: v for k, v in step["prefect.deployments.steps.run_shell_script"].items() if k != "id"}
    monkeypatch.chdir(REPO)
    monkeypatch.delenv("MCKD_REPO", raising=False)
    assert asyncio.run(run_shell_script(**args))["stdout"] == str(REPO.resolve())
    monkeypatch.setenv("MCKD_REPO", str(tmp_path))
    assert asyncio.run(run_shell_script(**args))["stdout"] == str(tmp_path)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_entrypoint_loads_and_parameters_fit(deployments, name):
    from prefect.utilities.callables import parameter_schema

    d = deployments[name]
    assert d["entrypoint"] == EXPECTED[name]
    flow = _flow(d["entrypoint"])
    assert flow.name == name  # deployment "<flow>/<name>" addresses are what README and dispatch_student use
    schema = parameter_schema(flow.fn).model_dump_for_openapi()
    params = d.get("parameters") or {}
    assert set(params) <= set(schema["properties"]), (
        f"{name}: unknown parameters {set(params) - set(schema['properties'])}"
    )
    # Required parameters may be left to the launcher (the UI form): validate what is given, as given.
    partial = copy.deepcopy(schema)
    partial["required"] = [p for p in schema.get("required", []) if p in params]
    jsonschema.validate(params, partial)
    if set(schema.get("required", [])) <= set(params):
        flow.validate_parameters(params)  # the full pydantic check (e.g. RunConfig's own validators)
    for item in d.get("schedules") or []:
        # A scheduled run gets the deployment's parameters + the schedule's: those must be complete.
        merged = {**params, **(item.get("parameters") or {})}
        missing = set(schema.get("required", [])) - set(merged)
        assert not missing, f"{name}: scheduled runs would lack required parameters {missing}"
        flow.validate_parameters(merged)


def test_ui_form_is_typed(deployments):
    """The launch form of mckd-distill is the RunConfig schema (typed fields, not one free JSON box)."""
    from prefect.utilities.callables import parameter_schema

    schema = parameter_schema(_flow(deployments["mckd-distill"]["entrypoint"]).fn).model_dump_for_openapi()
    assert schema["required"] == ["config"]
    defs = schema["definitions"]
    run_config = defs[schema["properties"]["config"]["$ref"].split("/")[-1]]
    assert {"data", "teacher", "student", "stages"} <= set(run_config["properties"])
    assert defs["StagesConfig"]["properties"]["num_stages"]["type"] == "integer"


def test_schedules_build(deployments):
    from prefect.client.schemas.schedules import CronSchedule, construct_schedule

    found = 0
    for d in deployments.values():
        for item in d.get("schedules") or []:
            sched = construct_schedule(
                **{k: item[k] for k in ("cron", "interval", "rrule", "timezone", "anchor_date") if k in item}
            )
            if "cron" in item:
                assert isinstance(sched, CronSchedule) and sched.cron == item["cron"]
            found += 1
    redistill = deployments["mckd-redistill"]["schedules"]
    assert found == len(redistill) == 1 and redistill[0]["active"] is False  # opt-in: off until the user enables it


def test_serve_builds_the_same_deployments():
    """deployments/serve.py turns the prefect.yaml entries into runner deployments (no API needed to build)."""
    import importlib.util

    module_spec = importlib.util.spec_from_file_location("mckd_serve", REPO / "deployments" / "serve.py")
    serve = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(serve)
    built = {d.name: d for d in serve.build_deployments()}
    assert set(built) == set(EXPECTED)
    (redistill,) = built["mckd-redistill"].schedules
    assert redistill.active is False and redistill.schedule.cron == "0 * * * *"
    assert built["mckd-redistill"].concurrency_limit == 1
    assert built["mckd-redistill"].parameters["watch_dir"] == "data/incoming"
