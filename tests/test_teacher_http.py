"""OpenAITeacher against a scripted loopback HTTP server: payloads, retries, permanent errors, secrets."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from mckd_core.config import TeacherConfig
from mckd_core.errors import MckdInputError, TeacherTransportError
from mckd_core.failures import is_transient
from mckd_core.prompting import Demo, build_prompt
from mckd_core.teacher import GenParams
from mckd_core.teacher.http import COMPLETION_STOP, OpenAITeacher, TeacherRequestError, openai_teacher_from_config
from mckd_core.teacher.vllm_server import free_port, parse_prometheus

PROMPT = build_prompt("Map each word.", [Demo("d1", "cat", "dog")], "sun")


def completion(text: str) -> dict:
    return {"choices": [{"message": {"role": "assistant", "content": text}, "text": text}]}


class FakeEndpoint:
    """Answers with `replies` in order (the last one repeats) and records every request."""

    def __init__(self, replies, delay_s: float = 0.0):
        self.replies = list(replies)
        self.delay_s = delay_s
        self.requests: list[dict] = []
        self._lock = threading.Lock()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with endpoint._lock:
                    endpoint.requests.append({"path": self.path, "headers": dict(self.headers), "json": body})
                    status, reply = endpoint.replies.pop(0) if len(endpoint.replies) > 1 else endpoint.replies[0]
                time.sleep(endpoint.delay_s)
                data = json.dumps(reply(body) if callable(reply) else reply).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out first (the timeout test)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.server.server_port}/v1"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def endpoint_factory():
    opened = []

    def make(replies, delay_s=0.0):
        opened.append(FakeEndpoint(replies, delay_s))
        return opened[-1]

    yield make
    for endpoint in opened:
        endpoint.close()


def teacher(base_url: str, **kwargs) -> OpenAITeacher:
    kwargs.setdefault("backoff_s", 0.001)
    kwargs.setdefault("timeout_s", 5)
    return OpenAITeacher(base_url, "m", **kwargs)


def test_chat_payload(endpoint_factory):
    ep = endpoint_factory([(200, completion("moon"))])
    assert teacher(ep.base_url).generate([PROMPT], GenParams(max_new_tokens=7, temperature=0.0)) == ["moon"]
    (req,) = ep.requests
    assert req["path"] == "/v1/chat/completions"
    assert req["json"] == {"model": "m", "max_tokens": 7, "temperature": 0.0, "messages": list(PROMPT.messages)}


def test_works_inside_a_running_event_loop(endpoint_factory):
    # Jupyter and async callers already run a loop in their thread.
    import asyncio

    ep = endpoint_factory([(200, completion("moon"))])

    async def caller():
        return teacher(ep.base_url).generate([PROMPT], GenParams())

    assert asyncio.run(caller()) == ["moon"]


def test_completion_payload(endpoint_factory):
    ep = endpoint_factory([(200, completion(" moon"))])
    assert teacher(ep.base_url, chat=False).generate([PROMPT], GenParams(max_new_tokens=5)) == [" moon"]
    (req,) = ep.requests
    assert req["path"] == "/v1/completions"
    assert req["json"]["prompt"] == PROMPT.text
    assert req["json"]["stop"] == COMPLETION_STOP
    assert "messages" not in req["json"] and "structured_outputs" not in req["json"]


@pytest.mark.parametrize("chat", [True, False])
def test_regex_sent_as_structured_outputs(endpoint_factory, chat):
    ep = endpoint_factory([(200, completion("moon"))])
    teacher(ep.base_url, chat=chat).generate([PROMPT], GenParams(regex="[a-z]+"))
    assert ep.requests[0]["json"]["structured_outputs"] == {"regex": "[a-z]+"}


@pytest.mark.parametrize("chat", [True, False])
def test_a_runs_json_schema_goes_to_the_server_as_structured_outputs(endpoint_factory, tmp_path, chat):
    """annotate_rows with the run's format reference (json bound to data.schema) and structured outputs on."""
    import pandas as pd

    from mckd_core.data import write_parquet
    from mckd_core.formats import format_ref
    from mckd_core.jobs import AnnotateJob
    from mckd_core.steps import annotate_rows

    schema = {"type": "object", "properties": {"intent": {"enum": ["flight", "fare"]}}, "required": ["intent"]}
    ep = endpoint_factory([(200, completion('```json\n{"intent": "fare",}\n```'))])
    rows = write_parquet(pd.DataFrame({"id": ["u0"], "input": ["how much is it"], "target": [None]}), tmp_path, "u")
    demos = write_parquet(
        pd.DataFrame({"id": ["l0"], "input": ["flights to denver"], "target": ['{"intent":"flight"}']}), tmp_path, "l"
    )
    cfg = TeacherConfig(
        backend="vllm-server", base_url=ep.base_url, model="m", chat=chat, num_demos=1, structured_outputs=True
    )
    job = AnnotateJob(
        examples=rows,
        demos=demos,
        teacher=cfg,
        task=format_ref("json", schema),
        seed=0,
        out_dir=str(tmp_path / "out"),
        cache_path=str(tmp_path / "cache.sqlite"),
    )
    labels, stats = annotate_rows(job)
    (req,) = ep.requests
    assert req["json"]["structured_outputs"] == {"json": schema}
    prompt = req["json"]["messages"][0]["content"] if chat else req["json"]["prompt"]
    assert '"intent" (required, one of "flight", "fare")' in prompt  # the instruction names the schema's fields
    row = labels.read().iloc[0]
    assert (row["label"], row["valid"], row["error"]) == ('{"intent":"fare"}', True, "repaired")


def test_order_kept_and_progress_reported(endpoint_factory):
    # The reply echoes the query, so a reordering would show.
    ep = endpoint_factory([(200, lambda body: completion(body["messages"][-1]["content"].upper()))], delay_s=0.01)
    prompts = [build_prompt("x", [], f"q{i}") for i in range(20)]
    seen = []
    out = teacher(ep.base_url, concurrency=4).generate(
        prompts, GenParams(), progress=lambda done, total: seen.append((done, total))
    )
    assert out == [f"Q{i}" for i in range(20)]
    assert seen[-1] == (20, 20) and len(seen) == 20


@pytest.mark.parametrize("status", [503, 500, 429])
def test_transient_status_is_retried(endpoint_factory, status):
    ep = endpoint_factory([(status, {"error": {"message": "busy"}}), (200, completion("moon"))])
    assert teacher(ep.base_url).generate([PROMPT], GenParams()) == ["moon"]
    assert len(ep.requests) == 2


def test_gives_up_after_retry_budget(endpoint_factory):
    ep = endpoint_factory([(503, {"error": {"message": "overloaded"}})])
    with pytest.raises(TeacherTransportError) as info:
        teacher(ep.base_url, max_retries=2).generate([PROMPT], GenParams())
    assert len(ep.requests) == 3
    message = str(info.value)
    assert ep.base_url in message and "3 attempts" in message and "503" in message and "overloaded" in message
    assert "\n" not in message
    assert is_transient(info.value)


def test_client_error_is_permanent(endpoint_factory):
    ep = endpoint_factory([(400, {"error": {"message": 'invalid regex "(["', "code": 400}})])
    with pytest.raises(TeacherRequestError) as info:
        teacher(ep.base_url, max_retries=3).generate([PROMPT], GenParams(regex="(["))
    assert len(ep.requests) == 1
    assert "400" in str(info.value) and "invalid regex" in str(info.value)
    assert isinstance(info.value, MckdInputError) and not is_transient(info.value)


def test_connection_refused():
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    with pytest.raises(TeacherTransportError, match="2 attempts.*Connect"):
        teacher(url, max_retries=1).generate([PROMPT], GenParams())


def test_timeout_is_transient(endpoint_factory):
    ep = endpoint_factory([(200, completion("late"))], delay_s=1.0)
    # (No request count here: under load the handler may record a request after the client gave up.)
    with pytest.raises(TeacherTransportError, match="2 attempts.*Timeout"):
        teacher(ep.base_url, timeout_s=0.1, max_retries=1).generate([PROMPT], GenParams())


def test_malformed_success_body_is_retried(endpoint_factory):
    ep = endpoint_factory([(200, {"unexpected": True}), (200, completion("moon"))])
    assert teacher(ep.base_url).generate([PROMPT], GenParams()) == ["moon"]


def test_api_key_sent_as_bearer_and_never_shown(endpoint_factory):
    secret = "sk-test-5ecret"
    # A server that echoes the key in its error must not leak it through our exception.
    ep = endpoint_factory([(401, lambda body: {"error": {"message": f"key {secret} is not valid"}})])
    with pytest.raises(TeacherRequestError) as info:
        teacher(ep.base_url, api_key=secret).generate([PROMPT], GenParams())
    assert ep.requests[0]["headers"]["Authorization"] == f"Bearer {secret}"
    assert secret not in str(info.value) and "401" in str(info.value)

    ep = endpoint_factory([(503, lambda body: {"error": {"message": f"{secret} overloaded"}})])
    with pytest.raises(TeacherTransportError) as info:
        teacher(ep.base_url, api_key=secret, max_retries=0).generate([PROMPT], GenParams())
    assert secret not in str(info.value)


def test_no_authorization_header_without_key(endpoint_factory):
    ep = endpoint_factory([(200, completion("moon"))])
    teacher(ep.base_url).generate([PROMPT], GenParams())
    assert "Authorization" not in ep.requests[0]["headers"]


def test_from_config(monkeypatch):
    monkeypatch.setenv("MY_KEY", "k")
    cfg = TeacherConfig(
        backend="vllm-server",
        model="org/llm",
        revision="abc",
        base_url="http://h:1/v1/",
        served_model_name="llm",
        api_key_env="MY_KEY",
        chat=False,
        concurrency=3,
    )
    t = openai_teacher_from_config(cfg)
    assert (t.base_url, t.model, t.model_key, t.chat, t.concurrency) == (
        "http://h:1/v1",
        "llm",
        "org/llm@abc",
        False,
        3,
    )
    assert t._api_key == "k"
    with pytest.raises(MckdInputError, match="base_url"):
        openai_teacher_from_config(TeacherConfig(backend="vllm-server"))


def test_parse_prometheus_sums_label_sets():
    text = "\n".join(
        [
            "# HELP vllm:request_success_total Count",
            'vllm:request_success_total{finished_reason="stop",model_name="/a b/{c}"} 3.0',
            'vllm:request_success_total{finished_reason="length",model_name="/a b/{c}"} 2.0',
            "process_open_fds 7",
        ]
    )
    assert parse_prometheus(text) == {"vllm:request_success_total": 5.0, "process_open_fds": 7.0}


def test_the_servers_token_usage_is_totalled_per_set_and_a_cached_rerun_costs_nothing(endpoint_factory, tmp_path):
    import pandas as pd

    from mckd_core.data import write_parquet
    from mckd_core.formats import format_ref
    from mckd_core.jobs import AnnotateJob
    from mckd_core.steps import annotate_rows
    from mckd_core.teacher import ResponseCache
    from mckd_core.teacher.base import Usage

    def answer(body):
        tokens = len(body["messages"][-1]["content"].split())  # differs by row: a swapped total would show
        return {**completion("sun"), "usage": {"prompt_tokens": tokens, "completion_tokens": 2, "total_tokens": 0}}

    ep = endpoint_factory([(200, answer)])
    inputs = ["a b", "a b c d e"]
    rows = write_parquet(pd.DataFrame({"id": ["u0", "u1"], "input": inputs, "target": [None, None]}), tmp_path, "u")
    demos = write_parquet(pd.DataFrame({"id": ["l0"], "input": ["x"], "target": ["y"]}), tmp_path, "l")
    cfg = TeacherConfig(backend="vllm-server", base_url=ep.base_url, model="m", num_demos=1)
    job = AnnotateJob(
        examples=rows,
        demos=demos,
        teacher=cfg,
        task=format_ref("text"),
        seed=0,
        out_dir=str(tmp_path / "out"),
        cache_path=str(tmp_path / "cache.sqlite"),
    )
    _, stats = annotate_rows(job)
    sent = [len(r["json"]["messages"][-1]["content"].split()) for r in ep.requests]
    assert (stats["prompt_tokens"], stats["completion_tokens"], stats["metered"]) == (sum(sent), 4, 2)
    cache = ResponseCache(tmp_path / "cache.sqlite")
    keys = [row[0] for row in cache._conn.execute("SELECT key FROM responses")]
    assert sorted(cache.usage_of(keys).values()) == sorted(Usage(n, 2) for n in sent)  # kept with the cached rows
    cache.close()
    _, again = annotate_rows(job)
    assert len(ep.requests) == 2 and (again["cached"], again["prompt_tokens"], again["completion_tokens"]) == (2, 0, 0)


def test_a_response_without_usage_is_not_metered(endpoint_factory):
    ep = endpoint_factory([(200, completion("moon"))])
    assert teacher(ep.base_url).generate_with_usage([PROMPT], GenParams()) == [("moon", None)]
