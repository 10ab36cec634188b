"""Verifiers for tasks whose answer is a number, one per answer mode of ``grouprl.rewards.extract``.

Each follows the TRL reward protocol and scores 1.0 when the number the completion gives as its answer, read
exactly (``Fraction``), equals the ``answer`` column, else 0.0: no answer in the asked-for form, a completion
that is neither text nor a message list, or a reference that is not a number all score 0.0. ``12.0`` and
``12`` are equal; ``12.0001`` and ``12`` are not (the chat tasks' answers are integers).

Given TRL's ``log_metric`` hook, each also logs ``answered``: the share of completions that state a number in
the asked-for form, right or wrong (``reward_log/answered`` in metrics.jsonl, ``eval/reward_log/answered``
in eval.jsonl), which tells a model that cannot yet follow the format from one that answers wrongly.
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction

from grouprl.messages import completion_text
from grouprl.rewards.extract import answer_value, last_number


def _reference(answer) -> Fraction | None:
    number = last_number(str(answer))
    return Fraction(number) if number is not None else None


def _scores(completions, answer, mode: str, log_metric) -> list[float]:
    out, answered = [], 0
    for completion, reference in zip(completions, answer, strict=True):
        value, wanted = answer_value(completion_text(completion), mode), _reference(reference)
        out.append(float(value is not None and wanted is not None and value == wanted))
        answered += value is not None
    if log_metric is not None and out:
        log_metric("answered", answered / len(out))
    return out


def boxed_number(prompts, completions, completion_ids=None, *, answer, log_metric=None,
                 **columns) -> list[float]:
    """1.0 when the number in the last ``\\boxed{…}`` equals ``answer``, else 0.0.

    >>> boxed_number([""] * 4, [r"3+4=7, so \\boxed{7}.", r"\\boxed{7 \\text{ apples}}", "7", r"\\boxed{8}"],
    ...              answer=["7"] * 4)
    [1.0, 1.0, 0.0, 0.0]
    """
    return _scores(completions, answer, "boxed", log_metric)


def answer_tag_number(prompts, completions, completion_ids=None, *, answer, log_metric=None,
                      **columns) -> list[float]:
    """1.0 when the number in the last ``<answer>…</answer>`` equals ``answer``, else 0.0.

    >>> answer_tag_number([""] * 3, ["<answer>1,200</answer>", "<answer>12", "1200"], answer=["1200"] * 3)
    [1.0, 0.0, 0.0]
    """
    return _scores(completions, answer, "answer_tag", log_metric)


def last_number_match(prompts, completions, completion_ids=None, *, answer, log_metric=None,
                      **columns) -> list[float]:
    """1.0 when the last number of the completion equals ``answer``, else 0.0.

    >>> last_number_match([""] * 3, ["4 + 3 = 7 apples.", "The answer is -7.", "seven"], answer=[7, 7, 7])
    [1.0, 0.0, 0.0]
    """
    return _scores(completions, answer, "last_number", log_metric)


VERIFIERS: dict[str, Callable] = {"boxed": boxed_number, "answer_tag": answer_tag_number,
                                  "last_number": last_number_match}
"""The verifier of each answer mode."""

REWARDS: dict[str, Callable] = {fn.__name__: fn for fn in VERIFIERS.values()}
