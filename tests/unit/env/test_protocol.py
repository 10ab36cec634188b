"""The environment protocol: tool schemas from signatures, the checks at start-up, loading by name or path."""

from __future__ import annotations

from typing import Literal

import pytest

from grouprl.env import ENVIRONMENTS, load_environment, tool_names, tool_schema
from grouprl.env.parse import Call, Malformed, hermes
from grouprl.errors import ConfigError


class Shop:
    def reset(self, **row):
        return None

    def buy(self, item: Literal["apple", "pear"], count: int = 1, note: str | None = None) -> str:
        """Buy fruit.

        Longer text that is not the summary.

        Args:
            item: what to buy
            count (int): how many
        """
        return f"{count} {item}"

    def get_reward(self) -> float:
        return 0.0

    def _private(self, x):
        return x


def test_schema_from_signature_and_docstring():
    assert tool_names(Shop) == ["buy"]  # reset, get_reward and _private are not tools
    fn = tool_schema(Shop, "buy")["function"]
    assert fn["description"] == "Buy fruit."
    assert fn["parameters"] == {"type": "object", "required": ["item"], "properties": {
        "item": {"type": "string", "enum": ["apple", "pear"], "description": "what to buy"},
        "count": {"type": "integer", "description": "how many"}, "note": {"type": "string"}}}


def test_hermes_parser():
    text = ('think <tool_call>{"name": "a", "arguments": "{\\"x\\": 1}"}</tool_call>'
            '<tool_call>[1]</tool_call><tool_call>{"name": "b"}</tool_call>')
    assert hermes(text) == [Call("a", {"x": 1}), Malformed('a tool call must be a JSON object {"name": ..., '
                                                           '"arguments": {...}}'), Call("b", {})]


class NoReset:
    def add(self, a: int) -> int:
        return a


class Untyped:
    def reset(self, **row):
        return None

    def add(self, a, b: int) -> int:
        return a + b


class NeedsArgs:
    def __init__(self, url):
        self.url = url

    def reset(self, **row):
        return None


@pytest.mark.parametrize("cls,message", [
    (NoReset, "class NoReset has no reset method; add def reset(self, **row)"),
    (Untyped, "tool add: parameter 'a' has no type hint"),
    (NeedsArgs, "NeedsArgs() needs arguments; its __init__ must take none"),
])
def test_bad_classes_are_one_line(tmp_path, cls, message):
    import inspect

    path = tmp_path / "envs.py"
    path.write_text(inspect.getsource(cls))
    import re

    with pytest.raises(ConfigError, match=re.escape(message)) as err:
        load_environment(f"{path}:{cls.__name__}")
    assert "\n" not in str(err.value)


def test_loading_by_name_module_and_path(tmp_path):
    assert load_environment("calculator") is ENVIRONMENTS.get("calculator")
    assert load_environment("grouprl.env.builtin:GuessNumber").__name__ == "GuessNumber"
    with pytest.raises(ConfigError, match="unknown 'calc'; built-in: calculator, guess_number, python"):
        load_environment("calc")
    with pytest.raises(ConfigError, match="does not exist"):
        load_environment(f"{tmp_path}/none.py:Env")
    (tmp_path / "broken.py").write_text("raise RuntimeError('no')\n")
    with pytest.raises(ConfigError, match="importing .*broken.py failed: RuntimeError: no"):
        load_environment(f"{tmp_path}/broken.py:Env")


def test_the_python_tool_runs_code_in_the_sandbox():
    from grouprl.env.builtin import PythonTool

    tool = load_environment("python")()
    assert isinstance(tool, PythonTool) and tool_names(PythonTool) == ["run"]
    assert tool.run("print(6 * 7)") == "42\n"
    assert "ZeroDivisionError" in tool.run("1 / 0")
