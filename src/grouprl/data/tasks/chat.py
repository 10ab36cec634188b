"""What the chat tasks share: a system prompt that states the answer format, and the knobs' checks.

A chat task's prompt is TRL's conversational form, ``[{"role": "system", ...}, {"role": "user", ...}]``: the
trainer renders it with the model's chat template (``data.system_prompt`` does not replace a system message
the row already has), and the rewards receive each completion as ``[{"role": "assistant", "content": ...}]``.
"""

from __future__ import annotations

from grouprl.errors import ConfigError
from grouprl.rewards.extract import MODES

FORMATS = {
    "boxed": "give the final answer as a number in \\boxed{}, for example \\boxed{42}.",
    "answer_tag": "give the final answer as a number between <answer> and </answer>, for example "
                  "<answer>42</answer>.",
    "last_number": "end your reply with \"The answer is N.\", where N is the final answer as a number.",
}
"""How each answer mode of ``grouprl.rewards.extract`` is asked for in the system prompt."""


def system_prompt(answer_format: str) -> str:
    """The math tasks' system prompt: reason, then state the answer in ``answer_format``.

    >>> system_prompt("answer_tag")
    'Solve the problem step by step, then give the final answer as a number between <answer> and
    </answer>, for example <answer>42</answer>.'
    """
    return f"Solve the problem step by step, then {FORMATS[answer_format]}"


def chat_prompt(system: str, user: str) -> list[dict[str, str]]:
    """A conversational prompt: one system message and one user message."""
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def check_difficulty(task: str, difficulty, levels: int) -> None:
    """A ``ConfigError`` unless ``difficulty`` is an integer level in ``1..levels``.

    >>> check_difficulty("word_problems", 9, 6)
    Traceback (most recent call last):
    grouprl.errors.ConfigError: data.task_kwargs.difficulty=9: the word_problems task has difficulty levels
    1 to 6 (1 is the easiest); pick one of them
    """
    if isinstance(difficulty, bool) or not isinstance(difficulty, int) or not 1 <= difficulty <= levels:
        raise ConfigError(f"data.task_kwargs.difficulty={difficulty!r}: the {task} task has difficulty "
                          f"levels 1 to {levels} (1 is the easiest); pick one of them")


def check_answer_format(task: str, answer_format) -> None:
    """A ``ConfigError`` unless ``answer_format`` is one of the answer modes."""
    if answer_format not in MODES:
        raise ConfigError(f"data.task_kwargs.answer_format={answer_format!r}: the {task} task asks for one "
                          f"of {', '.join(MODES)}; pick one of them")


def check_eval_fraction(task: str, eval_fraction) -> None:
    """A ``ConfigError`` unless both splits can hold problems."""
    number = isinstance(eval_fraction, (int, float)) and not isinstance(eval_fraction, bool)
    if not number or not 0 < eval_fraction < 1:
        raise ConfigError(f"data.task_kwargs.eval_fraction={eval_fraction!r}: the {task} task needs a share "
                          "strictly between 0 and 1 so both splits have problems; 0.1 is a good default")
