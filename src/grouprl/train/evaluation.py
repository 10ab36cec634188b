"""Held-out evaluation during training (stage 8): on the full weights, by rank 0, into eval.jsonl."""

from __future__ import annotations

from grouprl.eval.evaluate import evaluate
from grouprl.logging.sinks import JsonlSink
from grouprl.train.setup import Setup, prompt_texts, reward_state


def run_eval(s: Setup, step: int) -> dict:
    if not s.eval_rows:
        return {}
    out = evaluate(s.backend, s.tokenizer, s.rewards, s.eval_rows, prompt_texts(s, s.eval_rows),
                   max_new_tokens=s.cfg.rollout.max_new_tokens, k=s.cfg.eval.num_samples,
                   temperature=s.cfg.eval.temperature, batch_size=s.cfg.eval.batch_size,
                   seed=s.cfg.train.seed, state=reward_state(s, step))
    JsonlSink(s.run_dir / "eval.jsonl").write({"step": step, **out})
    s.last_eval = {"step": step, **out}
    return out


def eval_all(s: Setup, step: int) -> dict:
    """Every rank calls it (under FSDP the weights are gathered for it); rank 0 evaluates."""
    if not s.eval_rows:
        return {}
    with s.full_weights():
        return run_eval(s, step) if s.dist.is_main else {}
