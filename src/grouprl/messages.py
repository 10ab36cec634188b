"""TRL's two forms of a sample: *standard* (plain strings) and *conversational* (lists of chat messages).

A row whose prompt is a list of ``{"role", "content"}`` messages is conversational: its completions reach the
reward functions as one-message assistant lists, ``[{"role": "assistant", "content": text}]``, the way TRL's
GRPOTrainer passes them; a row whose prompt is a string gets plain-string completions. Built-in rewards read
either form through ``completion_text``.

This module imports nothing of grouprl, so the data tasks and the rewards can both use it.
"""

from __future__ import annotations


def is_conversational(prompt) -> bool:
    """Whether ``prompt`` is a list of chat messages (TRL's conversational form)."""
    return isinstance(prompt, list)


def as_completion(prompt, text: str):
    """The completion ``text`` in the form of its ``prompt``: a one-message assistant list, or the string.

    >>> as_completion([{"role": "user", "content": "2+2="}], "4")
    [{'role': 'assistant', 'content': '4'}]
    >>> as_completion("2+2=", "4")
    '4'
    """
    return [{"role": "assistant", "content": text}] if is_conversational(prompt) else text


def completion_text(completion) -> str | None:
    """The text of a completion in either form: the string itself, or the content of the last message of a
    message list (TRL's completions have one message; with tool calls the last one is the answer). None for
    anything else, which the built-in rewards score as they score a wrong answer.

    >>> completion_text("4"), completion_text([{"role": "assistant", "content": "4"}]), completion_text(7)
    ('4', '4', None)
    """
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        content = completion[-1].get("content")
        return content if isinstance(content, str) else None
    return None
