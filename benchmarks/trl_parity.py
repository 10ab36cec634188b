"""One TRL GRPOTrainer step against grouprl's ``trl_defaults`` math on the same batch and the same weights.

    .venv/bin/python benchmarks/trl_parity.py --model DIR [--prompts 8] [--generations 8]
        [--max-new-tokens 128] [--task word_problems] [--knobs difficulty=1,answer_format=last_number]

TRL samples and scores one batch and takes its gradient (``max_grad_norm`` lifted so nothing is clipped);
the script keeps TRL's inputs, the rewards its reward function returned and that gradient. TRL shuffles the
rows of a generation batch before the loss, so each row is matched back to its reward by its completion
tokens. grouprl then scores the same tokens on a fresh copy of the weights (``sequence_logprobs``), takes
advantages and loss with ``algo.compute_loss(preset("trl_defaults", beta=0))`` and its own gradient. Printed:
the largest advantage difference, both losses, both gradient norms, the relative L2 difference of the two
gradients (in float64) and the share of parameters whose gradient sign agrees. Equal gradients mean that a
difference between the two programs' learning curves comes from their samples, not from their math.
Needs ``pip install 'grouprl[bench]'``.
"""

from __future__ import annotations

import argparse
import gc
import json

import torch


def trl_step(args, task) -> tuple[dict, torch.Tensor, list[float], list[list[int]]]:
    """TRL's inputs to its loss, its gradient, and the rewards and completion ids in scoring order."""
    from datasets import Dataset
    from real_model import dataset_rows
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    rows = dataset_rows(task, 2000, args.seed)
    verifier = task.reward_fns[0]
    scored: dict = {}

    def reward(prompts, completions, completion_ids=None, **columns):
        out = verifier(prompts, completions, completion_ids, **columns)
        scored.update(rewards=out, ids=[[int(t) for t in ids] for ids in completion_ids])
        return out

    reward.__name__ = verifier.__name__
    kept: dict = {}

    class KeepGradient(TrainerCallback):
        def on_pre_optimizer_step(self, _args, state, control, model=None, **kw):
            kept["grad"] = torch.cat([p.grad.flatten().clone() for p in model.parameters()
                                      if p.grad is not None])

    torch.manual_seed(args.seed)
    config = GRPOConfig(
        output_dir="/tmp/trl_parity", per_device_train_batch_size=args.prompts * args.generations,
        num_generations=args.generations, max_completion_length=args.max_new_tokens, beta=0.0,
        temperature=1.0, learning_rate=2e-5, max_steps=1, max_grad_norm=1e9, logging_steps=1, report_to=[],
        use_cpu=True, bf16=False, save_strategy="no", seed=args.seed)
    trainer = GRPOTrainer(model=AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32),
                          reward_funcs=[reward], args=config, train_dataset=Dataset.from_list(rows),
                          processing_class=AutoTokenizer.from_pretrained(args.model, padding_side="left"),
                          callbacks=[KeepGradient()])
    trl_loss = trainer.compute_loss

    def keep_inputs(model, inputs, *a, **k):
        kept["inputs"] = {key: v.detach().clone() if torch.is_tensor(v) else v for key, v in inputs.items()}
        loss = trl_loss(model, inputs, *a, **k)
        kept["loss"] = float(loss.detach())
        return loss

    trainer.compute_loss = keep_inputs
    trainer.train()
    kept["inputs"]["loss"] = kept["loss"]
    return kept["inputs"], kept["grad"], scored["rewards"], scored["ids"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a save_pretrained directory (grouprl models fetch)")
    parser.add_argument("--task", default="word_problems")
    parser.add_argument("--knobs", default="difficulty=1,answer_format=last_number")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--generations", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from real_model import knobs_of
    from transformers import AutoModelForCausalLM

    from grouprl.algo import compute_loss, preset
    from grouprl.data.tasks import get_task
    from grouprl.model.logprobs import sequence_logprobs

    task = get_task(args.task, **knobs_of(args.knobs))
    inputs, trl_grad, rewards, scored_ids = trl_step(args, task)
    gc.collect()  # the finished trainer (a cycle via its patched compute_loss) must not sit beside ours

    # TRL shuffled the rows: put them back in scoring order (groups contiguous) by their completion tokens
    where = {tuple(ids): i for i, ids in enumerate(scored_ids)}
    rows = [where[tuple(int(t) for t, m in zip(ids, mask) if m)]
            for ids, mask in zip(inputs["completion_ids"], inputs["completion_mask"])]
    back = torch.argsort(torch.tensor(rows))
    prompt_ids, prompt_mask, completion_ids, completion_mask, trl_adv = (
        inputs[k][back]
        for k in ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask", "advantages"))

    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
    logp, _ = sequence_logprobs(model, torch.cat([prompt_ids, completion_ids], 1),
                                torch.cat([prompt_mask, completion_mask], 1), completion_ids.shape[1])
    out = compute_loss(torch.tensor(rewards), args.generations, logp, None, None, completion_mask.float(),
                       preset("trl_defaults", beta=0.0))
    out.loss.backward()
    ours = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]).double()
    theirs = trl_grad.double()
    print(json.dumps({
        "rows": len(rows),
        "rewards_per_group": torch.tensor(rewards).view(-1, args.generations).sum(-1).tolist(),
        "advantage_max_abs_diff": float((out.advantages - trl_adv.flatten()).abs().max()),
        "loss_trl": inputs["loss"], "loss_grouprl": float(out.loss.detach()),
        "grad_norm_trl": float(theirs.norm()), "grad_norm_grouprl": float(ours.norm()),
        "grad_rel_l2_diff": float((ours - theirs).norm() / theirs.norm()),
        "grad_sign_agreement": float((ours.sign() == theirs.sign()).double().mean()),
    }))


if __name__ == "__main__":
    main()
