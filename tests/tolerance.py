"""Every float tolerance in the suite, derived from one of two rules written down here once.

Rounding. Higham & Mary (2019, "A new approach to probabilistic rounding error analysis", SIAM J. Sci.
Comput. 41(5)): a length-n reduction (a sum, a dot product, a matmul's inner dimension, a softmax's
normaliser) computed in any order, in a dtype of unit roundoff u = eps/2, has

    |error| <= lambda * sqrt(n) * u * sum|terms|

if the rounding errors are mean independent (each has mean zero whatever the earlier ones were), with
probability at least 1 - 2 exp(-lambda^2 (1 - u)^2 / 2) for one term's product of rounding factors, and at
least 1 - n times that failure probability for the whole reduction. The order does not enter, so the bound
covers every BLAS kernel, blocking and thread count. The worst-case bound (n u, not sqrt(n) u) also holds,
but is never approached in practice and would loosen tolerances by sqrt(n). Two computations of one value
that round differently (two BLAS kernels, chunked and whole, one process and two) each obey the bound, so
they differ by at most

    tol(dtype, n, scale) = 2 * lambda * sqrt(n) * u * scale,   lambda = LAMBDA = 8,

and a compared value exceeds its tolerance with probability below 2 n exp(-32) = n * 2.5e-14.

- ``n`` counts the roundings on the value's path. A chain of reductions (a network's layers) adds their
  lengths: the relative errors of successive steps add up like those of one longer reduction, provided no
  step amplifies them (each is well conditioned, as normalised layers are); ``forward_path_length`` counts a
  decoder's. Where a step does amplify, the factor is named: AdamW over a training run (``adamw_drift``).
- ``scale`` is sum|terms| of the reductions, or along a chain the magnitude of the values it carries
  (``logprob_scale`` for log-probs); ``assert_close`` defaults it to the largest |expected|.
- Exact claims (atol = 0) are the rule at n = 0: the same operations in the same order round the same way.
- A golden written with few decimals carries its own error, one unit in its last decimal (``written``);
  it adds to the rule's and usually dominates it.
- A path rounds at its least precise dtype: HF's RMSNorm computes in float32 even in a float64 model, so a
  float64 test runs ``in_float64`` models, whose norms compute in float64 too.

Sampling. A quantity estimated from n samples (an accuracy, a pass rate) and a chi-square test answer to one
significance level, ALPHA = 1e-3: a proportion p estimated from n samples is held to Z = 3.29 standard errors,
Z * sqrt(p (1 - p) / n) (``binomial_tol``), and a test of a distribution rejects below p-value ALPHA.
"""

from __future__ import annotations

import math
from functools import partial
from statistics import NormalDist

import torch

LAMBDA = 8.0
ADAMW_SHARPNESS = 5e4  # measured: see adamw_drift
ALPHA = 1e-3
Z = NormalDist().inv_cdf(1 - ALPHA / 2)  # 3.29: two-sided, P(|N(0, 1)| > Z) = ALPHA


def unit_roundoff(dtype: torch.dtype) -> float:
    return torch.finfo(dtype).eps / 2


def tol(dtype: torch.dtype, n: int, scale: float = 1.0) -> float:
    """How far two computations of one value, each through ``n`` roundings of size ``scale``, may differ."""
    return 2 * LAMBDA * math.sqrt(n) * unit_roundoff(dtype) * scale


def assert_close(actual, expected, *, n: int, scale: float | None = None, dtype: torch.dtype | None = None,
                 msg: str | None = None) -> None:
    """``torch.testing.assert_close`` with rtol 0 and atol ``tol(dtype, n, scale)``, compared in float64.
    ``dtype`` defaults to ``actual``'s (float64 for Python numbers), ``scale`` to the largest |expected|;
    ``msg`` prefixes the failure message."""
    dtype = dtype or (actual.dtype if torch.is_tensor(actual) else torch.float64)
    actual, expected = (x.detach().double() if torch.is_tensor(x) else torch.tensor(x, dtype=torch.float64)
                        for x in (actual, expected))
    atol = tol(dtype, n, expected.abs().max().item() if scale is None else scale)
    prefix = None if msg is None else lambda text: f"{msg}: {text}"
    torch.testing.assert_close(actual, expected, rtol=0, atol=atol, msg=prefix)


def written(decimals: int) -> float:
    """The error of a golden written to ``decimals`` decimals, rounded or truncated: one unit in the last."""
    return 10.0**-decimals


def forward_path_length(config, seq_len: int) -> int:
    """``n`` of a log-prob out of a decoder forward over ``seq_len`` positions: per layer, the two RMSNorms'
    means of squares (hidden), q/k/v (hidden), q·k (head dim), the attention softmax's normaliser and its sum
    of values (seq_len each), o_proj (heads × head dim), the MLP's gate/up (hidden) and down (intermediate),
    and a dozen elementwise roundings (rotary, scaling, silu, products, residual adds); then the final norm,
    the LM head (hidden) and the log-softmax's normaliser (vocab)."""
    hidden, heads = config.hidden_size, config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    layer = 4 * hidden + head_dim + 2 * seq_len + heads * head_dim + config.intermediate_size + 12
    return config.num_hidden_layers * layer + 2 * hidden + config.vocab_size


def logprob_scale(logits: torch.Tensor) -> float:
    """``scale`` of log-probs or entropies from ``logits`` ``[..., V]``: the largest magnitude a log-softmax
    carries. Logits are at most m = max |logits|, their log-sum-exp at most m + log V, and the log-probs and
    the entropy's terms p * |log p| (summed: at most the largest |log p|) at most 2 m + log V."""
    return 2 * logits.abs().max().item() + math.log(logits.shape[-1])


def logprob_rounding(model, ids: torch.Tensor, mask: torch.Tensor, temperature: float = 1.0) -> dict:
    """``n`` and ``scale`` for log-probs (or entropies) of ``ids`` ``[N, L]`` under ``model``, computed along
    two paths that round differently: the whole forward, at its logits' magnitude (one more forward here)."""
    from grouprl.model.logprobs import position_ids_from_mask

    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask)).logits
    return dict(n=forward_path_length(model.config, ids.shape[1]), scale=logprob_scale(logits / temperature))


def _rms_norm(norm, hidden: torch.Tensor) -> torch.Tensor:
    return norm.weight * hidden * torch.rsqrt(hidden.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)


def in_float64(model):
    """``model`` in float64 throughout: HF's RMSNorm casts to float32 (by design, for half-precision models)
    and back, which would make a float64 model's forward a float32 path at every norm. (Its rotary tables
    are float32 too, but constants: the same in both computations a test compares.)"""
    model.double()
    for module in model.modules():
        if type(module).__name__.endswith("RMSNorm"):
            module.forward = partial(_rms_norm, module)
    return model


def adamw_drift(lrs: list[float]) -> float:
    """How many times the rule's tolerance two training runs' metrics may differ by after AdamW updates at
    learning rates ``lrs``, when each step's reductions round differently by the rule's amount.

    No rigorous bound exists. Adam divides each gradient element by its running RMS, so an update moves every
    weight by ~lr whatever the size of its gradient, in a direction a rounding difference can turn; the two
    runs' difference is then multiplied, per update, by 1 + S lr, S the loss's largest curvature in Adam's
    preconditioned metric (Hessian / sqrt(v)), and each step adds its own rounding:
    d_1 = 1, d_(s+1) = 1 + (1 + S lr_s) d_s. No test can compute S; ADAMW_SHARPNESS is measured on the
    default model: 2 processes drift from 1 by 100x over 4 updates at lr <= 1e-4, and by 6000x over 3 at
    lr <= 1e-3 (benchmarks/RESULTS.md), that is 1 + 4e4..5.5e4 lr per update.
    """
    drift = 1.0
    for lr in lrs:
        drift = 1 + (1 + ADAMW_SHARPNESS * lr) * drift
    return drift


def adamw_weight_gap(lrs: list[float], betas: tuple[float, float] = (0.9, 0.99)) -> float:
    """The most two AdamW runs from the same weights can differ by after updates at learning rates ``lrs``,
    whatever their gradients. Update t moves a weight by lr * |m_t| / (sqrt(v_t) + eps), and Cauchy-Schwarz
    on m_t's weights against v_t's bounds |m_t| / sqrt(v_t) by ``a`` below (1 at t = 1, at most 2.35 for the
    default betas); two runs can step in opposite directions (a gradient below its rounding error does)."""
    b1, b2 = betas
    r = b1 * b1 / b2
    a = [(1 - b1) / (1 - b1**t) * math.sqrt((1 - b2**t) / (1 - b2) * (1 - r**t) / (1 - r))
         for t in range(1, len(lrs) + 1)]
    return 2 * sum(lr * at for lr, at in zip(lrs, a))


def assert_runs_close(a: list[dict], b: list[dict], *, n: int, keys=None) -> None:
    """Two float32 training runs' metrics rows (metrics.jsonl), step by step, whose sums of ``n`` terms round
    differently: the rule at the scale of terms of order one (standardised advantages, ratios, log-probs) or
    of the metric where larger, times ``adamw_drift`` of the updates before the row. A row's lr is the next
    update's: in warm-up, at least the one its update used."""
    assert [r["step"] for r in a] == [r["step"] for r in b]
    lrs: list[float] = []
    for ra, rb in zip(a, b):
        for key in keys or ra:
            if ra[key] is not None:
                atol = tol(torch.float32, n, max(1.0, abs(ra[key]))) * adamw_drift(lrs)
                assert abs(rb[key] - ra[key]) <= atol, (ra["step"], key, ra[key], rb[key], atol)
        lrs += [ra["lr"]] * ra["update/steps"]


def binomial_tol(p: float, n: int) -> float:
    """How far an accuracy measured on ``n`` samples may sit from ``p``: Z standard errors of a proportion."""
    return Z * math.sqrt(p * (1 - p) / n)
