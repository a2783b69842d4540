"""Integration tier: the MCKD flow with real pretrained models (SmolLM2-135M-Instruct from the pip wheel)
and with a real vLLM server as the teacher."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from flows import mckd_flow
from flows.cli import app
from mckd_core.atis import write_atis
from mckd_core.config import parse_config

pytestmark = pytest.mark.integration


def atis_config(tmp_path, runs_root, run_name, **sections):
    paths = write_atis(tmp_path / "data", n_labeled=8, n_unlabeled=6, n_test=4, seed=1, max_words=10)
    raw = {
        "run_name": run_name,
        "runs_root": str(runs_root),
        "data": {"task": "slots", **paths},
        "teacher": {"num_demos": 3, "max_new_tokens": 48, "batch_size": 8},
        "student": {"epochs": 1, "batch_size": 4, "max_target_tokens": 48, "max_dev": 2, "eval_batch_size": 8},
        "stages": {"num_stages": 2, "partitions": 2},
    }
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value}
    return parse_config(raw)


def test_real_models_end_to_end(tmp_path):
    cfg = atis_config(tmp_path, tmp_path / "runs", "real")
    report = mckd_flow(cfg)
    c = report["counts"]
    assert (c["labeled"], c["unlabeled"], c["test"]) == (8, 6, 4)
    assert c["teacher_valid"] + c["teacher_invalid"] == 6 and c["teacher_valid"] > 0
    assert report["teacher"]["test"] is not None and report["final_student"]["test"] is not None
    assert len(report["stages"]) == 1 and len(report["stages"][0]["students"]) == 2
    on_disk = json.loads((cfg.run_dir / "report.json").read_text())
    assert on_disk["final_student"]["dir"] == str(cfg.run_dir / "final" / "student")
    # The deliverable is a plain transformers model dir the CLI can use.
    pd.DataFrame({"input": ["show flights from boston to denver"]}).to_json(
        tmp_path / "new.jsonl", orient="records", lines=True
    )
    result = CliRunner().invoke(
        app, ["predict", str(cfg.run_dir / "final" / "student"), "--input", str(tmp_path / "new.jsonl")]
    )
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout.strip().splitlines()[0])
    assert {"raw", "label", "valid"} <= set(row)


def test_vllm_teacher_through_the_flow_and_per_row_cache(tmp_path, vllm_server, tiny_models):
    from tests_support import served_requests

    teacher = {
        "backend": "vllm-server",
        "base_url": vllm_server.base_url,
        "served_model_name": vllm_server.served_model_name,
        "model": "smollm2-135m-instruct",
        "timeout_s": 600,
    }
    student = {"model": tiny_models["t5"], "epochs": 1}
    runs = tmp_path / "runs"
    before = served_requests(vllm_server)
    first = mckd_flow(atis_config(tmp_path, runs, "vllm-a", teacher=teacher, student=student), return_state=True)
    assert first.is_completed()
    counts = json.loads((runs / "vllm-a" / "report.json").read_text())["counts"]
    asked = 6 + 4 + counts["dev"]  # unlabeled, test and (first_labels: auto) the held-out dev rows, one request each
    after_first = served_requests(vllm_server, at_least=before + asked)
    assert counts["dev"] >= 1 and after_first - before == asked
    # Another run over the same rows (new run dir, so Prefect's task cache does not apply): the per-row
    # teacher cache answers every row and the server sees no request.
    second = mckd_flow(atis_config(tmp_path, runs, "vllm-b", teacher=teacher, student=student), return_state=True)
    assert second.is_completed()
    assert served_requests(vllm_server) == after_first
