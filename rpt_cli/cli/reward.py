"""`rpt reward`: score rollouts with the verifiable reward. The command only: the work is in the core modules."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from rpt_cli.cli.app import (
    AnswerOpt,
    DeviceOpt,
    DtypeOpt,
    InputArg,
    OutputOpt,
    RewardOpt,
    SkipBadScoredOpt,
    TrustOpt,
    app,
    check_input,
    check_numbers,
    check_outputs,
    old_name_option,
    prevalidate,
    renamed,
)
from rpt_cli.console import cli_errors, input_size, spinner, stderr
from rpt_cli.errors import UsageError
from rpt_cli.jsonl import STDIO, ReadStats, RecordWriter, read_records
from rpt_cli.models import BUILTIN_NAME


@app.command(
    epilog="Examples:  rpt rollout samples.jsonl | rpt reward | jq -c .rewards\n\n"
    "rpt reward rollouts.jsonl --reward dense --model smollm2-135m -o scored.jsonl"
)
def reward(
    input: InputArg = STDIO,
    output: OutputOpt = None,
    reward: RewardOpt = "prefix",
    fn_old: Annotated[str | None, old_name_option("--reward", "--fn")] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help=f"The policy that made the rollouts: needed by first-token (its tokenizer) and the dense variants "
            f"(its probabilities); with prefix, its tokenizer re-derives boundaries made with another one. '{BUILTIN_NAME}', "
            "a Hugging Face folder, a .gguf file or a hub id.",
        ),
    ] = None,
    answer: AnswerOpt = None,
    no_think: Annotated[
        bool,
        typer.Option(
            "--no-think",
            help="For answers without thinking: take the last \\boxed{} anywhere, not only after </think>.",
        ),
    ] = False,
    correct: Annotated[
        str,
        typer.Option(
            help="dense variants: what counts as correct (reward 1): first-token (the paper's definition) or prefix (Eq. 3)."
        ),
    ] = "first-token",
    unsolved_reward: Annotated[
        float, typer.Option(help="conditional-dense: the reward of every completion in a group without a correct one.")
    ] = 0.0,
    contexts_per_pass: Annotated[int, typer.Option(help="dense variants: contexts per forward pass.")] = 8,
    batch_size_old: Annotated[int | None, old_name_option("--contexts-per-pass", "--batch-size")] = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    skip_bad: SkipBadScoredOpt = False,
    trust_remote_code: TrustOpt = False,
) -> None:
    """Score rollouts: extract each completion's answer and reward it against the ground truth.

    Adds [bold]predictions[/] (the text in the last \\boxed{} after </think>, or in the direct answer format the whole completion; null when none), [bold]rewards[/] and [bold]reward_fn[/] to each rollout.

    A summary (mean reward, share without a prediction, pass@G) goes to standard error.
    """
    with cli_errors():
        check_numbers(locals())
        fn = renamed(reward, fn_old, new="--reward", old="--fn", default="prefix", command="reward")
        batch_size = renamed(
            contexts_per_pass,
            batch_size_old,
            new="--contexts-per-pass",
            old="--batch-size",
            default=8,
            command="reward",
        )
        from rpt_cli.answers import check_answer
        from rpt_cli.jsonl import source_name
        from rpt_cli.reward import (
            CORRECTNESS_RULES,
            NEEDS_MODEL,
            NEEDS_TOKENIZER,
            REWARD_FUNCTIONS,
            RewardStats,
            answer_checked,
            get_reward_function,
            rollout_validator,
            score_rollouts,
        )

        if fn not in REWARD_FUNCTIONS:
            raise UsageError(f"--reward {fn}: choose one of {', '.join(REWARD_FUNCTIONS)}")
        if answer is not None:
            check_answer(answer)
        if correct not in CORRECTNESS_RULES:
            raise UsageError(f"--correct {correct}: choose one of {', '.join(CORRECTNESS_RULES)}")
        if batch_size < 1:
            raise UsageError("--contexts-per-pass must be at least 1")
        uses_model = fn in NEEDS_MODEL or fn in NEEDS_TOKENIZER
        if uses_model and model is None:
            raise UsageError(
                f"--reward {fn} needs --model (the policy whose tokenizer"
                f"{' and probabilities' if fn in NEEDS_MODEL else ''} it uses), e.g. --model {BUILTIN_NAME}"
            )
        check_input(input)
        check_outputs(input, ("-o", output))
        validate = rollout_validator(REWARD_FUNCTIONS[fn])
        options: dict = {"require_think": not no_think}
        notes: dict = {}
        policy_tokenizer = None
        if model is not None:
            from rpt_cli.models import display_name, load_model, load_tokenizer

            if not skip_bad:
                prevalidate(input, validate, None)  # before minutes of model loading
            if not uses_model:  # prefix: the policy's tokenizer, for the boundaries only
                policy_tokenizer = load_tokenizer(model, trust_remote_code=trust_remote_code)
            elif fn in NEEDS_TOKENIZER:
                notes["model"] = display_name(model)
                options["tokenizer"] = load_tokenizer(model, trust_remote_code=trust_remote_code)
            else:
                notes["model"] = display_name(model)
                lm, tokenizer, resolved_device = load_model(
                    model, device=device, dtype=dtype, trust_remote_code=trust_remote_code
                )
                options.update(
                    model=lm, tokenizer=tokenizer, device=resolved_device, correct=correct, batch_size=batch_size
                )
                if fn == "conditional-dense":
                    options["unsolved_reward"] = unsolved_reward
        reward_fn = get_reward_function(fn, **options)
        read_stats, stats = ReadStats(), RewardStats()
        started = time.perf_counter()
        numbered = read_records(input, validate, skip_bad=skip_bad, stats=read_stats, with_lines=True)
        from rpt_cli.boundaries import Alignment, PolicyTokenizer, RolloutPolicies, aligned_records

        # judge the policy's own tokens: each rollout names its policy's tokenizer, and boundaries
        # made with another tokenizer are re-derived with --model's (or refused without it)
        policy = None
        if model is not None:
            policy = PolicyTokenizer(policy_tokenizer or options["tokenizer"], display_name(model), model)
        policies = RolloutPolicies(source_name(input), policy, stats=read_stats if skip_bad else None)
        numbered = policies(numbered)
        alignment = None
        if policy is not None:
            alignment = Alignment(policy.identity)
            numbered = aligned_records(
                numbered, policy, source_name(input), alignment=alignment, stats=read_stats if skip_bad else None
            )
        records = answer_checked(numbered, reward_fn, given=answer, source=source_name(input))
        size = input_size(input)

        def watched(records, say):
            for count, record in enumerate(records, start=1):
                if count % 64 == 0:
                    rate = stats.groups / ((time.perf_counter() - started) or 1e-9)
                    say(
                        f"reward: {stats.groups:,} records, {stats.completions:,} completions, {rate:,.1f} records/s",
                        read_stats.bytes,
                        size,
                    )
                yield record

        with spinner("reward: reading") as say, RecordWriter(output) as out:
            out.write_all(score_rollouts(watched(records, say), reward_fn, stats=stats, notes=notes))
        alignment = alignment or policies.alignment
        for note in alignment.notes() if alignment else ():
            stderr.print(f"reward: note: {note}", markup=False)
        seconds = time.perf_counter() - started
        stderr.print(
            f"reward ({fn}, {reward_fn.answer} answers): {stats.groups:,} records, {stats.completions:,} completions: "
            f"mean reward {stats.mean_reward:.4f}, no prediction {stats.no_prediction_share:.1%}, "
            f"{stats.g_label} {stats.pass_at_g:.1%}, accuracy {stats.accuracy:.1%}, "
            f"{stats.tied_groups:,} groups with all rewards equal, in {seconds:.1f} s"
        )
        read_stats.report(stderr)
