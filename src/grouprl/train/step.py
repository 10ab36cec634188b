"""The stages of one training step, each a function the loop calls in order (docs/architecture.md).

Nothing here names an algorithm: every algorithm-dependent decision is a field of the ``AlgoSpec``, and the
math lives in ``grouprl.algo``.

Multi-process runs (``Dist``): each rank holds whole groups of the global batch. Advantages need group and
batch statistics, so every rank gathers the per-sequence scalars of all ranks (rewards, lengths, flags: a few
numbers per sequence) and runs ``group_advantages`` on the whole batch in the order of a one-process run, then
keeps its own rows; the loss normalisers (``Counts``) and the metrics are all-reduced as sums and counts.
"""

from __future__ import annotations

import time
from contextlib import nullcontext

import torch

from grouprl import rewards as rewards_lib
from grouprl.algo import (
    AlgoSpec,
    Counts,
    GroupView,
    TokenSelection,
    TokenView,
    correction_metrics,
    group_advantages,
    kept_groups,
    next_alpha,
    policy_loss,
    rollout_correction,
    sampler_gap,
    select_flat,
)
from grouprl.distributed import SINGLE, Dist
from grouprl.env.episode import EnvironmentRollout
from grouprl.errors import ConfigError
from grouprl.model.passes import dummy_rollout
from grouprl.rollout.text import decode_completions, encode_prompts
from grouprl.types import Rollout, SamplingParams, Scored, UpdateInputs


def rollout_and_score(backend, tokenizer, rewards: rewards_lib.RewardRunner, rows: list[dict],
                      prompt_texts: list[str], G: int, sampling: SamplingParams,
                      state: rewards_lib.RewardState | None = None) -> Scored:
    """Stages 2–3: sample G completions per prompt and score each with every reward function, called as TRL
    calls them (``rewards_lib.reward_inputs``); ``state`` is their ``trainer_state``."""
    t0 = time.perf_counter()
    if isinstance(backend, EnvironmentRollout):  # multi-turn episodes: completions are message lists
        played = backend.play(rows, G, sampling)
        rollout, completions, completion_ids, episodes = (played.rollout, played.completions,
                                                          played.completion_ids, played.episodes)
    else:
        rollout, episodes = backend.generate(encode_prompts(tokenizer, prompt_texts), G, sampling), {}
    t1 = time.perf_counter()
    if not episodes:
        completions, completion_ids = decode_completions(tokenizer, rollout)
    prompts, as_passed, columns = rewards_lib.reward_inputs(rows, completions, G)
    if episodes:  # TRL passes the trajectory as it is, the episodes' prompts, and the environments
        prompts, as_passed, columns = played.prompts, completions, {**columns, **played.columns}
    scores = rewards.score(prompts, as_passed, completion_ids, columns, state=state)
    verdict = scores.parts[rewards.verifier]
    seconds = {"generate": t1 - t0, "reward": time.perf_counter() - t1}
    # The functions' values come back on the host; what the update reads joins the rollout on its device.
    device = rollout.completion_ids.device
    accuracy = torch.nan_to_num(verdict, nan=0.0).to(device)
    return Scored(rows, rollout, completions, scores.total.to(device), scores.parts, accuracy, scores.errors,
                  scores.timeouts, scores.report, seconds=seconds, episodes=episodes)


def informative_groups(batch: Scored, G: int, spec: AlgoSpec) -> list[int]:
    """The groups the spec's group filters keep (DAPO's dynamic sampling: accuracies not all equal), on the
    raw rewards; all of them when the spec has no such filter."""
    r = batch.rollout
    as_groups = lambda x: x.reshape(-1, G).to(batch.rewards.device)  # noqa: E731
    lengths = r.completion_mask.sum(-1).to(batch.rewards.dtype)
    view = GroupView(as_groups(batch.rewards), as_groups(batch.accuracy), as_groups(lengths),
                     as_groups(r.truncated.bool()))
    return torch.nonzero(kept_groups(view, spec)).flatten().tolist()


def needs_old_logp(num_iterations: int, mini_batches: int, spec: AlgoSpec) -> tuple[bool, bool]:
    """``(use_old, need_old)``: whether the update's π_old is the frozen pass (off-policy: μ > 1 or several
    mini-batches; or a rollout correction, whose weights and masks compare that pass with the sampler's
    log-probs before the update), and whether π_old's log-probs need a pass of their own (the spec says:
    off-policy, a KL penalty in the reward, a rollout correction). Otherwise π_old is the detached current
    log-probs."""
    off_policy = num_iterations > 1 or mini_batches > 1
    return off_policy or "behaviour_logp" in spec.needs, spec.needs_old_logp(off_policy)


def clip_gradients(model: torch.nn.Module, max_norm: float) -> torch.Tensor:
    """Clip the global gradient norm to ``max_norm`` (0: off); returns the norm before clipping, a plain
    scalar tensor also when the gradients are sharded (FSDP's DTensors)."""
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm or float("inf"))
    return norm.full_tensor() if hasattr(norm, "full_tensor") else norm


def global_counts(loss_mask: torch.Tensor, d: Dist) -> Counts:
    """The normalisers of a mini-batch spread over ranks: sequence and token counts summed over ranks."""
    local = Counts.of(loss_mask)
    total = d.sum_floats({"num_seqs": local.num_seqs, "num_tokens": local.num_tokens})
    return Counts(total["num_seqs"], total["num_tokens"])


def selection_stage(old_logp: torch.Tensor | None, inputs: UpdateInputs, rows: torch.Tensor, G: int,
                    spec: AlgoSpec, batch: Scored, key: tuple[int, ...],
                    d: Dist = SINGLE) -> TokenSelection | None:
    """(i) The spec's token selections of one mini-batch (``rows``), on pi_old before its update, or None when
    the spec has none. Every rank gathers the mini-batch's in-loss tokens ``[n, 4]`` (log pi_old, A, log mu,
    a key in the one-process order), so the selection is the one a single process takes on the whole
    mini-batch, and keeps its own tokens'. ``key`` (run seed, step, iteration, mini-batch) seeds a random
    selection: the same on every rank, different for every mini-batch."""
    if not spec.needs_selection:
        return None
    seed, group_ids = 0, batch.group_ids
    for part in key:
        seed = (seed * 1_000_003 + int(part)) % 2 ** 62
    on = inputs.loss_mask[rows].bool()
    N, T = on.shape
    mu = inputs.rollout.sampler_logprobs
    at = {"device": on.device}
    group_ids = (torch.arange(inputs.loss_mask.shape[0] // G, **at) if group_ids is None
                 else group_ids.to(**at))
    seq_key = (group_ids.double()[:, None] * G + torch.arange(G, **at)).flatten()[rows]  # one-process order
    columns = [old_logp[rows], inputs.advantages[rows][:, None].expand(N, T),
               torch.zeros(N, T, **at) if mu is None else mu[rows],
               seq_key[:, None] * 2.0 ** 20 + torch.arange(T, **at)]
    local = torch.stack([c.to(on.device).double()[on] for c in columns], dim=1)  # [n, 4]
    every = d.gather_rows(local)
    every = every[torch.argsort(every[:, 3], stable=True)]
    chosen = select_flat(TokenView(every[:, 0], every[:, 1], None if mu is None else every[:, 2], seed), spec)
    mine = torch.searchsorted(every[:, 3].contiguous(), local[:, 3].contiguous())
    return TokenSelection.of({**{k: v[mine] for k, v in chosen.items() if k != "metrics"},
                              "metrics": chosen["metrics"]}, on)


def current_spec(s) -> AlgoSpec:
    """(i) The run's spec (``s.spec``) for this step: with an entropy target, its entropy coefficient is the
    adapted ``s.entropy_alpha``."""
    return s.spec if s.entropy_alpha is None else s.spec.at_alpha(s.entropy_alpha)


def adapt_entropy(s, metrics: dict[str, float]) -> dict[str, float]:
    """(i) With an entropy target, the coefficient this step used (``entropy/alpha``), and the next one from
    the step's mean entropy (global, so every rank takes the same): ``s.entropy_alpha`` is updated."""
    if s.entropy_alpha is None:
        return {}
    used = s.entropy_alpha
    if "entropy" in metrics:  # no update ran (every token masked): the coefficient stays
        spec = s.spec
        s.entropy_alpha = next_alpha(used, metrics["entropy"], spec.entropy_target, spec.entropy_target_lr)
    return {"entropy/alpha": used}


class SamplerGap:
    """``rollout/logprob_diff_mean``, ``rollout/logprob_diff_max``, ``rollout/kl_sampler_trainer``: the
    trainer's log-probs of the sampled tokens against the sampler's (``Rollout.sampler_logprobs``) over the
    completion tokens, the gap off-policy corrections exist for (it grows in bf16). The trainer's side is
    pi_old: the frozen pass when there is one, else the update's first pass, which runs before any optimizer
    step. Sums stay on the device until ``metrics``."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}

    def add(self, trainer_logp: torch.Tensor, sampler_logp: torch.Tensor, mask: torch.Tensor) -> None:
        """Count the rows of ``trainer_logp``, ``sampler_logp``, ``mask`` (all ``[n, T]``)."""
        log_w = trainer_logp.detach().double() - sampler_logp.to(trainer_logp.device).double()
        for key, value in sampler_gap(log_w, mask.to(log_w.device)).items():
            old = self.sums.get(key)
            self.sums[key] = value if old is None else (torch.maximum(old, value) if key == "abs_max"
                                                         else old + value)

    def metrics(self, d: Dist = SINGLE) -> dict[str, float]:
        """The three metrics over every rank (a collective: every rank calls it); none without tokens."""
        local = {k: float(self.sums.get(k, 0.0)) for k in ("abs_sum", "kl_sum", "tokens")}
        total = d.sum_floats(local)
        top = d.all_reduce(torch.tensor([float(self.sums.get("abs_max", 0.0))], dtype=torch.float64,
                                        device="cpu"), "max")
        if not total["tokens"]:
            return {}
        return {"rollout/logprob_diff_mean": total["abs_sum"] / total["tokens"],
                "rollout/logprob_diff_max": float(top[0]),
                "rollout/kl_sampler_trainer": total["kl_sum"] / total["tokens"]}


def accumulate_gradients(scorer, inputs: UpdateInputs, rows: torch.Tensor, G: int, spec: AlgoSpec,
                         counts: Counts, *, temperature: float, micro_batch_size: int, chunk_size: int,
                          norm_length: int, d: Dist = SINGLE, selection: TokenSelection | None = None,
                          gap: SamplerGap | None = None,
                          plan: list[torch.Tensor] | None = None) -> dict[str, float]:
    """Stage 7 for one mini-batch: forward/backward per micro-batch with the mini-batch's global counts.

    ``scorer`` is ``TrainingPass(policy)``, wrapped in DDP or FSDP2 when ``d.world > 1``. Every rank runs the
    same number of backward passes (DDP reduces gradients in the last one): a rank with fewer micro-batches
    pads with passes over a dummy row whose loss mask is empty, which add exactly zero. The micro-batches are
    consecutive runs of ``micro_batch_size`` rows, or ``plan``'s (positions into ``rows``, from
    ``model.memory.plan_micro_batches``).

    Returns the mini-batch's metrics, summed over micro-batches and ranks (so they are global values).
    With ``gap``, the passes' log-probs are also compared with the sampler's there (``SamplerGap``).
    """
    # each micro-batch's rows in ``rows``: consecutive runs, or the plan's
    places = [p.to(rows.device) for p in plan] if plan else \
        list(torch.split(torch.arange(len(rows), device=rows.device), micro_batch_size))
    places = [p for p in places if len(p)]
    micros = [rows[p] for p in places]
    n_passes = int(d.all_reduce(torch.tensor([len(micros)], device="cpu"), "max").item())
    no_sync = getattr(scorer, "no_sync", nullcontext)
    metrics: dict[str, torch.Tensor] = {}
    entropy_sum = 0.0
    device = inputs.rollout.prompt_ids.device
    dummy = dummy_rollout(device)
    for i in range(n_passes):
        rollout, micro, group = (inputs.rollout, micros[i], G) if i < len(micros) else (dummy, None, 1)
        with no_sync() if i < n_passes - 1 else nullcontext():
            logp, entropy = scorer(rollout, (torch.zeros(1, dtype=torch.long, device=device)
                                             if micro is None else micro),
                                   group, temperature=temperature, chunk_size=chunk_size)
            mu = inputs.rollout.sampler_logprobs  # the sampler's log-probs, for a rollout correction
            if micro is None:  # a dummy row: a pass over every parameter, nothing in the loss
                zeros = torch.zeros_like(logp)
                old, ref, mask, adv = (logp.detach(), None if inputs.ref_logp is None else zeros, zeros,
                                       zeros[:, 0])
                mu = None if mu is None else zeros
            else:
                old = logp.detach() if inputs.old_logp is None else inputs.old_logp[micro]
                ref = None if inputs.ref_logp is None else inputs.ref_logp[micro]
                mask = inputs.loss_mask[micro].to(logp.dtype)
                adv = inputs.advantages[micro].to(logp.dtype)
                mu = None if mu is None else mu[micro].to(logp.device)
                if gap is not None and mu is not None:
                    gap.add(logp, mu, inputs.rollout.completion_mask[micro])
            chosen = None if selection is None else \
                selection.blank(logp) if micro is None else selection.rows(places[i])
            loss, m = policy_loss(logp, old, ref, mask, adv, spec, counts, norm_length=norm_length,
                                  entropy=entropy, selection=chosen, behaviour_logp=mu)
            # The loss uses global counts, so the ranks' losses sum to the global loss. DDP averages the
            # gradients over ranks (divides by world), so scaling by world makes the result that sum: the
            # gradient of a one-process run on the whole batch.
            (loss * d.world).backward()
        entropy_sum += (entropy.detach() * mask).sum()
        for key, value in m.items():
            metrics[key] = metrics.get(key, 0.0) + value.float()
    metrics["entropy"] = entropy_sum / max(counts.num_tokens, 1.0)
    chosen = {} if selection is None else {k: float(v) for k, v in selection.metrics.items()}  # global
    return {**d.sum_floats({k: float(v) for k, v in metrics.items()}), **chosen}


def advantages_stage(batch: Scored, G: int, spec: AlgoSpec, ref_logp: torch.Tensor | None,
                     old_logp_for_kl: torch.Tensor | None, d: Dist = SINGLE):
    """Stages 4–5: shaping, filters and advantages on the whole (global) rollout.

    ``batch.group_ids`` ``[B_local]``: each local group's index in the one-process order. Every rank
    gathers ``[N_global, 6]`` per-sequence scalars, sorts them into that order, computes the
    advantages exactly as one process would, and keeps its own rows. Returns the local ``Advantages`` (its
    metrics are global) and the local loss mask ``[N, T]``.
    """
    r = batch.rollout
    mask = r.completion_mask.to(torch.float64)
    N, at = mask.shape[0], {"device": mask.device}  # everything here on the rollout's device
    kl_penalty = torch.zeros(N, dtype=torch.float64, **at)
    in_reward = "seq_kl" in spec.needs  # a shaping piece takes the KL into the reward
    if in_reward:
        kl_penalty = ((old_logp_for_kl - ref_logp).double() * mask).sum(-1)
    group_ids = torch.arange(N // G, **at) if batch.group_ids is None else batch.group_ids.to(**at)
    key = (group_ids.double()[:, None] * G + torch.arange(G, **at)).flatten()  # [N] unique, one-process order
    local = torch.stack([batch.rewards.to(**at).double(), mask.sum(-1), r.truncated.double(),
                         batch.accuracy.to(**at).double(), kl_penalty, key], dim=1)  # [N, 6]
    every = d.gather_rows(local)
    every = every[torch.argsort(every[:, 5], stable=True)]  # [N_global, 6]
    adv = group_advantages(every[:, 0], G, every[:, 1], spec, truncated=every[:, 2].bool(),
                           accuracy=every[:, 3], kl_penalty=every[:, 4] if in_reward else None)
    mine = torch.searchsorted(every[:, 5].contiguous(), key)  # [N] positions of this rank's rows
    adv.advantages, adv.in_loss, adv.rewards = adv.advantages[mine], adv.in_loss[mine], adv.rewards[mine]
    loss_mask = r.completion_mask * adv.in_loss[:, None].to(r.completion_mask.device, r.completion_mask.dtype)
    return adv, loss_mask


def correction_stage(rollout: Rollout, old_logp: torch.Tensor | None, loss_mask: torch.Tensor, spec: AlgoSpec,
                     d: Dist = SINGLE) -> tuple[torch.Tensor, dict[str, float]]:
    """Between stages 6 and 7: the spec's rollout correction of π_old (the frozen pass) against the sampler's
    log-probs. Returns the loss mask it keeps (its masked tokens or sequences leave the loss and the
    normaliser) and its metrics over the global batch; the mask unchanged and no metrics without one."""
    if "behaviour_logp" not in spec.needs:
        return loss_mask, {}
    if rollout.sampler_logprobs is None:
        raise ConfigError(f"algo.rollout_correction={spec.rollout_correction} compares pi_old with the "
                          "sampler's log-probs, but the rollout backend returned none "
                          "(Rollout.sampler_logprobs); use rollout.backend=fast or hf, or "
                          "algo.rollout_correction=none")
    c = rollout_correction(old_logp, rollout.sampler_logprobs.to(old_logp.device), loss_mask, spec)
    sums = c.sums()
    top = d.all_reduce(torch.tensor([sums.pop("ratio_max")], dtype=torch.float64, device="cpu"), "max")
    return c.keep.to(loss_mask.dtype), correction_metrics({**d.sum_floats(sums), "ratio_max": top.item()})
