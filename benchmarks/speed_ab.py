"""A/B timings of the training pass and the rollout on one model, alternated in one process, with the fp32
GEMM rate measured beside each round (benchmarks/RESULTS.md, "CPU speed").

    .venv/bin/python benchmarks/speed_ab.py update --model DIR --variants auto rows=64 ... [--lengths step1]
    .venv/bin/python benchmarks/speed_ab.py generate --model DIR --variants base bf16 [--new-tokens 32]
    .venv/bin/python benchmarks/speed_ab.py optimizer --model DIR

``update``: forward + backward of ``TrainingPass`` over a synthetic 8 × 8 rollout (random token ids,
prompt lengths 55–75 like the word-problem prompts; completion lengths ``step1``: two thirds at the budget
``--new-tokens``, the rest 20 up to it, as at step 1 of the SmolLM2 recipe; ``short``: 5–40, as after
training), micro-batched as the variant says. ``generate``: ``FastRollout.generate`` of 8 × 8 completions.
A variant is ``auto`` (consecutive rows, the budget of ``train.activation_budget_mib``), ``plan``
(``plan_micro_batches``), ``rows=K``, ``chunk=C``, ``bf16`` (autocast), ``threads=K``, or several joined
by ``+``.
"""

import argparse
import statistics
import time

import torch


def synthetic_rollout(lengths: str, vocab: int, T: int = 128, B: int = 8, G: int = 8, seed: int = 0):
    from grouprl.types import Rollout

    g = torch.Generator().manual_seed(seed)
    P = 75
    plen = torch.randint(55, P + 1, (B,), generator=g)
    prompt_mask = (torch.arange(P) >= P - plen[:, None]).long().repeat_interleave(G, 0)  # left-padded
    if lengths == "step1":
        clen = torch.where(torch.rand(B * G, generator=g) < 2 / 3, torch.tensor(T),
                           torch.randint(min(20, T - 1), T, (B * G,), generator=g))
    else:
        clen = torch.randint(5, 41, (B * G,), generator=g)
    cmask = (torch.arange(T) < clen[:, None]).long()
    ids = lambda *s: torch.randint(4, vocab, s, generator=g)  # noqa: E731
    return Rollout(ids(B, P).repeat_interleave(G, 0) * prompt_mask, prompt_mask, ids(B * G, T) * cmask, cmask,
                   clen == T)


def parse(variant: str) -> dict:
    out = {}
    for part in variant.split("+"):
        key, _, value = part.partition("=")
        out[key] = int(value) if value else True
    return out


def update_seconds(policy, rollout, v: dict, budget_mib: float, G: int = 8) -> float:
    from grouprl.model.memory import (
        activation_bytes_per_token,
        micro_batch_rows,
        plan_micro_batches,
        row_extents,
    )
    from grouprl.model.passes import TrainingPass

    scorer = TrainingPass(policy)
    n = rollout.completion_ids.shape[0]
    width = rollout.prompt_ids.shape[1] + rollout.completion_ids.shape[1]
    per_token = activation_bytes_per_token(policy)
    rows = v.get("rows") or micro_batch_rows(n, width, per_token, budget_mib)
    micros = list(torch.split(torch.arange(n), rows))
    if v.get("plan"):  # model.memory.plan_micro_batches: rows of like length together
        micros = plan_micro_batches(*row_extents(rollout.prompt_mask, rollout.completion_mask),
                                    torch.arange(n) // G, per_token, budget_mib)
    cast = torch.autocast("cpu", dtype=torch.bfloat16) if v.get("bf16") else torch.autocast("cpu",
                                                                                            enabled=False)
    policy.zero_grad(set_to_none=True)
    t0 = time.perf_counter()
    for micro in micros:
        with cast:
            logp, entropy = scorer(rollout, micro, G, temperature=1.0, chunk_size=v.get("chunk", 1024))
        mask = rollout.completion_mask[micro]
        ((logp * mask).sum() / mask.sum().clamp_min(1) + 0 * entropy.sum()).backward()
    return time.perf_counter() - t0


def generate_seconds(backend, prompts, v: dict, new_tokens: int) -> float:
    from grouprl.types import SamplingParams

    cast = torch.autocast("cpu", dtype=torch.bfloat16) if v.get("bf16") else torch.autocast("cpu",
                                                                                            enabled=False)
    t0 = time.perf_counter()
    with cast:
        r = backend.generate(prompts, 8, SamplingParams(max_new_tokens=new_tokens, temperature=1.0, seed=0))
    elapsed = time.perf_counter() - t0
    return elapsed, int(r.completion_mask.sum())


def optimizer_steps(model_dir: str, steps: int = 3) -> None:
    """Seconds of AdamW steps over the model's parameters with random gradients: fused, for-each, loop (the
    first step allocates the two moments)."""
    from grouprl.model import load_model

    params = list(load_model(model_dir).parameters())
    kinds = (("fused", {"fused": True}), ("foreach", {"foreach": True}), ("for-loop", {"foreach": False}))
    for kind, kw in kinds:
        ps = [torch.nn.Parameter(p.detach().clone()) for p in params]
        for p in ps:
            p.grad = torch.randn_like(p) * 1e-3
        opt = torch.optim.AdamW(ps, lr=1e-5, **kw)
        times = []
        for _ in range(steps):
            t0 = time.perf_counter()
            opt.step()
            times.append(time.perf_counter() - t0)
        print(f"{kind:<9} {sum(p.numel() for p in ps) / 1e6:.1f} M params: "
              + ", ".join(f"{t:.2f}" for t in times) + " s", flush=True)


def main() -> None:
    from grouprl.bench import gemm_gflops
    from grouprl.model import load_model, load_tokenizer

    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["update", "generate", "optimizer"])
    ap.add_argument("--model", required=True)
    ap.add_argument("--variants", nargs="+", default=["auto"])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--lengths", default="step1", choices=["step1", "short"])
    ap.add_argument("--budget-mib", type=float, default=3800.0)
    ap.add_argument("--new-tokens", type=int, default=32)
    args = ap.parse_args()
    if args.what == "optimizer":
        return optimizer_steps(args.model)
    policy = load_model(args.model)
    default_threads = torch.get_num_threads()
    if args.what == "update":
        rollout = synthetic_rollout(args.lengths, policy.config.vocab_size, T=args.new_tokens)
        real = int(rollout.prompt_mask[::8].sum() + rollout.completion_mask.sum())
        n_params = sum(p.numel() for p in policy.parameters())
        print(f"real tokens {real}; floor {6 * n_params * real / 1e9:.0f} GFLOP")
    else:
        from grouprl.rollout.fast import FastRollout

        tok = load_tokenizer(args.model)
        backend = FastRollout(policy, tok)
        prompts = [tok(f"Question {i}: a farmer has {3 * i + 4} apples and buys {i + 2} more. "
                       "How many apples does the farmer have now? Answer briefly.")["input_ids"]
                   for i in range(8)]
    times: dict[str, list[float]] = {v: [] for v in args.variants}
    for rnd in range(args.rounds + 1):  # round 0 warms up
        for variant in args.variants:
            v = parse(variant)
            torch.set_num_threads(v.get("threads", default_threads))
            if args.what == "update":
                secs = update_seconds(policy, rollout, v, args.budget_mib)
                extra = ""
            else:
                secs, tokens = generate_seconds(backend, prompts, v, args.new_tokens)
                extra = f" {tokens} tokens"
            torch.set_num_threads(default_threads)
            gemm = gemm_gflops()
            print(f"round {rnd} {variant:<24} {secs:8.2f} s{extra}   GEMM {gemm:.0f} GFLOP/s", flush=True)
            if rnd:
                times[variant].append(secs)
    for variant, ts in times.items():
        print(f"median {variant:<24} {statistics.median(ts):8.2f} s")


if __name__ == "__main__":
    main()
