"""A stand-in for `python -m vllm.entrypoints.openai.api_server` that starts in milliseconds: /health,
/metrics (vllm:request_success_total) and /v1/chat/completions answering FAKE_VLLM_REPLY, with a `usage` whose
prompt_tokens are the request's words (they differ by row) and completion_tokens 1.

Run as `fake_vllm_server.py -m vllm.entrypoints.openai.api_server --port P ...` (what VLLMServer runs, with
this script in the place of python's `-m` module: see `fake_vllm_python`). Environment:
  FAKE_VLLM_STARTS     file: one line is appended per start (tests count the starts)
  FAKE_VLLM_DIE_AFTER  N: the request after the N-th answered one SIGKILLs this process, once
  FAKE_VLLM_DIED       file created by that death; while it exists the server does not die again
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPLY = os.environ.get("FAKE_VLLM_REPLY", "dog")


def fake_vllm_python(directory: Path) -> str:
    """An executable that VLLMServer can use as "the python of a vLLM venv" and that runs this fake."""
    path = directory / "fake-vllm-python"
    path.write_text(
        f'#!/bin/sh\nshift 2  # "-m vllm.entrypoints.openai.api_server"\n'
        f'exec "{sys.executable}" "{Path(__file__).resolve()}" "$@"\n'
    )
    path.chmod(0o755)
    return str(path)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args, _ = parser.parse_known_args()
    if os.environ.get("FAKE_VLLM_STARTS"):
        with open(os.environ["FAKE_VLLM_STARTS"], "a") as starts:
            starts.write(f"{os.getpid()}\n")
    die_after = int(os.environ.get("FAKE_VLLM_DIE_AFTER", "0"))
    died_marker = Path(os.environ.get("FAKE_VLLM_DIED", "/nonexistent/fake-vllm-died"))
    served = {"n": 0}
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/health":
                self._send(200, b"", "text/plain")
            elif self.path == "/metrics":
                body = f'vllm:request_success_total{{finished_reason="stop"}} {served["n"]}\n'.encode()
                self._send(200, body, "text/plain")
            else:
                self._send(404, b"{}", "application/json")

        def do_POST(self):
            request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            prompt = " ".join(m["content"] for m in request["messages"]) if "messages" in request else request["prompt"]
            with lock:
                if die_after and served["n"] >= die_after and not died_marker.exists():
                    died_marker.touch()
                    os.kill(os.getpid(), signal.SIGKILL)  # a real crash: the request never gets an answer
                served["n"] += 1
            usage = {"prompt_tokens": len(prompt.split()), "completion_tokens": 1}
            body = json.dumps(
                {"choices": [{"message": {"role": "assistant", "content": REPLY}, "text": REPLY}], "usage": usage}
            )
            self._send(200, body.encode(), "application/json")

        def _send(self, status, body, content_type):
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    ThreadingHTTPServer((args.host, args.port), Handler).serve_forever(poll_interval=0.05)


if __name__ == "__main__":
    main()
