"""A slow, obviously-correct per-sequence loop written straight from docs/math.md, for reference tests.

Everything is Python floats and 0-d tensors in explicit loops; it shares no code with ``grouprl.algo``
beyond reading the spec's fields. The loss is a 0-d tensor built from ``logp[i, t]`` so autograd gives the
reference gradient.
"""

import math

import torch


def _mean(xs):
    return sum(xs) / len(xs)


def _std(xs, ddof):
    m = _mean(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - ddof)) if len(xs) > ddof else 0.0


def _scale(xs, spec):
    """std with the spec's ddof and eps placement."""
    var = _std(xs, spec.std_ddof) ** 2
    return math.sqrt(var + spec.adv_eps) if spec.adv_eps_inside else math.sqrt(var) + spec.adv_eps


def _div(x, s):
    return x / s if s > 0 else 0.0


def advantages(R, G, lengths, spec, truncated, accuracy):
    """Returns (advantages, in_loss) as Python lists."""
    N = len(R)
    R = list(R)
    if "soft_overlong" in spec.shaping:
        lmax, cache = spec.overlong_max_len, spec.overlong_buffer_len
        for i in range(N):
            L = lengths[i]
            R[i] += 0.0 if L <= lmax - cache else (((lmax - cache) - L) / cache if L <= lmax else -1.0)
    groups = [list(range(b * G, (b + 1) * G)) for b in range(N // G)]
    valid = [True] * N
    if "nonzero_variance" in spec.filters:
        for idx in groups:
            if len({accuracy[i] for i in idx}) == 1:
                for i in idx:
                    valid[i] = False
    retained = [True] * N
    if spec.advantage == "subset_zscore":
        k = spec.retain_k or min(max(G // 2, 2), G)
        for idx in groups:
            if spec.retain_metric == "length":
                key = lambda i: lengths[i]  # noqa: E731
            else:
                key = lambda i: -R[i] / max(lengths[i], 1)  # noqa: E731
            kept = sorted(idx, key=key)[:k]  # Python's sort is stable: ties keep index order
            for i in idx:
                retained[i] = i in kept
    A = [0.0] * N
    live = [i for i in range(N) if valid[i]]
    if spec.advantage == "group_mean_batch_std":
        batch_scale = _scale([R[i] for i in live], spec)
    for idx in groups:
        members = [i for i in idx if valid[i]]
        if not members:
            continue
        mu = _mean([R[i] for i in members])
        for i in members:
            if spec.advantage == "group_zscore":
                A[i] = _div(R[i] - mu, _scale([R[j] for j in members], spec))
            elif spec.advantage == "group_center":
                A[i] = R[i] - mu
            elif spec.advantage == "group_mean_batch_std":
                A[i] = _div(R[i] - mu, batch_scale)
            elif spec.advantage == "rloo":
                others = [R[j] for j in members if j != i]
                A[i] = R[i] - _mean(others)
            elif spec.advantage == "batch_whiten_tokens":
                A[i] = R[i] - mu  # whitened below
            elif spec.advantage == "maxrl":  # docs/algorithms/maxrl.md: 0 for a group of mean <= 0
                A[i] = (R[i] - mu) / (mu + spec.adv_eps) if mu > 0 else 0.0
            elif spec.advantage == "subset_zscore":
                sub = [j for j in members if retained[j]]
                rs = [R[j] for j in sub]
                A[i] = _div(R[i] - _mean(rs), _scale(rs, spec)) if retained[i] else 0.0
    if spec.advantage == "batch_whiten_tokens":
        tokens = [A[i] for i in live for _ in range(int(lengths[i]))]
        mu = _mean(tokens)
        var = sum((x - mu) ** 2 for x in tokens) / (len(tokens) - 1)
        for i in live:
            A[i] = (A[i] - mu) / math.sqrt(var + 1e-8)
    in_loss = list(valid)
    for i in range(N):
        if "drop_truncated" in spec.filters and truncated[i]:
            in_loss[i] = False
        if spec.advantage == "subset_zscore" and spec.retain_normalise_over == "retained" and not retained[i]:
            in_loss[i] = False
    return A, in_loss


def _kl(spec, lp, rp):
    d = rp - lp
    return {"k1": -d, "k2": d * d / 2, "k3": torch.exp(d) - d - 1}[spec.kl_estimator]


def _token_term(spec, lp, op, A, L_i, log_s=None, picked=False):
    """Objective term of one token (maximise); ``picked``: in the objective's token selection."""
    if spec.importance_sampling_level == "sequence_token":
        r = torch.exp(log_s.detach() + lp - lp.detach())
    else:
        r = torch.exp(lp - op)
    if spec.clip == "kl_cov":  # unclipped, minus beta |log r| on the picked tokens
        return r * A - (spec.beta_kl_cov * torch.abs(lp - op) if picked else 0.0)
    if spec.clip == "clip_cov":  # PPO's term, its gradient detached on the picked tokens
        o = torch.minimum(r * A, torch.clamp(r, 1 - spec.epsilon_low, 1 + spec.epsilon_high) * A)
        if spec.clip_ratio_c is not None and A < 0:
            o = torch.maximum(o, torch.tensor(spec.clip_ratio_c * A, dtype=o.dtype))
        return o.detach() if picked else o
    if spec.clip == "ppo_clip":
        o = torch.minimum(r * A, torch.clamp(r, 1 - spec.epsilon_low, 1 + spec.epsilon_high) * A)
        if spec.clip_ratio_c is not None and A < 0:
            o = torch.maximum(o, torch.tensor(spec.clip_ratio_c * A, dtype=o.dtype))
        return o
    if spec.clip == "gppo":  # a clipped token: the bound's value, and its gradient b * A
        if A > 0 and r > 1 + spec.epsilon_high:
            o = spec.gppo_beta2 * (1 + spec.epsilon_high) * r / r.detach() * A
        elif A < 0 and r < 1 - spec.epsilon_low:
            o = spec.gppo_beta1 * (1 - spec.epsilon_low) * r / r.detach() * A
        else:
            o = r * A
        if spec.clip_ratio_c is not None and A < 0:
            o = torch.maximum(o, torch.tensor(spec.clip_ratio_c * A, dtype=o.dtype))
        return o
    if spec.clip == "is_weight_clip":
        w = r.detach()
        if spec.epsilon_low is not None:
            w = torch.clamp(w, min=1 - spec.epsilon_low)
        return torch.clamp(w, max=1 + spec.epsilon_high) * A * lp
    if spec.clip == "soft_gate":
        tau = spec.tau_pos if A > 0 else spec.tau_neg
        return torch.sigmoid(tau * (r - 1)) * 4 / tau * A
    return r * A  # clip "none"


def selections(spec, tokens, old, A, mu, seed):
    """(i) The token selections of docs/math.md, Token selections, by explicit loops over ``tokens`` (the
    in-loss ``(i, t)`` in row order): ``(objective set, masked set)``."""
    n = len(tokens)
    lp = [float(old[i, t]) for i, t in tokens]
    adv = [A[i] for i, _ in tokens]
    ml, ma = _mean(lp), _mean(adv)
    cov = [(lp[j] - ml) * (adv[j] - ma) for j in range(n)]
    picked, masked = set(), set()
    if spec.clip == "clip_cov":
        cands = [j for j in range(n) if spec.clip_cov_lb < cov[j] < spec.clip_cov_ub]
        k = max(1, int(spec.clip_cov_ratio * n))
        g = torch.Generator().manual_seed(seed)
        perm = torch.randperm(len(cands), generator=g).tolist() if cands else []
        picked = {tokens[cands[p]] for p in perm[:k]}
    if spec.clip == "kl_cov":
        k = max(1, int(spec.kl_cov_ratio * n))
        picked = {tokens[j] for j in sorted(range(n), key=lambda j: -cov[j])[:k]}
    if spec.m2po_tau is not None:
        m2 = [(lp[j] - float(mu[i, t])) ** 2 for j, (i, t) in enumerate(tokens)]
        order = sorted(range(n), key=lambda j: -m2[j])
        c = 0
        while c < n and sum(m2[j] for j in order[c:]) / (n - c) > spec.m2po_tau:
            c += 1
        masked = {tokens[j] for j in order[:c]}
    return picked, masked


def correction(spec, old, behaviour, i, L):
    """The rollout correction of sequence ``i`` (its first ``L`` tokens in the loss): the kept token
    positions and each one's weight on the policy term (docs/algorithms/rollout_correction.md)."""
    mode, c_min, c_max = spec.rollout_correction, spec.rollout_correction_min, spec.rollout_correction_max
    if mode == "none":
        return list(range(L)), [1.0] * L
    log_w = [float(old[i, t]) - float(behaviour[i, t]) for t in range(L)]
    if mode.startswith("token_"):
        w = [math.exp(x) for x in log_w]
    else:  # one ratio for the sequence: the geometric mean of its token ratios
        w = [math.exp(sum(log_w) / L)] * L
    if mode.endswith("_truncate"):
        return list(range(L)), [min(x, c_max) for x in w]
    kept = [t for t in range(L) if c_min <= w[t] <= c_max]
    return kept, [1.0] * len(kept)


def loss(R, G, logp, old, ref, mask, spec, truncated=None, accuracy=None, norm_length=None, entropy=None,
         behaviour=None, sampler_logp=None, seed=0):
    """The loss as a 0-d tensor, and the advantages list. ``entropy`` [N, T]: the per-token entropies the
    bonus ``-entropy_coef * H`` reads (a token's bonus sits beside its policy term, aggregated with it).
    ``behaviour`` [N, T]: the sampler's log-probs mu, for the rollout correction."""
    N, T = logp.shape
    lengths = [int(mask[i].sum()) for i in range(N)]
    truncated = [False] * N if truncated is None else [bool(x) for x in truncated]
    accuracy = list(R) if accuracy is None else list(accuracy)
    R = list(R)
    kl_in_reward = spec.beta > 0 and "kl_in_reward" in spec.shaping
    if kl_in_reward:
        for i in range(N):
            R[i] -= spec.beta * sum(float(old[i, t] - ref[i, t]) for t in range(lengths[i]))
    A, in_loss = advantages(R, G, lengths, spec, truncated, accuracy)
    kept = {i: correction(spec, old, behaviour, i, lengths[i]) for i in range(N) if in_loss[i]}
    seqs = [i for i in kept if kept[i][0]]  # a masked token or sequence leaves the normalisers too
    n_seq, n_tok = len(seqs), sum(len(kept[i][0]) for i in seqs)
    total = torch.zeros((), dtype=logp.dtype)
    picked, masked = selections(spec, [(i, t) for i in seqs for t in kept[i][0]], old, A, sampler_logp, seed)
    for i in seqs:
        toks_c, weights = kept[i]
        L = len(toks_c)
        weight = dict(zip(toks_c, weights))
        toks = [t for t in toks_c if (i, t) not in masked]  # M2PO's masked tokens leave the sums
        drift = sum(float(old[i, t] - logp[i, t]) for t in toks) / L  # mean log(pi_old / pi_theta)
        if spec.opsm_delta is not None and A[i] < 0 and drift > spec.opsm_delta:
            continue  # OPSM: out of the loss, still in n_seq / n_tok
        kl_in_loss = spec.beta > 0 and not kl_in_reward
        kl_terms = [_kl(spec, logp[i, t], ref[i, t]) for t in toks] if kl_in_loss else []
        kl_mean = sum(kl_terms) / L if kl_terms else 0.0
        bonus = [-spec.entropy_coef * entropy[i, t] for t in toks] if spec.entropy_coef > 0 else []
        bonus_mean = sum(bonus) / L if bonus else 0.0  # one term per sequence: the token mean, as the KL
        if spec.importance_sampling_level == "sequence":
            log_s = sum(logp[i, t] - old[i, t] for t in toks) / L
            s = torch.exp(log_s)
            term = torch.minimum(s * A[i], torch.clamp(s, 1 - spec.epsilon_low, 1 + spec.epsilon_high) * A[i])
            term = term * weights[0]  # a sequence mode's weight is one number per sequence
            total = total + (-term + spec.beta * kl_mean + bonus_mean) / n_seq
            continue
        if spec.importance_sampling_level == "geometric":
            sign = (A[i] > 0) - (A[i] < 0)
            dts = []
            for t in toks:
                d = logp[i, t] - old[i, t]
                dc = torch.clamp(d, -spec.epsilon_low, spec.epsilon_high)
                dts.append(sign * torch.minimum(sign * d, sign * dc))
            term = A[i] * torch.exp(sum(dts) / L) * weights[0]
            total = total + (-term + spec.beta * kl_mean + bonus_mean) / n_seq
            continue
        log_s = sum(logp[i, t] - old[i, t] for t in toks) / L
        per_tok = [-_token_term(spec, logp[i, t], old[i, t], A[i], L, log_s, (i, t) in picked) * weight[t]
                   for t in toks]
        if kl_terms:
            per_tok = [p + spec.beta * k for p, k in zip(per_tok, kl_terms)]
        if bonus:
            per_tok = [p + e for p, e in zip(per_tok, bonus)]
        if spec.loss_type == "seq_mean_token_mean":
            total = total + (sum(per_tok) / len(toks) / n_seq if len(toks) else 0.0)
        elif spec.loss_type == "token_mean":
            total = total + sum(per_tok) / n_tok
        elif spec.loss_type == "seq_mean_token_sum_norm":
            total = total + sum(per_tok) / ((spec.loss_norm_length or norm_length) * n_seq)
        elif spec.loss_type == "seq_mean_token_sum":
            total = total + sum(per_tok) / n_seq
        else:
            raise AssertionError(spec.loss_type)
    return total, A
