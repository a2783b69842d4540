"""The in-process teacher: batched greedy generation with a `transformers` causal LM."""

from __future__ import annotations

import copy
from typing import Sequence

from ..prompting import Prompt
from .base import Usage, local_model_key


class TransformersTeacher:
    """In-process batched greedy generation with a `transformers` causal LM."""

    def __init__(
        self,
        model: str,
        revision: str | None = None,
        chat: bool = True,
        batch_size: int = 8,
        trust_remote_code: bool = False,
        precision: str = "auto",
    ):
        import torch
        from transformers import AutoModelForCausalLM

        from ..models import resolve_model
        from ..student import load_tokenizer, pick_device, uses_bf16

        self.model_key = local_model_key(model, revision)
        path = resolve_model(model)
        self.device = pick_device()
        self.tokenizer = load_tokenizer(
            path, revision=revision, trust_remote_code=trust_remote_code, padding_side="left"
        )
        # bf16 weights, not autocast: autocast would cast the fp32 weights again at every decoding step.
        dtype = torch.bfloat16 if uses_bf16(self.device, precision) else torch.float32
        self._load = lambda: (
            AutoModelForCausalLM.from_pretrained(
                path, revision=revision, dtype=dtype, trust_remote_code=trust_remote_code, use_safetensors=None
            )
            .to(self.device)
            .eval()
        )
        self.model = self._load()
        self.chat = chat and self.tokenizer.chat_template is not None
        self.batch_size = batch_size

    def close(self) -> None:
        """Free the weights when the teacher phase ends (the students need the memory); the next generate() loads
        them again."""
        import gc

        import torch

        self.model = None
        gc.collect()  # a model's modules can hold reference cycles: free them now, not at some later collection
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def render(self, prompt: Prompt) -> str:
        if self.chat:
            return self.tokenizer.apply_chat_template(list(prompt.messages), tokenize=False, add_generation_prompt=True)
        return prompt.text

    def generate(self, prompts, params, progress=None):
        return [text for text, _ in self.generate_with_usage(prompts, params, progress)]

    def generate_with_usage(self, prompts, params, progress=None) -> list[tuple[str, Usage]]:
        """`generate`, with each row's tokens: its prompt's and the ones it generated up to its end of sequence."""
        import torch

        if self.model is None:
            self.model = self._load()

        ids = [self.tokenizer(self.render(p), add_special_tokens=False)["input_ids"] for p in prompts]
        prefix = shared_prefix(ids)
        # The few-shot prefix (instruction + demos) is the same for every prompt with random-fixed demos:
        # encode it once and reuse its KV cache, so each prompt costs only its own tokens (5-10x fewer here).
        prefix_cache = self._encode_prefix(prefix) if len(prefix) >= 16 else None
        cut = len(prefix) if prefix_cache is not None else 0
        # Longest first: batches have similar lengths, and a memory problem shows on the first batch.
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
        outputs: list[tuple[str, Usage]] = [("", Usage(0, 0))] * len(ids)
        sampling = (
            {"do_sample": True, "temperature": params.temperature} if params.temperature > 0 else {"do_sample": False}
        )
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            input_ids, mask = self._batch([ids[i] for i in idx], cut)
            extra = {}
            if prefix_cache is not None:
                extra["past_key_values"] = copy.deepcopy(prefix_cache)
                extra["past_key_values"].batch_repeat_interleave(len(idx))
            with torch.inference_mode():
                out = self.model.generate(
                    input_ids=input_ids,
                    attention_mask=mask,
                    max_new_tokens=params.max_new_tokens,
                    pad_token_id=self.tokenizer.pad_token_id,
                    **sampling,
                    **extra,
                )
            for row, i in enumerate(idx):
                generated = out[row, input_ids.shape[1] :]
                text = self.tokenizer.decode(generated, skip_special_tokens=True)
                outputs[i] = (text, Usage(len(ids[i]), self._generated_length(generated.tolist())))
            if progress:
                progress(min(start + self.batch_size, len(order)), len(order))
        return outputs

    def _generated_length(self, tokens: list[int]) -> int:
        """Tokens generated before the row's padding: up to and with its first end-of-sequence token."""
        ends = {self.tokenizer.eos_token_id, self.tokenizer.pad_token_id} - {None}
        return next((n + 1 for n, token in enumerate(tokens) if token in ends), len(tokens))

    def _encode_prefix(self, prefix: list[int]):
        import torch

        with torch.inference_mode():
            return self.model(input_ids=torch.tensor([prefix], device=self.device), use_cache=True).past_key_values

    def _batch(self, rows: list[list[int]], cut: int):
        """[shared prefix][left padding][own tokens]: padding sits after the cached prefix, masked out."""
        import torch

        width = max(len(r) - cut for r in rows)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.full((len(rows), cut + width), pad, dtype=torch.long)
        mask = torch.zeros_like(input_ids)
        for row, tokens in enumerate(rows):
            own = tokens[cut:]
            input_ids[row, :cut] = torch.tensor(tokens[:cut], dtype=torch.long)
            input_ids[row, cut + width - len(own) :] = torch.tensor(own, dtype=torch.long)
            mask[row, :cut] = 1
            mask[row, cut + width - len(own) :] = 1
        return input_ids.to(self.device), mask.to(self.device)


def shared_prefix(rows: Sequence[Sequence[int]]) -> list[int]:
    """The longest token prefix common to all rows, leaving every row at least one token of its own."""
    if not rows:
        return []
    first = rows[0]
    n = min(len(r) for r in rows) - 1
    for r in rows[1:]:
        i = 0
        while i < n and r[i] == first[i]:
            i += 1
        n = i
    return list(first[: max(n, 0)])
