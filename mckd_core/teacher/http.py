"""Teacher over HTTP: any OpenAI-compatible endpoint (a vLLM server on GPUs or CPU, or a hosted API).

Requests run concurrently (the server batches them; with random-fixed demos every prompt shares its
prefix, which vLLM's prefix cache computes once). Transient failures — refused connections, timeouts,
HTTP 5xx and 429 — are retried per request with exponential backoff; other 4xx are permanent and fail
at once. The API key only ever travels in the Authorization header: it is scrubbed from every message.
"""

from __future__ import annotations

import asyncio
import os
import random
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import httpx

from ..config import TeacherConfig
from ..errors import MckdInputError, TeacherTransportError
from ..prompting import Prompt
from .base import GenParams, ProgressFn, Usage

# Completion prompts end with "Output:"; the answer is one line, and the model tends to continue with
# the next "Input:" demo block.
COMPLETION_STOP = ["\n\n", "\nInput:"]
MAX_BACKOFF_S = 30.0


class TeacherRequestError(MckdInputError):
    """The endpoint rejected a request (4xx other than 429): wrong model name, bad regex, bad key. Never retried."""


class _Retryable(Exception):
    """One failed attempt that a retry may fix (5xx, 429)."""


class OpenAITeacher:
    """TeacherBackend over an OpenAI-compatible `/chat/completions` (chat) or `/completions` endpoint.

    `model` is the name the server serves. `model_key` identifies the weights in the per-row response
    cache key (see `ResponseCache.key`): it defaults to f"{model}@server"; pass a key with a revision
    when the server's weights can change under the same name, or cached rows will be reused.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        chat: bool = True,
        concurrency: int = 16,
        timeout_s: float = 120,
        max_retries: int = 3,
        api_key: str | None = None,
        model_key: str | None = None,
        backoff_s: float = 1.0,
    ):
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.chat = chat
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.model_key = model_key or f"{model}@server"
        self._api_key = api_key

    def generate(self, prompts: Sequence[Prompt], params: GenParams, progress: ProgressFn | None = None) -> list[str]:
        return [text for text, _ in self.generate_with_usage(prompts, params, progress)]

    def generate_with_usage(
        self, prompts: Sequence[Prompt], params: GenParams, progress: ProgressFn | None = None
    ) -> list[tuple[str, Usage | None]]:
        """`generate`, with each response's token `usage` as the server reported it (None where it reported none)."""
        return _run_sync(self._generate_all(prompts, params, progress))

    async def _generate_all(self, prompts, params, progress) -> list[tuple[str, Usage | None]]:
        semaphore = asyncio.Semaphore(self.concurrency)
        done = 0

        async def one(client: httpx.AsyncClient, prompt: Prompt) -> tuple[str, Usage | None]:
            nonlocal done
            async with semaphore:
                answer = await self._request_with_retries(client, prompt, params)
            done += 1
            if progress:
                progress(done, len(prompts))
            return answer

        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
        async with httpx.AsyncClient(headers=headers, timeout=self.timeout_s, limits=limits) as client:
            # gather raises the first failure; asyncio.run then cancels the requests still in flight.
            return list(await asyncio.gather(*(one(client, p) for p in prompts)))

    def _url(self) -> str:
        return f"{self.base_url}/chat/completions" if self.chat else f"{self.base_url}/completions"

    def payload(self, prompt: Prompt, params: GenParams) -> dict:
        body: dict = {"model": self.model, "max_tokens": params.max_new_tokens, "temperature": params.temperature}
        if self.chat:
            body["messages"] = list(prompt.messages)
        else:
            body["prompt"] = prompt.text
            body["stop"] = COMPLETION_STOP
        if params.structured_outputs():
            # vLLM >= 0.11 reads `structured_outputs`; the older `guided_*` fields are silently ignored there.
            body["structured_outputs"] = params.structured_outputs()
        return body

    async def _request_with_retries(
        self, client: httpx.AsyncClient, prompt: Prompt, params: GenParams
    ) -> tuple[str, Usage | None]:
        url = self._url()
        body = self.payload(prompt, params)
        last_error = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                await asyncio.sleep(self._backoff(attempt))
            try:
                response = await client.post(url, json=body)
            except httpx.TransportError as exc:  # refused, reset, DNS, every kind of timeout
                last_error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                continue
            try:
                return self._parse(response)
            except _Retryable as exc:
                last_error = str(exc)
        attempts = self.max_retries + 1
        raise TeacherTransportError(
            self._redact(
                f"teacher endpoint {url} failed after {attempts} attempt{'s' * (attempts > 1)}: "
                f"{' '.join(last_error.split())}"
            )
        )

    def _backoff(self, attempt: int) -> float:
        # Jitter, so many requests that failed together do not retry together.
        return min(MAX_BACKOFF_S, self.backoff_s * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)

    def _parse(self, response: httpx.Response) -> tuple[str, Usage | None]:
        if response.status_code == 429 or response.status_code >= 500:
            raise _Retryable(f"HTTP {response.status_code}: {_server_message(response)}")
        if response.status_code >= 400:
            raise TeacherRequestError(
                self._redact(
                    f"teacher endpoint {response.request.url} rejected the request with HTTP {response.status_code}: "
                    f"{_server_message(response)} (model={self.model!r})"
                )
            )
        try:
            body = response.json()
            choice = body["choices"][0]
            text = choice["message"]["content"] if self.chat else choice["text"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise _Retryable(
                f"HTTP {response.status_code} without an OpenAI-style completion: {response.text[:200]!r}"
            ) from None
        return text or "", _usage(body.get("usage"))

    def _redact(self, message: str) -> str:
        return message.replace(self._api_key, "***") if self._api_key else message


def _usage(usage) -> Usage | None:
    """The prompt and completion tokens of an OpenAI-style `usage` object; None when the server sent none."""
    try:
        return Usage(int(usage["prompt_tokens"]), int(usage["completion_tokens"]))
    except (KeyError, TypeError, ValueError):
        return None


def _run_sync(coro):
    """asyncio.run, also when this thread already runs an event loop (Jupyter, async callers)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def _server_message(response: httpx.Response) -> str:
    """The error text of an OpenAI-style error body ({"error": {"message"}} or vLLM's older {"message"})."""
    try:
        body = response.json()
        error = body.get("error", body)
        message = error.get("message") if isinstance(error, dict) else error
    except (ValueError, AttributeError):
        message = None
    return " ".join(str(message or response.text or response.reason_phrase).split())[:500]


def openai_teacher_from_config(cfg: TeacherConfig, api_key: str | None = None) -> OpenAITeacher:
    """The `vllm-server` backend of a TeacherConfig; the API key is `api_key`, else read from `cfg.api_key_env`."""
    if not cfg.base_url:
        raise MckdInputError(
            "teacher.base_url is required for teacher.backend=vllm-server, e.g. http://127.0.0.1:8000/v1"
        )
    return OpenAITeacher(
        cfg.base_url,
        cfg.served_model_name or cfg.model,
        chat=cfg.chat,
        concurrency=cfg.concurrency,
        timeout_s=cfg.timeout_s,
        max_retries=cfg.max_retries,
        api_key=api_key or os.environ.get(cfg.api_key_env) or None,
        model_key=server_model_key(cfg),
    )


def server_model_key(cfg: TeacherConfig) -> str:
    """The cache identity of a served teacher: the config's model (+ revision) names the weights; the URL and
    the served name are only routing, so rows cached through one server are reused through any other."""
    return f"{cfg.model}@{cfg.revision or 'server'}"
