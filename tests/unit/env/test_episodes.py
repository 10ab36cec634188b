"""Multi-turn episodes with a scripted policy (deterministic turns): the loss mask token by token, tool-call
parsing and every kind of tool failure, the turn and token limits, and a TRL-style environment unchanged."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
import torch

from grouprl.env import check_environment, tool_names
from grouprl.env.builtin import Calculator, GuessNumber
from grouprl.env.episode import EnvironmentRollout, Renderer
from grouprl.env.host import EnvHost
from grouprl.env.parse import hermes
from grouprl.model.tokenizer import build_char_tokenizer
from grouprl.rollout.hf import left_pad
from grouprl.types import Rollout, SamplingParams

EOS, PAD = 2, 0
# A small Hermes-like template: assistant turns end with <eos>; tool results come back as tool turns.
TEMPLATE = ("{%- for m in messages %}<|{{ m.role }}|>{{ m.content }}{% if m.role == 'assistant' %}<eos>"
            "{% endif %}\n{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}")


class Scripted:
    """A backend whose 'samples' are scripted: ``policy(text so far) -> reply``; EOS is appended and the
    reply is cut at the call's budget (then no EOS: truncated). Log-probs are -0.5 per token."""

    def __init__(self, tokenizer, policy):
        self.tokenizer, self.policy = tokenizer, policy
        self.pad_id, self.eos_ids = PAD, [EOS]
        self.model = SimpleNamespace(device=torch.device("cpu"))

    def generate(self, prompt_ids, G, sampling):
        rows = []
        for ids in prompt_ids:
            text = self.policy(self.tokenizer.decode(ids))
            reply = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            rows.append((reply + [EOS])[:sampling.max_new_tokens])
        T = max(map(len, rows))
        out = torch.full((len(rows), T), PAD)
        mask = torch.zeros(len(rows), T, dtype=torch.long)
        for i, r in enumerate(rows):
            out[i, :len(r)], mask[i, :len(r)] = torch.tensor(r), 1
        p, pm = left_pad(prompt_ids, PAD)
        return Rollout(p, pm, out, mask, torch.tensor([EOS not in r for r in rows]), -0.5 * mask.float())


def tokenizer(template: bool):
    tok = build_char_tokenizer()
    tok.chat_template = TEMPLATE if template else None
    return tok


def play(env_cls, policy, rows, *, G=1, template=True, max_turns=4, budget=2000, timeout=5.0, max_chars=100,
         isolate=False):
    tok = tokenizer(template)
    tools = check_environment(env_cls, env_cls.__name__)
    host = EnvHost(env_cls, tool_names(env_cls), timeout=timeout, max_chars=max_chars, isolate=isolate)
    runner = EnvironmentRollout(Scripted(tok, policy), tok, host, Renderer(tok, tools, [EOS]), hermes,
                                max_turns=max_turns)
    try:
        return runner.play(rows, G, SamplingParams(max_new_tokens=budget)), tok
    finally:
        runner.close()


def call(name, **arguments):
    import json

    return f'<tool_call>{json.dumps({"name": name, "arguments": arguments})}</tool_call>'


def by_turns(*replies):
    """A policy answering the k-th model turn (k = EOS tokens so far) with ``replies[k]``."""
    return lambda text: replies[min(text.count("<eos>"), len(replies) - 1)]


ROW = {"prompt": "5*3+2?", "answer": "17"}


def test_masks_token_by_token_match_the_rendered_conversation():
    played, tok = play(Calculator, by_turns(call("mul", a=5, b=3), call("add", a=15, b=2), "17"), [ROW])
    r = played.rollout
    messages = played.completions[0]
    assert [m["role"] for m in messages] == ["assistant", "tool", "assistant", "tool", "assistant"]
    assert [m["content"] for m in messages if m["role"] == "tool"] == ["15", "17"]
    assert messages[0]["tool_calls"][0]["function"] == {"name": "mul", "arguments": {"a": 5, "b": 3}}
    # the whole sequence is exactly the template's rendering of the whole conversation
    whole = tok.apply_chat_template([{"role": "user", "content": ROW["prompt"]}, *messages], tokenize=False,
                                    tools=None)
    ids = torch.cat([r.prompt_ids[0][r.prompt_mask[0].bool()],
                     r.completion_ids[0][r.sequence_mask()[0].bool()]])
    assert tok.decode(ids) == whole
    # model tokens: each assistant turn's text and its EOS; environment tokens: everything in between
    own = r.completion_mask[0].tolist()
    expected = []
    for m in messages:
        if m["role"] == "assistant":
            expected += [1] * (len(m["content"]) + 1)
        else:  # the template's tool turn and the next assistant header (its block tags eat the newlines)
            expected += [0] * len(f"<|tool|>{m['content']}<|assistant|>")
    assert own == expected
    assert (r.env_mask[0] == 1 - r.completion_mask[0]).all()
    assert (r.sampler_logprobs[0] == -0.5 * r.completion_mask[0]).all()  # 0 on environment tokens
    assert played.episodes["turns"].tolist() == [3.0] and played.episodes["tool_calls"].tolist() == [2.0]
    assert played.episodes["env_tokens"].item() == own.count(0) and not r.truncated[0]


def test_without_a_chat_template_the_replies_are_plain_lines():
    played, tok = play(Calculator, by_turns(call("add", a=1, b=2), "3"), [ROW], template=False)
    r = played.rollout
    text = tok.decode(r.completion_ids[0][r.env_mask[0].bool()])
    assert text == "\n<tool_response>\n3\n</tool_response>\n"


class Faulty:
    """Tools that fail in every way a tool can."""

    def reset(self, **row):
        return None

    def boom(self, x: int) -> str:
        """Raise."""
        raise RuntimeError("it broke")

    def slow(self) -> str:
        """Sleep past the timeout."""
        time.sleep(5)
        return "late"

    def big(self) -> str:
        """Return too much."""
        return "x" * 1000

    def echo(self, x: int) -> int:
        """Echo x."""
        return x


@pytest.mark.parametrize("isolate", [False, True], ids=["in-process", "worker"])
def test_every_tool_failure_is_a_counted_message_never_a_crash(isolate):
    replies = ['<tool_call>{"name": "echo", "arguments": {"x": 1</tool_call>',  # not JSON
               "<tool_call>" + '{"name": "echo", "arguments": {"x": 1}}',  # never closed
               call("nope"), call("boom", x=1), call("slow"), call("big"), call("echo", x="one"),
               call("echo", y=1), call("echo", x=7)]
    played, _ = play(Faulty, by_turns(*replies, "done"), [{"prompt": "go"}], max_turns=20, timeout=0.5,
                     isolate=isolate)
    tools = [m["content"] for m in played.completions[0] if m["role"] == "tool"]
    assert tools[0].startswith("error: the tool call is not JSON")
    assert tools[1] == "error: the tool call has no closing </tool_call>"
    assert tools[2].startswith("error: LookupError: unknown tool 'nope'; the tools are big, boom, echo, slow")
    assert tools[3] == "error: RuntimeError: it broke"
    assert tools[4] == "error: timed out after 0.5 s"
    assert tools[5].startswith("error: ValueError: the result of big has 1000 characters, over the cap of "
                               "100")
    assert tools[6] == 'error: TypeError: echo: argument x must be int, got "one"'
    assert tools[7].startswith("error: TypeError: echo: bad arguments")
    assert tools[8] == "7"
    e = played.episodes
    assert e["tool_calls"].item() == 9 and e["tool_errors"].item() == 8 and e["turns"].item() == 10


def test_turn_limit_ends_the_episode_without_a_reply_nobody_answers():
    played, _ = play(Calculator, by_turns(call("add", a=1, b=1)), [ROW], max_turns=3)
    assert played.episodes["turns"].item() == 3 and played.episodes["turn_limit"].item() == 1
    assert played.episodes["tool_calls"].item() == 3  # the last call ran (its state counts) ...
    assert played.completions[0][-1]["role"] == "assistant"  # ... but its result is not appended
    assert not played.rollout.truncated[0]
    r = played.rollout
    assert r.completion_mask[0, r.sequence_mask()[0].sum() - 1] == 1  # the sequence ends on a model token


def test_token_budget_counts_model_and_environment_tokens():
    budget = 60
    played, _ = play(Calculator, by_turns(call("add", a=1, b=1)), [ROW], max_turns=50, budget=budget)
    r = played.rollout
    assert r.truncated[0] and played.episodes["turn_limit"].item() == 0
    assert int(r.sequence_mask()[0].sum()) <= budget
    # mid-turn: a reply longer than what is left is cut and the episode is truncated
    played, _ = play(Calculator, by_turns("9" * 80), [ROW], budget=budget)
    assert played.rollout.truncated[0] and played.rollout.completion_mask.sum() == budget


def test_a_game_without_tools_talks_through_respond():
    played, _ = play(GuessNumber, by_turns("10", "5", "7"), [{"prompt": "Guess:", "target": 7}], G=2,
                     max_turns=5)
    assert [m["content"] for m in played.completions[0]] == ["10", "lower", "5", "higher", "7"]
    assert played.columns["environment_reward"] == [1.0, 1.0]
    played, _ = play(GuessNumber, by_turns("10", "5", "7"), [{"prompt": "Guess:", "target": 7}], max_turns=2)
    assert played.columns["environment_reward"] == [0.0] and played.episodes["turn_limit"].item() == 1


class WordleLike:
    """Written as a TRL user writes an environment for ``environment_factory``."""

    def __init__(self):
        self.reward = 0.0

    def reset(self, **kwargs) -> str | None:
        self.secret = kwargs["secret"]
        self.reward = 0.0
        return " You have 3 guesses."

    def guess(self, word: str) -> str:
        """
        Guess the secret word.

        Args:
            word: The guessed word

        Returns:
            Feedback on the guess.
        """
        if word == self.secret:
            self.reward = 1.0
            return "correct"
        return "wrong"

    def get_reward(self) -> float:
        return self.reward


def test_a_trl_style_environment_runs_unchanged():
    schema = check_environment(WordleLike, "WordleLike")
    assert schema[0]["function"]["parameters"]["properties"]["word"] == {"type": "string",
                                                                         "description": "The guessed word"}
    row = {"prompt": [{"role": "user", "content": "Find the word."}], "secret": "cat"}
    played, _ = play(WordleLike, by_turns(call("guess", word="dog"), call("guess", word="cat"), "done"),
                     [row], G=2, isolate=True)
    assert played.prompts[0][0]["content"] == "Find the word. You have 3 guesses."  # TRL: appended
    assert played.columns["environment_reward"] == [1.0, 1.0]
    copies = played.columns["environments"]  # what reward functions get as ``environments``
    assert [type(c).__name__ for c in copies] == ["WordleLike"] * 2 and copies[0].reward == 1.0


def test_prompts_that_differ_within_a_group_keep_the_shared_prefix():
    class Varying:
        n = 0

        def reset(self, **row):
            Varying.n += 1
            return f" #{Varying.n}"

    played, tok = play(Varying, by_turns("ok"), [{"prompt": "hello"}], G=2)
    r = played.rollout
    assert (r.prompt_ids[0] == r.prompt_ids[1]).all()  # one prompt per group, as the passes assume
    heads = [tok.decode(r.completion_ids[i][r.env_mask[i].bool()])[:2] for i in range(2)]
    assert heads[0] != heads[1] and r.completion_mask[:, :2].sum() == 0
