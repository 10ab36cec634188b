"""Length shaping as reward functions (they read ``completion_ids``, the sampled tokens of each completion).

The same shaping also exists as an algorithm choice (the ``soft_overlong`` shaping piece,
``algo.shaping=[soft_overlong]``, in DAPO's preset); use one or the other, not both. Parameters come from the
config: ``{name: soft_overlong_penalty, kwargs: {max_len: 512, cache_len: 128}}``.
"""

from __future__ import annotations

from grouprl.messages import completion_text


def _lengths(completions, completion_ids) -> list[int]:
    if completion_ids is None:  # no token ids: fall back to characters
        return [len(completion_text(c) or "") for c in completions]
    return [len(ids) for ids in completion_ids]


def soft_overlong_penalty(prompts, completions, completion_ids=None, *, max_len: int, cache_len: int,
                          **columns) -> list[float]:
    """DAPO's soft overlong punishment: 0 up to ``max_len - cache_len`` tokens, then linear to -1 at
    ``max_len``.

    >>> soft_overlong_penalty(None, ["", "", "", ""], [[1] * 2, [1] * 4, [1] * 5, [1] * 9],
    ...                       max_len=5, cache_len=2)
    [0.0, -0.5, -1.0, -1.0]
    """
    expected = max_len - cache_len
    return [0.0 if n <= expected else max((expected - n) / cache_len, -1.0)
            for n in _lengths(completions, completion_ids)]


def length_penalty(prompts, completions, completion_ids=None, *, coef: float = 1.0, max_len: int,
                   **columns) -> list[float]:
    """A linear cost of length: ``-coef * |o| / max_len``.

    >>> length_penalty(None, ["", ""], [[1] * 2, [1] * 8], coef=0.5, max_len=8)
    [-0.125, -0.5]
    """
    return [-coef * n / max_len for n in _lengths(completions, completion_ids)]


REWARDS = {"soft_overlong_penalty": soft_overlong_penalty, "length_penalty": length_penalty}
