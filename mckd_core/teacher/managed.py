"""teacher.backend=vllm-server without base_url: a vLLM server mckd starts lazily (on the first row the response
cache does not hold, so a fully cached run starts none), uses over HTTP, restarts after a crash and stops on close()."""

from __future__ import annotations

import signal
import threading
from typing import Sequence

from ..config import TeacherConfig
from ..errors import TeacherTransportError
from ..models import resolve_model
from ..prompting import Prompt
from .base import GenParams, ProgressFn, Usage
from .http import OpenAITeacher, openai_teacher_from_config, server_model_key
from .vllm_server import VLLMServer, VLLMServerError, engine_settings

DEATH_LOG_LINES = 10


def managed_server(cfg: TeacherConfig) -> VLLMServer:
    """The (not yet started) server of a teacher config, on a free ephemeral port."""
    v = cfg.vllm
    model_args = (["--revision", cfg.revision] if cfg.revision else []) + (
        ["--trust-remote-code"] if cfg.trust_remote_code else []
    )
    return VLLMServer(
        resolve_model(cfg.model),
        python=v.python,
        served_model_name=cfg.served_model_name or cfg.model,
        extra_args=[*model_args, *v.extra_args],
        startup_timeout_s=v.startup_timeout_s,
        **engine_settings(v),
    )


class ManagedServerTeacher:
    """teacher.backend=vllm-server without base_url: mckd starts the server, uses it, stops it on close().

    The cache identity is the one of an external server of the same model (`server_model_key`), never the
    ephemeral port, so rows cached through a managed server are reused by any later run. A server that dies
    mid-run fails the current backend call; the next call (the annotate task's retry) starts a new one, up to
    teacher.vllm.max_restarts times, after which the failure is permanent.
    """

    def __init__(self, cfg: TeacherConfig):
        self.cfg = cfg
        self.model_key = server_model_key(cfg)
        self._server: VLLMServer | None = None
        self._client: OpenAITeacher | None = None
        self._restarts_left = cfg.vllm.max_restarts
        self._lock = threading.Lock()  # two concurrent annotate calls must not start two servers

    @property
    def server(self) -> VLLMServer | None:
        """The current server (also one that died), None before the first uncached row and after close()."""
        return self._server

    def generate(self, prompts: Sequence[Prompt], params: GenParams, progress: ProgressFn | None = None) -> list[str]:
        return [text for text, _ in self.generate_with_usage(prompts, params, progress)]

    def generate_with_usage(
        self, prompts: Sequence[Prompt], params: GenParams, progress: ProgressFn | None = None
    ) -> list[tuple[str, Usage | None]]:
        client = self._running_client()
        try:
            return client.generate_with_usage(prompts, params, progress)
        except TeacherTransportError as exc:
            # Refused connections after a crash say little; the exit status and the server's log say why.
            if self._server is not None and self._server.returncode() is not None:
                raise self._death_error() from exc
            raise

    def _running_client(self) -> OpenAITeacher:
        with self._lock:
            if self._server is not None and self._server.returncode() is None:
                return self._client
            if self._server is not None:  # died in an earlier call of this run
                error = self._death_error()
                if isinstance(error, VLLMServerError):
                    raise error
                self._restarts_left -= 1
                self._server.stop()  # reaps what is left of its process group
                self._server = None
            server = managed_server(self.cfg).start()
            self._server = server
            self._client = openai_teacher_from_config(self.cfg.model_copy(update={"base_url": server.base_url}))
            return self._client

    def _death_error(self) -> Exception:
        """Transient while a restart is left (the task's retry restarts the server), else permanent."""
        code = self._server.returncode()
        how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
        what = (
            f"the vLLM server mckd started for teacher.model={self.cfg.model!r} (pid {self._server.pid}) {how} "
            f"during annotation"
        )
        log = f"server log {self._server.log_path}, last lines:\n{self._server.log_tail(DEATH_LOG_LINES)}"
        if self._restarts_left > 0:
            return TeacherTransportError(f"{what}; a retry restarts it ({self._restarts_left} restart(s) left). {log}")
        return VLLMServerError(
            f"{what}; not restarted (teacher.vllm.max_restarts={self.cfg.vllm.max_restarts} used up). The rows "
            "annotated "
            f"before are in the teacher cache: a re-run sends only the others. {log}"
        )

    def close(self) -> None:
        """Stop the server (idempotent); the next session gets the full restart budget again."""
        with self._lock:
            server, self._server, self._client = self._server, None, None
            self._restarts_left = self.cfg.vllm.max_restarts
        if server is not None:
            server.stop()
