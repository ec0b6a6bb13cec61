"""`rpt downstream`: zero-shot benchmarks with lm-evaluation-harness. The command only: the work
is in rpt_cli/downstream.py (and lm-eval)."""

from __future__ import annotations

import sys
from contextlib import nullcontext
from typing import Annotated

import typer

from rpt_cli.cli.app import (
    DeviceOpt,
    DtypeOpt,
    OutputOpt,
    TrustOpt,
    app,
    check_numbers,
    check_outputs,
)
from rpt_cli.console import cli_errors, spinner, stderr
from rpt_cli.jsonl import RecordWriter
from rpt_cli.models import BUILTIN_NAME

DOWNSTREAM_EXAMPLES = (
    "rpt downstream --model smollm2-135m --model runs/demo --task arc_easy --limit 100\n\n"
    "  rpt downstream -m runs/rpt1 --task mmlu_pro --chat --think-end '</think>' --max-new-tokens 32768 "
    "--temperature 0.6 --top-p 0.95 --contexts-per-call auto -o mmlu_pro.jsonl\n\n"
    "  rpt downstream -m runs/demo/checkpoint-100 --include-path examples/downstream --task rpt_quiz --details per_doc.jsonl"
)


@app.command(epilog=f"Examples:  {DOWNSTREAM_EXAMPLES}")
def downstream(
    output: OutputOpt = None,
    model: Annotated[
        list[str] | None,
        typer.Option(
            "--model",
            "-m",
            help=f"'{BUILTIN_NAME}' (built in, the default), a Hugging Face folder, a .gguf file, a hub id, an rpt train "
            "checkpoint or run folder (its final model). Repeat to evaluate several models on the same tasks.",
        ),
    ] = None,
    task: Annotated[
        list[str] | None,
        typer.Option(
            "--task",
            "-t",
            help="lm-eval task, group or tag (e.g. mmlu_pro, gpqa_main_zeroshot, arc_easy); repeat or separate with commas.",
        ),
    ] = None,
    include_path: Annotated[
        list[str] | None,
        typer.Option(
            "--include-path",
            metavar="FOLDER",
            help="Folder of extra lm-eval task YAML files (your own tasks and data); repeatable.",
        ),
    ] = None,
    list_tasks: Annotated[
        bool,
        typer.Option(
            "--list-tasks", help="Print every task, group and tag lm-eval knows (with --include-path) and exit."
        ),
    ] = False,
    limit: Annotated[
        int | None, typer.Option(help="Use only the first N documents of each task (smoke runs).", metavar="N")
    ] = None,
    details: Annotated[
        str | None,
        typer.Option(
            "--details",
            metavar="FILE",
            help="Also write one line per model, task and document: lm-eval's inputs, responses, filtered answers and scores.",
        ),
    ] = None,
    num_fewshot: Annotated[
        int,
        typer.Option(help="Examples shown before each question (0: zero-shot, as in the paper's Table 3)."),
    ] = 0,
    chat: Annotated[
        bool,
        typer.Option(
            "--chat/--no-chat",
            help="Wrap each question in the model's chat template (reasoning mode needs it; lm-eval's "
            "apply_chat_template). Default: no chat.",
            show_default=False,
        ),
    ] = False,
    system_instruction: Annotated[
        str | None, typer.Option(help="System message put before every question (lm-eval's system_instruction).")
    ] = None,
    think_end: Annotated[
        str | None,
        typer.Option(
            help="Reasoning models: the end-of-thinking marker, e.g. '</think>'; only the text after it is "
            "scored (lm-eval's think_end_token).",
        ),
    ] = None,
    max_new_tokens: Annotated[
        int | None,
        typer.Option(help="Generation tasks: longest answer in tokens (lm-eval's max_gen_toks; default: the task's)."),
    ] = None,
    temperature: Annotated[
        float | None,
        typer.Option(help="Generation tasks: sampling temperature, 0 greedy (default: the task's, usually greedy)."),
    ] = None,
    top_p: Annotated[
        float | None,
        typer.Option("--top-p", help="Generation tasks: nucleus sampling, 1.0 off (default: the task's)."),
    ] = None,
    top_k: Annotated[
        int | None,
        typer.Option(
            "--top-k",
            metavar="K",
            help="Generation tasks: sample only among the K most likely tokens, 0 off (default: the task's).",
        ),
    ] = None,
    gen_kwargs: Annotated[
        str | None,
        typer.Option(
            metavar="KEY=VALUE,...",
            help="Generation tasks: more generation arguments for lm-eval (e.g. repetition_penalty=1.1).",
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of sampling and of few-shot example choice.")] = 0,
    contexts_per_call: Annotated[
        str,
        typer.Option(
            metavar="N|auto",
            help="Requests per model call (lm-eval's batch size); auto finds the largest that fits the GPU.",
        ),
    ] = "1",
    model_args: Annotated[
        str | None,
        typer.Option(
            metavar="KEY=VALUE,...",
            help="More arguments for lm-eval's hf model (e.g. enable_thinking=true,max_length=40960,parallelize=true).",
        ),
    ] = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    trust_remote_code: TrustOpt = False,
) -> None:
    """Zero-shot benchmarks with lm-evaluation-harness: the downstream hand-off of a trained model (the paper's Table 3).

    Runs lm-eval's tasks (MMLU-Pro, GPQA, ARC, your own YAML tasks, ...) on each model and writes one report per model and task to standard output: [bold]model[/], [bold]task[/], [bold]n[/], [bold]metrics[/] and their [bold]stderr[/] as lm-eval names them (acc,none; exact_match,custom-extract). A table of all of them goes to standard error. lm-eval is an optional extra: pip install 'rpt\\[lm-eval]'.
    """
    with cli_errors():
        check_numbers(locals())
        from rpt_cli.downstream import (
            DownstreamConfig,
            check_tasks,
            evaluate_model,
            generation_kwargs,
            locate,
            parse_pairs,
            quiet_lm_eval,
            report_table,
            require_lm_eval,
            split_tasks,
            task_manager,
        )

        require_lm_eval()
        if list_tasks:
            with spinner("downstream: indexing lm-eval's tasks"):
                quiet_lm_eval()
                manager = task_manager(include_path or ())
            sys.stdout.write("".join(f"{name}\n" for name in sorted(manager.all_tasks)))
            return
        config = DownstreamConfig(
            tasks=split_tasks(task),
            include_paths=tuple(include_path or ()),
            num_fewshot=num_fewshot,
            limit=limit,
            batch_size=contexts_per_call,
            device=device,
            dtype=dtype,
            chat=chat,
            system_instruction=system_instruction,
            think_end=think_end,
            gen_kwargs=generation_kwargs(
                max_new_tokens=max_new_tokens,
                temperature=temperature,
                top_p=top_p,
                top_k=top_k,
                extra=parse_pairs(gen_kwargs, "--gen-kwargs"),
            ),
            model_args=parse_pairs(model_args, "--model-args"),
            seed=seed,
            trust_remote_code=trust_remote_code,
        )
        config.check()
        check_outputs([], ("-o", output), *([("--details", details)] if details else []))
        with spinner("downstream: indexing lm-eval's tasks"):
            quiet_lm_eval()
            manager = task_manager(config.include_paths)
        check_tasks(manager, config.tasks)
        targets = [locate(spec) for spec in (model or [BUILTIN_NAME])]  # every model found before any loads
        reports: list[dict] = []
        with RecordWriter(details, "--details") if details else nullcontext() as detail_out:
            for target in targets:
                stderr.print(
                    f"downstream: {target.ref.name}: {', '.join(config.tasks)} ({target.source})", markup=False
                )
                reports += evaluate_model(target, config, manager, on_sample=detail_out.write if detail_out else None)
        with RecordWriter(output) as out:
            out.write_all(reports)
        stderr.print(report_table(reports))
