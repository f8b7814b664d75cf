"""fastdnc.bench.world: a two-process gloo group whose rank 0 is the test process."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.distributed as dist

from fastdnc import _comm
from fastdnc.bench.cases import _sharded_product, _ufm
from fastdnc.bench.world import World
from fastdnc.curvature.full import hessian
from fastdnc.distributed import DistributedError


def _fails_on_other_ranks():
    if dist.get_rank() > 0:
        raise ValueError("this rank cannot build its product")
    return _sharded_product("tiny", torch.float64)


def test_a_world_computes_the_sharded_product_on_every_rank_and_leaves_no_group_or_process():
    world = World(functools.partial(_sharded_product, "tiny", torch.float64), world=2, threads=1)
    assert not _comm.initialized()  # nothing starts before the first product
    try:
        first, second = world(), world()
        procs = list(world._procs)
        assert len(procs) == 1 and procs[0].is_alive()
    finally:
        world.close()
    op = hessian(_ufm("tiny", torch.float64))
    v = torch.randn(op.size, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    want = op @ v
    for got in (first, second):
        assert float((got - want).norm() / want.norm()) <= 1e-12
    assert not _comm.initialized() and not procs[0].is_alive() and procs[0].exitcode == 0
    world.close()  # closing twice is harmless


def test_a_rank_that_fails_to_build_is_an_error_on_rank_0_not_a_wait():
    world = World(_fails_on_other_ranks, world=2, threads=1, timeout_s=20.0)
    with pytest.raises(DistributedError):
        world()
    assert not _comm.initialized() and not world._procs


def test_a_world_needs_two_processes():
    with pytest.raises(ValueError, match="at least 2"):
        World(_fails_on_other_ranks, world=1)
