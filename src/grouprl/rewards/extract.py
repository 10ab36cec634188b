"""Final-answer extraction, shared by the verifiers of the chat tasks, the math rewards and so the evaluator.

A completion states its answer in one of three ways, the *modes* a task names:

* ``boxed``: the content of the last complete ``\\boxed{…}`` (or ``\\fbox{…}``), braces balanced, so
  ``\\boxed{\\frac{1}{2}}`` gives ``\\frac{1}{2}``; an unterminated box is ignored;
* ``answer_tag``: the content of the last complete ``<answer>…</answer>`` (tags case-insensitive);
* ``last_number``: the last number written anywhere in the text.

The last one wins in every mode, the way GSM8K and MATH solutions are graded: a model may write or box
intermediate results, and the final one is what it committed to. Held-out evaluation (``grouprl.eval``) calls
the task's verifier, so training and evaluation read answers through this one module.

Numbers (``last_number``, and ``answer_value`` on what a box or a tag holds) are read the way people write
them: ``1,234`` (thousands separators, also LaTeX's ``1{,}234`` and ``1\\,234``), ``-7`` and ``−7``, ``3.5``,
``.5``, ``\\frac{3}{4}`` (also ``\\dfrac``, ``\\tfrac``, ``\\frac34``), with ``$``, units, a percent sign or a
sentence-final period around them. A ``-`` is a sign only when nothing word-like or closing precedes it, so
``10-3`` ends in ``3`` while ``is -3`` ends in ``-3``. Not read: scientific notation (``1e5`` is ``1`` and
``5``), plain-slash fractions (``3/4`` is ``3`` and ``4``: ``km/h`` and dates make the slash ambiguous),
digits glued after a letter (``x2``).
"""

from __future__ import annotations

import re
from fractions import Fraction

MODES = ("boxed", "answer_tag", "last_number")
"""The answer formats a task may ask for; see the module docstring."""

_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_TAG = re.compile(r"<answer>((?:(?!<answer>).)*?)</answer>", re.IGNORECASE | re.DOTALL)
_INTEGER = r"(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)"
_DECIMAL = rf"(?:{_INTEGER}(?:\.\d+)?|\.\d+)"
_SIGN = r"(?:(?<![\w)\]}])-)?"  # a minus glued to the number, not the operator of "10-3" or "(a)-3"
_NUMBER = re.compile(
    rf"(?P<frac>{_SIGN}\\[dt]?frac(?:\{{\s*(?P<num>-?\d+)\s*\}}\{{\s*(?P<den>-?\d+)\s*\}}|(?P<n1>\d)(?P<d1>\d)))"
    rf"|(?<![\w.]){_SIGN}{_DECIMAL}"
)
_LATEX_SPACES = re.compile(r"(?<=\d)(?:\{,\}|\\,|\\!|\\ )(?=\d)")  # 1{,}000 1\,000 inside a number


def _matching_braces(text: str) -> dict[int, int]:
    """Index of each ``{`` → index of its closing ``}``; escaped braces (``\\{``) are skipped. One pass."""
    stack, match = [], {}
    for i, ch in enumerate(text):
        if ch in "{}" and i > 0 and text[i - 1] == "\\":
            continue
        if ch == "{":
            stack.append(i)
        elif ch == "}" and stack:
            match[stack.pop()] = i
    return match


def last_boxed(text: str) -> str | None:
    """The content of the last complete ``\\boxed{…}`` / ``\\fbox{…}``, stripped; None if there is none.

    >>> last_boxed(r"first \\boxed{3}, then \\boxed{\\frac{1}{2}} and \\boxed{7")
    '\\\\frac{1}{2}'
    """
    starts = [m.end() - 1 for m in _BOXED.finditer(text)]  # index of each opening brace
    if not starts:
        return None
    match = _matching_braces(text)
    for start in reversed(starts):
        if start in match:
            return text[start + 1:match[start]].strip()
    return None


def last_tagged(text: str) -> str | None:
    """The content of the last complete ``<answer>…</answer>``, stripped; None if there is none.

    >>> last_tagged("<answer>1</answer> no, <ANSWER> 2 </ANSWER> <answer>3")
    '2'
    """
    spans = _TAG.findall(text)
    return spans[-1].strip() if spans else None


def last_number(text: str) -> str | None:
    """The last number in ``text`` as a plain literal ``Fraction`` reads (``"-1234.5"``, ``"3/4"``), or None.

    >>> last_number("It costs $1,250.50."), last_number(r"so x = -\\frac{6}{8}."), last_number("none")
    ('1250.50', '-6/8', None)
    """
    text = _LATEX_SPACES.sub("", text.replace("\u2212", "-"))
    last = None
    for last in _NUMBER.finditer(text):  # noqa: B007 - we want the last match
        pass
    if last is None:
        return None
    if last["frac"]:
        sign = "-" if last["frac"].startswith("-") else ""
        num, den = (last["num"], last["den"]) if last["num"] is not None else (last["n1"], last["d1"])
        return None if int(den) == 0 else f"{sign}{num}/{den}".replace("--", "")
    return last[0].replace(",", "")


def extract(text, mode: str) -> str | None:
    """The answer ``text`` states in ``mode`` (one of ``MODES``), or None: not text, no answer, or empty.

    >>> extract(r"The total is \\boxed{42}.", "boxed"), extract("<answer>(1+2)*3</answer>", "answer_tag")
    ('42', '(1+2)*3')
    >>> extract("3 apples and 4 pears: 7 fruits.", "last_number")
    '7'
    """
    if mode not in MODES:
        raise ValueError(f"answer mode {mode!r}: use one of {', '.join(MODES)}")
    if not isinstance(text, str):
        return None
    found = {"boxed": last_boxed, "answer_tag": last_tagged, "last_number": last_number}[mode](text)
    return found or None


def answer_value(text, mode: str) -> Fraction | None:
    """The number that ``text`` gives as its answer in ``mode``, exactly, or None.

    The answer is extracted as ``extract`` does, and its last number read, so ``\\boxed{12 \\text{ apples}}``
    and ``<answer>$1,200</answer>`` give 12 and 1200.

    >>> answer_value(r"\\boxed{\\$1,200.50}", "boxed"), answer_value("<answer>-3.5</answer>", "answer_tag")
    (Fraction(2401, 2), Fraction(-7, 2))
    """
    found = extract(text, mode)
    if found is None:
        return None
    number = found if mode == "last_number" else last_number(found)
    return Fraction(number) if number is not None else None
