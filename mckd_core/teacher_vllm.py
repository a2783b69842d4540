"""vLLM teacher backends that mckd runs itself. Both start lazily, on the first row the response cache
does not hold, so a fully cached run starts no server and loads no model; `close()` frees them and a later
`generate()` starts them again.

- `ManagedServerTeacher` (teacher.backend=vllm-server without base_url): a `VLLMServer` (its own venv
  allowed: teacher.vllm.python) used over HTTP like any other server.
- `OfflineVLLMTeacher` (teacher.backend=vllm-offline): an in-process `vllm.LLM`. vLLM is imported only
  when the engine is built, so mckd works without it installed.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Sequence

from .config import TeacherConfig, VLLMConfig
from .errors import MckdInputError, TeacherTransportError
from .models import resolve_model
from .prompting import Prompt
from .teacher import GenParams, ProgressFn, local_model_key
from .teacher_http import COMPLETION_STOP, OpenAITeacher, openai_teacher_from_config, server_model_key
from .vllm_server import VLLMServer, VLLMServerError, cpu_defaults

DEATH_LOG_LINES = 10


def engine_settings(v: VLLMConfig) -> dict:
    """dtype, enforce_eager, env and sizing: the keyword arguments of `VLLMServer` (most of them also `vllm.LLM`'s)."""
    base = cpu_defaults() if v.cpu else {"dtype": "auto", "enforce_eager": False, "env": {}}
    return {"dtype": v.dtype or base["dtype"], "enforce_eager": base["enforce_eager"], "env": {**base["env"], **v.env},
            "tensor_parallel_size": v.tensor_parallel_size, "gpu_memory_utilization": v.gpu_memory_utilization,
            "max_model_len": v.max_model_len, "enable_prefix_caching": v.enable_prefix_caching}


def managed_server(cfg: TeacherConfig) -> VLLMServer:
    """The (not yet started) server of a teacher config, on a free ephemeral port."""
    v = cfg.vllm
    model_args = (["--revision", cfg.revision] if cfg.revision else []) + (["--trust-remote-code"] if cfg.trust_remote_code else [])
    return VLLMServer(resolve_model(cfg.model), python=v.python, served_model_name=cfg.served_model_name or cfg.model,
                      extra_args=[*model_args, *v.extra_args], startup_timeout_s=v.startup_timeout_s, **engine_settings(v))


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
        client = self._running_client()
        try:
            return client.generate(prompts, params, progress)
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
        what = (f"the vLLM server mckd started for teacher.model={self.cfg.model!r} (pid {self._server.pid}) {how} "
                f"during annotation")
        log = f"server log {self._server.log_path}, last lines:\n{self._server.log_tail(DEATH_LOG_LINES)}"
        if self._restarts_left > 0:
            return TeacherTransportError(f"{what}; a retry restarts it ({self._restarts_left} restart(s) left). {log}")
        return VLLMServerError(
            f"{what}; not restarted (teacher.vllm.max_restarts={self.cfg.vllm.max_restarts} used up). The rows annotated "
            f"before are in the teacher cache: a re-run sends only the others. {log}")

    def close(self) -> None:
        """Stop the server (idempotent); the next session gets the full restart budget again."""
        with self._lock:
            server, self._server, self._client = self._server, None, None
            self._restarts_left = self.cfg.vllm.max_restarts
        if server is not None:
            server.stop()


class OfflineVLLMTeacher:
    """teacher.backend=vllm-offline: in-process `vllm.LLM` + `SamplingParams` (vLLM 0.11+ API)."""

    def __init__(self, cfg: TeacherConfig):
        self.cfg = cfg
        self.model_key = local_model_key(cfg.model, cfg.revision)
        self._llm = None
        self._chat = cfg.chat

    def generate(self, prompts: Sequence[Prompt], params: GenParams, progress: ProgressFn | None = None) -> list[str]:
        llm = self._engine()
        sampling = self._sampling(params)
        # One call for all prompts: vLLM schedules them in continuous batches and shares their common prefix.
        if self._chat:
            outputs = llm.chat([list(p.messages) for p in prompts], sampling, use_tqdm=False)
        else:
            outputs = llm.generate([p.text for p in prompts], sampling, use_tqdm=False)
        if progress:
            progress(len(prompts), len(prompts))
        return [out.outputs[0].text for out in outputs]

    def _sampling(self, params: GenParams):
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        return SamplingParams(
            max_tokens=params.max_new_tokens, temperature=params.temperature,
            # Plain completion prompts end with "Output:" and the model tends to go on with the next demo.
            stop=None if self._chat else list(COMPLETION_STOP),
            structured_outputs=StructuredOutputsParams(regex=params.regex) if params.regex else None,
        )

    def _engine(self):
        if self._llm is None:
            self._llm = load_llm(self.cfg)
            # Like the transformers backend: a model without a chat template gets the plain prompt.
            self._chat = self.cfg.chat and self._llm.get_tokenizer().chat_template is not None
        return self._llm

    def close(self) -> None:
        """Shut the engine down (its engine-core process and memory); the next generate() builds a new one."""
        llm, self._llm = self._llm, None
        if llm is not None:
            llm.llm_engine.engine_core.shutdown()


def load_llm(cfg: TeacherConfig):
    try:
        from vllm import LLM
    except ImportError:
        raise MckdInputError(
            "teacher.backend=vllm-offline needs vLLM in this environment (pip install -e '.[vllm]'); or use "
            "teacher.backend=vllm-server, which can run vLLM from its own venv (teacher.vllm.python)") from None
    settings = engine_settings(cfg.vllm)
    # vLLM reads these (VLLM_CPU_*, CUDA_VISIBLE_DEVICES) from the environment when the engine starts;
    # as for the managed server, the config's values win over the process's.
    os.environ.update(settings["env"])
    optional = {key: settings[key] for key in ("gpu_memory_utilization", "max_model_len") if settings[key] is not None}
    return LLM(resolve_model(cfg.model), revision=cfg.revision, trust_remote_code=cfg.trust_remote_code,
               dtype=settings["dtype"], enforce_eager=settings["enforce_eager"],
               tensor_parallel_size=settings["tensor_parallel_size"],
               enable_prefix_caching=settings["enable_prefix_caching"], **optional)
