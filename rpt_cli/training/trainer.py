"""TRL's `GRPOTrainer` with what RPT needs on top, each through one of TRL's own methods:

- `_get_train_sampler`: contexts in `DataOrder`'s order, a pure function of seed and step, so a
  resumed run draws exactly what an uninterrupted one would;
- `_tokenize_prompts`: prompt token ids exactly as `rpt rollout` feeds them to its backends;
- `_calculate_rewards`: TRL scores as usual; we keep each round's rewards, predictions, lengths
  and sample ids for the step's metrics and for dynamic sampling;
- `_generate_and_score_completions`: dynamic sampling (paper, Appendix B): from a given step on,
  groups whose G rewards are all equal are replaced by groups of fresh contexts, generated and
  scored by TRL's own method, until every group carries signal or the round cap is reached;
- `_generate_single_turn`, `_get_per_token_logps_and_entropies` and `_prepare_inputs`: each
  prompt is prefilled once for its completions (generation.py) and runs once in every training
  pass (shared_prompt.py), and micro-batches are cut along groups;
- `training_step`, `_clip_grad_norm` and a callback: where the step's time goes (steps.py);
- `log`: the step's RPT metrics join TRL's logs (so TensorBoard and W&B get them) and are written
  to metrics.jsonl and batches.jsonl;
- `_save_checkpoint`: a completion marker once every process has written its part, then rotation,
  so a half-written checkpoint is never picked up by `--resume` nor deletes a complete one.
"""

from __future__ import annotations

import functools
import math
import time
from pathlib import Path

import torch
from transformers import TrainerCallback
from trl import GRPOTrainer

from rpt_cli.generation.base import stop_token_ids
from rpt_cli.prompts import encode_prompt
from rpt_cli.training.batches import (
    concat_rows,
    group_rows,
    select_rows,
    zero_variance_groups,
)
from rpt_cli.training.checkpoints import RunCheckpoints
from rpt_cli.training.data import DataOrder, StepSampler
from rpt_cli.training.generation import generate_with_shared_prefill
from rpt_cli.training.shared_prompt import (
    grouped_permutation,
    packable,
    shared_logps_and_entropies,
    unsupported_reason,
)
from rpt_cli.training.steps import OptimizerClock, Round, StepRecord, StepTimes, step_flops, summarize


class PolicyProbability:
    """P(first token of the prediction | context) under the policy being trained, for the dense
    rewards; bound to the trainer's model once the trainer exists."""

    def __init__(self, tokenizer, batch_size: int = 8):
        from rpt_cli.reward import FirstTokens

        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.first_tokens = FirstTokens(tokenizer)
        self._scorer = None

    def bind(self, model) -> None:
        from rpt_cli.reward import FirstTokenProbability

        self._scorer = FirstTokenProbability(
            model, self.tokenizer, batch_size=self.batch_size, first_tokens=self.first_tokens
        )

    def __call__(self, pairs):
        if self._scorer is None:
            raise RuntimeError("PolicyProbability used before bind(model)")
        return self._scorer(pairs)


class RPTTrainer(RunCheckpoints, GRPOTrainer):
    def __init__(
        self,
        *args,
        data_order: DataOrder,
        dynamic_sampling_from_step: int = 0,
        dynamic_sampling_max_rounds: int = 10,
        extract=None,
        run_log=None,
        flops_start: float = 0.0,
        save_total_limit: int | None = None,
        prompt_encoder=None,
        shared_prompt: bool = True,
        **kwargs,
    ):
        self.rpt_order = data_order
        self.rpt_encode = prompt_encoder  # PromptBuilder.encode: contexts stay plain text
        self.rpt_dynamic_from = dynamic_sampling_from_step
        self.rpt_dynamic_rounds = dynamic_sampling_max_rounds
        self.rpt_extract = extract
        self.rpt_log = run_log
        self.rpt_flops = flops_start
        self.rpt_save_total_limit = save_total_limit
        self._rpt_round: Round | None = None
        self._rpt_pending: dict | None = None
        self.rpt_times = StepTimes()
        self._rpt_optimizer_started: float | None = None
        super().__init__(*args, **kwargs)
        # one forward pass per prompt for its completions (shared_prompt.py), where it is exact
        self.rpt_shared_off = (
            unsupported_reason(self.accelerator.unwrap_model(self.model)) if shared_prompt else "--no-shared-prompt"
        )
        # micro-batches along groups, so their rows share prompts; a reorder within the step that
        # leaves the step's gradient as it is, except where a loss normalizes per micro-batch (bnpo)
        self.rpt_grouped_order = self.rpt_shared_off is None and self.loss_type != "bnpo"
        # generation prefills each distinct prompt once (generation.py) where the cache is dynamic
        config = getattr(self, "generation_config", None)
        self.rpt_shared_generation = shared_prompt and getattr(config, "cache_implementation", None) is None
        self.add_callback(OptimizerClock(self))
        # Stop where `rpt rollout` stops: at the chat template's end-of-turn token too, which an
        # instruct model ends its answer with and which is not always its end-of-sequence token.
        stops = stop_token_ids(self._tokenizer, self.model.generation_config)
        if set(stops) != set(self.eos_token_ids):
            self.eos_token_ids = stops
            if getattr(self, "generation_kwargs", None) is not None:
                self.generation_kwargs["eos_token_id"] = stops
                self.generation_config.eos_token_id = stops
        from transformers.trainer_pt_utils import get_model_param_count

        self.rpt_parameters = get_model_param_count(self.model, trainable_only=False)
        # forward passes TRL runs without gradients over every generated sequence, besides the
        # training pass: the log-probabilities of the sampling policy (when generation and
        # optimizer steps are not aligned, or for vLLM's importance-sampling correction) and the
        # reference model's (when the KL coefficient is not 0); the same tests as TRL's own
        generate_every = self.args.steps_per_generation * self.num_iterations
        old_logps = self.args.gradient_accumulation_steps % generate_every != 0 or (
            self.use_vllm and getattr(self, "vllm_importance_sampling_correction", False)
        )
        self.rpt_extra_passes = int(bool(old_logps)) + int(self.beta != 0.0)

    # -- data order and prompts -------------------------------------------------------------

    def _get_train_sampler(self, dataset=None):
        return StepSampler(
            self.rpt_order,
            self.num_generations,
            repeat_count=self.num_iterations * self.args.steps_per_generation,
            steps=self.args.max_steps,
        )

    def _tokenize_prompts(self, prompts: list):
        if not prompts or not isinstance(prompts[0], str):
            return super()._tokenize_prompts(prompts)
        # each prompt comes G times in a row: tokenize it once
        encode = self.rpt_encode or (lambda prompt: encode_prompt(self._tokenizer, prompt))
        ids = {prompt: encode(prompt) for prompt in dict.fromkeys(prompts)}
        return [ids[prompt] for prompt in prompts], None, {}

    # -- the passes: shared prompts and where the time goes -------------------------------------

    def _get_per_token_logps_and_entropies(
        self, model, input_ids, attention_mask, logits_to_keep, batch_size=None, compute_entropy=False, **extra
    ):
        with self.rpt_times.part("train" if torch.is_grad_enabled() else "scoring"):
            multimodal = any(value is not None for key, value in extra.items() if key != "compute_aux_loss")
            if (
                self.rpt_shared_off is None
                and not multimodal
                and not extra.get("compute_aux_loss")
                and packable(attention_mask, logits_to_keep)
            ):
                with self.accelerator.autocast():
                    logps, entropies = shared_logps_and_entropies(
                        model,
                        input_ids,
                        attention_mask,
                        logits_to_keep,
                        batch_size=batch_size,
                        compute_entropy=compute_entropy,
                    )
                return logps, entropies, None
            return super()._get_per_token_logps_and_entropies(
                model, input_ids, attention_mask, logits_to_keep, batch_size, compute_entropy, **extra
            )

    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, *rest, **kwargs):
        plain = not (self.use_vllm or self.use_transformers_continuous_batching or images or multimodal_fields)
        if not (plain and self.rpt_shared_generation):
            return super()._generate_single_turn(prompt_ids, images, multimodal_fields, *rest, **kwargs)
        return generate_with_shared_prefill(self, prompt_ids), None

    def _prepare_inputs(self, generation_batch):
        if not self.model.training or not self.rpt_grouped_order:
            return super()._prepare_inputs(generation_batch)
        # TRL's training path, with the rows shuffled group by group instead of one by one
        from trl.trainer.utils import split_tensor_dict

        if self._step % (self.args.steps_per_generation * self.num_iterations) == 0 or self._buffered_inputs is None:
            batch = self._generate_and_score_completions(generation_batch)
            order = grouped_permutation(batch["prompt_ids"], batch["prompt_mask"])
            batch = {
                key: value[order.to(value.device)]
                if isinstance(value, torch.Tensor) and value.ndim >= 1
                else [value[i] for i in order.tolist()]
                if isinstance(value, list)
                else value
                for key, value in batch.items()
            }
            self._buffered_inputs = split_tensor_dict(batch, self.args.steps_per_generation)
        return self._buffered_inputs[self._step % self.args.steps_per_generation]

    def training_step(self, model, inputs, num_items_in_batch=None):
        with self.rpt_times.part("train"):  # generation and scoring inside are charged to themselves
            return super().training_step(model, inputs, num_items_in_batch)

    def _clip_grad_norm(self, model):
        self._rpt_optimizer_started = time.perf_counter()
        return super()._clip_grad_norm(model)

    # -- scoring and dynamic sampling --------------------------------------------------------

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        with self.rpt_times.part("reward"):
            rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        # TRL gathers rewards over processes; the weighted sum below is the one its advantages use
        weights = self.reward_weights.to(rewards_per_func.device).unsqueeze(0)
        unscored = torch.isnan(rewards_per_func).all(dim=1)
        total = (rewards_per_func * weights).nansum(dim=1)
        total[unscored] = torch.nan
        start = self.accelerator.process_index * len(prompts)
        local = total[start : start + len(prompts)].float().cpu()
        stop_ids = {*self.eos_token_ids, self._tokenizer.pad_token_id}
        extract = self.rpt_extract
        G = self.num_generations
        self._rpt_round = Round(
            ids=[str(row.get("id", "")) for row in inputs[::G]],
            rewards=local,
            no_prediction=[extract(c) is None for c in completions] if extract else [False] * len(completions),
            lengths=[len(ids) for ids in completion_ids_list],
            truncated=[bool(ids) and ids[-1] not in stop_ids for ids in completion_ids_list],
            zero_variance=zero_variance_groups(local, G).tolist(),
        )
        return rewards_per_func

    def _take_round(self) -> Round:
        round_, self._rpt_round = self._rpt_round, None
        if round_ is None:
            raise RuntimeError("TRL did not score the completions through _calculate_rewards")
        return round_

    def dynamic_sampling_active(self, step: int) -> bool:
        """Whether (1-based) step `step` replaces groups without signal (0: never)."""
        return self.rpt_dynamic_from > 0 and step >= self.rpt_dynamic_from

    def _generate_and_score_completions(self, inputs):
        if not self.model.training:
            return super()._generate_and_score_completions(inputs)
        self.rpt_times.reset()
        with self.rpt_times.part("generation"):  # rewards and scoring passes inside count as themselves
            return self._generate_and_score_step(inputs)

    def _generate_and_score_step(self, inputs):
        G = self.num_generations
        record = StepRecord(step=self.state.global_step + 1, started=time.perf_counter())
        batch = super()._generate_and_score_completions(inputs)
        first = self._take_round()
        n = len(first.ids)
        record.drawn, record.groups, record.rounds = first.ids, n, 1
        record.generated_tokens += sum(first.lengths)
        record.prompt_tokens += int(batch["prompt_mask"].sum())
        record.zero_before = sum(first.zero_variance)
        if not self.dynamic_sampling_active(record.step):
            record.train_on(first, list(range(n)), G)
        else:
            batch = self._refill(batch, first, record)
        batch = self._mask_untrained(batch)
        loss_mask = (
            batch["completion_mask"]
            if batch.get("tool_mask") is None
            else batch["completion_mask"] * batch["tool_mask"]
        )
        record.trained_tokens = int(batch["prompt_mask"].sum()) + int(batch["completion_mask"].sum())
        batch["num_items_in_batch"] = self.accelerator.gather(loss_mask.sum()).sum()
        self._rpt_pending = summarize(record, self.accelerator, self.rpt_extra_passes)
        return batch

    def _mask_untrained(self, batch: dict) -> dict:
        """The batch with completion tokens the loss must not reach masked out (none here)."""
        return batch

    def _refill(self, batch: dict, first: Round, record: StepRecord) -> dict:
        """Keep the groups of `first` with varied rewards; replace the others with groups of fresh
        contexts until all groups carry signal or `dynamic_sampling_max_rounds` rounds have run.
        Every process runs the same number of rounds with the same number of contexts, as TRL's
        gathers and the generation engines need."""
        G, n = self.num_generations, len(first.ids)
        keep = [g for g in range(n) if not first.zero_variance[g]]
        fillers = [g for g in range(n) if first.zero_variance[g]]
        record.dropped = [first.ids[g] for g in fillers]
        record.train_on(first, keep, G)
        parts = [select_rows(batch, group_rows(keep, G))] if keep else []
        need = n - len(keep)
        # TRL's own metrics keep describing the batch as drawn; ours describe the batch trained on
        trl_metrics = {key: len(values) for key, values in self._metrics["train"].items()}
        kept_total, generated_total = len(keep), n
        taken = 0  # positions of the step's refill stream drawn so far, by all processes
        device = self.accelerator.device
        while True:
            counts = self.accelerator.gather(torch.tensor([[need, kept_total, generated_total]], device=device))
            most = int(counts[:, 0].max())
            kept_all, generated_all = int(counts[:, 1].sum()), int(counts[:, 2].sum())
            if most == 0 or record.rounds - 1 >= self.rpt_dynamic_rounds:
                break
            # draw as many groups as the share of groups with signal so far says we need
            rate = kept_all / generated_all if generated_all else 0.0
            count = n if rate == 0 else min(n, math.ceil(most / rate))
            # every process takes its own slice of the step's refill stream, after the slices
            # of the rounds before: no context twice in a step (records are 1-based steps)
            start = taken + self.accelerator.process_index * count
            indices = self.rpt_order.refill_indices(record.step - 1, start, count)
            taken += count * self.accelerator.num_processes
            fresh = [self.train_dataset[i] for i in indices for _ in range(G)]
            out = super()._generate_and_score_completions(fresh)
            round_ = self._take_round()
            record.rounds += 1
            record.groups += count
            record.generated_tokens += sum(round_.lengths)
            record.prompt_tokens += int(out["prompt_mask"].sum())
            good = [g for g in range(count) if not round_.zero_variance[g]][:need]
            if good:
                parts.append(select_rows(out, group_rows(good, G)))
                record.train_on(round_, good, G)
                record.refilled += [round_.ids[g] for g in good]
            need -= len(good)
            kept_total += len(good)
            generated_total += count
        if need:  # the cap was hit: groups without signal keep their places (advantage 0)
            spare = fillers[:need]
            parts.append(select_rows(batch, group_rows(spare, G)))
            record.train_on(first, spare, G)
            kept_ids = set(spare)
            record.dropped = [first.ids[g] for g in fillers if g not in kept_ids]
        for key, length in trl_metrics.items():
            del self._metrics["train"][key][length:]
        return concat_rows(parts, self._tokenizer.pad_token_id)

    # -- logging and checkpoints -------------------------------------------------------------

    def log(self, logs: dict, start_time: float | None = None) -> None:
        pending = self._rpt_pending
        if pending is None or "loss" not in logs or not self.model.training:
            return super().log(logs, start_time)
        self._rpt_pending = None
        step_time = time.perf_counter() - pending.pop("_started")
        ids = pending.pop("_ids")
        self.rpt_flops += step_flops(self.rpt_parameters, pending)
        metrics = {
            **pending,
            "learning_rate": logs.get("learning_rate"),
            "loss": logs.get("loss"),
            "grad_norm": logs.get("grad_norm"),
            "step_time_s": step_time,
            **self.rpt_times.as_metrics(),
            # every sequence's prompt and completion tokens, shared or not: the work of the step
            "tokens_per_s": (pending["prompt_tokens"] + pending["generated_tokens"]) / step_time
            if step_time > 0
            else 0.0,
            "flops": self.rpt_flops,
            "epoch": self.rpt_order.epochs(pending["step"]),
        }
        logs.update(
            {
                f"rpt/{key}": value
                for key, value in metrics.items()
                if key not in ("step", "learning_rate", "loss", "grad_norm")
            }
        )
        super().log(logs, start_time)
        if self.rpt_log is not None and self.accelerator.is_main_process:
            self.rpt_log.write_step(metrics, {"step": pending["step"], **ids})
        if (
            self.rpt_log is not None
            and self.accelerator.is_main_process
            and self.dynamic_sampling_active(pending["step"])
            and metrics["zero_variance_share_after"] > 0
        ):
            self.rpt_log.warn(
                f"step {pending['step']}: dynamic sampling stopped after "
                f"{metrics['sampling_rounds'] - 1} refill rounds (--dynamic-sampling-max-rounds) "
                f"with {metrics['zero_variance_share_after']:.0%} of the groups still without "
                "signal; they stay in the batch with zero advantage"
            )


class EmaUpdate(TrainerCallback):
    """Moves the EMA teacher toward the policy after every optimizer step."""

    def __init__(self, teacher, trainer):
        self.teacher, self.trainer = teacher, trainer

    def on_step_end(self, args, state, control, **kwargs):
        self.teacher.update(self.trainer.accelerator.unwrap_model(self.trainer.model))


class RLPTrainer(RPTTrainer):
    """`--objective rlp`: GRPO with the information-gain reward (rlp.py), as RLP defines it:

    - a completion is a thought, and generation stops at its closer `</think>` (a stop string for
      transformers and vLLM; whatever a backend generates past it is cut before scoring);
    - the advantage is G/(G − 1)·(r − mean of the group), with no division by the group's standard
      deviation (TRL computes r − mean with `scale_rewards="none"`; the factor is applied here);
    - the loss reaches the thought's tokens only (the prompt is never in the loss, the scored next
      token is not part of the completion, and anything after the closer is masked);
    - the EMA teacher is updated after every optimizer step and saved with every checkpoint."""

    def __init__(self, *args, rlp_reward, **kwargs):
        self.rlp_reward = rlp_reward
        self.rlp_closer = rlp_reward.gain.splitter.closer.decode("utf-8")
        grpo = kwargs["args"]
        if grpo.scale_rewards != "none":
            raise ValueError(f"RLP's advantage is not scaled by the group's spread: scale_rewards={grpo.scale_rewards}")
        # vLLM's sampling takes `stop` (the closer's tokens are kept in the output); transformers'
        # GenerationConfig takes `stop_strings` (and `generate` the tokenizer, see below)
        stops = (
            {"stop": [self.rlp_closer], "include_stop_str_in_output": True}
            if grpo.use_vllm
            else {"stop_strings": [self.rlp_closer]}
        )
        grpo.generation_kwargs = {**(grpo.generation_kwargs or {}), **stops}
        super().__init__(*args, **kwargs)
        rlp_reward.bind(self)
        # the reward's forward pass over every prompt + thought + next token, without gradients
        # (the teacher's pass over each context alone, 1/G of it, is left out of the estimate)
        self.rpt_extra_passes += 1
        rlp_reward.gain.splitter.stop_ids = frozenset({*self.eos_token_ids, self._tokenizer.pad_token_id})
        self.add_callback(EmaUpdate(rlp_reward.teacher, self))

    def _generate_single_turn(self, prompt_ids, *args, **kwargs):
        model = None
        if not self.use_vllm:
            # transformers' stop strings need the tokenizer passed to `generate`, which TRL does not
            # pass: bind it for the length of this call
            model = self.accelerator.unwrap_model(self.model)
            model.generate = functools.partial(model.generate, tokenizer=self._tokenizer)
        try:
            completion_ids, logprobs = super()._generate_single_turn(prompt_ids, *args, **kwargs)
        finally:
            if model is not None:
                del model.generate
        # the thought ends at its closer: drop what follows (padding of rows that stopped early
        # in a batch that ran on, or tokens a backend generated past the stop)
        splitter = self.rlp_reward.gain.splitter
        for row, ids in enumerate(completion_ids):
            length, closed = splitter.split(ids)
            if closed and length < len(ids):
                completion_ids[row] = ids[:length]
                if logprobs is not None:
                    logprobs[row] = logprobs[row][:length]
        return completion_ids, logprobs

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        # a thought is cut short when it never closed (it ends at its closer otherwise)
        splitter = self.rlp_reward.gain.splitter
        self._rpt_round.truncated = [not splitter.split(ids)[1] for ids in completion_ids_list]
        return rewards

    def _generate_and_score_completions(self, inputs):
        batch = super()._generate_and_score_completions(inputs)
        G = self.num_generations
        # TRL gave r − mean of the group (scale_rewards="none"); RLP's estimator scales it by
        # G/(G − 1), which makes the group mean a leave-one-out baseline
        batch["advantages"] = batch["advantages"] * (G / (G - 1))
        return batch

    def _mask_untrained(self, batch: dict) -> dict:
        splitter = self.rlp_reward.gain.splitter
        mask = batch["completion_mask"].clone()
        for row, (ids, row_mask) in enumerate(zip(batch["completion_ids"].tolist(), mask.tolist())):
            length, _ = splitter.split([i for i, m in zip(ids, row_mask) if m])
            mask[row, length:] = 0
        batch["completion_mask"] = mask
        return batch

    def _save_extras(self, folder: Path) -> None:
        self.rlp_reward.teacher.save(folder)


__all__ = [
    "EmaUpdate",
    "PolicyProbability",
    "RLPTrainer",
    "RPTTrainer",
    "RunCheckpoints",
    "Round",
    "StepRecord",
    "step_flops",
]
