"""What every generation backend shares: sampling settings, completions, stop tokens, seeds.

Nothing here imports torch or vLLM, so the interface can be imported (and type-checked against)
without loading either engine.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from rpt_cli import paper
from rpt_cli.errors import SettingError

FINISH_STOP = "stop"  # the model ended its answer (an end-of-sequence or end-of-turn token)
FINISH_LENGTH = "length"  # cut off at max_new_tokens


def check_sampling(temperature: float, top_p: float, top_k: int) -> None:
    """The one check of the sampling settings of rollout, eval and train (which also needs a
    positive temperature); SettingError naming the field."""
    if temperature < 0:
        raise SettingError("temperature", "{setting} must not be negative")
    if not 0 < top_p <= 1:
        raise SettingError("top_p", "{setting} must be in (0, 1]")
    if top_k < 0:
        raise SettingError("top_k", "{setting} must be 0 (off) or positive")


@dataclass(frozen=True)
class SamplingConfig:
    """How completions are sampled. Defaults are the paper's (temperature 0.8, 8,192 new tokens).

    `top_k=0` and `top_p=1.0` switch those filters off; `temperature=0` is greedy decoding.
    `seed` makes a call reproducible: the same prompts, n and seed give the same completions on
    the same backend and machine. `ignore_eos` never stops early (for fixed-length benchmarks).
    """

    max_new_tokens: int = paper.NEW_TOKENS
    temperature: float = paper.TEMPERATURE
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = 0
    ignore_eos: bool = False

    def check(self) -> None:
        if self.max_new_tokens < 1:
            raise SettingError("max_new_tokens", "{setting} must be at least 1")
        check_sampling(self.temperature, self.top_p, self.top_k)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@dataclass(frozen=True)
class Completion:
    """One sampled answer. `tokens` counts every generated token, the stop token included;
    `data` is the exact bytes of the tokens before the stop token (special tokens stand for no
    bytes; None for a tokenizer whose pieces do not map to bytes), `text` those bytes as text
    (a torn UTF-8 character becomes U+FFFD there, never in `data`)."""

    text: str
    finish_reason: str
    tokens: int
    token_ids: tuple[int, ...] = ()
    data: bytes | None = None


class CompletionDecoder:
    """Text and exact bytes of generated token ids, read off the tokenizer's byte table
    (`tokens.generated_bytes`): `batch_decode` would drop the space of a SentencePiece
    word-initial token ("▁be" gives "be") and turn part of a character into U+FFFD, and a
    prediction must be scored on what the model wrote. Tokenizers without a byte table fall
    back to `batch_decode` (and no bytes)."""

    def __init__(self, tokenizer):
        from rpt_cli.tokens import token_byte_table

        self.tokenizer = tokenizer
        self.table = token_byte_table(tokenizer)

    def __call__(self, bodies: list[list[int]]) -> list[tuple[str, bytes | None]]:
        if self.table is None:
            return [(text, None) for text in self.tokenizer.batch_decode(bodies, skip_special_tokens=True)]
        from rpt_cli.tokens import generated_bytes

        out = []
        for ids in bodies:
            data = generated_bytes(self.table, ids)
            out.append((data.decode("utf-8", "replace"), data))
        return out


@runtime_checkable
class GenerationBackend(Protocol):
    """The one interface rollout, evaluation and training use to sample completions."""

    name: str  # "hf" or "vllm"
    model_name: str  # what records carry as the model
    tokenizer: object

    def generate(self, prompts: list[str] | list[list[int]], n: int, params: SamplingConfig) -> list[list[Completion]]:
        """n completions for each prompt, in prompt order (`result[i][j]` is prompt i's j-th).
        A prompt is token ids (as `PromptBuilder.encode` makes them) or a text, encoded by
        `encode_prompt` (its special strings taken as written)."""
        ...

    def close(self) -> None:
        """Release the engine (memory, worker processes)."""
        ...


def derive_seed(seed: int, *parts: object) -> int:
    """A seed for one piece of the work (a chunk, a prompt), fixed by the run's seed and the
    piece's identity, so pieces get unrelated random streams that do not depend on what ran
    before them. Kept below 2**31: every engine accepts it."""
    digest = hashlib.sha256(repr((seed, *parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") % (2**31 - 1)


def _as_id_list(value) -> list[int]:
    if value is None:
        return []
    if isinstance(value, int):
        return [value]
    return [int(v) for v in value]


def end_of_turn_token_id(tokenizer) -> int | None:
    """The token a chat template closes an assistant turn with (`<|im_end|>`, `<|eot_id|>`,
    `<end_of_turn>`, ...), read off the template itself rather than a list of known names."""
    if not getattr(tokenizer, "chat_template", None):
        return None
    marker = "rpt-end-of-turn-probe"
    try:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": "x"}, {"role": "assistant", "content": marker}], tokenize=False
        )
    except Exception:  # noqa: BLE001 - some templates refuse such a conversation; then there is none to read
        return None
    if not isinstance(text, str) or marker not in text:
        return None
    after = text[text.rindex(marker) + len(marker) :]
    ids = tokenizer(after, add_special_tokens=False)["input_ids"] if after else []
    if not ids:
        return None
    special = set(tokenizer.all_special_ids) | set(getattr(tokenizer, "added_tokens_decoder", {}))
    return ids[0] if ids[0] in special else None


def stop_token_ids(tokenizer, generation_config=None) -> list[int]:
    """Tokens that end a completion: the tokenizer's and the model's end-of-sequence tokens and
    the chat template's end-of-turn token (an instruct model ends its answer with the latter,
    which is not always its end-of-sequence token)."""
    ids = _as_id_list(getattr(tokenizer, "eos_token_id", None))
    if generation_config is not None:
        ids += _as_id_list(getattr(generation_config, "eos_token_id", None))
    turn_end = end_of_turn_token_id(tokenizer)
    if turn_end is not None:
        ids.append(turn_end)
    return list(dict.fromkeys(ids))
