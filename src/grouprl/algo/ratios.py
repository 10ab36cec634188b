"""Importance-ratio levels (docs/math.md, Ratio levels), returned as **log**-ratios.

One signature::

    fn(logp [N, T], old_logp [N, T], mask [N, T]) -> log_ratio [N, T] (token-shaped) or [N] (sequence-shaped)

Working in log space keeps GSPO's geometric mean and GMPO's log-space clip exact, and ``exp`` happens once,
in the objective. Every level reads π_old (``needs=("old_logp",)``): on-policy that is the detached current
log-prob, off-policy a separate pass.
"""

from __future__ import annotations

import torch

from grouprl.registry import Registry

RATIOS: Registry = Registry("importance-ratio level")


def masked_token_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-row mean over unmasked tokens, ``[N, T] -> [N]``; an empty row gives 0, never NaN."""
    return (x * mask).sum(dim=-1) / mask.sum(dim=-1).clamp(min=1)


@RATIOS.register("token", needs=("old_logp",))
def token(logp: torch.Tensor, old_logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """PPO/GRPO: ``log r_{i,t} = l_{i,t} - l^old_{i,t}``."""
    return (logp - old_logp) * mask


@RATIOS.register("sequence", needs=("old_logp",), per_sequence=True)
def sequence(logp: torch.Tensor, old_logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """GSPO: ``log s_i = (1/|o_i|) sum_t (l_{i,t} - l^old_{i,t})``, the log of the geometric-mean ratio."""
    return masked_token_mean(logp - old_logp, mask)


@RATIOS.register("sequence_token", needs=("old_logp",))
def sequence_token(logp: torch.Tensor, old_logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """GSPO-token: ``s_{i,t} = sg[s_i] * exp(l_{i,t} - sg[l_{i,t}])``: value ``s_i``, d/dl_{i,t} = ``s_i``."""
    log_s = sequence(logp, old_logp, mask).detach()  # [N]
    return (log_s[:, None] + logp - logp.detach()) * mask


@RATIOS.register("geometric", needs=("old_logp",))
def geometric(logp: torch.Tensor, old_logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """GMPO: per-token log-ratios; the log-space clip and the geometric mean happen in ``log_clip``."""
    return token(logp, old_logp, mask)
