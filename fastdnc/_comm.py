"""Process-group primitives: rank, world size, all-reduce and agreement checks (no-ops in a single
process). Training, the collapse metrics and the sharded operators share them; nothing here knows
about models or operators (:mod:`fastdnc.distributed` builds on it)."""

from __future__ import annotations

import atexit
import datetime
import os

import torch
import torch.distributed as dist


class DistributedError(RuntimeError):
    """A collective failed: a peer died, hung past the timeout, or the group is misconfigured."""


def initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if initialized() else 1


def init(backend: str = "gloo", timeout_s: float = 120.0) -> bool:
    """Join the process group that ``torchrun`` describes (``WORLD_SIZE`` > 1 in the environment);
    returns whether this is a multi-process run. Collectives fail after ``timeout_s``. The group is
    left again by :func:`shutdown`, which the command line calls on success, error and Ctrl-C, and
    which runs at interpreter exit for library callers who do not."""
    if initialized():
        return world_size() > 1
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    atexit.register(shutdown, False)
    return True


def shutdown(success: bool = True) -> None:
    """Leave the process group, if one is initialised (a no-op otherwise): after a barrier when this
    rank succeeded (so that no rank closes its connections while another still reads its last
    message), without one after an error (a peer may be gone). A group left to interpreter exit
    makes gloo's threads meet finalisation: "terminate called without an active exception"."""
    if not initialized():
        return
    try:
        if success and world_size() > 1:
            dist.barrier()
    except Exception:  # noqa: BLE001 - a peer that failed has left already: nothing to wait for
        pass
    finally:
        dist.destroy_process_group()


def all_reduce_(tensor: torch.Tensor, what: str = "all_reduce", op: str = "sum") -> torch.Tensor:
    """Reduce ``tensor`` over all ranks in place (``op``: ``"sum"`` or ``"max"``; a no-op in a
    single process)."""
    if not initialized() or world_size() == 1:
        return tensor
    try:
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    except Exception as e:  # noqa: BLE001 - gloo raises RuntimeError subclasses of several kinds
        raise DistributedError(
            f"{what} failed on rank {rank()} of {world_size()} (a peer process died, hung past "
            f"the timeout, or the group is misconfigured): {e}"
        ) from e
    return tensor


def agree(values: list[int], what: str, error: BaseException | None = None) -> None:
    """Check that every rank holds the same integers ``values`` (e.g. the step a checkpoint resumes
    from and a hash of its configuration) before the ranks enter a loop of collectives: one
    collective, reached by every rank even when this one failed (``error``), so that no rank is
    left waiting and gloo never aborts on mismatched message sizes. Raises
    :class:`DistributedError` on every rank when a rank failed or the values differ."""
    if not initialized() or world_size() == 1:
        if error is not None:
            raise error
        return
    own = torch.tensor([int(error is not None)] + values + [-v for v in values], dtype=torch.int64)
    both = all_reduce_(own.clone(), what, op="max")
    failed, n = int(both[0]), len(values)
    if failed:
        if error is not None:
            raise DistributedError(f"rank {rank()} of {world_size()} failed {what}: {error}") from error
        raise DistributedError(f"another rank failed {what} (its own message says why); rank {rank()} stops too")
    high, low = both[1 : 1 + n].tolist(), [-v for v in both[1 + n :].tolist()]
    if high != low:
        raise DistributedError(
            f"the ranks disagree on {what}: rank {rank()} has {values}, the ranks span "
            f"{list(zip(low, high))} (min, max); give every rank the same checkpoints "
            "(written by one run) and the same settings, or start afresh with resume=False"
        )


def global_count(local: int) -> int:
    """Σ over ranks of ``local`` (e.g. the sample counts of the shards)."""
    t = torch.tensor([float(local)], dtype=torch.float64)
    return int(all_reduce_(t, "counting the samples").item())
