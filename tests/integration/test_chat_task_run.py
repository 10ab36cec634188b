"""A built-in chat task trains and evaluates end to end: its system + user messages go through the model's
chat template, and its verifier gets TRL's conversational completions."""

import json
import shutil

from grouprl.cli.main import main
from grouprl.model.load import load_tokenizer

TEMPLATE = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
            "{% if add_generation_prompt %}<assistant>{% endif %}")

RECORDER = '''
import json, pathlib


def record(prompts, completions, **kwargs):
    with open(pathlib.Path(__file__).with_name("calls.jsonl"), "a") as handle:
        columns = sorted(k for k in kwargs if k not in ("trainer_state", "log_extra", "log_metric"))
        call = {"prompt": prompts[0], "completion": completions[0], "columns": columns}
        handle.write(json.dumps(call) + "\\n")
    return [0.0] * len(completions)
'''


def test_chat_arithmetic_runs_with_a_chat_template(tmp_path, tiny_llama_dir, capsys):
    model = tmp_path / "model"
    shutil.copytree(tiny_llama_dir, model)
    tokenizer = load_tokenizer(model)
    tokenizer.chat_template = TEMPLATE
    tokenizer.save_pretrained(model)
    (tmp_path / "r.py").write_text(RECORDER)
    run_dir = tmp_path / "run"
    code = main(["train", f"model.name_or_path={model}", "data.task=chat_arithmetic",
                 "data.task_kwargs={difficulty: 1}", "data.num_train=8", "data.num_eval=2", "train.steps=1",
                 "train.prompts_per_step=2", "rollout.num_generations=2", "rollout.max_new_tokens=6",
                 "eval.num_samples=0", f"rewards=[boxed_number, {tmp_path / 'r.py'}:record]",
                 f"output.run_dir={run_dir}", "output.plots=false", "output.progress=false"])
    assert code == 0, capsys.readouterr().err
    calls = [json.loads(line) for line in (tmp_path / "calls.jsonl").read_text().splitlines()]
    assert len(calls) == 1  # the one step (evaluation calls only the verifier)
    for call in calls:
        assert [m["role"] for m in call["prompt"]] == ["system", "user"]
        system, user = call["prompt"]
        assert "\\boxed{}" in system["content"] and user["content"].startswith("What is ")
        assert [m["role"] for m in call["completion"]] == ["assistant"]
        assert call["columns"] == ["answer", "completion_ids", "difficulty", "operands", "operators"]
    metrics = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[0])
    assert metrics["reward/boxed_number/errors"] == 0 and 0 <= metrics["reward_log/answered"] <= 1
    evals = [json.loads(line) for line in (run_dir / "eval.jsonl").read_text().splitlines()]
    assert all(0 < e["eval/len_mean"] <= 6 and 0 <= e["eval/truncated_frac"] <= 1
               and 0 <= e["eval/reward_log/answered"] <= 1 for e in evals)
    assert {e["eval/num_prompts"] for e in evals} == {2.0}
