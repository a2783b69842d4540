"""Random-init tiny models (no downloads): a T5 and a Llama, both with the file-less ByT5 tokenizer."""

from __future__ import annotations

from pathlib import Path


def make_tiny_t5(directory: Path) -> str:
    from transformers import ByT5Tokenizer, T5Config, T5ForConditionalGeneration, set_seed

    set_seed(0)  # the same weights whatever ran before
    tok = ByT5Tokenizer()
    config = T5Config(
        vocab_size=len(tok),
        d_model=64,
        d_kv=16,
        d_ff=128,
        num_layers=2,
        num_heads=4,
        decoder_start_token_id=tok.pad_token_id,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
    )
    T5ForConditionalGeneration(config).save_pretrained(directory)
    tok.save_pretrained(directory)
    return str(directory)


def make_tiny_llama(directory: Path, hidden_size: int = 64) -> str:
    """`hidden_size` 256 gives matrices large enough for torch to split a sum across threads."""
    from transformers import ByT5Tokenizer, LlamaConfig, LlamaForCausalLM, set_seed

    set_seed(0)
    tok = ByT5Tokenizer()
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        bos_token_id=tok.eos_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(directory)
    tok.save_pretrained(directory)
    return str(directory)
