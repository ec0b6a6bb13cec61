"""One generation session: an engine, the prompt builder for its tokenizer, the length checks, and
the metadata its records carry. `rpt rollout`, `rpt eval` (reasoning) and `rpt scaling` open one;
`rpt train` builds its prompts with `prompt_builder`, so all of them see identical prompts.
"""

from __future__ import annotations

from dataclasses import dataclass

from rpt_cli.errors import UsageError
from rpt_cli.generation.base import SamplingConfig
from rpt_cli.prompts import PromptBuilder, PromptConfig, PromptTemplate


@dataclass(frozen=True)
class PromptSettings:
    """How contexts become prompts (the Prompt options of rollout, train and eval)."""

    template: PromptTemplate
    chat: bool = True
    think_prefix: str | None = None
    max_prompt_tokens: int = 4096
    answer: str = "boxed"


def prompt_builder(tokenizer, prompt: PromptSettings) -> PromptBuilder:
    """The builder for one tokenizer; a template too long for the prompt limit is a usage error
    naming the option."""
    return PromptBuilder(
        tokenizer,
        PromptConfig(
            template=prompt.template,
            chat=prompt.chat,
            think_prefix=prompt.think_prefix,
            max_prompt_tokens=prompt.max_prompt_tokens,
        ),
    )


class GenerationSession:
    """An open engine with its prompt builder. `close` releases the engine when the session opened
    it (an hf engine over a model the caller loaded is the caller's)."""

    def __init__(self, engine, prompt: PromptSettings, *, owns_engine: bool = True):
        self.engine = engine
        self.prompt = prompt
        self.owns_engine = owns_engine
        try:
            limit = getattr(engine, "max_model_len", None)
            if limit is not None and prompt.max_prompt_tokens >= limit:
                raise UsageError(
                    f"--max-prompt-tokens {prompt.max_prompt_tokens} leaves no room for a completion "
                    f"within the model length {limit}; lower it or raise --max-model-len"
                )
            self.builder = prompt_builder(engine.tokenizer, prompt)
        except BaseException:
            self.close()
            raise

    def metadata(self, sampling: SamplingConfig, n: int) -> dict:
        """What every rollout record of this session says it was made with (`rollout`)."""
        from rpt_cli.boundaries import identity_of

        prompt = self.prompt
        return {
            "model": self.engine.model_name,
            # whose tokens the completions are: rpt reward checks the samples' boundaries against it
            "tokenizer": identity_of(self.engine.tokenizer, self.engine.model_name).as_field(),
            "backend": self.engine.name,
            "answer": prompt.answer,
            "template": prompt.template.name,
            "chat": self.builder.chat,
            "think_prefix": prompt.think_prefix,
            "n": n,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "top_k": sampling.top_k,
            "max_new_tokens": sampling.max_new_tokens,
            "max_prompt_tokens": prompt.max_prompt_tokens,
            "seed": sampling.seed,
        }

    def close(self) -> None:
        if self.owns_engine:
            self.engine.close()

    def __enter__(self) -> GenerationSession:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


__all__ = ["GenerationSession", "PromptSettings", "prompt_builder"]
