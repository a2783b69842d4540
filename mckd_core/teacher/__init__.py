"""The teacher: backends that turn few-shot prompts into raw generations, and annotation with a per-row response cache.

A backend turns prompts into raw generations (`TeacherBackend`):
- `transformers`: in-process batched generation (`TransformersTeacher`);
- `http`: any OpenAI-compatible server (`OpenAITeacher`), e.g. a vLLM server on GPUs or CPU;
- `managed`: a vLLM server mckd starts and stops itself (`ManagedServerTeacher`, over `vllm_server.VLLMServer`);
- `vllm_offline`: an in-process `vllm.LLM` (`OfflineVLLMTeacher`).
`annotate` builds the prompts, asks the backend only for rows the cache (`cache.ResponseCache`) does not hold,
validates/repairs every output with the task format, and returns label rows (one per input row, invalid rows
flagged). The HTTP and vLLM backends are imported where a run picks them, so the in-process path needs neither.
"""

from .annotation import AnnotationStats, annotate
from .base import GenParams, ProgressFn, TeacherBackend, local_model_key
from .cache import ResponseCache, cacheable
from .transformers import TransformersTeacher, shared_prefix

__all__ = [
    "AnnotationStats",
    "GenParams",
    "ProgressFn",
    "ResponseCache",
    "TeacherBackend",
    "TransformersTeacher",
    "annotate",
    "cacheable",
    "local_model_key",
    "shared_prefix",
]
