"""`rpt train` settings: one dataclass, filled from its defaults (the paper's Table 5), then a YAML
file (`--config`), then command-line options, and checked before anything heavy happens.

Nothing here imports torch, transformers or TRL, so a bad setting is refused in a fraction of a
second. `batch_plan` translates the paper's "contexts per step" into the completion-counted batch
sizes and gradient accumulation TRL expects, for the number of processes at hand.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import math
import os
import types
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from rpt_cli import paper
from rpt_cli.answers import ANSWER_FORMATS, check_answer, prompt_defaults
from rpt_cli.errors import InputError, UsageError
from rpt_cli.models import BUILTIN_NAME
from rpt_cli.training import objectives

VLLM_MODES = ("colocate", "server")
LOSS_TYPES = ("grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo")
SCALE_REWARDS = ("group", "batch", "none")
LR_SCHEDULERS = (
    "constant",
    "constant_with_warmup",
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "inverse_sqrt",
    "cosine_with_min_lr",
    "warmup_stable_decay",
)
REPORT_TO = {"none": None, "tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",)}
TRAIN_DTYPES = ("auto", "float32", "bfloat16")

# Settings that may change when a run is resumed: they change how the run is carried out or
# recorded, not what it computes (the data order is fixed per step of contexts, whatever the
# micro-batch size or number of processes).
RESUMABLE = frozenset(
    {
        "samples",
        "output",
        "max_steps",
        "save_steps",
        "save_total_limit",
        "report_to",
        "micro_batch_size",
        "gradient_checkpointing",
        "shared_prompt",
        "vllm",
        "vllm_server_host",
        "vllm_server_port",
        "vllm_server_timeout",
        "vllm_group_port",
        "vllm_gpu_memory_utilization",
        "vllm_tensor_parallel_size",
    }
)


@dataclass
class TrainConfig:
    """Every `rpt train` option. Field names are the YAML keys; `--some-name` is `some_name`."""

    # what to train, on what, and where the run goes
    samples: str | None = None
    output: str | None = None
    model: str = BUILTIN_NAME
    # the training objective (objectives.py): rpt (the paper's), ntp (continued next-token
    # training, the paper's baseline) or rlp (the information-gain reward, arXiv 2510.01265)
    objective: str = "rpt"
    # rlp: decay of the EMA teacher that scores the no-thought baseline
    ema_decay: float = objectives.RLP_EMA_DECAY
    # coldstart: what the boxed answer of each example is (own: the model's first choice; sample:
    # drawn from the model's distribution; truth: the true next token) and how many of the
    # model's candidates the thought names
    coldstart_answer: str = "own"
    coldstart_candidates: int = 3
    # answer format (answers.py): boxed (the paper's) or direct; direct changes the defaults of
    # template, chat and max_new_tokens (see `resolve_config`)
    answer: str = "boxed"
    # prompts: the same settings and code as `rpt rollout`
    template: str = "v0"
    chat: bool = True
    think_prefix: str | None = None
    max_prompt_tokens: int = paper.PROMPT_TOKENS
    # reward: the registry `rpt reward` and `rpt eval` use
    reward: str = "prefix"
    no_think: bool = False
    correct: str = "first-token"
    unsolved_reward: float = 0.0
    # GRPO, Table 5
    num_completions: int = paper.COMPLETIONS
    contexts_per_step: int = paper.CONTEXTS_PER_STEP
    micro_batch_size: int | None = None
    max_steps: int = paper.STEPS
    learning_rate: float = paper.LEARNING_RATE
    lr_scheduler: str = "constant"
    warmup_steps: int = 0
    weight_decay: float = paper.WEIGHT_DECAY
    adam_beta1: float = paper.ADAM_BETA1
    adam_beta2: float = paper.ADAM_BETA2
    max_grad_norm: float = 1.0
    beta: float = paper.KL_COEFFICIENT
    epsilon: float = paper.CLIP_RATIO
    loss_type: str = "grpo"
    scale_rewards: str = "group"
    temperature: float = paper.TEMPERATURE
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = paper.NEW_TOKENS
    dynamic_sampling_from_step: int = paper.DYNAMIC_SAMPLING_FROM_STEP
    dynamic_sampling_max_rounds: int = 10
    # generation engine
    vllm: str | None = None
    vllm_server_host: str = "127.0.0.1"
    vllm_server_port: int = 8000
    # seconds to wait for the server to answer at start-up (a large model loads for minutes)
    vllm_server_timeout: float = 240.0
    # TCP port on the first training machine where the server's workers join the weight-update
    # group (TRL's vllm_group_port): it must be free there and reachable from the server
    vllm_group_port: int = 51216
    vllm_gpu_memory_utilization: float = 0.3
    vllm_tensor_parallel_size: int = 1
    # running the job
    save_steps: int = 100
    save_total_limit: int | None = None
    seed: int = 0
    dtype: str = "auto"
    gradient_checkpointing: bool = True
    # each context's prompt runs once for its G completions in the training passes (shared_prompt.py)
    shared_prompt: bool = True
    report_to: str = "none"
    trust_remote_code: bool = False
    # skip malformed samples, and samples whose boundaries cannot be re-derived in the policy's tokens
    skip_bad: bool = False

    @property
    def micro_batch(self) -> int:
        """Completions per forward/backward pass on each device (default: one group, G)."""
        return self.micro_batch_size if self.micro_batch_size is not None else self.num_completions

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


FIELD_TYPES: dict[str, Any] = {f.name: f.type for f in fields(TrainConfig)}
# settings renamed to the one vocabulary of every command (docs/train.md); files may still use the
# old keys for one release
OLD_KEYS = {"num_generations": "num_completions", "max_completion_tokens": "max_new_tokens"}
DEFAULTS = TrainConfig()


def option_name(key: str) -> str:
    return "--" + key.replace("_", "-")


# --------------------------------------------------------------------------------------------
# YAML file < command line
# --------------------------------------------------------------------------------------------


def _expected(type_hint) -> tuple[tuple[type, ...], bool]:
    """(accepted Python types, whether None is allowed) for a field's annotation."""
    hint = eval(type_hint, {}, {}) if isinstance(type_hint, str) else type_hint  # noqa: S307 - our own annotations
    args = typing.get_args(hint) if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union else ()
    if args:
        concrete = tuple(a for a in args if a is not type(None))
        return concrete, type(None) in args
    return (hint,), False


def coerce(key: str, value: Any) -> Any:
    """Check a value from YAML against the field's type; ints are accepted where floats are due.
    Raises ValueError naming the expected type."""
    accepted, nullable = _expected(FIELD_TYPES[key])
    if value is None:
        if nullable:
            return None
        raise ValueError(f"{key} must not be empty (null)")
    kind = accepted[0]
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise ValueError(f"{key}: expected true or false, got {value!r}")
    if isinstance(value, bool):  # YAML's yes/no must not pass as 1/0
        raise ValueError(f"{key}: expected {kind.__name__}, got {value!r}")
    if kind is int:
        if isinstance(value, int):
            return value
        raise ValueError(f"{key}: expected an integer, got {value!r}")
    if kind is float:
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):  # PyYAML reads 1e-6 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ValueError(f"{key}: expected a number, got {value!r}")
    if kind is str:
        if isinstance(value, (str, int, float)):
            return str(value)
        raise ValueError(f"{key}: expected a string, got {value!r}")
    raise AssertionError(f"unhandled field type for {key}")


def read_yaml_config(path: str) -> dict[str, tuple[Any, int]]:
    """The settings of a YAML file as {key: (value, line)}. Keys may use dashes or underscores.
    Errors name the file and line."""
    import yaml

    file = Path(path).expanduser()
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"--config {path}: no such file") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as exc:
        raise UsageError(f"--config {path}: cannot read ({type(exc).__name__})") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise InputError(path, line, f"invalid YAML ({getattr(exc, 'problem', None) or exc})") from None
    if data is None:
        return {}
    if not isinstance(data, dict) or not isinstance(node, yaml.MappingNode):
        raise InputError(path, 1, "expected a mapping of option: value, one per line")
    lines: dict[str, int] = {}
    seen: dict[str, tuple[str, int]] = {}  # setting -> (key as written, line) of its first mention
    for key_node, _ in node.value:
        raw, line = str(key_node.value), key_node.start_mark.line + 1
        key = raw.replace("-", "_")
        key = OLD_KEYS.get(key, key)
        if key in seen:  # YAML keeps the last silently; the command line refuses a setting given twice
            first, first_line = seen[key]
            same = "repeats" if first == raw else "sets the same option as"
            raise InputError(path, line, f"{raw!r} {same} {first!r} of line {first_line}: give each option once")
        seen[key] = (raw, line)
        lines[raw] = line
    out: dict[str, tuple[Any, int]] = {}
    for raw_key, value in data.items():
        line = lines.get(str(raw_key))
        key = str(raw_key).replace("-", "_")
        if key in OLD_KEYS:  # a file written before the rename (e.g. a run's config.yaml)
            key = OLD_KEYS[key]
        if key not in FIELD_TYPES:
            close = difflib.get_close_matches(key, FIELD_TYPES, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise InputError(path, line, f"unknown option {raw_key!r}{hint}")
        out[key] = (value, line)
    return out


def resolve_config(cli: dict[str, Any], config_file: str | None = None) -> TrainConfig:
    """Defaults < YAML file < command line. `cli` holds only the options given on the command line
    (None means "not given")."""
    values: dict[str, Any] = {}
    if config_file is not None:
        for key, (value, line) in read_yaml_config(config_file).items():
            try:
                values[key] = coerce(key, value)
            except ValueError as exc:
                raise InputError(config_file, line, str(exc)) from None
    for key, value in cli.items():
        if key not in FIELD_TYPES:
            raise KeyError(f"unknown train option {key}")
        if value is not None:
            values[key] = value
    answer = values.get("answer", DEFAULTS.answer)
    objective = values.get("objective", DEFAULTS.objective)
    if objective == objectives.RLP:  # thoughts need their own prompt: the context, then the thought opened
        values.setdefault("template", objectives.RLP_TEMPLATE)
        values.setdefault("chat", False)
        # RLP's advantage is not scaled by the group's spread, and RLP samples no extra groups
        values.setdefault("scale_rewards", objectives.RLP_SCALE_REWARDS)
        values.setdefault("dynamic_sampling_from_step", 0)
    if answer in ANSWER_FORMATS:  # an unknown format is refused by check_config
        # the format's own prompt settings, where neither the file nor the command line set them
        defaults = prompt_defaults(answer)
        values.setdefault("template", defaults["template"])
        values.setdefault("chat", defaults["chat"])
        values.setdefault("max_new_tokens", defaults["max_new_tokens"])
    return TrainConfig(**values)


def dump_config(config: TrainConfig, path: Path, header: str = "") -> None:
    """Write the resolved settings as YAML that `--config` reads back (atomically)."""
    import yaml

    text = (header + "\n" if header else "") + yaml.safe_dump(config.as_dict(), sort_keys=False, allow_unicode=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def load_saved_config(path: Path) -> TrainConfig:
    values = {key: coerce(key, value) for key, (value, _) in read_yaml_config(str(path)).items()}
    return TrainConfig(**values)


def _same_setting(key: str, before: Any, now: Any) -> bool:
    if before == now:
        return True
    if key == "model" and before and now:  # one folder however it is spelled (relative, absolute, a link)
        a, b = Path(before).expanduser(), Path(now).expanduser()
        return a.exists() and b.exists() and os.path.samefile(a, b)
    return False


def resume_conflicts(saved: TrainConfig, current: TrainConfig) -> list[str]:
    """Settings that differ from the run being resumed and would change what it computes."""
    out = []
    for f in fields(TrainConfig):
        if f.name in RESUMABLE:
            continue
        before, now = getattr(saved, f.name), getattr(current, f.name)
        if not _same_setting(f.name, before, now):
            out.append(f"{option_name(f.name)} {now!r} (the run used {before!r})")
    return out


# --------------------------------------------------------------------------------------------
# Checks and the batch plan
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchPlan:
    """How one optimizer step of `contexts` contexts × G completions maps onto TRL's batch sizes.

    TRL counts completions: `per_device_train_batch_size` (the micro-batch of one forward and
    backward pass) × `gradient_accumulation_steps` × processes = completions per step. Generation
    happens once per step (TRL's `steps_per_generation` defaults to the accumulation steps), so the
    step is exactly on-policy, as in the paper (PPO mini-batch = batch = 256 contexts)."""

    contexts: int
    num_generations: int
    processes: int
    micro_batch: int
    gradient_accumulation_steps: int

    @property
    def completions(self) -> int:
        return self.contexts * self.num_generations

    @property
    def contexts_per_process(self) -> int:
        return self.contexts // self.processes

    def describe(self) -> str:
        if self.num_generations == 1:  # --objective ntp or coldstart: one sequence per context
            return (
                f"{self.contexts} sequences per step = micro-batch {self.micro_batch} x "
                f"{self.gradient_accumulation_steps} accumulation steps x {self.processes} "
                f"process{'es' if self.processes != 1 else ''}"
            )
        return (
            f"{self.contexts} contexts x G={self.num_generations} = {self.completions} completions per step "
            f"= micro-batch {self.micro_batch} x {self.gradient_accumulation_steps} accumulation steps x "
            f"{self.processes} process{'es' if self.processes != 1 else ''}"
        )


def world_size() -> int:
    """Processes in this run: set by `accelerate launch` / `torchrun`, 1 otherwise."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def batch_plan(config: TrainConfig, processes: int) -> BatchPlan:
    contexts = config.contexts_per_step
    if config.objective in objectives.SUPERVISED:
        # one sequence per context; by default as many sequences per pass as a GRPO micro-batch
        # holds completions (G), or fewer where the contexts per process are fewer
        G = 1
        micro = config.micro_batch_size or math.gcd(max(contexts // processes, 1), config.num_completions)
    else:
        G, micro = config.num_completions, config.micro_batch
    unit = "sequences" if G == 1 else "completions"
    if contexts % processes:
        raise UsageError(
            f"--contexts-per-step {contexts} is not divisible by the {processes} processes: each process "
            f"must hold whole groups of G completions"
        )
    per_process = contexts // processes * G
    if micro > per_process:
        raise UsageError(
            f"--micro-batch-size {micro} exceeds the {per_process} {unit} each process handles per "
            f"step ({contexts} contexts x G={G} over {processes} process(es))"
        )
    if per_process % micro:
        raise UsageError(
            f"batch not divisible: the {per_process} {unit} per process and step ({contexts} contexts "
            f"x G={G} over {processes} process(es)) do not split into micro-batches of "
            f"--micro-batch-size {micro}; use a divisor of {per_process}" + (f", e.g. G={G}" if G > 1 else "")
        )
    return BatchPlan(contexts, G, processes, micro, per_process // micro)


def check_config(config: TrainConfig) -> None:
    """Refuse bad settings with one line each, before any file or model is read."""
    from rpt_cli.generation.base import check_sampling
    from rpt_cli.reward import CORRECTNESS_RULES, REWARD_FUNCTIONS
    from rpt_cli.reward.user import import_reward, is_user_reward

    if not config.samples:
        raise UsageError("no samples: give the samples file (the output of rpt filter) as the argument")
    if config.samples == "-":
        raise UsageError("rpt train reads its samples from a file (it draws contexts at random), not standard input")
    if not config.output:
        raise UsageError("no output folder: pass -o FOLDER (checkpoints, the final model, metrics.jsonl)")
    for key, value in config.as_dict().items():  # from a YAML file as much as from the command line
        if isinstance(value, float) and not math.isfinite(value):
            raise UsageError(f"{option_name(key)} {value}: must be a finite number")
    if not 0 <= config.seed < 2**32:
        raise UsageError(f"--seed {config.seed}: must be between 0 and {2**32 - 1}")
    at_least = {
        "num_completions": 2,
        "contexts_per_step": 1,
        "max_steps": 1,
        "save_steps": 1,
        "max_prompt_tokens": 1,
        "max_new_tokens": 1,
        "dynamic_sampling_max_rounds": 1,
        "vllm_tensor_parallel_size": 1,
    }
    for key, least in at_least.items():
        if getattr(config, key) < least:
            why = " (GRPO compares the G completions of a context)" if key == "num_completions" else ""
            raise UsageError(f"{option_name(key)} must be at least {least}{why}, got {getattr(config, key)}")
    for key in ("micro_batch_size", "save_total_limit"):
        value = getattr(config, key)
        if value is not None and value < 1:
            raise UsageError(f"{option_name(key)} must be at least 1, got {value}")
    for key in ("warmup_steps", "top_k", "dynamic_sampling_from_step", "weight_decay", "beta", "max_grad_norm"):
        if getattr(config, key) < 0:
            raise UsageError(f"{option_name(key)} must not be negative, got {getattr(config, key)}")
    if not config.learning_rate > 0:
        raise UsageError(f"--learning-rate must be positive, got {config.learning_rate}")
    if not config.epsilon > 0:
        raise UsageError(f"--epsilon (the clip ratio) must be positive, got {config.epsilon}")
    if not config.temperature > 0:
        raise UsageError(
            f"--temperature must be positive, got {config.temperature}: GRPO needs G different "
            "completions per context, which greedy decoding cannot give"
        )
    check_sampling(config.temperature, config.top_p, config.top_k)
    objectives.check_objective(config.objective)
    if config.coldstart_answer not in ("own", "sample", "truth"):
        raise UsageError(f"--coldstart-answer {config.coldstart_answer}: choose own, sample or truth")
    if not 1 <= config.coldstart_candidates <= 20:
        raise UsageError(f"--coldstart-candidates must be between 1 and 20, got {config.coldstart_candidates}")
    if config.objective == objectives.COLDSTART and config.answer != "boxed":
        raise UsageError("--objective coldstart teaches the boxed answer format: use --answer boxed (the default)")
    if not 0 <= config.ema_decay < 1:
        raise UsageError(f"--ema-decay must be in [0, 1), got {config.ema_decay}")
    for key in ("adam_beta1", "adam_beta2"):
        if not 0 <= getattr(config, key) < 1:
            raise UsageError(f"{option_name(key)} must be in [0, 1), got {getattr(config, key)}")
    if not 0 < config.vllm_gpu_memory_utilization <= 1:
        raise UsageError(f"--vllm-gpu-memory-utilization must be in (0, 1], got {config.vllm_gpu_memory_utilization}")
    choices = {
        "loss_type": LOSS_TYPES,
        "scale_rewards": SCALE_REWARDS,
        "lr_scheduler": LR_SCHEDULERS,
        "report_to": tuple(REPORT_TO),
        "dtype": TRAIN_DTYPES,
        "reward": tuple(REWARD_FUNCTIONS),
        "correct": CORRECTNESS_RULES,
    }
    if is_user_reward(config.reward):
        choices.pop("reward")
        import_reward(config.reward)  # a function of the user's (TRL's convention): imported now, before any model
    for key, allowed in choices.items():
        if getattr(config, key) not in allowed:
            raise UsageError(f"{option_name(key)} {getattr(config, key)}: choose one of {', '.join(allowed)}")
    check_answer(config.answer)
    if config.objective == objectives.RLP:
        _check_rlp(config)
    if config.vllm is not None and config.vllm not in VLLM_MODES:
        raise UsageError(
            f"--vllm {config.vllm}: choose colocate (vLLM on the training GPUs) or server "
            "(a `trl vllm-serve` on other GPUs)"
        )
    for key in ("vllm_server_port", "vllm_group_port"):
        if not 1 <= getattr(config, key) <= 65535:
            raise UsageError(f"{option_name(key)} {getattr(config, key)}: a TCP port is between 1 and 65535")
    if not config.vllm_server_timeout > 0:
        raise UsageError(f"--vllm-server-timeout must be positive, got {config.vllm_server_timeout}")
    if config.vllm is not None and importlib.util.find_spec("vllm") is None:
        raise UsageError(f"--vllm {config.vllm} needs vLLM: pip install 'rpt[vllm]'")
    modules = REPORT_TO[config.report_to]
    if modules and not any(importlib.util.find_spec(m) for m in modules):
        raise UsageError(f"--report-to {config.report_to}: {modules[0]} is not installed (pip install {modules[0]})")
    from rpt_cli.prompts import TemplateError, load_template

    try:
        load_template(config.template)
    except TemplateError as exc:
        raise UsageError(f"--template: {exc}") from None


def _check_rlp(config: TrainConfig) -> None:
    """Settings that would make `--objective rlp` something other than RLP."""
    if config.answer != "boxed":
        raise UsageError(
            f"--objective rlp --answer {config.answer}: rlp scores the true next token after a thought, not an "
            "answer the model writes; drop --answer"
        )
    if config.scale_rewards != objectives.RLP_SCALE_REWARDS:
        raise UsageError(
            f"--objective rlp --scale-rewards {config.scale_rewards}: RLP's advantage is G/(G-1) x (reward - group "
            "mean), never divided by a standard deviation; drop --scale-rewards (rlp uses none)"
        )


__all__ = [
    "DEFAULTS",
    "BatchPlan",
    "TrainConfig",
    "batch_plan",
    "check_config",
    "dump_config",
    "load_saved_config",
    "option_name",
    "read_yaml_config",
    "resolve_config",
    "resume_conflicts",
    "world_size",
]
