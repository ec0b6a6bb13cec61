"""Shared fixtures: real models, built here.

- `tiny_model_dir`: a randomly initialised Llama-shaped causal LM (2 layers, hidden 64) with a
  real byte-level BPE tokenizer trained on the fly and a ChatML chat template, saved as a plain
  Hugging Face folder. Fast enough for every test that needs a model.
- `builtin_model_dir`: the built-in SmolLM2-135M-Instruct, converted once from its GGUF file into
  the rpt cache (about 20 s the first time). For end-to-end tests: every test that uses it is
  marked `slow` by `pytest_collection_modifyitems` below.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "data"

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] "
    "+ '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

TOKENIZER_TEXT = [
    "Let $x$ be a real number such that $x^2 - 5x + 6 = 0$. Then $x = 2$ or $x = 3$.",
    "Hence the answer is $\\boxed{3}$. \\frac{1}{2} + \\sqrt{2} \\leq \\pi",
    "<think> The next token is probably a space followed by a digit. </think> \\boxed{ 3}",
    "Complete the given text under '### Context' by predicting the next token.",
    "café naïve Übung 日本語 数学 😀 αβγ ≤ ≥ ∑\t\r\n",
]


def build_tiny_model(folder: Path, *, seed: int = 0, vocab_size: int = 512) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(TOKENIZER_TEXT * 20, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    tokenizer.chat_template = CHATML
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def build_byte_fallback_tokenizer():
    """A SentencePiece-style tokenizer (Metaspace "▁", byte fallback), as Llama 2 and Mistral use."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tok.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    specials = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    trainer = trainers.BpeTrainer(vocab_size=420, special_tokens=specials, show_progress=False)
    tok.train_from_iterator(
        ["Let x be a real number such that x squared is 4. Hence the answer is 2."] * 10, trainer=trainer
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def build_constant_model(folder: Path, tokenizer, token_id: int) -> Path:
    """A real Llama (saved with `tokenizer`) whose most likely next token is `token_id` after any
    context: every token embeds to the same vector, the layers add nothing to the residual stream
    (zero output projections), and only `token_id`'s output row meets that vector. For tests
    that need a model to write one chosen token, e.g. a SentencePiece word-initial piece."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=512,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
    )
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        model.model.embed_tokens.weight.fill_(1.0)
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.lm_head.weight.zero_()
        model.lm_head.weight[token_id] = 1.0
    model.generation_config.pad_token_id = config.pad_token_id
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def builtin_model_dir() -> Path:
    from rpt_cli.models import BUILTIN_NAME, resolve

    return Path(resolve(BUILTIN_NAME))


def pytest_collection_modifyitems(config, items):
    """Every test that uses the built-in model (directly or through another fixture) is `slow`,
    so `pytest -m "not slow and not vllm"` (`make test-fast`) leaves it out."""
    for item in items:
        if "builtin_model_dir" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def _quiet_env(monkeypatch):
    # keep tests offline and reproducible; vLLM's CPU build must not take the machine's memory
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", os.environ.get("VLLM_CPU_KVCACHE_SPACE", "2"))
