"""A managed vLLM OpenAI-compatible server: start, wait until healthy, stop (whole process group).

vLLM usually lives in its own virtual environment (on CPU: `scripts/setup_vllm_cpu.sh`), so the server is
started with that environment's python (`python=` or env MCKD_VLLM_PYTHON; default: this interpreter) and the pipeline
talks to it
over HTTP with `OpenAITeacher(server.base_url, server.served_model_name)`.

Server metrics worth reading with `metrics()` (names measured on vllm-cpu 0.32.0):
  vllm:request_success_total        finished requests (labels: finished_reason; summed here)
  vllm:prefix_cache_queries_total   prompt tokens looked up in the prefix cache
  vllm:prefix_cache_hits_total      ... of which were served from it (hit rate = hits / queries)
  vllm:prompt_tokens_total, vllm:generation_tokens_total
"""

from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import Sequence

import httpx

from ..config import VLLMConfig

STOP_GRACE_S = 20.0
LOG_TAIL_LINES = 30


class VLLMServerError(RuntimeError):
    """The server did not come up; the message ends with the tail of its log (CUDA errors stay classifiable)."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def cpu_defaults() -> dict:
    """VLLMServer keyword arguments for the CPU build (vllm-cpu).

    float32 + eager + threads bound to every CPU this process may use: measured on SmolLM2-135M, the
    defaults (bf16, one bound core) were ~10x slower. 2 GiB of KV cache is plenty for small teachers.
    """
    cpus = ",".join(str(c) for c in sorted(os.sched_getaffinity(0)))
    return {
        "dtype": "float32",
        "enforce_eager": True,
        "env": {"VLLM_CPU_OMP_THREADS_BIND": cpus, "VLLM_CPU_KVCACHE_SPACE": "2"},
    }


def engine_settings(v: VLLMConfig) -> dict:
    """dtype, enforce_eager, env and sizing: the keyword arguments of `VLLMServer` (most of them also `vllm.LLM`'s)."""
    base = cpu_defaults() if v.cpu else {"dtype": "auto", "enforce_eager": False, "env": {}}
    return {
        "dtype": v.dtype or base["dtype"],
        "enforce_eager": base["enforce_eager"],
        "env": {**base["env"], **v.env},
        "tensor_parallel_size": v.tensor_parallel_size,
        "gpu_memory_utilization": v.gpu_memory_utilization,
        "max_model_len": v.max_model_len,
        "enable_prefix_caching": v.enable_prefix_caching,
    }


def metrics(base_url: str, timeout_s: float = 10.0) -> dict[str, float]:
    """The server's Prometheus metrics as {sample name: value summed over all label sets}.

    `base_url` may be the OpenAI base (…/v1) or the server root.
    """
    root = base_url.rstrip("/").removesuffix("/v1")
    response = httpx.get(f"{root}/metrics", timeout=timeout_s)
    response.raise_for_status()
    return parse_prometheus(response.text)


def parse_prometheus(text: str) -> dict[str, float]:
    values: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        if "{" in line:
            name = line[: line.index("{")]
            rest = line[line.rindex("}") + 1 :]  # label values may contain spaces: split after the labels
        else:
            name, _, rest = line.partition(" ")
        values[name] = values.get(name, 0.0) + float(rest.split()[0])
    return values


class VLLMServer:
    """`python -m vllm.entrypoints.openai.api_server` as a context manager.

    (`vllm serve` is broken in vllm-cpu 0.32.0; the module entry point works everywhere.)
    """

    def __init__(
        self,
        model_dir: str | Path,
        *,
        python: str | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
        dtype: str = "auto",
        enforce_eager: bool = False,
        extra_args: Sequence[str] = (),
        env: dict[str, str] | None = None,
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float | None = None,
        max_model_len: int | None = None,
        enable_prefix_caching: bool = True,
        served_model_name: str | None = None,
        startup_timeout_s: float = 600,
        log_path: str | Path | None = None,
    ):
        self.model_dir = str(model_dir)
        # Default: this interpreter (a GPU install with the `vllm` extra), unless vLLM has its own venv.
        self.python = python or os.environ.get("MCKD_VLLM_PYTHON") or sys.executable
        self.host = host
        self.port = port or free_port(host)
        # Default to the model path, which is what vLLM itself serves the model as.
        self.served_model_name = served_model_name or self.model_dir
        self.env = env or {}
        self.startup_timeout_s = startup_timeout_s
        self.log_path = Path(log_path) if log_path else Path(tempfile.mkdtemp(prefix="mckd-vllm-")) / "server.log"
        self.args = [
            "--model",
            self.model_dir,
            "--served-model-name",
            self.served_model_name,
            "--host",
            host,
            "--port",
            str(self.port),
            "--dtype",
            dtype,
            "--tensor-parallel-size",
            str(tensor_parallel_size),
            "--enable-prefix-caching" if enable_prefix_caching else "--no-enable-prefix-caching",
        ]
        if enforce_eager:
            self.args.append("--enforce-eager")
        if gpu_memory_utilization is not None:
            self.args += ["--gpu-memory-utilization", str(gpu_memory_utilization)]
        if max_model_len is not None:
            self.args += ["--max-model-len", str(max_model_len)]
        self.args += list(extra_args)
        self._proc: subprocess.Popen | None = None
        self.startup_s: float | None = None  # measured by start(); worth reporting next to throughput

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    @property
    def pid(self) -> int | None:
        """The server's process id, also its process group id (None when not started or stopped)."""
        return self._proc.pid if self._proc else None

    def returncode(self) -> int | None:
        """The exit code of a server that died on its own (negative: killed by that signal); None while it runs."""
        return self._proc.poll() if self._proc else None

    def command(self) -> list[str]:
        return [self.python, "-m", "vllm.entrypoints.openai.api_server", *self.args]

    def start(self) -> "VLLMServer":
        """Launch and block until GET /health answers 200; on any failure the process group is stopped."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        with open(self.log_path, "ab") as log:
            # A new session = a new process group: stop() then reaches vLLM's engine/worker children too.
            self._proc = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **self.env},
                start_new_session=True,
            )
        atexit.register(self.stop)  # an interrupted caller must not leave a server holding the accelerator
        try:
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.monotonic() - started
        return self

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        url = f"http://{self.host}:{self.port}/health"
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise VLLMServerError(
                    f"vLLM server exited with code {self._proc.returncode} during startup "
                    f"(log {self.log_path}):\n{self.log_tail()}"
                )
            try:
                # trust_env=False: we launched it on this machine, an HTTP proxy from the env must not intercept.
                if httpx.get(url, timeout=5, trust_env=False).status_code == 200:
                    return
            except httpx.TransportError:
                pass  # not listening yet
            time.sleep(1)
        raise VLLMServerError(
            f"vLLM server not healthy after {self.startup_timeout_s:.0f} s (log {self.log_path}):\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            with open(self.log_path, errors="replace") as log:
                return "".join(deque(log, maxlen=lines)).rstrip()
        except FileNotFoundError:
            return "(no log)"

    def stop(self) -> None:
        """SIGTERM the process group, SIGKILL it after STOP_GRACE_S. Idempotent."""
        proc, self._proc = self._proc, None
        atexit.unregister(self.stop)
        if proc is None:
            return
        _signal_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            pass
        # Also after a clean exit of the leader: engine/worker children may still be shutting down.
        _signal_group(proc.pid, signal.SIGKILL)
        proc.wait()

    def __enter__(self) -> "VLLMServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass
