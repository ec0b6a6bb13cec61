"""Checks for the RLVR recipe (examples/rlvr/run.sh): GRPO on question/answer data with TRL's own
command line (`trl grpo`), starting from an RPT checkpoint.

`trl grpo` does the training; what it does not do is refuse bad input the way every rpt command
does. So before it starts, the recipe runs `python -m rpt_cli.rlvr MODEL DATA REWARD`, which checks,
before any model loads, each in one line with exit status 2:
- MODEL: an `rpt train` run folder (its final model, else its newest complete checkpoint), a
  checkpoint, a Hugging Face folder or the built-in name, found as `rpt eval` finds it;
- DATA: a folder holding `train.jsonl` of question records (docs/records.md, "Question record"), file and line named;
- REWARD: a reward function by dotted path, imported as `rpt train --reward` imports one.
It prints the folder `from_pretrained` loads for MODEL and the reward path in TRL's form
(`module.function`), one a line, for the recipe to hand to `trl grpo`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from rpt_cli.errors import RecordError, UsageError

# the file TRL's `load_dataset(DATA)` takes as the train split of a local folder
TRAIN_FILE = "train.jsonl"
# how the recipe takes the reward (an environment variable of run.sh), for messages
REWARD_OPTION = "RLVR_REWARD"


def validate_question(record: dict) -> None:
    """A question record: `prompt`, the text or chat messages put to the policy (TRL's column), and
    `answer`, the reference the reward checks against, as a string (a column of one type, for
    `datasets`). Other fields are allowed: TRL hands every column to the reward function."""
    prompt = record.get("prompt")
    if isinstance(prompt, list):
        if not prompt:
            raise RecordError('field "prompt" is an empty list of messages')
        for message in prompt:
            if not (isinstance(message, dict) and isinstance(message.get("role"), str)):
                raise RecordError('field "prompt": each message must be an object with a "role" and a "content"')
            if not isinstance(message.get("content"), str):
                raise RecordError('field "prompt": each message\'s "content" must be a string')
    elif not isinstance(prompt, str) or not prompt.strip():
        raise RecordError('missing field "prompt" (a non-empty string or a list of chat messages)')
    answer = record.get("answer")
    if not isinstance(answer, str) or not answer.strip():
        raise RecordError('field "answer" must be a non-empty string (write numbers as "42")')


def check_questions(data: str) -> int:
    """The number of question records in DATA/train.jsonl; the first bad one stops with its line."""
    from rpt_cli.errors import InputError
    from rpt_cli.jsonl import read_records

    path = Path(data) / TRAIN_FILE
    if not Path(data).is_dir():
        raise UsageError(f"{data}: no such folder (DATA is a folder holding {TRAIN_FILE})")
    if not path.is_file():
        raise UsageError(f"{path}: no such file (DATA is a folder holding {TRAIN_FILE})")
    count, first_kind = 0, None
    for lineno, record in read_records(str(path), validate_question, with_lines=True):
        # one column, one type: `datasets` cannot hold text prompts and chat prompts side by side
        kind = "chat messages" if isinstance(record["prompt"], list) else "text"
        first_kind = first_kind or kind
        if kind != first_kind:
            raise InputError(str(path), lineno, f'field "prompt" is {kind}, but earlier records\' are {first_kind}')
        count += 1
    if count == 0:
        raise InputError(str(path), None, "no question records")
    return count


def trl_reward_path(path: str) -> str:
    """The reward as `trl grpo --reward_funcs` names it (`module.function`), once it imports."""
    from rpt_cli.reward.user import import_reward, split_path

    import_reward(path, REWARD_OPTION)
    module, function = split_path(path, REWARD_OPTION)
    return f"{module}.{function}"


def prepare(model: str, data: str, reward: str) -> tuple[str, str]:
    """(the model folder, the reward in TRL's form), every check passed."""
    from rpt_cli.downstream import model_folder

    reward_path = trl_reward_path(reward)
    check_questions(data)
    return model_folder(model), reward_path


def main(argv: list[str] | None = None) -> None:
    from rpt_cli.console import cli_errors

    args = sys.argv[1:] if argv is None else argv
    with cli_errors():
        if len(args) != 3:
            raise UsageError("usage: python -m rpt_cli.rlvr MODEL DATA REWARD")
        folder, reward = prepare(*args)
    sys.stdout.write(f"{folder}\n{reward}\n")


if __name__ == "__main__":
    main()
