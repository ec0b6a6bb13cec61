"""The `rpt` Typer app, the options several commands share, and the checks every command makes
before any work (input, outputs, numbers, memory)."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from rpt_cli import paper
from rpt_cli.console import handle_sigterm, stderr
from rpt_cli.errors import UsageError
from rpt_cli.jsonl import STDIO, read_records
from rpt_cli.models import BUILTIN_NAME

app = typer.Typer(
    name="rpt",
    help="Reinforcement Pre-Training (arXiv 2506.08007) as JSON Lines stages.\n\n"
    "Every command reads JSONL (a file, or standard input) and writes JSONL to standard output "
    "or -o FILE, so stages run alone or piped:\n\n"
    "  rpt entropy corpus.jsonl | rpt filter --min 1.0 > samples.jsonl",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
)

# Options shared by several commands: same names, same help, everywhere.
InputArg = Annotated[
    str,
    typer.Argument(metavar="INPUT", show_default=False, help="JSONL input file; '-' or nothing reads standard input."),
]
OutputOpt = Annotated[
    str | None,
    typer.Option(
        "--output",
        "-o",
        metavar="FILE",
        help="Write to FILE instead of standard output (atomically: no partial file on failure).",
    ),
]
ModelOpt = Annotated[
    str,
    typer.Option(
        "--model",
        "-m",
        help=f"'{BUILTIN_NAME}' (built in), a Hugging Face folder (e.g. an rpt train checkpoint), "
        "a .gguf file, or a hub id.",
    ),
]
DeviceOpt = Annotated[str, typer.Option(help="auto (a GPU when one is visible), cpu, cuda or cuda:N.")]
DtypeOpt = Annotated[
    str, typer.Option(help="auto (bfloat16 on a GPU, float32 on a CPU), float32, bfloat16 or float16.")
]
SkipBadOpt = Annotated[
    bool, typer.Option("--skip-bad", help="Skip malformed records (counted on standard error) instead of stopping.")
]
SkipBadScoredOpt = Annotated[
    bool,
    typer.Option(
        "--skip-bad",
        help="Skip malformed records, and samples whose boundaries cannot be re-derived in the model's "
        "tokens, (counted on standard error) instead of stopping.",
    ),
]
TrustOpt = Annotated[
    bool, typer.Option("--trust-remote-code", help="Allow model code from the hub to run (off unless asked).")
]
TextFieldOpt = Annotated[str, typer.Option(help="Field that holds the document text.")]
IdFieldOpt = Annotated[str, typer.Option(help="Field that holds the document id (default: the line number).")]
ANSWER_HELP = (
    "Answer format: boxed (the paper's: think, then the guess in \\boxed{}) or direct (the prompt is "
    "the context alone and the completion is the guess: RPT without reasoning, an ablation)."
)
AnswerOpt = Annotated[
    str | None,
    typer.Option(
        "--answer",
        metavar="boxed|direct",
        show_default=False,
        help=ANSWER_HELP + " Default: what the rollouts say (rollout.answer), else boxed.",
    ),
]


# -- one vocabulary ------------------------------------------------------------------------
# One name per concept in every command (docs/records.md lists them); the old names stay as hidden
# aliases for one release (`renamed`).
# the sampling cut and the generation engines, as rollout, eval and scaling take them; the help
# panel (Sampling, Engine) says what they apply to
TopPOpt = Annotated[
    float,
    typer.Option(
        "--top-p", help="Nucleus sampling: keep the smallest set of tokens with this much probability (1.0: off)."
    ),
]
TopKOpt = Annotated[
    int, typer.Option("--top-k", metavar="K", help="Sample only among the K most likely tokens (0: off).")
]
BackendOpt = Annotated[
    str, typer.Option(help="auto (vllm when installed and a CUDA GPU is visible, else hf), hf or vllm.")
]
MaxBatchSequencesOpt = Annotated[
    int | None,
    typer.Option(help="hf: sequences per generate call at most (default: as many as a quarter of memory holds)."),
]
TensorParallelOpt = Annotated[int, typer.Option(help="vllm: GPUs to split the model over.")]
GpuMemoryOpt = Annotated[float, typer.Option(help="vllm: share of GPU memory for weights and KV cache.")]
MaxModelLenOpt = Annotated[int | None, typer.Option(help="vllm: longest prompt + completion (default: the model's).")]
EnforceEagerOpt = Annotated[
    bool,
    typer.Option("--enforce-eager", help="vllm: skip graph capture and compilation (starts faster, samples slower)."),
]

# the data stages on a Ray cluster (cluster.py, docs/entropy.md "On a Ray cluster")
RayOpt = Annotated[
    str | None,
    typer.Option(
        "--ray",
        metavar="WHERE",
        show_default=False,
        help="Run on a Ray cluster with Ray Data: local (start one on this machine for this run), auto (the "
        "cluster this machine belongs to) or its address HOST:PORT; output as without it, in input order.",
    ),
]
RayWorkersOpt = Annotated[int, typer.Option(help="--ray: map workers, each with its own model.")]
RayGpusOpt = Annotated[
    float, typer.Option(help="--ray: GPUs per worker (e.g. 1, or 0.5 for two workers per GPU; 0: CPU only).")
]

PlotOpt = Annotated[
    str | None,
    typer.Option("--output", "-o", metavar="FILE.png", help="Write the plot (a PNG) to FILE; without it, no plot."),
]

COMPLETIONS_HELP = f"Completions sampled per context (G; paper: {paper.COMPLETIONS})."
CompletionsOpt = Annotated[int, typer.Option("--num-completions", "-G", help=COMPLETIONS_HELP)]
RewardOpt = Annotated[
    str,
    typer.Option(
        "--reward", help="Reward function: prefix (Eq. 3, the default), first-token, dense or conditional-dense."
    ),
]


def old_name_option(new: str, *names: str, metavar: str | None = None):
    """A hidden option under an old name of `new`, kept for one release (`renamed` reads it)."""
    return typer.Option(
        *names, hidden=True, show_default=False, metavar=metavar, help=f"Old name of {new}, kept for one release."
    )


def renamed(value, old_value, *, new: str, old: str, default, command: str):
    """The setting given under a new option or its old name: the old one wins when only it was
    given (with a note naming the new one); both, with different values, is a usage error."""
    if old_value is None:
        return value
    if value != default and value != old_value:
        raise UsageError(f"{old} is the old name of {new}: give one of them")
    stderr.print(f"{command}: note: {old} is now {new}; the old name goes in the next release", markup=False)
    return old_value


# -- help panels ---------------------------------------------------------------------------
# Every command groups its options the same way; a parameter's panel is set here, in one place.
PANELS = {
    "Input and output": (
        "input",
        "output",
        "details",
        "reports",
        "resume",
        "skip_bad",
        "text_field",
        "text_template",
        "id_field",
        "dataset",
        "dataset_split",
        "dataset_config",
        "shard",
        "limit",
        "samples",
        "metrics",
        "config",
        "runs",
        "keep_fields",
        "name",
        "holdout_output",
    ),
    "Model": ("model", "device", "dtype", "trust_remote_code", "model_args"),
    "Prompt": ("answer", "template", "list_templates", "chat", "think_prefix", "max_prompt_tokens"),
    "Sampling": ("num_completions", "temperature", "top_p", "top_k", "max_new_tokens", "seed", "gen_kwargs"),
    "Reward": ("reward", "no_think", "correct", "unsolved_reward"),
    "Engine": (
        "backend",
        "contexts_per_call",
        "contexts_per_pass",
        "max_batch_sequences",
        "tensor_parallel_size",
        "gpu_memory_utilization",
        "max_model_len",
        "enforce_eager",
        "no_memory_check",
        "batch_tokens",
        "window",
        "overlap",
        "no_share",
        "vllm",
        "vllm_server_host",
        "vllm_server_port",
        "vllm_gpu_memory_utilization",
        "vllm_tensor_parallel_size",
        "micro_batch_size",
        "gradient_checkpointing",
        "shared_prompt",
        "ray",
        "ray_workers",
        "ray_gpus_per_worker",
    ),
    "Selection": (
        "min",
        "max",
        "split",
        "min_context_tokens",
        "target_tokens",
        "max_context_tokens",
        "per_doc",
        "fraction",
        "documents",
        "entropy_top_k",
        "mode",
    ),
    "Plot": ("title",),
    # rpt downstream: lm-eval's tasks and how they are put to the model
    "Tasks": ("task", "include_path", "list_tasks", "num_fewshot", "system_instruction", "think_end"),
}
PANEL_OF = {name: panel for panel, names in PANELS.items() for name in names}
# per command, where a name means something else
PANEL_OF_COMMAND = {
    ("curves", "window"): "Plot",
    ("scaling", "split"): "Plot",
    ("scaling", "mode"): "Plot",
    ("filter", "seed"): "Selection",
    ("holdout", "seed"): "Selection",
}
OTHER_PANEL = {"train": "Training", "scaling": "Run folder", "patterns": "Patterns"}


def group_options(typer_app: typer.Typer) -> None:
    """Put every option of every command in its help panel (`PANELS`); called once, after the
    commands are registered and before Typer builds them. Old names are hidden anyway."""
    import typing

    for command in typer_app.registered_commands:
        name = command.name or command.callback.__name__
        # the annotations are strings (`from __future__ import annotations`) that Typer would
        # evaluate anew: evaluate them once, set the panels, and hand Typer those objects
        hints = typing.get_type_hints(command.callback, include_extras=True)
        for param, hint in hints.items():
            for info in getattr(hint, "__metadata__", ()):
                if isinstance(info, (typer.models.OptionInfo, typer.models.ArgumentInfo)):
                    info.rich_help_panel = (
                        PANEL_OF_COMMAND.get((name, param)) or PANEL_OF.get(param) or OTHER_PANEL.get(name, "Options")
                    )
        command.callback.__annotations__ = hints


def main() -> None:
    handle_sigterm()
    stdout_before = _stdout_identity()
    try:
        app()
    except SystemExit as exit:
        # Rich ends help output with 1 when standard output's reader went away (`rpt filter
        # --help | head -1`), after pointing stdout at /dev/null; the reader had all it wanted,
        # which is success, as for data (console.cli_errors)
        if exit.code == 1 and stdout_before != _stdout_identity() == _devnull_identity():
            raise SystemExit(0) from None
        raise


def _stdout_identity() -> tuple[int, int] | None:
    try:
        st = os.fstat(sys.__stdout__.fileno())
    except (OSError, ValueError, AttributeError):
        return None
    return st.st_dev, st.st_ino


def _devnull_identity() -> tuple[int, int]:
    st = os.stat(os.devnull)
    return st.st_dev, st.st_ino


def check_input(path: str) -> None:
    """Refuse, before any work, an input file that cannot be read, and waiting forever on a
    terminal when no input was given."""
    if path == STDIO:
        if sys.stdin.isatty():
            raise UsageError("no input: give a JSONL file, or pipe records into standard input")
        return
    from rpt_cli.errors import InputError

    # checked without opening: opening a FIFO would take its data from the run that reads it
    if not os.path.exists(path):
        raise InputError(path, None, "no such file")
    if os.path.isdir(path):
        raise InputError(path, None, "is a directory, not a JSONL file")
    if not os.access(path, os.R_OK):
        raise InputError(path, None, "permission denied")


SEED_LIMIT = 2**32  # numpy, which transformers seeds too, takes seeds below 2**32


def check_numbers(params: dict) -> None:
    """Refuse, before any work, numbers no setting means: NaN or infinity in any option, and seeds
    outside 0 … 2**32 − 1."""
    import math

    for name, value in params.items():
        option = "--" + name.replace("_", "-")
        if isinstance(value, float) and not math.isfinite(value):
            raise UsageError(f"{option} {value}: must be a finite number")
        if name == "seed" and isinstance(value, int) and not 0 <= value < SEED_LIMIT:
            raise UsageError(f"{option} {value}: must be between 0 and {SEED_LIMIT - 1}")


# bytes one sampled token may take while a chunk's completions are held: its id in the engine's
# output, its text, and the Python objects around them (a generous figure: the check is a cap
# against runaway settings such as -G 1000000, not a prediction)
BYTES_PER_HELD_TOKEN = 16


def check_memory(contexts: int, completions: int, tokens: int, *, names: str, override: bool) -> None:
    """Refuse settings whose completions of one chunk (contexts × completions × tokens) could not
    fit in half of this machine's memory, before the model loads; `override` (--no-memory-check)
    lets them through."""
    if override:
        return
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return
    need = contexts * completions * tokens * BYTES_PER_HELD_TOKEN
    if need > memory / 2:
        raise UsageError(
            f"{names} = {contexts:,} × {completions:,} × {tokens:,} tokens could take about "
            f"{need / 2**30:,.0f} GiB of memory at once, more than half of this machine's "
            f"{memory / 2**30:,.0f} GiB; lower them, or pass --no-memory-check"
        )


NoMemoryCheckOpt = Annotated[
    bool,
    typer.Option(
        "--no-memory-check",
        help="Skip the check that one generation call's completions (--contexts-per-call × -G × "
        "--max-new-tokens tokens) fit in half of this machine's memory.",
    ),
]


def check_outputs(inputs: str | list[str] | None, *outputs: tuple[str, str | None]) -> None:
    """Refuse, before any work, an output that cannot be written, that is an input, or that
    another output of the command also writes (outputs.py); (option, path) pairs, path None for
    standard output."""
    from rpt_cli.files import check_outputs as check

    check(outputs, inputs if isinstance(inputs, list) else [inputs])


def parse_shard(value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    try:
        i, n = (int(part) for part in value.split("/"))
    except ValueError:
        raise UsageError(f"--shard {value}: expected i/n, e.g. 3/8") from None
    if n < 1 or not 1 <= i <= n:
        raise UsageError(f"--shard {value}: i must be between 1 and n")
    return i, n


def prevalidate(path: str, validate, shard) -> None:
    """Read a whole input file once before loading a model, so a bad line 9,000 stops the run
    before minutes of model work (standard input cannot be read twice and is checked as read)."""
    if path == STDIO or not os.path.isfile(path):
        return
    for _ in read_records(path, validate, shard=shard):
        pass
