"""Strong scaling of sharded curvature products over gloo on one machine, and their communication.

w local processes (2, and 4 with enough cores) with one thread each share the samples of one
model. In each of 5 interleaved rounds rank 0 first times the unsharded product alone (the others
wait at a barrier: the 1-process baseline, same processes, same moment), then all ranks time the
sharded product; the ratio is the median over the rounds of time(1 process) / time(w processes).
Cases:

* ReLU UFMs (10, 200, 512, 6) and (10, 100, 256, 4), full weight Hessian: compute-dominated
  (about 14 GEMMs of d × d × N/w per product, one all_reduce of P floats);
* ReLU UFM (10, 5, 32, 3): communication-dominated (tiny GEMMs; the all_reduce is the cost);
* deep linear UFM (10, 100, 256, 4): the structured path reduces S and MB_lᵀ once (O(L·d²) floats)
  and then products need no communication at all.

Run: ``python benchmarks/bench_distributed.py [--out docs/distributed.md]``.
"""

from __future__ import annotations

import argparse
import datetime
import multiprocessing as mp
import os
import socket
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import md_table  # noqa: E402

CASES = {
    "ReLU UFM (10, 200, 512, 6), full Hessian": dict(k=10, n=200, d=512, depth=6, activation="relu", reps=3),
    "ReLU UFM (10, 100, 256, 4), full Hessian": dict(k=10, n=100, d=256, depth=4, activation="relu", reps=12),
    "ReLU UFM (10, 5, 32, 3), full Hessian": dict(k=10, n=5, d=32, depth=3, activation="relu", reps=300),
    "linear UFM (10, 100, 256, 4), full Hessian": dict(k=10, n=100, d=256, depth=4, activation="linear", reps=100),
}
METRICS: dict[str, float] = {}


def _worker(rank: int, world: int, port: int, queue) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=120))
    import fastdnc as fd
    from fastdnc import distributed as D

    barrier = torch.distributed.barrier
    out = {}
    for name, c in CASES.items():
        model = fd.DeepUFM(c["k"], c["n"], c["d"], c["depth"], activation=c["activation"], dtype=torch.float32, seed=0)
        op = D.sharded_hessian(D.shard_model(model))
        whole = fd.hessian(model, include_features=False) if rank == 0 else None
        v = torch.randn(op.size, generator=torch.Generator().manual_seed(0))
        for _ in range(3):
            op @ v
            if whole is not None:
                whole @ v

        def timed(fn) -> float:
            t0 = time.perf_counter()
            for _ in range(c["reps"]):
                fn()
            return (time.perf_counter() - t0) / c["reps"]

        rounds = []
        for _ in range(5):  # interleaved: one process alone (the others wait), then all together
            barrier()
            t1 = timed(lambda: whole @ v) if rank == 0 else 0.0
            barrier()
            tw = timed(lambda: op @ v)
            rounds.append((t1 / tw, t1, tw))
        buf = torch.randn(op.size)
        reduce_t = []
        for _ in range(20):
            barrier()
            t0 = time.perf_counter()
            D.all_reduce_(buf)
            reduce_t.append(time.perf_counter() - t0)
        rounds.sort()
        per_product = 0 if isinstance(op, fd.curvature.LinearMSEHessian) else op.size
        out[name] = (*rounds[2], sorted(reduce_t)[10], per_product)
    if rank == 0:
        queue.put(out)
    torch.distributed.destroy_process_group()


def _run_world(world: int) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = [ctx.Process(target=_worker, args=(r, world, port, queue)) for r in range(world)]
    for p in procs:
        p.start()
    result = queue.get(timeout=900)
    for p in procs:
        p.join(60)
    return result


def rows() -> list[list[str]]:
    worlds = [2] + ([4] if (os.cpu_count() or 1) >= 4 else [])
    out = []
    for w in worlds:
        res = _run_world(w)
        for name in CASES:
            ratio, t1, t, red, per = res[name]
            METRICS[f"{name}/{w}"] = ratio
            if not per:
                kind = "— (every rank computes the whole product from the reduced S: no split, no traffic)"
            else:
                kind = f"{max(t - t1 / w, 0.0) / t:.0%}"
            out.append(
                [
                    name,
                    f"{w}",
                    f"{t1 * 1e3:.2f}",
                    f"{t * 1e3:.2f}",
                    f"{ratio:.2f}×",
                    f"{per:,} floats" if per else "0 (S, MBᵀ reduced once)",
                    f"{red * 1e3:.2f}",
                    kind,
                ]
            )
    return out


HEADER = [
    "product",
    "processes",
    "1 process ms",
    "w processes ms",
    "throughput ratio",
    "sent per product",
    "all_reduce of P floats ms (alone)",
    "time beyond a perfect split (communication, waiting)",
]


def targets() -> str:
    key = f"{next(iter(CASES))}/2"
    value = METRICS.get(key)
    status = "" if value is None else ("met" if value >= 1.6 else "**missed**")
    return md_table(
        ["target", "goal", "measured", "status"],
        [
            [
                "strong scaling, 2 processes, ReLU (10, 200, 512, 6) full Hessian (compute-dominated)",
                "≥ 1.6×",
                "not measured" if value is None else f"{value:.2f}×",
                status,
            ]
        ],
    )


def run() -> str:
    return md_table(HEADER, rows())


def page(table: str) -> str:
    return f"""# Distributed curvature (torch.distributed)

fastdnc shards the **samples** over the ranks of a `torch.distributed` process group (gloo on CPU,
NCCL on GPU) and builds the usual operators on each shard (`fastdnc/distributed.py`). The mean loss
over all N samples makes every operator the weighted sum Σ_r (n_r/N)·H_r, so unequal shards are
exact; decay terms are counted once.

```python
# torchrun --nproc-per-node 2 my_script.py
import torch, fastdnc as fd
from fastdnc import distributed as D

D.init()                                            # gloo; collectives time out (default 120 s)
model = fd.DeepUFM(10, 100, 256, 4, activation="relu", seed=0)   # same seed: same weights everywhere
local = D.shard_model(model)                        # this rank's columns of H_1
fd.train(local, 1000, 0.1)                          # data-parallel: one all_reduce of the gradient per step
H = D.sharded_hessian(local)                        # one all_reduce of P floats per product
top = fd.lanczos(H, k=20)                           # every rank in lockstep: identical results
Hl = D.sharded_layer_hessian(local, 2)              # linear MSE: the q × q input Gram is reduced once
nc = fd.collapse.streaming_feature_metrics(lambda: [(h, labels)], num_classes=10)  # two passes, reduced
```

From the command line: `torchrun --nproc-per-node 2 -m fastdnc spectrum --run-dir RUN --distributed`
(spell `--run-dir`: torchrun claims `--run`) and
`torchrun --nproc-per-node 2 -m fastdnc reproduce --preset real --dataset digits --distributed`.
Rank 0 writes the files; every rank computes the same numbers.

**Spectral methods** run on every rank in lockstep with the same seeded random streams (no
broadcast): the all-reduced products are bitwise identical on every rank, so are the Lanczos
bases, Ritz values, SLQ nodes and trace estimates. For a fixed world size the results are bitwise
reproducible (tested). A rank that dies makes the others raise `DistributedError` (naming the rank
and the operation) within the process group's timeout; nothing hangs (tested with 2 processes).

**Communication per product**: `ShardedOperator` sends one (P × k) all_reduce (O(P) floats per
vector); the deep linear MSE full Hessian reduces S = H_1H_1ᵀ/N and MB_lᵀ once (O(L·d²) floats) and
then sends nothing per product; linear MSE layer Hessians reduce their q × q input Gram factor once
(never a P × P matrix); explicit Gauss–Newton blocks (`to_dense`) are reduced once as P × P, the
size of the result. Data-parallel training sends one vector of all the gradients per step.

**Float32 training** under data parallelism is not bitwise equal to one process (the sums are
ordered differently); the float64 operators match one process to ≤ 1e-10 (tests/test_distributed.py,
2 and 3 processes, unequal shards).

## Scaling measured here

`python benchmarks/bench_distributed.py --out docs/distributed.md` (one thread per process, on a
machine with {os.cpu_count()} cores; float32; the 1-process baseline is timed by rank 0 alone,
interleaved with the w-process runs; median of 5 rounds):

{table}

{targets()}
"""


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    text = page(run())
    if a.out:
        from fastdnc.io import atomic_write_text

        atomic_write_text(a.out, text)
    print(text)
