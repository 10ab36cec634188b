"""Math answer rewards: extraction, equivalence against math-verify's own verdict, and robustness."""

import time

import pytest
from math_verify import parse, verify

from grouprl.rewards.answers import (
    REWARDS,
    exact_match,
    extract_answer,
    is_equivalent,
    math_answer,
    numeric_match,
)

# (prediction, reference, expected). Every row must also match math-verify's verdict on the boxed pair,
# except those in MV_DIFFERS, where the numeric fast path is deliberately looser (rel_tol 1e-6 vs rounding).
EQUIVALENCE = [
    # fractions and decimals
    (r"\frac{1}{2}", "0.5", True),
    ("0.5", r"\frac{1}{2}", True),
    (r"\dfrac{3}{4}", "0.75", True),
    (r"\frac12", "0.5", True),
    ("1/2", "0.5", True),
    (r"\frac{6}{8}", r"\frac{3}{4}", True),
    (r"-\frac{2}{3}", r"\frac{-2}{3}", True),
    ("-0.5", r"-\frac{1}{2}", True),
    ("0.333333", r"\frac{1}{3}", True),
    (r"\frac{1}{3}", "0.3", False),
    ("0.5", "0.6", False),
    # roots, powers, constants
    (r"\sqrt{4}", "2", True),
    (r"\sqrt{2}/2", r"\frac{\sqrt{2}}{2}", True),
    (r"\sqrt{2}", "1.414", False),
    ("2^{10}", "1024", True),
    (r"2\pi", r"\pi*2", True),
    (r"2 \pi", r"2\pi", True),
    (r"2\pi", r"\pi", False),
    ("3.14", r"\pi", False),
    (r"\infty", r"\infty", True),
    # thousands separators, integers, signs
    ("1,000", "1000", True),
    ("1000", "1,000", True),
    ("12,345,678", "12345678", True),
    ("1,000", "100", False),
    ("100", "1000", False),
    ("-3", "-3", True),
    ("-3", "3", False),
    ("0", "0", True),
    ("-0", "0", True),
    ("3.0", "3", True),
    ("3", "3.00", True),
    ("4", "5", False),
    ("10", "10.0000001", True),  # MV_DIFFERS
    ("0.1+0.2", "0.3", True),
    # symbolic expressions
    ("x^2+2x+1", "(x+1)^2", True),
    ("(x+1)(x-1)", "x^2-1", True),
    ("x+y", "y+x", True),
    (r"\frac{a}{b}", "a/b", True),
    ("x^2", "x^3", False),
    ("x+1", "x-1", False),
    ("x=2", "2", True),
    # sets and intervals
    (r"\{1,2\}", r"\{2,1\}", True),
    (r"\{1,2\}", r"\{1,3\}", False),
    ("[1,2)", "[1,2)", True),
    ("(1,2)", "[1,2]", False),
    ("[1,2]", "(1,2)", False),
    (r"(-\infty, 3]", r"(-\infty,3]", True),
    (r"(-\infty, 3]", r"(-\infty,3)", False),
    # percentages, units, text (left to math-verify)
    (r"50\%", "50", True),
    (r"50\%", "0.5", True),
    (r"\$5", "5", True),
    (r"5 \text{ cm}", "5", True),
    (r"\text{(A)}", "A", True),
    ("B", "A", False),
]
MV_DIFFERS = {("10", "10.0000001")}


def math_verify_verdict(prediction, reference):
    gold = parse(f"\\boxed{{{reference}}}", parsing_timeout=None)
    pred = parse(f"\\boxed{{{prediction}}}", parsing_timeout=None)
    return verify(gold, pred, timeout_seconds=None)


def test_table_is_large_enough():
    assert len(EQUIVALENCE) >= 50
    assert sum(not expected for *_, expected in EQUIVALENCE) >= 15


@pytest.mark.parametrize(("prediction", "reference", "expected"), EQUIVALENCE)
def test_math_answer_equivalence(prediction, reference, expected):
    completion = f"Working it out carefully gives \\boxed{{{prediction}}}."
    assert math_answer(["q"], [completion], answer=[reference]) == [float(expected)]
    if (prediction, reference) not in MV_DIFFERS:
        assert math_verify_verdict(prediction, reference) == expected


def test_mv_differs_rows_really_differ():
    for prediction, reference in MV_DIFFERS:
        assert is_equivalent(prediction, reference) != math_verify_verdict(prediction, reference)


@pytest.mark.parametrize(("text", "expected"), [
    (r"\boxed{\frac{1}{\sqrt{2}}}", r"\frac{1}{\sqrt{2}}"),  # nested braces
    (r"first \boxed{1}, then \boxed{2}, finally \boxed{3}", "3"),  # last one wins
    (r"\fbox{7}", "7"),
    (r"\boxed {7}", "7"),
    (r"\boxed{\{1,2\}}", r"\{1,2\}"),  # escaped braces inside
    (r"\boxed{1} and then \boxed{2", "1"),  # unterminated last one is ignored
    ("#### 5\n\\boxed{6}", "6"),  # boxed beats ####
    ("She pays 3*4 = 12 dollars.\n#### 12", "12"),
    ("#### 1\nno wait\n####  72 ", "72"),
    ("Answer: 17", "17"),
    ("**Answer:** 12", "12"),
    (r"So the answer is $\frac{1}{2}$.", r"\frac{1}{2}"),
    ("The answer is 5. Answer: 6", "6"),  # last occurrence on the same line
    ("The final answer is: -4\nThanks!", "-4"),
    ("I think it is 42.", None),
    ("", None),
    (r"\boxed{", None),
    ("Answer:   ", None),
    (None, None),
    (42, None),
])
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


ADVERSARIAL = [
    "",
    "   \n\t",
    "a" * 1_000_000,
    "\\boxed{" * 100_000,  # many unterminated boxes: still linear time
    "{" * 100_000 + "\\boxed{1",
    "}" * 1000 + "\\boxed{}" + "}" * 1000,
    "\\boxed{" + "(" * 5000 + "}",
    "#### " + "9" * 5000,
    "Answer: " + "x+" * 3000 + "1",
    "\\boxed{\\frac{1}{0}}",
    "\\boxed{\\frac{}{}}",
    "\\boxed{\\sqrt{}}",
    "\\boxed{\x00\uffff\ud800}",
    None,
    123,
    b"\\boxed{1}",
    ["\\boxed{1}"],
]


@pytest.mark.parametrize("fn", [math_answer, numeric_match, exact_match])
def test_adversarial_completions_score_zero_without_raising(fn):
    start = time.monotonic()
    assert (fn([""] * len(ADVERSARIAL), ADVERSARIAL, answer=["1"] * len(ADVERSARIAL))
            == [0.0] * len(ADVERSARIAL))
    assert time.monotonic() - start < 20.0   # about 1 s when idle; anything worse than linear takes hours


def test_pathological_answer_is_cut_off_by_the_sample_deadline():
    start = time.monotonic()
    assert is_equivalent("9^{9^{9^{9}}}", "1", timeout=0.5) is False
    assert time.monotonic() - start < 10 * 0.5  # liveness: uncut, 9^9^9^9 would run for hours


def test_reference_may_be_a_full_solution_or_a_number():
    completions = ["#### 72", "\\boxed{72}"]
    assert math_answer([""] * 2, completions, answer=["48 + 24 = 72\n#### 72", 72]) == [1.0, 1.0]


def test_numeric_match():
    completions = ["#### 1,000", "Answer: 72.0", "\\boxed{72.0000001}", "\\boxed{\\frac{1}{2}}", "#### 71",
                   "none"]
    assert numeric_match([""] * 6, completions, answer=["1000", "72", "72", "0.5", "72", "72"]) == [
        1.0, 1.0, 1.0, 0.0, 0.0, 0.0]
    assert numeric_match([""], ["#### 72.0001"], answer=["72"], rel_tol=1e-3) == [1.0]


def test_exact_match():
    completions = ["\\boxed{ x+1 }", "\\boxed{1+x}", "x+1", "Answer: x+1"]
    assert exact_match([""] * 4, completions, answer=[" x+1"] * 4) == [1.0, 0.0, 0.0, 1.0]


def test_rewards_registry():
    assert REWARDS == {"math_answer": math_answer, "numeric_match": numeric_match, "exact_match": exact_match}
