"""model_card(cfg, step, eval_metrics): the README.md a checkpoint directory gets."""

import yaml

from grouprl.config import load_config
from grouprl.logging.card import model_card


def front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def test_card_summarises_the_run_and_its_evaluation():
    cfg = load_config(None, ["algorithm=dapo", "train.steps=60", "train.lr=1e-5",
                             "data.system_prompt=Be brief.",
                             "rewards=[correct_answer, {name: integer_format, weight: 0.5}]"])
    card = model_card(cfg, 60, {"eval/pass@1": 0.859, "eval/pass@8": 0.945})
    meta = front_matter(card)
    assert meta["library_name"] == "transformers" and {"grouprl", "dapo"} <= set(meta["tags"])
    assert "base_model" not in meta  # the embedded default is not a hub model
    for text in ("# dapo checkpoint, step 60 of 60", "arXiv 2503.14476", "aggregation token_mean", "lr 1e-05",
                 "`correct_answer`, `integer_format` × 0.5", "'Be brief.'", "32 prompts × 8 completions",
                 "built-in task `arithmetic`", "| eval/pass@1 | 0.8590 |", "| eval/pass@8 | 0.9450 |",
                 "AutoModelForCausalLM.from_pretrained",
                 "no KL, filters nonzero_variance, shaping soft_overlong"):
        assert text in card, text


def test_card_for_a_hub_model_with_lora_on_a_dataset_without_evaluation():
    cfg = load_config(None, ["model.name_or_path=Qwen/Qwen2.5-0.5B-Instruct", "model.lora.r=8",
                             "data.path=prompts.jsonl", "data.prompt_column=question", "beta=0.0"])
    card = model_card(cfg, 3, {})
    meta = front_matter(card)
    assert (meta["library_name"], meta["base_model"]) == ("peft", "Qwen/Qwen2.5-0.5B-Instruct")
    for text in ("`prompts.jsonl`, split `train`, prompt column `question`", "| LoRA | r 8, alpha 16",
                 "No held-out evaluation at this step.", "AutoPeftModelForCausalLM", "no KL"):
        assert text in card, text
    assert "| eval/" not in card
