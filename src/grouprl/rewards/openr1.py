"""open-r1's reward functions under open-r1's registry names, written anew from their documented behaviour.

open-r1 (``huggingface/open-r1``, ``src/open_r1/rewards.py``) picks rewards by name (``reward_funcs:
[accuracy, format, tag_count]``); these names mean the same here, with the same rules, return values
(``None`` included) and dataset column (``solution``). Four of them are *factories*, called once at start-up
with the defaults of open-r1's ``GRPOScriptArguments``, which ``factory_kwargs`` in the config override::

    rewards:
      - accuracy
      - {name: cosine, factory_kwargs: {max_len: 512}}

Where this departs from open-r1:

* Completions may be plain strings as well as message lists (open-r1 reads ``completion[0]["content"]`` and
  fails on a string); a message list is read through ``completion_text`` (its last message: the same for the
  one-message lists TRL and grouprl pass). A completion that is not text counts as empty text.
* math-verify's own ``signal.alarm`` timeouts are off, as in ``answers.py``; each parse or comparison runs
  under that module's per-sample limit instead, and one that runs out counts as math-verify counts its own
  timeouts: a parse finds nothing, a comparison is False.
* ``repetition_penalty`` splits words on whitespace only (open-r1's ``language="en"``; its ``"zh"``, which
  needs jieba, is not offered).
* ``length`` ranks lengths within one reward call, as open-r1 does within TRL's call; grouprl's call holds one
  rank's rollout round (all its groups), so it ranks over the same kind of batch, not necessarily the same
  completions.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

from grouprl.alarm import deadline
from grouprl.messages import completion_text
from grouprl.rewards.answers import SAMPLE_TIMEOUT, _SampleTimeout, quiet_math_verify


def _contents(completions) -> list[str]:
    """The text of each completion; what is not text counts as empty."""
    return [completion_text(c) or "" for c in completions]


# --- math answers through math-verify -----------------------------------------------------------------------

def _answer_config(boxed):
    """The extraction open-r1 uses for a completion: LaTeX only, ``\\boxed`` first, no bare-number fallback,
    and no repair of malformed operators (``boxed`` is ``"all"`` for ``accuracy``, ``True`` elsewhere)."""
    from latex2sympy2_extended import NormalizationConfig
    from math_verify import LatexExtractionConfig

    normalization = NormalizationConfig(nits=False, malformed_operators=False, basic_latex=True,
                                        equations=True, boxed=boxed, units=True)
    return [LatexExtractionConfig(normalization_config=normalization, boxed_match_priority=0,
                                  try_extract_without_anchor=False)]


def _latex_only():
    """math-verify's default LaTeX extraction alone (how ``length`` and ``cosine`` read the solution)."""
    from math_verify import LatexExtractionConfig

    return [LatexExtractionConfig()]


def _parse(text: str, config=None) -> list:
    """math-verify's ``parse`` in first-match mode (its default extraction when ``config`` is None); [] when
    the per-sample time limit runs out."""
    from math_verify import parse

    quiet_math_verify()
    kwargs = {} if config is None else {"extraction_config": config}
    try:
        with deadline(SAMPLE_TIMEOUT, _SampleTimeout):
            return parse(text, extraction_mode="first_match", parsing_timeout=None, **kwargs)
    except _SampleTimeout:
        return []


def _verify(gold: list, target: list) -> bool:
    """math-verify's ``verify(gold, target)``; False when the per-sample time limit runs out."""
    from math_verify import verify

    try:
        with deadline(SAMPLE_TIMEOUT, _SampleTimeout):
            return bool(verify(gold, target, timeout_seconds=None))
    except _SampleTimeout:
        return False


def _correct(text: str, solution) -> bool:
    """``length`` and ``cosine``'s test: an unparseable solution counts as correct (not to penalise the
    sample)."""
    gold = _parse(solution, _latex_only())
    return not gold or _verify(_parse(text, _answer_config(True)), gold)  # open-r1's argument order here


def accuracy(prompts, completions, completion_ids=None, *, solution, **columns) -> list[float | None]:
    """open-r1: 1.0 when the completion's LaTeX answer equals ``solution`` under math-verify, else 0.0.

    ``None`` (not applicable) when the solution has no parseable answer or the comparison fails. The
    completion's first answer counts, and it must be anchored (``\\boxed{}``, tried first, or a phrase like
    "the final answer is $…$"): bare ``1/2`` or a lone ``$0.5$`` is not one.

    >>> accuracy(None, [r"so \\boxed{\\frac{1}{2}}", "The final answer is $0.5$", "1/2", r"$0.5$"],
    ...          solution=["$0.5$"] * 4)
    [1.0, 1.0, 0.0, 0.0]
    >>> accuracy(None, [r"\\boxed{1}"], solution=["no answer here"])
    [None]
    """
    out = []
    for text, sol in zip(_contents(completions), solution):
        gold = _parse(sol)
        if not gold:
            out.append(None)
            continue
        try:
            out.append(float(_verify(gold, _parse(text, _answer_config("all")))))
        except Exception:  # noqa: BLE001 - as open-r1: a comparison that raises is "not applicable"
            out.append(None)
    return out


def length(prompts, completions, completion_ids=None, *, solution, **columns) -> list[float]:
    """open-r1 (Kimi 1.5): the shorter among the call's completions, the higher; a wrong one never above 0.

    With λ = 0.5 − (len − min) / (max − min) in characters over the call, a correct completion gets λ and a
    wrong one min(0, λ); all 0.0 when every length is equal.

    >>> out = length(None, [r"\\boxed{2}", r"it is \\boxed{2}", r"\\boxed{3}", r"so it is \\boxed{3}"],
    ...              solution=["$2$"] * 4)
    >>> [round(v, 4) for v in out]  # lengths 9, 15, 9, 18 characters; the first two are right
    [0.5, -0.1667, 0.0, -0.5]
    """
    texts = _contents(completions)
    correct = [_correct(text, sol) for text, sol in zip(texts, solution)]
    lengths = [len(text) for text in texts]
    shortest, longest = min(lengths), max(lengths)
    if shortest == longest:
        return [0.0] * len(completions)
    out = []
    for n, ok in zip(lengths, correct):
        lam = 0.5 - (n - shortest) / (longest - shortest)
        out.append(float(lam if ok else min(0, lam)))
    return out


def cosine(min_value_wrong: float = 0.0, max_value_wrong: float = -0.5, min_value_correct: float = 0.5,
           max_value_correct: float = 1.0, max_len: int = 1000) -> Callable:
    """open-r1 factory: correctness, scaled by a cosine of the completion's length.

    The defaults are open-r1's ``cosine_*`` script arguments, what its ``cosine`` gets (its factory,
    ``get_cosine_scaled_reward``, defaults ``min_value_wrong`` to -1.0 instead).

    The reward follows a half cosine of ``len / max_len`` (characters) from one value to another: a correct
    completion from ``max_value_correct`` (empty) to ``min_value_correct`` (``max_len`` characters), a wrong
    one from ``min_value_wrong`` (empty) to ``max_value_wrong``. Past ``max_len`` the cosine keeps turning.
    An unparseable solution scores 1.0.

    >>> out = cosine(max_len=10)(None, [r"\\boxed{2}", r"\\boxed{3}", ""], solution=["$2$", "$2$", "none"])
    >>> [round(v, 4) for v in out]  # 9 of 10 characters: near the far end of each range
    [0.5122, -0.4878, 1.0]
    """
    def cosine_scaled_reward(prompts, completions, completion_ids=None, *, solution,
                             **columns) -> list[float]:
        out = []
        for text, sol in zip(_contents(completions), solution):
            gold = _parse(sol, _latex_only())
            if not gold:
                out.append(1.0)
                continue
            ok = _verify(_parse(text, _answer_config(True)), gold)  # open-r1's argument order here
            low, high = (min_value_correct, max_value_correct) if ok else (max_value_wrong, min_value_wrong)
            out.append(float(low + 0.5 * (high - low) * (1.0 + math.cos(math.pi * len(text) / max_len))))
        return out

    return cosine_scaled_reward


# --- layout -------------------------------------------------------------------------------------------------

# After ``</answer>`` only a line break or the end may follow (open-r1's ``$`` under re.MULTILINE).
_FORMAT = re.compile(r"<think>\n.*?\n</think>\n<answer>\n.*?\n</answer>(?=\n|\Z)", re.DOTALL)
_TAG_PIECES = ("<think>\n", "\n</think>\n", "\n<answer>\n", "\n</answer>")
_STEP_MARKERS = re.compile(r"Step \d+:|\A\d+\.|\n[-*]|(?:First|Second|Next|Finally),")


def format(prompts, completions, completion_ids=None, **columns) -> list[float]:  # open-r1's name
    """open-r1: 1.0 for the ``<think>`` then ``<answer>`` layout with its exact new lines, else 0.0.

    The completion must start with ``<think>\\n…\\n</think>\\n<answer>\\n…\\n</answer>``, and only a new
    line may follow.

    >>> format(None, ["<think>\\nx\\n</think>\\n<answer>\\n4\\n</answer>",
    ...               "<think>\\nx\\n</think>\\n<answer>\\n4\\n</answer>\\nmore",
    ...               "<think>x</think><answer>4</answer>",
    ...               "<think>\\nx\\n</think>\\n<answer>\\n4\\n</answer> more"])
    [1.0, 1.0, 0.0, 0.0]
    """
    return [1.0 if _FORMAT.match(text) else 0.0 for text in _contents(completions)]


def tag_count(prompts, completions, completion_ids=None, **columns) -> list[float]:
    """open-r1: 0.25 for each think/answer tag present exactly once, with its new lines.

    The four pieces are ``<think>\\n``, ``\\n</think>\\n``, ``\\n<answer>\\n`` and ``\\n</answer>``
    (grouprl's ``tag_count_loose`` counts the bare tags).

    >>> tag_count(None, ["<think>\\nx\\n</think>\\n<answer>\\n4\\n</answer>",
    ...                  "<think>x</think><answer>4</answer>"])
    [1.0, 0.0]
    """
    return [0.25 * sum(text.count(piece) == 1 for piece in _TAG_PIECES) for text in _contents(completions)]


def reasoning_steps(prompts, completions, completion_ids=None, **columns) -> list[float]:
    """open-r1: min(1, step markers / 3), rewarding step-by-step reasoning.

    The markers are ``Step N:``, an ``N.`` that starts the completion, ``-`` or ``*`` after a new line, and
    ``First,`` ``Second,`` ``Next,`` ``Finally,``.

    >>> reasoning_steps(None, ["Step 1: a\\nStep 2: b\\nStep 3: c", "1. a\\n2. b\\n- c\\n* d",
    ...                        "First, a. Finally, b.", ""])
    [1.0, 1.0, 0.6666666666666666, 0.0]
    """
    return [min(1.0, len(_STEP_MARKERS.findall(text)) / 3) for text in _contents(completions)]


def code_format(language: str = "python") -> Callable:
    """open-r1 factory: 1.0 for ``format``'s layout with a fenced ``language`` code block in the answer.

    A ``language`` dataset column, when there is one, names each sample's language instead.

    >>> code_format()(None, ["<think>\\nx\\n</think>\\n<answer>\\n```python\\nprint(1)\\n```\\n</answer>",
    ...                      "<think>\\nx\\n</think>\\n<answer>\\nprint(1)\\n</answer>"])
    [1.0, 0.0]
    """
    def code_format_reward(prompts, completions, completion_ids=None, **columns) -> list[float]:
        languages = columns.get("language", [language] * len(completions))
        return [1.0 if _code_layout(lang).match(text) else 0.0
                for text, lang in zip(_contents(completions), languages)]

    return code_format_reward


def _code_layout(language: str) -> re.Pattern:
    return re.compile(r"<think>\n.*?\n</think>\n<answer>\n.*?```" + re.escape(str(language))
                      + r".*?```.*?\n</answer>(?=\n|\Z)", re.DOTALL)


# --- length and repetition ----------------------------------------------------------------------------------

def repetition_penalty(ngram_size: int = 3, max_penalty: float = -1.0) -> Callable:
    """open-r1 factory: ``max_penalty`` times the share of repeated word n-grams.

    Words are lower-cased and split on whitespace; an empty completion or one with fewer than ``ngram_size``
    words scores 0.0. ``max_penalty`` must not be positive.

    >>> repetition_penalty(ngram_size=2)(None, ["a b a b a b", "a b c d", "a"])
    [-0.6, -0.0, 0.0]
    """
    if max_penalty > 0:
        raise ValueError(f"max_penalty {max_penalty} must be <= 0 (it is a penalty)")

    def repetition_penalty_reward(prompts, completions, completion_ids=None, **columns) -> list[float]:
        out = []
        for text in _contents(completions):
            words = text.lower().split()
            if not text or len(words) < ngram_size:
                out.append(0.0)
                continue
            ngrams = [tuple(words[i:i + ngram_size]) for i in range(len(words) - ngram_size + 1)]
            out.append((1 - len(set(ngrams)) / len(ngrams)) * max_penalty)
        return out

    return repetition_penalty_reward


def soft_overlong_punishment(max_completion_len: int = 16384, soft_punish_cache: int = 4096) -> Callable:
    """open-r1 factory: DAPO's soft overlong punishment on the completion's token count.

    0.0 up to ``max_completion_len - soft_punish_cache`` tokens, then linear down to -1.0 at
    ``max_completion_len``, and -1.0 beyond (the same shaping as grouprl's ``soft_overlong_penalty`` and
    as the ``soft_overlong`` shaping piece of ``algo.shaping``: use one of them, not two).

    >>> soft_overlong_punishment(5, 2)(None, [""] * 4, [[1] * 3, [1] * 4, [1] * 5, [1] * 9])
    [0.0, -0.5, -1.0, -1.0]
    """
    start = max_completion_len - soft_punish_cache

    def soft_overlong_punishment_reward(prompts, completions, completion_ids=None, **columns) -> list[float]:
        return [0.0 if len(ids) <= start else (start - len(ids)) / soft_punish_cache
                if len(ids) <= max_completion_len else -1.0 for ids in completion_ids]

    return soft_overlong_punishment_reward


REWARDS: dict[str, Callable] = {
    "accuracy": accuracy,
    "format": format,
    "tag_count": tag_count,
    "reasoning_steps": reasoning_steps,
    "length": length,
}
"""open-r1's plain reward functions, by open-r1's registry names."""

FACTORIES: dict[str, Callable] = {
    "cosine": cosine,
    "repetition_penalty": repetition_penalty,
    "code_format": code_format,
    "soft_overlong_punishment": soft_overlong_punishment,
}
"""open-r1's parameterised rewards: each is called once at start-up (with ``factory_kwargs``, if any)."""
