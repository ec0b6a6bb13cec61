"""`rpt eval`: next-token accuracy per entropy split. The command only: the work is in the core modules."""

from __future__ import annotations

from typing import Annotated

import typer

from rpt_cli import paper
from rpt_cli.cli.app import (
    ANSWER_HELP,
    BackendOpt,
    DeviceOpt,
    DtypeOpt,
    EnforceEagerOpt,
    GpuMemoryOpt,
    InputArg,
    MaxBatchSequencesOpt,
    MaxModelLenOpt,
    NoMemoryCheckOpt,
    OutputOpt,
    RayGpusOpt,
    RayOpt,
    RayWorkersOpt,
    SkipBadScoredOpt,
    TensorParallelOpt,
    TopKOpt,
    TopPOpt,
    TrustOpt,
    app,
    check_input,
    check_memory,
    check_numbers,
    check_outputs,
    old_name_option,
    renamed,
)
from rpt_cli.console import cli_errors, spinner, stderr
from rpt_cli.errors import UsageError
from rpt_cli.jsonl import STDIO, ReadStats, RecordWriter, read_records
from rpt_cli.models import BUILTIN_NAME
from rpt_cli.records import evaluation_sample

EVAL_EXAMPLES = (
    "rpt entropy examples/data/val.jsonl | rpt filter --min 0.5 --per-doc 8 > val_samples.jsonl\n\n"
    "  rpt eval val_samples.jsonl --model smollm2-135m --model runs/demo --mode ntp\n\n"
    "  rpt eval val_samples.jsonl --model runs/demo/checkpoint-100 --mode reasoning -G 8 --max-new-tokens 512 "
    "--details per_sample.jsonl\n\n"
    "  rpt eval val_samples.jsonl -m smollm2-135m -m runs/demo --mode ntp --mode reasoning --split hard | jq -c .splits"
)


@app.command(name="eval", epilog=f"Examples:  {EVAL_EXAMPLES}")
def eval_(
    input: InputArg = STDIO,
    output: OutputOpt = None,
    model: Annotated[
        list[str] | None,
        typer.Option(
            "--model",
            "-m",
            help=f"'{BUILTIN_NAME}' (built in, the default), a Hugging Face folder, a .gguf file, a hub id, an rpt train "
            "checkpoint or run folder (its final model). Repeat to evaluate several models on the same samples.",
        ),
    ] = None,
    mode: Annotated[
        list[str] | None,
        typer.Option(
            "--mode",
            help="ntp (standard next-token: the most likely next token, no thinking), reasoning (sampled "
            "completions in the --answer format: think, then answer in \\boxed{}; or, with --answer "
            "direct, the sampled continuation itself) or gain (RLP's information gain: k thoughts after the "
            "context, each scored by how much it raises the log-probability of the true next token); "
            "repeat for several. Default: ntp.",
        ),
    ] = None,
    split: Annotated[
        str,
        typer.Option(
            help="Evaluate one of the paper's nested splits, easy (entropy > 0.5), medium (> 1.0) or hard (> 1.5), or all samples."
        ),
    ] = "all",
    limit: Annotated[
        int | None, typer.Option(help="Use only the first N samples of the split (smoke runs).", metavar="N")
    ] = None,
    seed: Annotated[
        int, typer.Option(help="Seed of the reasoning- and gain-mode sampling (recorded in the report).")
    ] = 0,
    details: Annotated[
        str | None,
        typer.Option(
            "--details",
            metavar="FILE",
            help="Also write one line per sample, model and mode: predictions, rewards, correctness (and completions).",
        ),
    ] = None,
    batch_tokens: Annotated[int, typer.Option(help="ntp: padded tokens per forward pass (rows × longest row).")] = 8192,
    max_context_tokens: Annotated[
        int | None,
        typer.Option(
            help="ntp: cut contexts from the left to this many tokens (default: 4096, capped by the model's maximum)."
        ),
    ] = None,
    no_share: Annotated[
        bool,
        typer.Option(
            "--no-share",
            help="ntp: give every context its own forward pass, even where a longer context of the same "
            "document could provide its logits exactly (same results, slower).",
        ),
    ] = False,
    num_completions: Annotated[
        int,
        typer.Option(
            "--num-completions",
            "-G",
            help="reasoning, gain: completions (thoughts) per context, k; accuracy is their mean, pass@k the "
            "share of contexts with a correct one.",
        ),
    ] = 1,
    num_samples_old: Annotated[int | None, old_name_option("-G/--num-completions", "--num-samples", "-n")] = None,
    answer: Annotated[
        str | None,
        typer.Option(
            "--answer",
            metavar="boxed|direct",
            show_default=False,
            help="reasoning: " + ANSWER_HELP + " Default: the training run's, else boxed.",
        ),
    ] = None,
    reward: Annotated[
        str,
        typer.Option(
            "--reward",
            help="reasoning: reward function that decides correctness: prefix (Eq. 3), first-token, dense or "
            "conditional-dense.",
        ),
    ] = "prefix",
    fn_old: Annotated[str | None, old_name_option("--reward", "--fn")] = None,
    temperature: Annotated[
        float, typer.Option(help=f"reasoning, gain: sampling temperature (paper: {paper.TEMPERATURE}; 0 is greedy).")
    ] = paper.TEMPERATURE,
    top_p: TopPOpt = 1.0,
    top_k: TopKOpt = 0,
    max_new_tokens: Annotated[
        int | None,
        typer.Option(
            help="reasoning, gain: longest completion in tokens (default: the training run's, else 8192 as in the "
            "paper; 1 with --answer direct)."
        ),
    ] = None,
    max_prompt_tokens: Annotated[
        int | None,
        typer.Option(
            help="reasoning, gain: longest prompt in tokens; longer contexts are cut from the left (default: the run's, "
            "else 4096)."
        ),
    ] = None,
    template: Annotated[
        str | None,
        typer.Option(
            help="reasoning: prompt template v0 to v6, fenced, candidates, fewshot, direct or a file, as in rpt rollout (default: the run's, "
            "else v0; direct with --answer direct)."
        ),
    ] = None,
    chat: Annotated[
        bool | None,
        typer.Option(
            "--chat/--no-chat",
            help="reasoning: wrap the prompt in the model's chat template (default: the run's, else "
            "chat; no chat with --answer direct).",
            show_default=False,
        ),
    ] = None,
    think_prefix: Annotated[
        str | None,
        typer.Option(
            help="reasoning: text that opens the model's answer, e.g. '<think>' plus a newline (default: the run's, else none)."
        ),
    ] = None,
    no_think: Annotated[
        bool | None,
        typer.Option(
            "--no-think/--think",
            help="reasoning: take the last \\boxed{} anywhere, not only after </think> "
            "(default: the run's, else --think).",
            show_default=False,
        ),
    ] = None,
    backend: BackendOpt = "auto",
    contexts_per_call: Annotated[int, typer.Option(help="reasoning, gain: contexts per generation call.")] = 32,
    batch_size_old: Annotated[int | None, old_name_option("--contexts-per-call", "--batch-size")] = None,
    max_batch_sequences: MaxBatchSequencesOpt = None,
    tensor_parallel_size: TensorParallelOpt = 1,
    gpu_memory_utilization: GpuMemoryOpt = 0.9,
    max_model_len: MaxModelLenOpt = None,
    enforce_eager: EnforceEagerOpt = False,
    no_memory_check: NoMemoryCheckOpt = False,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    ray: RayOpt = None,
    ray_workers: RayWorkersOpt = 2,
    ray_gpus_per_worker: RayGpusOpt = 0.0,
    skip_bad: SkipBadScoredOpt = False,
    trust_remote_code: TrustOpt = False,
) -> None:
    """Next-token accuracy per entropy split (the paper's Table 1), in standard and reasoning modes, and mean information gain.

    Reads samples (the output of rpt filter) and writes one report per model and mode to standard output: [bold]model[/], [bold]mode[/], [bold]n[/], and per split ([bold]splits[/]: easy, medium, hard, nested) n, accuracy and a 95 % Wilson interval [bold]ci95[/]. One table of all of them goes to standard error.

    ntp scores the model's most likely next token with Eq. 3 (as rpt reward does); reasoning samples k chains of thought with rpt rollout's prompts and scores them with the reward registry; gain samples k thoughts as rpt train --objective rlp does and reports their mean information gain ([bold]info_gain[/], nats) beside the share of thoughts with a positive gain.
    """
    with cli_errors():
        check_numbers(locals())
        from contextlib import nullcontext

        from rpt_cli.evaluate import (
            EvalConfig,
            Progress,
            add_paired,
            evaluate_model,
            locate_model,
            mode_label,
            paired_table,
            report_table,
            select_samples,
        )
        from rpt_cli.jsonl import source_name
        from rpt_cli.rollout import numbered_samples

        config = EvalConfig(
            modes=tuple(dict.fromkeys(mode or ["ntp"])),
            split=split,
            limit=limit,
            seed=seed,
            device=device,
            dtype=dtype,
            trust_remote_code=trust_remote_code,
            batch_tokens=batch_tokens,
            max_context_tokens=max_context_tokens,
            share_passes=not no_share,
            backend=backend,
            num_completions=renamed(
                num_completions,
                num_samples_old,
                new="-G/--num-completions",
                old="-n/--num-samples",
                default=1,
                command="eval",
            ),
            answer=answer,
            reward=renamed(reward, fn_old, new="--reward", old="--fn", default="prefix", command="eval"),
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            max_new_tokens=max_new_tokens,
            template=template,
            chat=chat,
            think_prefix=think_prefix,
            max_prompt_tokens=max_prompt_tokens,
            no_think=no_think,
            contexts_per_call=renamed(
                contexts_per_call,
                batch_size_old,
                new="--contexts-per-call",
                old="--batch-size",
                default=32,
                command="eval",
            ),
            max_batch_sequences=max_batch_sequences,
            tensor_parallel_size=tensor_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization,
            max_model_len=max_model_len,
            enforce_eager=enforce_eager,
        )
        config.check()
        from rpt_cli.cluster import ray_settings

        cluster_settings = ray_settings(ray, ray_workers, ray_gpus_per_worker)
        if cluster_settings is not None and "gain" in config.modes:
            raise UsageError("--mode gain scores thoughts with the model in this process: run it without --ray")
        if cluster_settings is not None and "reasoning" in config.modes:
            from rpt_cli.reward import NEEDS_MODEL

            if config.reward in NEEDS_MODEL:
                raise UsageError(
                    f"--reward {config.reward} scores with the model in this process: run it without --ray"
                )
        check_input(input)
        check_outputs(input, ("-o", output), *([("--details", details)] if details else []))
        refs = [locate_model(spec) for spec in (model or [BUILTIN_NAME])]
        for ref in refs:
            config.check_model(ref)
            for sampled in ("reasoning", "gain"):
                if sampled in config.modes:
                    check_memory(
                        config.contexts_per_call,
                        config.num_completions,
                        config.new_tokens(ref, sampled),
                        names="--contexts-per-call × -G × --max-new-tokens",
                        override=no_memory_check,
                    )
        source = source_name(input)
        read_stats = ReadStats()
        records = numbered_samples(
            read_records(input, evaluation_sample, skip_bad=skip_bad, stats=read_stats, with_lines=True),
            source=source,
            unique=True,
            with_lines=True,
        )
        samples = select_samples(records, split, limit)  # all read and checked before any model loads
        if not samples:
            stderr.print(f"eval: no samples{'' if split == 'all' else f' in split {split}'}: nothing to evaluate")
        from rpt_cli.holdout import shared_documents_note

        for ref in refs:
            if ref.run is not None:
                note = shared_documents_note(ref.run, [sample.record for sample in samples], ref.name)
                if note:
                    stderr.print(f"eval: note: {note}", markup=False)
        reports: list[dict] = []
        scored: list[tuple[dict, dict]] = []  # each report with its per-sample scores, for paired comparisons
        from rpt_cli.cluster import RayCluster

        with (
            RecordWriter(details) if details else nullcontext() as detail_out,
            RayCluster(cluster_settings) if cluster_settings is not None and samples else nullcontext() as cluster,
            spinner("eval: reading") as say,
        ):
            show = Progress(
                on_start=lambda text: say(f"eval: {text}"),
                on_count=lambda text, done, total: say(f"eval: {text}", done, total),
                on_note=lambda text: stderr.print(f"eval: note: {text}", markup=False),
            )
            for ref in refs:
                reports += evaluate_model(
                    ref,
                    samples,
                    config,
                    source=None if input == STDIO else input,
                    on_details=detail_out.write if detail_out else None,
                    on_scores=lambda report, scores: scored.append((report, scores)),
                    progress=show,
                    skipped=read_stats if skip_bad else None,
                    cluster=cluster,
                )
        add_paired(scored, seed=config.seed)
        with RecordWriter(output) as out:
            out.write_all(reports)
        stderr.print(report_table(reports))
        differences = paired_table(reports)
        if differences is not None:
            stderr.print(differences)
        for report in reports:
            settings = report.get("settings", {})
            if report["mode"] == "ntp" and settings:
                stderr.print(
                    f"eval: {report['model']} (ntp): {report['n']:,} contexts in {settings['forward_rows']:,} "
                    f"forward rows, {settings['positions_per_second']:,.1f} positions/s"
                )
            elif report["mode"] == "reasoning" and settings and report.get("answer") == "direct":
                stderr.print(
                    f"eval: {report['model']} (direct, {settings['backend']}): {settings['max_new_tokens']} "
                    f"new token(s) per guess, {report['no_prediction_share']:.0%} empty (the model ended at once)"
                )
            elif report["mode"] == "gain" and settings:
                stderr.print(
                    f"eval: {report['model']} (gain, {settings['backend']}): {settings['truncated_share']:.0%} of "
                    f"thoughts cut at --max-new-tokens; the baseline is the model itself"
                )
            elif report["mode"] == "reasoning" and settings:
                stderr.print(
                    f"eval: {report['model']} ({mode_label(report)}, {settings['backend']}): "
                    f"{settings['truncated_share']:.0%} of completions cut at --max-new-tokens, "
                    f"{report['no_prediction_share']:.0%} without an answer"
                )
        read_stats.report(stderr)
