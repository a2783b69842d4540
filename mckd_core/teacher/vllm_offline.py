"""teacher.backend=vllm-offline: an in-process `vllm.LLM`, built lazily (a fully cached run loads no model). vLLM is
imported only when the engine is built, so mckd works without it installed."""

from __future__ import annotations

import os
from typing import Sequence

from ..config import TeacherConfig
from ..errors import MckdInputError
from ..models import resolve_model
from ..prompting import Prompt
from .base import GenParams, ProgressFn, Usage, local_model_key
from .http import COMPLETION_STOP
from .vllm_server import engine_settings


class OfflineVLLMTeacher:
    """teacher.backend=vllm-offline: in-process `vllm.LLM` + `SamplingParams` (vLLM 0.11+ API)."""

    def __init__(self, cfg: TeacherConfig):
        self.cfg = cfg
        self.model_key = local_model_key(cfg.model, cfg.revision)
        self._llm = None
        self._chat = cfg.chat

    def generate(self, prompts: Sequence[Prompt], params: GenParams, progress: ProgressFn | None = None) -> list[str]:
        return [text for text, _ in self.generate_with_usage(prompts, params, progress)]

    def generate_with_usage(
        self, prompts: Sequence[Prompt], params: GenParams, progress: ProgressFn | None = None
    ) -> list[tuple[str, Usage | None]]:
        """`generate`, with each row's prompt and generated token counts as the engine's outputs hold them."""
        llm = self._engine()
        sampling = self._sampling(params)
        # One call for all prompts: vLLM schedules them in continuous batches and shares their common prefix.
        if self._chat:
            outputs = llm.chat([list(p.messages) for p in prompts], sampling, use_tqdm=False)
        else:
            outputs = llm.generate([p.text for p in prompts], sampling, use_tqdm=False)
        if progress:
            progress(len(prompts), len(prompts))
        return [(out.outputs[0].text, _usage(out)) for out in outputs]

    def _sampling(self, params: GenParams):
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        return SamplingParams(
            max_tokens=params.max_new_tokens,
            temperature=params.temperature,
            # Plain completion prompts end with "Output:" and the model tends to go on with the next demo.
            stop=None if self._chat else list(COMPLETION_STOP),
            structured_outputs=StructuredOutputsParams(**constraint)
            if (constraint := params.structured_outputs())
            else None,
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


def _usage(out) -> Usage | None:
    if out.prompt_token_ids is None:
        return None
    return Usage(len(out.prompt_token_ids), len(out.outputs[0].token_ids))


def load_llm(cfg: TeacherConfig):
    try:
        from vllm import LLM
    except ImportError:
        raise MckdInputError(
            "teacher.backend=vllm-offline needs vLLM in this environment (pip install -e '.[vllm]'); or use "
            "teacher.backend=vllm-server, which can run vLLM from its own venv (teacher.vllm.python)"
        ) from None
    settings = engine_settings(cfg.vllm)
    # vLLM reads these (VLLM_CPU_*, CUDA_VISIBLE_DEVICES) from the environment when the engine starts;
    # as for the managed server, the config's values win over the process's.
    os.environ.update(settings["env"])
    optional = {key: settings[key] for key in ("gpu_memory_utilization", "max_model_len") if settings[key] is not None}
    return LLM(
        resolve_model(cfg.model),
        revision=cfg.revision,
        trust_remote_code=cfg.trust_remote_code,
        dtype=settings["dtype"],
        enforce_eager=settings["enforce_eager"],
        tensor_parallel_size=settings["tensor_parallel_size"],
        enable_prefix_caching=settings["enable_prefix_caching"],
        **optional,
    )
