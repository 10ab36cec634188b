"""The code task: reference solutions pass their hidden tests in the sandbox; wrong code does not."""

from grouprl.data.tasks import get_task
from grouprl.rewards.code import code_tests_reward


def test_reference_solutions_pass_and_wrong_ones_fail():
    task = get_task("code")
    rows = task.generate("train", 6, 0)
    assert task.generate("train", 6, 0) == rows
    assert not {r["prompt"] for r in rows} & {r["prompt"] for r in task.generate("eval", 6, 0)}
    completions = [f"```python\n{r['solution']}```" for r in rows]
    assert code_tests_reward(None, completions, tests=[r["tests"] for r in rows]) == [1.0] * 6
    wrong = ["```python\ndef f(x):\n    return None\n```"] * 6
    assert code_tests_reward(None, wrong, tests=[r["tests"] for r in rows]) == [0.0] * 6
