"""Thin process-group layer for ``torchrun``: init from its environment, rank/world facts, and the few
collectives the trainer needs (sums, maxima, gathers), each wrapped so that a dead or hung peer ends the run
with one line naming this rank instead of a hang or a C++ traceback.

Nothing here is global state: ``init`` returns a ``Dist`` and the trainer passes it around. A single process
(no ``WORLD_SIZE`` in the environment, or ``WORLD_SIZE=1``) gets ``Dist()`` and every collective is the
identity, so one code path serves both cases.

Backends: gloo when the run's device (``model.device``) is the CPU, NCCL when it is a GPU. Every collective
takes ``train.collective_timeout`` seconds at most (a peer that died closes its sockets, so gloo usually fails
at once; a peer that hangs is caught by the timeout).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist


class CollectiveFailure(RuntimeError):
    """A collective failed or timed out: a peer rank died, hung, or diverged from this one."""


def env_world() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` as ``torchrun`` sets them; ``(0, 1, 0)`` outside ``torchrun``."""
    return (int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
            int(os.environ.get("LOCAL_RANK", 0)))


@dataclass(frozen=True)
class Dist:
    """Where this process sits in the job. ``world == 1``: no process group, collectives are no-ops."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    timeout: float = 1800.0

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes the run directory, evaluates and prints."""
        return self.rank == 0

    @property
    def device(self) -> torch.device:
        """Where collective buffers live: the local GPU under NCCL, else the CPU."""
        if self.active and dist.get_backend() == "nccl":
            return torch.device("cuda", self.local_rank)
        return torch.device("cpu")

    def _run(self, what: str, fn, *args):
        try:
            return fn(*args)
        except (RuntimeError, dist.DistError) as err:
            raise failure(self, what, err) from err

    def all_reduce(self, x: torch.Tensor, op: str = "sum") -> torch.Tensor:
        """Element-wise sum (or ``max``) of ``x`` over ranks; a new tensor on ``x``'s device."""
        if not self.active:
            return x.clone()
        buf = x.detach().to(self.device).clone()
        reduce_op = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX}[op]
        self._run(f"all_reduce({op})", dist.all_reduce, buf, reduce_op)
        return buf.to(x.device)

    def sum_floats(self, values: dict[str, float]) -> dict[str, float]:
        """Sum a dict of floats over ranks in one float64 all-reduce (keys must be the same on every rank)."""
        if not self.active or not values:
            return dict(values)
        keys = sorted(values)
        total = self.all_reduce(torch.tensor([float(values[k]) for k in keys], dtype=torch.float64,
                                             device="cpu"))
        return dict(zip(keys, total.tolist()))

    def any(self, flag: bool) -> bool:
        """True on every rank when it is true on any rank (a stop request, say)."""
        return bool(self.all_reduce(torch.tensor([int(flag)], device="cpu"), "max").item())

    def gather_rows(self, x: torch.Tensor) -> torch.Tensor:
        """Concatenate every rank's ``x`` ``[n_r, ...]`` along dim 0 in rank order; ``n_r`` may differ by
        rank."""
        if not self.active:
            return x.clone()
        rank = torch.tensor(self.rank, device="cpu")
        sizes = self.all_reduce(torch.nn.functional.one_hot(rank, self.world) * x.shape[0])
        width = int(sizes.max())
        padded = torch.zeros((width, *x.shape[1:]), dtype=x.dtype, device=self.device)
        padded[: x.shape[0]] = x.to(self.device)
        out = [torch.empty_like(padded) for _ in range(self.world)]
        self._run("all_gather", dist.all_gather, out, padded)
        return torch.cat([part[: int(n)] for part, n in zip(out, sizes.tolist())]).to(x.device)

    def gather_objects(self, obj) -> list:
        """Every rank's ``obj`` (picklable), in rank order."""
        if not self.active:
            return [obj]
        out = [None] * self.world
        self._run("all_gather_object", dist.all_gather_object, out, obj)
        return out

    def barrier(self) -> None:
        if self.active:
            self._run("barrier", dist.barrier)


SINGLE = Dist()
"""The one-process ``Dist``: every collective is the identity."""


def failure(d: Dist, what: str, err: BaseException) -> CollectiveFailure:
    """The one line a surviving rank prints when a collective fails."""
    first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
    return CollectiveFailure(f"rank {d.rank}: collective {what} failed or timed out (limit "
                             f"train.collective_timeout={d.timeout:g}s): a peer rank died or hung; "
                             f"see that rank's own error above (torchrun names it). Cause: {first}")


def is_collective_error(err: BaseException) -> bool:
    """Errors raised inside a collective that the helpers above did not wrap (DDP's gradient all-reduce)."""
    return isinstance(err, dist.DistError) or (isinstance(err, RuntimeError) and any(
        s in str(err) for s in ("Gloo", "gloo", "NCCL", "Connection closed", "Timed out", "timed out")))


def init(timeout: float, device: torch.device | None = None) -> Dist:
    """Join the ``torchrun`` job described by the environment (or return the single-process ``Dist``).

    The backend follows the run's device (``model.device``): NCCL on a GPU, each rank on its own
    (``LOCAL_RANK``), gloo on the CPU, also on a machine that has GPUs. Without ``device``: NCCL when CUDA is
    available."""
    rank, world, local_rank = env_world()
    if world <= 1:
        return Dist(timeout=timeout)
    if not dist.is_initialized():
        on_gpu = torch.cuda.is_available() if device is None else device.type == "cuda"
        backend = "nccl" if on_gpu else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local_rank if device is None or device.index is None else device.index)
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout))
    return Dist(rank=rank, world=world, local_rank=local_rank, timeout=timeout)


def shutdown(d: Dist) -> None:
    if d.active and dist.is_initialized():
        dist.destroy_process_group()


def shard(n: int, d: Dist) -> tuple[int, int]:
    """This rank's contiguous slice ``[lo, hi)`` of ``n`` items: sizes differ by at most one, the first
    ``n % world`` ranks taking one more (a refill round may leave some ranks with none)."""
    base, extra = divmod(n, d.world)
    lo = d.rank * base + min(d.rank, extra)
    return lo, lo + base + (d.rank < extra)
