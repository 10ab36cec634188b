"""The multi-turn rollout: G episodes per prompt row, each a conversation between the policy and an
environment, turned into one ``Rollout`` row whose environment tokens are out of the loss.

Two ways to run the turns, with the same episode rules (``_take``) and, greedily, the same trajectories:

* on the ``fast`` backend (``FastRollout.interleave``) every episode continues **in place**: a row that ends a
  turn with EOS gets its environment reply at once, the reply's tokens are fed onto that row's KV cache (one
  per step; the conversation is never run again), and the rows go on in one batch whatever turn each is in;
* on the ``hf`` backend, the reference, each turn re-runs every running episode's whole sequence so far
  (prompt, the model's turns, the environment's replies) through ``generate``, all episodes turn by turn.

Each turn is parsed for tool calls (``rollout.tool_parser``); each call runs on the episode's environment
(``EnvHost``); the results, rendered by the chat template as ``tool`` messages (a turn without a call goes to
the environment's ``respond``, rendered as a ``user`` message), are appended as environment tokens, and the
next turn starts. An episode ends when a turn makes no call (and there is no ``respond``, or it returns
None), at ``rollout.max_turns`` model turns, or when the budget ``rollout.max_new_tokens``, which counts the
model's and the environment's tokens after the prompt as TRL's ``max_completion_length`` does, has no room
for the environment's reply and an answer (then ``truncated``).

The environment's reply is rendered as the template renders it after a short dummy conversation (the tokens
after the dummy assistant turn's end-of-turn token), so the model's own tokens are never re-tokenized and
the sequence is exactly what was sampled plus what the environment wrote.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from grouprl.env.host import EnvHost
from grouprl.env.parse import Call, Malformed
from grouprl.errors import EnvError
from grouprl.rollout.hf import left_pad
from grouprl.types import Rollout, SamplingParams

_PROBE = [{"role": "user", "content": "hi"}]


class Renderer:
    """Text the model reads: an episode's first prompt, and each environment reply after a model turn."""

    def __init__(self, tokenizer, tools: list[dict], eos_ids: list[int], system_prompt: str | None = None,
                 template_kwargs: dict | None = None) -> None:
        self.tokenizer, self.tools, self.system_prompt = tokenizer, tools, system_prompt
        self.kwargs = dict(template_kwargs or {})
        self.templated = bool(tokenizer.chat_template)
        self.eos_texts = [t for t in tokenizer.convert_ids_to_tokens(eos_ids) if t]

    def _apply(self, messages: list[dict], generation: bool) -> str:
        return self.tokenizer.apply_chat_template(messages, tools=self.tools or None, tokenize=False,
                                                  add_generation_prompt=generation, **self.kwargs)

    def prompt(self, prompt) -> str:
        """The text of an episode's first prompt (a string, or chat messages), the tools' schemas included."""
        if not self.templated:
            if not isinstance(prompt, str):
                raise EnvError("the episode's prompt is a list of chat messages but the tokenizer has no "
                               "chat template; set data.chat_template or give string prompts")
            return prompt if self.system_prompt is None else f"{self.system_prompt}\n{prompt}"
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
        if self.system_prompt is not None and not any(m.get("role") == "system" for m in messages):
            messages = [{"role": "system", "content": self.system_prompt}, *messages]
        return self._apply(messages, True)

    def reply(self, messages: list[dict]) -> str:
        """The text that follows a model turn ended by EOS: ``messages`` (tool results, or one user message)
        and the next assistant header. Without a chat template: plain lines."""
        if not self.templated:
            return "".join(f"\n<tool_response>\n{m['content']}\n</tool_response>\n" if m["role"] == "tool"
                           else f"\n{m['content']}\n" for m in messages)
        calls = [{"type": "function", "function": {"name": m.get("name", "tool"), "arguments": {}}}
                 for m in messages if m["role"] == "tool"]
        turn = {"role": "assistant", "content": "ok", **({"tool_calls": calls} if calls else {})}
        before = self._apply([*_PROBE, turn], False)
        full = self._apply([*_PROBE, turn, *messages], True)
        ends = [before.rfind(t) + len(t) for t in self.eos_texts if t in before]
        cut = before[:max(ends)] if ends else before
        if not full.startswith(cut):
            raise EnvError("the chat template renders a conversation differently once a "
                           f"{messages[0]['role']} message follows it, so the environment's reply cannot be "
                           "appended to the sampled tokens; use a template that renders tool messages (e.g. "
                           "Qwen's or Hermes') or set data.chat_template")
        return full[len(cut):]

    def check(self) -> None:
        """Fail at start-up, not mid-run, when the template cannot render a tool or user reply."""
        self.reply([{"role": "tool", "name": "probe", "content": "1"}])
        self.reply([{"role": "user", "content": "1"}])


def first_prompt(row_prompt, observation):
    """An episode's prompt from the row's and what ``reset`` returned (TRL's rule: a string is appended to
    the last user message; a message list replaces the prompt; None keeps it)."""
    if observation is None:
        return row_prompt
    if isinstance(observation, list):
        return observation
    if not isinstance(observation, str):
        raise EnvError(f"reset returned {type(observation).__name__}; it must return a string, a list of "
                       "chat messages, or None")
    if isinstance(row_prompt, str) or not row_prompt:
        return (row_prompt or "") + observation
    messages = [dict(m) for m in row_prompt]
    users = [i for i, m in enumerate(messages) if m.get("role") == "user"]
    if not users:
        return [*messages, {"role": "user", "content": observation}]
    messages[users[-1]]["content"] += observation
    return messages


@dataclass
class _Episode:
    slot: int
    prompt: object  # the first prompt (string or messages)
    prompt_ids: list[int]
    messages: list[dict] = field(default_factory=list)  # the trajectory after the prompt
    ids: list[int] = field(default_factory=list)  # every token after the prompt
    own: list[int] = field(default_factory=list)  # 1 where the model sampled the token
    logp: list[float] = field(default_factory=list)
    turns: int = 0
    tool_calls: int = 0
    tool_errors: int = 0
    done: bool = False
    truncated: bool = False
    turn_limit: bool = False


@dataclass
class Played:
    """What ``EnvironmentRollout.play`` gives the reward stage."""

    rollout: Rollout
    prompts: list  # [N] each episode's first prompt, as reward functions get it
    completions: list  # [N] each trajectory after the prompt: assistant, tool and user messages
    completion_ids: list[list[int]]  # [N] every token after the prompt, the environment's included
    columns: dict[str, list]  # environment_reward, environments: extra reward-function arguments
    episodes: dict[str, torch.Tensor]  # per-episode counts for the metrics


class EnvironmentRollout:
    """Multi-turn episodes on the ``fast`` backend (in place) or the ``hf`` one (the reference).
    ``play(rows, G, sampling) -> Played``; ``generate`` and ``load_weights`` are the wrapped backend's
    (single-turn sampling, weights)."""

    def __init__(self, backend, tokenizer, host: EnvHost, renderer: Renderer, parser, *,
                 max_turns: int) -> None:
        self.backend, self.tokenizer, self.host, self.renderer = backend, tokenizer, host, renderer
        self.parser, self.max_turns = parser, max_turns

    def generate(self, prompt_ids, num_generations, sampling):
        return self.backend.generate(prompt_ids, num_generations, sampling)

    def load_weights(self, policy) -> None:
        self.backend.load_weights(policy)

    def close(self) -> None:
        self.host.close()

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def play(self, rows: list[dict], G: int, sampling: SamplingParams) -> Played:
        """``G`` episodes for each row, rows ``g*G .. g*G+G-1`` from row ``g``."""
        episodes = []
        for slot in range(len(rows) * G):
            row = rows[slot // G]
            prompt = first_prompt(row.get("prompt"), self.host.reset(slot, row))
            episodes.append(_Episode(slot, prompt, self._encode(self.renderer.prompt(prompt))))
        if hasattr(self.backend, "interleave"):
            self._in_place(episodes, G, sampling)
        else:
            for turn in range(self.max_turns):
                active = [e for e in episodes if not e.done]
                if not active:
                    break
                self._turn(active, sampling, turn)
        finished = [self.host.finish(e.slot) for e in episodes]
        return self._played(episodes, finished, G, sampling.max_new_tokens)

    def _in_place(self, episodes: list[_Episode], G: int, sampling: SamplingParams) -> None:
        """All turns of all episodes in one pass of the fast backend, each continuing on its own cache."""
        budget = sampling.max_new_tokens

        def reply(i: int, tokens: list[int], logps: list[float], ended: bool) -> list[int] | None:
            e = episodes[i]
            before = len(e.ids) + len(tokens)
            self._take(e, tokens, logps, ended, budget)
            return None if e.done else e.ids[before:]

        self.backend.interleave([e.prompt_ids for e in episodes], G, sampling, reply)

    def _turn(self, active: list[_Episode], sampling: SamplingParams, turn: int) -> None:
        """One model turn of every running episode (the whole conversation re-run), then the replies."""
        budget = sampling.max_new_tokens
        seed = None if sampling.seed is None else sampling.seed + 7919 * (turn + 1)
        out = self.backend.generate([e.prompt_ids + e.ids for e in active], 1, SamplingParams(
            max_new_tokens=max(budget - len(e.ids) for e in active), temperature=sampling.temperature,
            top_p=sampling.top_p, top_k=sampling.top_k, seed=seed, group_offset=sampling.group_offset))
        lengths = out.completion_mask.sum(-1).tolist()
        for j, e in enumerate(active):
            n = min(lengths[j], budget - len(e.ids))
            ended = n == lengths[j] and not bool(out.truncated[j])  # EOS within this episode's budget
            self._take(e, out.completion_ids[j, :n].tolist(), out.sampler_logprobs[j, :n].tolist(), ended,
                       budget)

    def _take(self, e: _Episode, tokens: list[int], logps: list[float], ended: bool, budget: int) -> None:
        """A model turn of ``e`` (its tokens, ``ended``: by EOS), then the environment's side of it."""
        e.ids += tokens
        e.own += [1] * len(tokens)
        e.logp += logps
        e.turns += 1
        self._answer(e, self.tokenizer.decode(tokens, skip_special_tokens=True), ended, budget)

    def _answer(self, e: _Episode, text: str, ended: bool, budget: int) -> None:
        """The environment's side of a turn: run the calls (or ``respond``) and append the reply."""
        calls = self.parser(text)
        message = {"role": "assistant", "content": text}
        good = [c for c in calls if isinstance(c, Call)]
        if good:
            message["tool_calls"] = [{"type": "function",
                                      "function": {"name": c.name, "arguments": c.arguments}} for c in good]
        e.messages.append(message)
        if not ended:  # the budget ran out mid-turn
            e.done = e.truncated = True
            return
        if calls:
            reply = [self._run(e, c) for c in calls]
        else:
            status, said = self.host.run("respond", e.slot, text)
            if status != "ok":
                e.tool_errors += 1
            if status != "ok" or said is None:
                e.done = True
                return
            reply = [{"role": "user", "content": said}]
        if e.turns >= self.max_turns:
            e.done = e.turn_limit = True
            return
        ids = self._encode(self.renderer.reply(reply))
        if len(e.ids) + len(ids) >= budget:  # no room for the reply and an answer to it
            e.done = e.truncated = True
            return
        e.messages += reply
        e.ids += ids
        e.own += [0] * len(ids)
        e.logp += [0.0] * len(ids)

    def _run(self, e: _Episode, call: Call | Malformed) -> dict:
        e.tool_calls += 1
        if isinstance(call, Malformed):
            status, text, name = "error", call.reason, "unknown"
        else:
            status, text = self.host.run("call", e.slot, (call.name, call.arguments))
            name = call.name
        if status != "ok":
            e.tool_errors += 1
            text = f"error: {text}"
        return {"role": "tool", "name": name, "content": text}

    def _played(self, episodes: list[_Episode], finished: list, G: int, budget: int) -> Played:
        """The episodes as one ``Rollout``. A group's rows must share their prompt tokens (the passes run a
        group's prompt once), so the prompt is the group's common prefix and the rest of each episode's prompt
        opens its completion as environment tokens (only when ``reset`` made the G prompts differ)."""
        prompts, rows = [], []
        for g in range(0, len(episodes), G):
            group = [e.prompt_ids for e in episodes[g:g + G]]
            common = next((k for k in range(min(map(len, group))) if len({p[k] for p in group}) > 1),
                          min(map(len, group)))
            if common == 0:
                raise EnvError("reset gave the G episodes of one row prompts that share no first token; give "
                               "the episodes of one row the same start (e.g. the same system message)")
            for e in episodes[g:g + G]:
                rest = e.prompt_ids[common:]
                prompts.append(e.prompt_ids[:common])
                rows.append((rest + e.ids, [0] * len(rest) + e.own, [0.0] * len(rest) + e.logp))
        pad = self.backend.pad_id
        prompt_ids, prompt_mask = left_pad(prompts, pad)
        T = max(1, max(len(ids) for ids, _, _ in rows))
        # assembled on the host from the episodes' lists, then moved to the model's device in one copy each
        host = {"device": "cpu"}
        ids = torch.full((len(rows), T), pad, dtype=torch.long, **host)
        own, env = (torch.zeros(len(rows), T, dtype=torch.long, **host),
                    torch.zeros(len(rows), T, dtype=torch.long, **host))
        logp = torch.zeros(len(rows), T, **host)
        for i, (row_ids, row_own, row_logp) in enumerate(rows):
            n = len(row_ids)
            ids[i, :n] = torch.tensor(row_ids, dtype=torch.long, **host)
            own[i, :n] = torch.tensor(row_own, dtype=torch.long, **host)
            env[i, :n] = 1 - own[i, :n]
            logp[i, :n] = torch.tensor(row_logp, **host)
        device = self.backend.model.device
        rollout = Rollout(prompt_ids.to(device), prompt_mask.to(device), ids.to(device), own.to(device),
                          torch.tensor([e.truncated for e in episodes], device=device), logp.to(device),
                          env.to(device))
        count = lambda key: torch.tensor([float(getattr(e, key)) for e in episodes], **host)  # noqa: E731
        stats = {key: count(key) for key in ("turns", "tool_calls", "tool_errors", "turn_limit")}
        stats["env_tokens"] = env.sum(-1).double()
        return Played(rollout, [e.prompt for e in episodes], [e.messages for e in episodes],
                      [e.ids for e in episodes],
                      {"environment_reward": [r for r, _ in finished],
                       "environments": [c for _, c in finished]},
                      stats)
