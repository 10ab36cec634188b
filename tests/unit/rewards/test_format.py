"""grouprl's format rewards for the <think>…</think><answer>…</answer> layout (open-r1's are in
test_openr1)."""

import pytest

from grouprl.rewards.tags import REWARDS, tag_count_loose, think_answer_format

CASES = [  # (completion, think_answer_format, tag_count_loose)
    ("<think>2+2 is 4</think><answer>4</answer>", 1.0, 1.0),
    ("<think>\nmulti\nline\n</think>\n\n<answer>\n4\n</answer>\n", 1.0, 1.0),
    ("  <think></think> <answer></answer>  ", 1.0, 1.0),
    ("<answer>4</answer><think>2+2</think>", 0.0, 1.0),  # wrong order
    ("</think>2+2<think><answer>4</answer>", 0.0, 1.0),  # tags reversed
    ("Sure! <think>2+2</think><answer>4</answer>", 0.0, 1.0),  # text before
    ("<think>2+2</think><answer>4</answer> Hope this helps.", 0.0, 1.0),  # text after
    ("<think>2+2</think> so <answer>4</answer>", 0.0, 1.0),  # text between
    ("<think>2+2</think><answer>4</answer><answer>5</answer>", 0.0, 0.5),  # repeated block
    ("<think>a<think>b</think><answer>4</answer>", 0.0, 0.75),  # nested tag
    ("2+2</think><answer>4</answer>", 0.0, 0.75),  # opening tag in the prompt
    ("<think>2+2</think>", 0.0, 0.5),  # missing answer
    ("<answer>4</answer>", 0.0, 0.5),  # missing think
    ("<think>2+2<answer>4</answer>", 0.0, 0.75),
    ("4", 0.0, 0.0),
    ("", 0.0, 0.0),
    (None, 0.0, 0.0),
    (7, 0.0, 0.0),
]


@pytest.mark.parametrize(("completion", "layout", "tags"), CASES)
def test_format_rewards(completion, layout, tags):
    assert think_answer_format(["p"], [completion]) == [layout]
    assert tag_count_loose(["p"], [completion]) == [tags]


def test_batch_and_protocol_columns_are_ignored():
    completions = [c for c, *_ in CASES]
    out = think_answer_format([""] * len(CASES), completions, completion_ids=None, answer=["4"] * len(CASES))
    assert out == [layout for _, layout, _ in CASES]


def test_large_input_is_fast():
    big = "<think>" + "x" * 1_000_000 + "</think><answer>1</answer>"
    assert think_answer_format([""], [big]) == [1.0]
    assert tag_count_loose([""], [big]) == [1.0]


def test_rewards_registry():
    assert REWARDS == {"think_answer_format": think_answer_format, "tag_count_loose": tag_count_loose}
