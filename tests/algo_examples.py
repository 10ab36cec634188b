"""The shared inputs of docs/math.md, Worked examples (float64), used by the golden, reference and
invariance tests."""

import torch

from tolerance import tol

LENGTHS = [2, 3, 4, 5]
OLD = [[-1.0, -0.5], [-2.0, -0.2, -1.2], [-0.7, -1.5, -0.1, -0.9], [-0.3, -0.6, -2.5, -1.0, -0.4]]
NEW = [[-0.9, -0.2], [-2.3, -0.15, -1.2], [-0.5, -1.6, -0.1, -0.65], [-0.3, -0.65, -2.4, -1.2, -0.35]]
REF = [[-0.95, -0.6], [-1.9, -0.2, -1.4], [-0.7, -1.4, -0.05, -0.95], [-0.1, -0.6, -2.6, -0.9, -0.4]]

# The rounding rule's scale (tests/tolerance.py) for the algorithm tests' losses, advantages and gradients:
# advantages stay below 4, and the |terms| the loss aggregations add sum to at most 5.2 over every reference
# case (measured, tests/reference).
SCALE = 10.0

# The verl std convention the worked examples use (the grpo preset's own default is the project spec's).
VERL_STD = dict(std_ddof=1, adv_eps=1e-6, adv_eps_inside=False)


def padded(rows, width=5, repeat=1):
    """Rows of unequal length → a zero-padded ``[len(rows) * repeat, width]`` float64 tensor."""
    out = torch.zeros(len(rows), width, dtype=torch.float64)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(row, dtype=torch.float64)
    return out.repeat(repeat, 1)


def example(repeat=1, width=5):
    """``(old, new, ref, mask)`` for ``repeat`` copies of the four sequences."""
    mask = (torch.arange(width)[None] < torch.tensor(LENGTHS)[:, None]).double().repeat(repeat, 1)
    return padded(OLD, width, repeat), padded(NEW, width, repeat), padded(REF, width, repeat), mask


def rounding_tol(logp: torch.Tensor, group_size: int) -> float:
    """The rule for a loss, advantage or gradient of the float64 batch ``logp`` ``[N, T]``: sums over its N T
    positions and the groups' mean and std (2 G terms), and a few elementwise steps per term (log-ratio, exp,
    clip, min, product, KL)."""
    return tol(torch.float64, logp.numel() + 2 * group_size + 8, SCALE)
