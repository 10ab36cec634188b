"""The shared answer extractor: every mode on tricky strings, the exact number it reads, and the verifiers."""

from fractions import Fraction

import pytest

from grouprl.rewards import REWARDS
from grouprl.rewards.answers import extract_answer
from grouprl.rewards.countdown import countdown_reward
from grouprl.rewards.extract import MODES, answer_value, extract, last_number
from grouprl.rewards.numeric import VERIFIERS, answer_tag_number, boxed_number, last_number_match

LAST_NUMBER = [
    ("The answer is 42.", "42"),  # a sentence-final period is not a decimal point
    ("42", "42"),
    ("She has 1,234 stamps.", "1234"),  # thousands separators
    ("1,234,567 grains", "1234567"),
    ("It costs $1,200.50 in all.", "1200.50"),  # dollars and cents
    ("-7", "-7"),
    ("The change is -3.", "-3"),  # a sign after a space
    ("The temperature is \u22125 degrees", "-5"),  # U+2212, the typographic minus
    ("10-3", "3"),  # an operator, not a sign
    ("(4)-3", "3"),
    ("x = 3.75", "3.75"),
    ("about .5 of it", ".5"),
    ("12 apples", "12"),  # units after the number
    ("5kg", "5"),
    ("50%", "50"),
    ("First 3, then 4, finally 17 marbles", "17"),  # the last one wins
    ("1, 2, 3", "3"),  # a list, not a thousands separator
    ("12,34", "34"),  # not groups of three: two numbers
    ("1{,}000 steps", "1000"),  # LaTeX thousands separators
    ("1\\,000 steps", "1000"),
    ("$\\boxed{15}$.", "15"),
    ("\\frac{3}{4}", "3/4"),  # LaTeX fractions, read whole
    ("x = -\\frac{6}{8}", "-6/8"),
    ("\\dfrac{10}{2} cookies", "10/2"),
    ("\\frac34", "3/4"),
    ("\\frac{1}{0}", None),  # no such number
    ("3/4 of them", "4"),  # a plain slash is not read as a fraction (km/h, dates)
    ("x2", None),  # digits glued after a letter are not a number
    ("no digits here", None),
    ("", None),
    ("Step 1: 5 + 7 = 12. Step 2: 12 * 2 = 24. The answer is 24 dollars!", "24"),
    ("Total: 3.5.", "3.5"),
]


@pytest.mark.parametrize("text,expected", LAST_NUMBER)
def test_last_number(text, expected):
    assert last_number(text) == expected
    assert extract(text, "last_number") == expected


BOXED = [
    (r"\boxed{42}", "42"),
    (r"so \boxed{3} and finally \boxed{5}.", "5"),  # several boxes: the last
    (r"\boxed{\frac{1}{2}}", r"\frac{1}{2}"),  # nested braces
    (r"\boxed{\text{12 apples}}", r"\text{12 apples}"),
    (r"\boxed{ 7 }", "7"),
    (r"\fbox{9}", "9"),
    (r"\boxed {8}", "8"),
    (r"\boxed{3} then \boxed{4", "3"),  # an unterminated box is ignored
    (r"\boxed{4", None),
    (r"\boxed{}", None),  # empty: no answer
    (r"$\boxed{1,000}$", "1,000"),
    ("The answer is 5.", None),  # a number without a box is not a boxed answer
    (r"\boxed{\{1, 2\}}", r"\{1, 2\}"),  # escaped braces do not close the box
]


@pytest.mark.parametrize("text,expected", BOXED)
def test_boxed(text, expected):
    assert extract(text, "boxed") == expected


TAGS = [
    ("<answer>42</answer>", "42"),
    ("<think>7*6</think>\n<answer> 42 </answer>", "42"),
    ("<answer>1</answer> or rather <answer>2</answer>", "2"),  # the last
    ("<ANSWER>3</Answer>", "3"),  # case-insensitive tags
    ("<answer>\n(1+2)*3\n</answer>", "(1+2)*3"),  # across lines
    ("<answer>a<answer>b</answer>", "b"),  # a nested opening: the innermost span
    ("<answer>5", None),  # unterminated
    ("<answer></answer>", None),
    ("5</answer>", None),
    ("the answer is 5", None),
]


@pytest.mark.parametrize("text,expected", TAGS)
def test_answer_tag(text, expected):
    assert extract(text, "answer_tag") == expected


VALUES = [
    (r"\boxed{1,234}", "boxed", Fraction(1234)),
    (r"\boxed{\$12}", "boxed", Fraction(12)),
    (r"\boxed{12 \text{ apples}}", "boxed", Fraction(12)),
    (r"\boxed{x = -4}", "boxed", Fraction(-4)),
    (r"\boxed{\frac{6}{8}}", "boxed", Fraction(3, 4)),
    (r"\boxed{2.50}", "boxed", Fraction(5, 2)),
    (r"\boxed{twelve}", "boxed", None),
    ("<answer>$1,200</answer>", "answer_tag", Fraction(1200)),
    ("<answer>-0.5</answer>", "answer_tag", Fraction(-1, 2)),
    ("<answer>none</answer>", "answer_tag", None),
    ("He ends with 40 shells.", "last_number", Fraction(40)),
    (None, "boxed", None),  # not text
]


@pytest.mark.parametrize("text,mode,value", VALUES)
def test_answer_value_is_exact(text, mode, value):
    assert answer_value(text, mode) == value


def test_an_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="use one of boxed, answer_tag, last_number"):
        extract("1", "first_number")


@pytest.mark.parametrize("mode", MODES)
def test_verifiers_take_strings_and_message_lists(mode):
    """TRL passes a conversational row's completions as one-message assistant lists; both score alike."""
    right = {"boxed": r"7 - 2 = 5, so \boxed{5}.", "answer_tag": "<answer>5</answer>",
             "last_number": "The answer is 5."}[mode]
    wrong = right.replace("5", "6")
    completions = [right, wrong, [{"role": "assistant", "content": right}],
                   [{"role": "assistant", "content": wrong}], "", None,
                   [{"role": "assistant", "content": None}]]
    assert VERIFIERS[mode]([""] * 7, completions, answer=["5"] * 7) == [1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0]


def test_verifiers_need_the_asked_for_format_and_compare_exactly():
    completions = [r"\boxed{12}", "<answer>12</answer>", "12", r"\boxed{12.0}", r"\boxed{12.01}"]
    assert boxed_number([""] * 5, completions, answer=["12"] * 5) == [1.0, 0.0, 0.0, 1.0, 0.0]
    assert answer_tag_number([""] * 5, completions, answer=["12"] * 5) == [0.0, 1.0, 0.0, 0.0, 0.0]
    assert last_number_match([""] * 5, completions, answer=[12] * 5) == [1.0, 1.0, 1.0, 1.0, 0.0]
    assert boxed_number([""], [r"\boxed{3}"], answer=["not a number"]) == [0.0]


def test_verifiers_log_the_share_that_answered_in_the_format():
    logged = []
    completions = [r"\boxed{12}", r"\boxed{13}", "12", r"\boxed{x}"]
    scores = boxed_number([""] * 4, completions, answer=["12"] * 4, log_metric=lambda *a: logged.append(a))
    assert scores == [1.0, 0.0, 0.0, 0.0] and logged == [("answered", 0.5)]  # right or wrong, but a number


def test_the_verifiers_are_built_in_rewards():
    assert {REWARDS.get(fn.__name__) for fn in VERIFIERS.values()} == set(VERIFIERS.values())


def test_math_and_countdown_rewards_read_boxes_and_tags_through_the_extractor():
    """extract_answer and the countdown verifier share these rules: the last complete box / tag pair wins."""
    assert extract_answer(r"\boxed{3} \boxed{\frac{1}{2}} \boxed{7") == r"\frac{1}{2}"
    completions = ["<answer>1+2</answer> <ANSWER>(1+2)*3</ANSWER>", "<answer>a<answer>(1+2)*3</answer>"]
    assert countdown_reward([""] * 2, completions, numbers=[[1, 2, 3]] * 2, target=[9] * 2) == [1.0, 1.0]
