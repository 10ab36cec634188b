"""open-r1's rewards under their names, on hand-picked inputs whose values follow from open-r1's rules.

Each function is called with TRL's conversational completions (``[{"role": "assistant", "content": ...}]``,
what open-r1 reads) and with plain strings; both must give the same values.
"""

import math

import pytest

from grouprl.rewards import BUILTIN_FACTORIES, BUILTIN_REWARDS, RewardError, resolve_rewards
from grouprl.rewards.openr1 import (
    accuracy,
    code_format,
    cosine,
    format,  # open-r1's name
    length,
    reasoning_steps,
    repetition_penalty,
    soft_overlong_punishment,
    tag_count,
)

LAYOUT = "<think>\nx\n</think>\n<answer>\n4\n</answer>"


def both_forms(fn, texts, **columns):
    """``fn`` on message-list completions; asserts plain strings give the same values."""
    conversational = fn(None, [[{"role": "assistant", "content": t}] for t in texts], **columns)
    assert fn(None, list(texts), **columns) == conversational
    return conversational


def test_open_r1_names_are_built_ins():
    assert {"accuracy", "format", "tag_count", "reasoning_steps", "length"} <= set(BUILTIN_REWARDS)
    assert set(BUILTIN_FACTORIES) == {"cosine", "repetition_penalty", "code_format",
                                      "soft_overlong_punishment"}
    assert BUILTIN_REWARDS["tag_count"] is tag_count  # open-r1's tag_count, not grouprl's tag_count_loose


def test_accuracy():
    texts = [r"so \boxed{\frac{1}{2}}", "The final answer is $0.5$", r"\boxed{0.25}", "0.5", "$0.5$", ""]
    # boxed (tried first) and "final answer is" anchor an answer; a bare number or a lone $…$ does not
    assert both_forms(accuracy, texts, solution=["$0.5$"] * 6) == [1.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    # the solution is read with math-verify's default extraction: a bare "0.5" parses; prose does not (None)
    assert both_forms(accuracy, [r"\boxed{0.5}"] * 2, solution=["0.5", "no answer here"]) == [1.0, None]
    assert both_forms(accuracy, [r"\boxed{x^2+2x+1}"], solution=["$(x+1)^2$"]) == [1.0]


def test_format():
    texts = [LAYOUT,
             # after </answer>, a new line may start anything (open-r1's $ under MULTILINE)
             LAYOUT + "\nmore",
             LAYOUT + " more",  # but text on the same line may not
             " " + LAYOUT,  # nothing before <think>
             "<think>x</think>\n<answer>\n4\n</answer>",  # the new lines inside the tags are required
             "<think>\n\n</think>\n<answer>\n\n</answer>"]  # empty blocks: ".*?" matches nothing
    assert both_forms(format, texts) == [1.0, 1.0, 0.0, 0.0, 0.0, 1.0]


def test_tag_count():
    texts = [LAYOUT,
             "<think>x</think><answer>4</answer>",  # no new lines: no piece counts
             "<think>\nx\n</think>\n",  # two of the four
             "<think>\n<think>\nx\n</think>\n<answer>\n4\n</answer>",  # <think>\n twice: that piece is lost
             "\n</answer>"]
    assert both_forms(tag_count, texts) == [1.0, 0.0, 0.5, 0.75, 0.25]


def test_reasoning_steps():
    texts = ["Step 1: a\nStep 2: b",  # 2 markers
             "1. a\n2. b",  # only the number that starts the text counts: 1
             "x\n- a\n* b\n- c",  # 3 bullets
             "First, a. Second, b. Next, c. Finally, d.",  # 4, capped at 1.0
             "no steps"]
    assert both_forms(reasoning_steps, texts) == [2 / 3, 1 / 3, 1.0, 1.0, 0.0]


def test_length():
    # lengths 9, 15, 9, 18 (min 9, max 18): lambda = 0.5, -1/6, 0.5, -0.5;
    # the last two are wrong: min(0, lambda)
    texts = [r"\boxed{2}", r"it is \boxed{2}", r"\boxed{3}", r"so it is \boxed{3}"]
    out = both_forms(length, texts, solution=["$2$"] * 4)
    assert out == pytest.approx([0.5, 0.5 - 6 / 9, 0.0, -0.5])
    # equal lengths
    assert both_forms(length, [r"\boxed{2}", r"\boxed{3}"], solution=["$2$"] * 2) == [0.0, 0.0]
    # an unparseable solution counts as correct: lambda itself, even above 0
    assert both_forms(length, ["ab", "abcd"], solution=["prose", "prose"]) == [0.5, -0.5]


def test_cosine_defaults_are_open_r1_script_defaults():
    right, wrong = r"\boxed{2}", r"\boxed{3}"  # 9 characters each
    half = cosine(max_len=18)  # 9 / 18: cos(pi / 2) = 0, the middle of each range
    assert both_forms(half, [right, wrong, "x"], solution=["$2$", "$2$", "prose"]) == pytest.approx(
        [0.75, -0.25, 1.0])  # (0.5 + 1.0) / 2, (0.0 + -0.5) / 2, unparseable solution: 1.0
    full = cosine(max_len=9)  # cos(pi) = -1: the far end, min_value_correct and max_value_wrong
    assert both_forms(full, [right, wrong], solution=["$2$"] * 2) == pytest.approx([0.5, -0.5])
    factory_default = cosine(min_value_wrong=-1.0, max_len=18)  # get_cosine_scaled_reward's own default
    assert factory_default(None, [wrong], solution=["$2$"]) == pytest.approx([-0.75])


def test_repetition_penalty():
    texts = ["the cat sat the cat sat",  # trigrams: 4, of which 3 distinct: (1 - 3/4) * -1
             "a b c d",  # no repeat: -0.0, as open-r1's 0 * max_penalty
             "a b",  # fewer words than ngram_size
             ""]
    assert both_forms(repetition_penalty(), texts) == [-0.25, 0.0, 0.0, 0.0]
    assert both_forms(repetition_penalty(ngram_size=1, max_penalty=-2.0),
                      ["A a b"]) == [pytest.approx(-2 / 3)]
    with pytest.raises(RewardError, match="its factory refused factory_kwargs=.*max_penalty 1 must be <= 0"):
        resolve_rewards([{"name": "repetition_penalty", "factory_kwargs": {"max_penalty": 1}}], [])


def test_soft_overlong_punishment_counts_tokens():
    ids = [[1] * n for n in (12288, 12289, 14336, 16384, 16385)]
    out = soft_overlong_punishment()(None, [""] * 5, ids)  # open-r1's defaults: 16384 and 4096
    assert out == [0.0, -1 / 4096, -0.5, -1.0, -1.0]
    assert soft_overlong_punishment(6, 3)(None, ["x"] * 3, [[1] * 3, [1] * 5, [1] * 7]) == [0.0, -2 / 3, -1.0]


def test_code_format():
    block = "<think>\nx\n</think>\n<answer>\n```{}\nprint(1)\n```\n</answer>"
    texts = [block.format("python"), block.format("cpp"), LAYOUT]
    assert both_forms(code_format(), texts) == [1.0, 0.0, 0.0]
    assert both_forms(code_format("cpp"), texts) == [0.0, 1.0, 0.0]
    # a language column names each sample's language
    assert both_forms(code_format(), texts[:2], language=["cpp", "cpp"]) == [0.0, 1.0]


def test_factories_by_name_with_and_without_factory_kwargs():
    plain, tuned = resolve_rewards(["cosine", {"name": "cosine", "factory_kwargs": {"max_len": 9}}], [])
    assert (plain.name, tuned.name) == ("cosine", "cosine_2")  # the second of a name is numbered
    assert plain.fn(None, [r"\boxed{2}"], solution=["$2$"]) == pytest.approx([0.5 + 0.25 * (1 + math.cos(
        math.pi * 9 / 1000))])
    assert tuned.fn(None, [r"\boxed{2}"], solution=["$2$"]) == pytest.approx([0.5])
    with pytest.raises(RewardError,
                       match="reward 'accuracy' is a function, not a factory: drop factory_kwargs"):
        resolve_rewards([{"name": "accuracy", "factory_kwargs": {}}], [])
