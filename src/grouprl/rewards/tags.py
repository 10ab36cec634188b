"""Format rewards for the ``<think>…</think><answer>…</answer>`` layout (DeepSeek-R1 style).

They check layout only, never correctness, and are meant to be added with a small weight next to a verifier.
The completion is checked as generated: if the chat template already ends the prompt with ``<think>``, the
completion lacks the opening tag and ``think_answer_format`` scores 0.0. open-r1's stricter, newline-exact
variants are ``format`` and ``tag_count`` (``grouprl.rewards.openr1``).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from grouprl.messages import completion_text

TAGS = ("<think>", "</think>", "<answer>", "</answer>")
_LAYOUT = re.compile(r"\s*<think>.*?</think>\s*<answer>.*?</answer>\s*", re.DOTALL)


def think_answer_format(prompts, completions, completion_ids=None, **columns) -> list[float]:
    """Reward 1.0 for exactly ``<think>…</think>`` then ``<answer>…</answer>``, else 0.0.

    Whitespace is allowed before, between and after the two blocks; any other text outside them, a repeated
    or missing tag, or the wrong order scores 0.0.

    >>> think_answer_format([""] * 4, ["<think>2+2</think>\\n<answer>4</answer>",
    ...                                "<answer>4</answer><think>2+2</think>",
    ...                                "<think>2+2</think><answer>4</answer> done",
    ...                                "<think></think><answer>4</answer><answer>5</answer>"])
    [1.0, 0.0, 0.0, 0.0]
    """
    texts = [completion_text(c) for c in completions]
    return [float(t is not None and all(t.count(tag) == 1 for tag in TAGS)
                  and _LAYOUT.fullmatch(t) is not None)
            for t in texts]


def tag_count_loose(prompts, completions, completion_ids=None, **columns) -> list[float]:
    """Partial credit: 0.25 for each of ``<think>``, ``</think>``, ``<answer>``, ``</answer>`` present \
exactly once.

    Order, newlines and surrounding text are not checked (that is ``think_answer_format``'s job); this gives a
    gradient toward the layout before the full format is ever sampled. (open-r1's ``tag_count`` counts the
    tags only with their exact newlines.)

    >>> tag_count_loose([""] * 3,
    ...                 ["<think>a</think><answer>b</answer>", "<think>a</think> b", "<think><think>"])
    [1.0, 0.5, 0.0]
    """
    texts = [completion_text(c) for c in completions]
    return [0.25 * sum(t.count(tag) == 1 for tag in TAGS) if t is not None else 0.0 for t in texts]


REWARDS: dict[str, Callable] = {
    "think_answer_format": think_answer_format,
    "tag_count_loose": tag_count_loose,
}
