"""A randomly initialised Qwen2-shaped model and a byte-level tokenizer for it, saved as a plain
Hugging Face folder: what the benchmarks run where nothing can be downloaded (the GPU machines).

The tokenizer is byte-level BPE without merges: text becomes one token per UTF-8 byte (so
offsets, token bytes and the reward's byte boundaries behave as with Qwen2's own tokenizer), and the
rest of the vocabulary is filled with tokens that decode to " w<i>", so a random model's samples
decode to text. Sizes: `0.5b` has Qwen2.5-0.5B's layer sizes and vocabulary (494M parameters);
`tiny` is a few million parameters for a CPU run of the same code; `smoke` is smaller still, for
the test that keeps the benchmark script working (tests/test_benchmarks.py).
"""

from __future__ import annotations

from pathlib import Path

SIZES = {
    "smoke": {  # the test of the benchmark script itself: seconds, no figure worth reading
        "vocab_size": 4096,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
    },
    "tiny": {
        "vocab_size": 32_768,
        "hidden_size": 128,
        "intermediate_size": 512,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,  # head size 32: vLLM's CPU attention needs at least 32
        "num_key_value_heads": 2,
    },
    "0.5b": {
        "vocab_size": 151_936,
        "hidden_size": 896,
        "intermediate_size": 4864,
        "num_hidden_layers": 24,
        "num_attention_heads": 14,
        "num_key_value_heads": 2,
    },
}
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def byte_tokenizer(vocab_size: int):
    """Byte-level BPE with no merges over `vocab_size` entries (256 bytes, fillers, 3 specials)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {piece: i for i, piece in enumerate(alphabet)}
    for i in range(vocab_size - len(alphabet) - len(SPECIALS)):
        vocab[f"\u0120w{i}"] = len(vocab)  # "Ġ" is the byte-level piece of a space
    for token in SPECIALS:
        vocab[token] = len(vocab)
    core = Tokenizer(models.BPE(vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token="<|endoftext|>"
    )
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>"]})
    tokenizer.chat_template = CHATML
    return tokenizer


def save_random_qwen2(folder: Path, size: str, dtype: str = "bfloat16") -> Path:
    """A Qwen2 model of `size` (SIZES) with random weights (seed 0) and its tokenizer in `folder`."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    shape = SIZES[size]
    tokenizer = byte_tokenizer(shape["vocab_size"])
    assert len(tokenizer) == shape["vocab_size"]
    config = Qwen2Config(
        **shape,
        max_position_embeddings=4096,
        rope_theta=1_000_000.0,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config).to(getattr(torch, dtype))
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


__all__ = ["SIZES", "byte_tokenizer", "save_random_qwen2"]
