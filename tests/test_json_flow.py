"""A whole MCKD flow on the json format with a JSON Schema, started with a config dict (as a deployment or the UI
passes it): the schema-bound format reaches the teacher, the students (in their CPU slots) and the scoring."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pandas as pd
import pytest
from toy_data import PAIRS

from flows import mckd_flow
from mckd_core.formats import format_ref, get_format

SCHEMA = {
    "type": "object",
    "properties": {"out": {"enum": sorted(PAIRS.values())}},
    "required": ["out"],
    "additionalProperties": False,
}


class FakeTeacherEndpoint:
    """An OpenAI-compatible completions endpoint that knows the toy mapping and answers as a chatty LLM does (the
    object in a code fence, a trailing comma); it records every request body."""

    def __init__(self):
        self.requests: list[dict] = []
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                endpoint.requests.append(body)
                word = body["prompt"].rsplit("Input: ", 1)[1].split("\n")[0].strip()
                text = '```json\n{"out": "%s",}\n```' % PAIRS.get(word, "nothing")
                data = json.dumps({"choices": [{"text": text}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_port}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def json_run(tmp_path_factory, tiny_models):
    tmp = tmp_path_factory.mktemp("json-flow")
    endpoint = FakeTeacherEndpoint()
    words = list(PAIRS)
    labeled = pd.DataFrame(
        {"id": [f"l{i}" for i in range(8)], "input": words, "target": [json.dumps({"out": PAIRS[w]}) for w in words]}
    )  # not canonical: spaces
    # One input the teacher has no valid answer for ("nothing" is not in the schema's enum).
    unlabeled = pd.DataFrame({"id": [f"u{i}" for i in range(12)], "input": [words[i % 8] for i in range(11)] + ["moo"]})
    test = labeled.iloc[:4].assign(id=[f"t{i}" for i in range(4)])
    paths = {}
    for name, df in {"labeled": labeled, "unlabeled": unlabeled, "test": test}.items():
        paths[name] = str(tmp / f"{name}.parquet")
        df.to_parquet(paths[name])
    config = {
        "run_name": "json-toy",
        "runs_root": str(tmp / "runs"),
        "data": {"task": "json", "schema": SCHEMA, **paths},
        "teacher": {
            "backend": "vllm-server",
            "base_url": endpoint.base_url,
            "model": "toy",
            "chat": False,
            "num_demos": 2,
            "structured_outputs": True,
        },
        "student": {
            "model": tiny_models["t5"],
            "epochs": 4,
            "batch_size": 4,
            "learning_rate": 3e-3,
            "max_target_tokens": 24,
            "max_dev": 4,
        },
        "stages": {"num_stages": 2, "partitions": 2},
    }
    state = mckd_flow(config, return_state=True)
    yield tmp / "runs" / "json-toy", state, endpoint
    endpoint.server.shutdown()


def test_a_json_run_with_a_schema_completes_from_a_config_dict(json_run):
    run_dir, state, _ = json_run
    assert state.is_completed()
    report = json.loads((run_dir / "report.json").read_text())
    assert report["config"]["data"]["schema"] == SCHEMA
    counts = report["counts"]
    assert (counts["teacher_valid"], counts["teacher_invalid"], counts["teacher_repaired"]) == (11, 1, 11)
    assert report["teacher"]["test"]["f1"] == 100.0
    assert report["final_student"]["test"]["f1"] >= 0 and len(report["teacher"]["test"]["ci95"]) == 2


def test_every_node_of_a_json_run_used_the_schema_bound_format(json_run):
    run_dir, _, endpoint = json_run
    assert endpoint.requests and all(r["structured_outputs"] == {"json": SCHEMA} for r in endpoint.requests)
    assert all('"out" (required, one of "blue"' in r["prompt"] for r in endpoint.requests)
    ref = format_ref("json", SCHEMA)
    fmt = get_format(ref)
    # Students (trained in their CPU slots) record the format they selected with, schema included, for `mckd predict`.
    for card in [run_dir / "final/student/metrics.json", *run_dir.glob("stage-1/student-*/metrics.json")]:
        assert json.loads(card.read_text())["task"] == ref
    gold = pd.read_parquet(next((run_dir / "data").glob("labeled-*.parquet")))
    assert gold["target"].iloc[0] == json.dumps({"out": PAIRS[gold["input"].iloc[0]]}, separators=(",", ":"))
    for labels in [*run_dir.glob("teacher/labels-*.parquet"), *run_dir.glob("stage-1/labels-*.parquet")]:
        df = pd.read_parquet(labels)
        for label, valid in zip(df["label"], df["valid"]):
            assert not valid or fmt.target_error("", label) is None  # every valid label follows the schema
