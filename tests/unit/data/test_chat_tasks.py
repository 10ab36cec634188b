"""The chat tasks for instruct models: determinism, disjoint splits, answers recomputed from the stored
structure, difficulty that grows with the level, the knobs' one-line errors, and chat rendering."""

import re
from fractions import Fraction

import pytest

from grouprl.cli.main import main
from grouprl.data.tasks import TASKS, chat_arithmetic, countdown, get_task, word_problems
from grouprl.data.tasks.chat import FORMATS
from grouprl.errors import ConfigError
from grouprl.model.load import format_prompt
from grouprl.model.tokenizer import build_char_tokenizer
from grouprl.rewards.countdown import countdown_reward, evaluate
from grouprl.rewards.numeric import VERIFIERS

CHAT_TASKS = {"word_problems": word_problems.LEVELS, "chat_arithmetic": chat_arithmetic.LEVELS,
              "chat_countdown": countdown.LEVELS}
CASES = [(name, level) for name, levels in CHAT_TASKS.items() for level in levels]


@pytest.mark.parametrize("name,difficulty", CASES)
def test_rows_are_chat_prompts_deterministic_in_seed_and_distinct(name, difficulty):
    task = get_task(name, difficulty=difficulty)
    rows = task.generate("train", 60, seed=1)
    assert rows == task.generate("train", 60, seed=1) and rows != task.generate("train", 60, seed=2)
    for row in rows:
        system, user = row["prompt"]
        assert system["role"] == "system" and user["role"] == "user" and user["content"].strip()
        assert isinstance(row["answer"], str) and row["difficulty"] == difficulty
    assert len({row["prompt"][1]["content"] for row in rows}) == 60


@pytest.mark.parametrize("name", CHAT_TASKS)
def test_splits_are_disjoint_across_seeds_and_formats(name):
    """The split is a hash of the problem alone: no seed and no answer format moves a problem across."""
    knobs = [{}, {"answer_format": "answer_tag"}] if name != "chat_countdown" else [{}]
    problems = {split: {row["prompt"][1]["content"] for seed in (0, 1) for k in knobs
                        for row in get_task(name, difficulty=3, **k).generate(split, 150, seed)}
                for split in ("train", "eval")}
    assert problems["train"] and problems["eval"] and not problems["train"] & problems["eval"]


@pytest.mark.parametrize("difficulty", word_problems.LEVELS)
def test_word_problem_answers_follow_from_the_stored_steps(difficulty):
    level = word_problems.LEVELS[difficulty]
    for row in get_task("word_problems", difficulty=difficulty).generate("eval", 40, seed=0):
        steps, story = row["steps"], row["prompt"][1]["content"]
        assert len(steps) == level.steps and {op for op, *_ in steps} <= set(level.ops)
        value, path = row["start"], [row["start"]]
        assert story.startswith(f"{story.split()[0]} has {value} ")
        for op, *args in steps:  # an independent fold; every count stays a positive integer in bounds
            value = {"add": lambda v, a: v + a, "sub": lambda v, a: v - a,
                     "add_groups": lambda v, a, b: v + a * b, "sub_groups": lambda v, a, b: v - a * b,
                     "mul": lambda v, k: v * k, "div": lambda v, k: Fraction(v, k)}[op](value, *args)
            path.append(value)
            if op in ("add", "sub"):
                assert args[0] <= level.operand_max
        assert all(v == int(v) and 1 <= v <= level.value_max for v in path)
        assert row["answer"] == str(int(value)) == str(word_problems.apply(row["start"], steps))
        written = [n for op, *args in steps if op != "mul" for n in args]  # "doubles", "triples": in words
        numbers = iter(int(n) for n in re.findall(r"\d+", story))  # every step's numbers are there, in order
        assert all(any(n == x for x in numbers) for n in written)
        assert len(re.findall(r"\d+", story)) >= 1 + len(written) + level.distractors
        assert row["solution"].splitlines()[-1].endswith(f"= {row['answer']}")


@pytest.mark.parametrize("difficulty", chat_arithmetic.LEVELS)
def test_chat_arithmetic_answers_follow_from_the_stored_expression(difficulty):
    level = chat_arithmetic.LEVELS[difficulty]
    for row in get_task("chat_arithmetic", difficulty=difficulty).generate("eval", 40, seed=0):
        operands, operators = row["operands"], row["operators"]
        assert len(operands) == level.operands and set(operators) <= set(level.ops)
        assert all(0 <= x < 10**level.digits for x in operands)
        text = " ".join([str(operands[0]), *(f"{op} {x}" for op, x in zip(operators, operands[1:]))])
        assert row["prompt"][1]["content"] == f"What is {text}?"
        value, _ = evaluate(text)  # the countdown parser: an independent evaluator with the usual precedence
        assert row["answer"] == str(value)


@pytest.mark.parametrize("difficulty", countdown.LEVELS)
def test_chat_countdown_problems_are_solvable(difficulty):
    level = countdown.LEVELS[difficulty]
    rows = get_task("chat_countdown", difficulty=difficulty).generate("eval", 40, seed=0)
    assert all(len(r["numbers"]) == level.count and max(r["numbers"]) <= level.max_number
               and 1 <= r["target"] <= level.max_target for r in rows)
    answers = [[{"role": "assistant", "content": f"<answer>{r['answer']}</answer>"}] for r in rows]
    assert countdown_reward([r["prompt"] for r in rows], answers, numbers=[r["numbers"] for r in rows],
                            target=[r["target"] for r in rows]) == [1.0] * len(rows)


@pytest.mark.parametrize("levels", CHAT_TASKS.values())
def test_difficulty_never_decreases_from_one_level_to_the_next(levels):
    for easier, harder in zip(list(levels.values()), list(levels.values())[1:]):
        for a, b in zip(easier, harder):
            assert set(a) <= set(b) if isinstance(a, tuple) else a <= b
        assert easier != harder


def test_word_problems_grow_in_steps_and_numbers():
    """Measured on rows, not only on the table: more steps, larger answers, longer stories."""
    stats = []
    for difficulty in word_problems.LEVELS:
        rows = get_task("word_problems", difficulty=difficulty).generate("train", 100, seed=0)
        stats.append((sum(len(r["steps"]) for r in rows), max(int(r["answer"]) for r in rows),
                      sum(len(r["prompt"][1]["content"]) for r in rows)))
    assert all(a[i] < b[i] for a, b in zip(stats, stats[1:]) for i in (0, 2)), stats
    assert all(a[1] <= b[1] for a, b in zip(stats, stats[1:])) and stats[-1][1] > 10 * stats[0][1], stats


@pytest.mark.parametrize("answer_format", FORMATS)
def test_the_system_prompt_states_the_format_its_verifier_checks(answer_format):
    for name in ("word_problems", "chat_arithmetic"):
        task = get_task(name, difficulty=1, answer_format=answer_format)
        row = task.generate("eval", 1, 0)[0]
        assert row["prompt"][0]["content"].endswith(FORMATS[answer_format])
        assert task.reward_fns == [VERIFIERS[answer_format]]
        example = {"boxed": r"\boxed{42}", "answer_tag": "<answer>42</answer>",
                   "last_number": "The answer is 42."}
        assert task.reward_fns[0]([row["prompt"]], [example[answer_format]], answer=["42"]) == [1.0]


@pytest.mark.parametrize("name", CHAT_TASKS)
@pytest.mark.parametrize("difficulty", [0, 7, -1, 2.5, "3", True, None])
def test_a_difficulty_out_of_range_is_one_line_naming_knob_range_and_task(name, difficulty):
    with pytest.raises(ConfigError) as error:
        get_task(name, difficulty=difficulty)
    message = str(error.value)
    assert message.startswith(f"data.task_kwargs.difficulty={difficulty!r}: the {name} task has difficulty "
                              "levels 1 to 6") and "\n" not in message


def test_other_bad_knobs_are_one_line_each():
    with pytest.raises(ConfigError, match=r"answer_format='latex': the word_problems task asks for one of "):
        get_task("word_problems", answer_format="latex")
    with pytest.raises(ConfigError, match="eval_fraction=1.0: the chat_arithmetic task needs a share"):
        get_task("chat_arithmetic", eval_fraction=1.0)
    with pytest.raises(ConfigError, match="the chat_countdown task has no knob answer_format"):
        get_task("chat_countdown", answer_format="boxed")


def test_a_bad_difficulty_on_the_command_line_exits_2_before_anything_is_written(tmp_path, capsys):
    run_dir = tmp_path / "run"
    code = main(["train", "data.task=word_problems", "data.task_kwargs={difficulty: 9}",
                 f"output.run_dir={run_dir}", "output.progress=false"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert err == ("grouprl train: error: data.task_kwargs.difficulty=9: the word_problems task has "
                   "difficulty levels 1 to 6 (1 is the easiest); pick one of them")
    assert not run_dir.exists()


TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>\n{% endfor %}"
            "{% if add_generation_prompt %}<|assistant|>{% endif %}")


@pytest.mark.parametrize("name", CHAT_TASKS)
def test_chat_prompts_render_with_the_models_chat_template(name):
    tokenizer = build_char_tokenizer()
    tokenizer.chat_template = TEMPLATE
    row = get_task(name, difficulty=1).generate("eval", 1, 0)[0]
    system, user = row["prompt"][0]["content"], row["prompt"][1]["content"]
    expected = f"<|system|>{system}<|end|>\n<|user|>{user}<|end|>\n<|assistant|>"
    assert format_prompt(tokenizer, row["prompt"]) == expected
    assert format_prompt(tokenizer, row["prompt"], "data.system_prompt") == expected  # the task's own is kept


def test_the_chat_tasks_are_listed():
    assert set(CHAT_TASKS) <= set(TASKS.names())
    assert get_task("arithmetic").generate("eval", 1, 0)[0]["prompt"].endswith("=")  # the toy's: unchanged
