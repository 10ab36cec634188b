"""The examples in docstrings are tests too."""

import doctest
import importlib

import pytest

MODULES = ["grouprl.algo.advantages", "grouprl.algo.filters", "grouprl.algo.kl", "grouprl.algo.presets",
           "grouprl.data.tasks.arithmetic", "grouprl.rewards.arithmetic", "grouprl.rewards.countdown",
           "grouprl.rewards.code", "grouprl.rewards.length", "grouprl.rewards.answers",
           "grouprl.rewards.tags", "grouprl.rewards.openr1", "grouprl.messages", "grouprl.rewards.extract",
           "grouprl.rewards.numeric", "grouprl.data.tasks.chat", "grouprl.data.tasks.word_problems",
           "grouprl.data.tasks.chat_arithmetic"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
