"""The model card (README.md) written into a checkpoint directory: what was trained, how, on what, and how
well."""

from __future__ import annotations

import os

from grouprl import __version__
from grouprl.config import Config, algo_spec


def _rewards(cfg: Config) -> str:
    if not cfg.rewards:
        return f"the verifier of the {cfg.data.task} task" if cfg.data.task else "none"
    parts = []
    for entry in cfg.rewards:
        name, weight = (entry.get("name"), entry.get("weight", 1.0)) if isinstance(entry, dict) \
            else (entry, 1.0)
        parts.append(f"`{name}`" + (f" × {weight:g}" if weight != 1.0 else ""))
    return ", ".join(parts)


def _data(cfg: Config) -> str:
    d = cfg.data
    if d.path is None:
        return (f"built-in task `{d.task}` {d.task_kwargs or ''}({d.num_train} generated prompts, "
                f"seed {d.seed})")
    where = f"`{d.path}`" + (f" (configuration {d.dataset_config})" if d.dataset_config else "")
    return f"{where}, split `{d.split}`, prompt column `{d.prompt_column}`"


def _algorithm(cfg: Config) -> str:
    s = algo_spec(cfg)
    clip = {"soft_gate": f"soft gate τ {s.tau_pos}/{s.tau_neg}", "none": "no clip"}.get(
        s.clip, f"{s.clip} ε {s.epsilon_low}/{s.epsilon_high}")
    where = "loss" if s.kl_in_loss else "reward"
    kl = f"{s.kl_estimator} KL β={s.beta} in the {where}" if s.beta else "no KL"
    paper = f" (arXiv {s.paper})" if s.paper else ""
    lists = "".join(f", {field} {', '.join(names)}"
                    for field, names in (("filters", s.filters), ("shaping", s.shaping)) if names)
    return (f"`{cfg.algorithm}`{paper}: advantage {s.advantage}, ratio {s.importance_sampling_level}, "
            f"{clip}, aggregation {s.loss_type}, {kl}{lists}")


def model_card(cfg: Config, step: int, eval_metrics: dict | None) -> str:
    """Markdown with a Hugging Face metadata header for checkpoint ``step`` of a run of ``cfg``.

    ``eval_metrics`` is the held-out evaluation at that step (``eval/pass@1`` …), or None / {} when there was
    none. The full resolved config is the run's config.yaml; the card summarises it.
    """
    m, t, r = cfg.model, cfg.train, cfg.rollout
    base = m.name_or_path
    hub_base = base.count("/") == 1 and not base.startswith((".", "/", "~")) and not os.path.exists(base)
    header = ["---", f"library_name: {'peft' if m.lora.r else 'transformers'}",
              *([f"base_model: {base}"] if hub_base else []),
              "tags:", "- grouprl", "- reinforcement-learning", f"- {cfg.algorithm}"]
    rows = [
        ("base model", "the embedded default (grouprl's 0.8 M-parameter Llama)" if base == "default"
         else f"`{base}`"),
        ("algorithm", _algorithm(cfg)),
        ("data", _data(cfg)),
        ("rewards", _rewards(cfg)),
        ("batch", f"{t.prompts_per_step} prompts × {r.num_generations} completions per step, "
                  f"{t.num_iterations} pass(es), {t.mini_batches} mini-batch(es)"),
        ("optimizer", f"AdamW lr {t.lr:g}, betas {tuple(t.adam_betas)}, weight decay {t.weight_decay:g}, "
                      f"{t.warmup_steps} warm-up steps then {t.lr_scheduler}, "
                      f"grad-norm clip {t.max_grad_norm:g}"),
        ("generation", f"up to {r.max_new_tokens} new tokens, temperature {r.temperature:g}, "
                       f"top-p {r.top_p:g}, top-k {r.top_k}"),
        ("precision, seed", f"{m.dtype}, seed {t.seed}"),
    ]
    if cfg.data.system_prompt:
        rows.insert(3, ("system prompt", repr(cfg.data.system_prompt)))
    if m.lora.r:
        rows.append(("LoRA", f"r {m.lora.r}, alpha {m.lora.alpha:g} on {', '.join(m.lora.target_modules)}"))
    lines = [*header, "---", "", f"# {cfg.algorithm} checkpoint, step {step} of {t.steps}", "",
             f"Trained with grouprl {__version__}, critic-free group-relative "
             "RL on verifiable rewards. The run directory's `config.yaml` holds every resolved setting.", "",
             "## Training", "", "| setting | value |", "| --- | --- |",
             *(f"| {k} | {v.replace('|', '/')} |" for k, v in rows), "", "## Evaluation", ""]
    if eval_metrics:
        at = eval_metrics.get("step", step)  # the newest evaluation may predate this checkpoint
        lines += [f"Held-out prompts at step {at}:", "", "| metric | value |", "| --- | --- |",
                  *(f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |"
                    for k, v in eval_metrics.items() if k != "step"), ""]
    else:
        lines += ["No held-out evaluation at this step.", ""]
    loader = "AutoPeftModelForCausalLM" if m.lora.r else "AutoModelForCausalLM"
    imports = (["from peft import AutoPeftModelForCausalLM", "from transformers import AutoTokenizer"]
               if m.lora.r else ["from transformers import AutoModelForCausalLM, AutoTokenizer"])
    lines += ["## Use", "", "```python", *imports, "",
              f'model = {loader}.from_pretrained("path/to/this/directory")',
              'tokenizer = AutoTokenizer.from_pretrained("path/to/this/directory")', "```", ""]
    return "\n".join(lines)
