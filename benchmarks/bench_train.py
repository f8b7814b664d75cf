"""Training throughput: fastdnc's trainer against a plain autograd + torch.optim loop, one run.

Linear and ReLU UFMs at K=4, d=64, n=10, L=5 (the issue's size), float64 and float32, full-batch
GD. Run: ``python benchmarks/bench_train.py``.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import command_run, matmul_peak, md_table, median_time  # noqa: E402

import fastdnc as fd  # noqa: E402

STEPS = 3000


def autograd_loop(model: fd.DeepUFM, steps: int) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        model.loss().backward()
        opt.step()


def flops_per_step(k: int, n: int, d: int, depth: int) -> int:
    """Matmul FLOPs of one step: forward, input-gradient and weight-gradient GEMMs."""
    big_n = k * n
    fwd = 2 * big_n * d * (d * (depth - 1) + k)
    return 3 * fwd  # backward = 2 × forward


def run(steps: int = STEPS) -> str:
    rows = []
    k, n, d, depth = 4, 10, 64, 5
    for dtype in (torch.float64, torch.float32):
        peak = matmul_peak(dtype)
        for act in ("linear", "relu"):
            m = fd.DeepUFM(k, n, d, depth, activation=act, dtype=dtype)
            fd.train(m, 100, 0.01, progress=False, log_at=[])
            t0 = time.perf_counter()
            fd.train(m, steps, 0.01, progress=False, log_at=[])
            ours = steps / (time.perf_counter() - t0)
            m2 = fd.DeepUFM(k, n, d, depth, activation=act, dtype=dtype)
            autograd_loop(m2, 100)
            t0 = time.perf_counter()
            autograd_loop(m2, steps)
            base = steps / (time.perf_counter() - t0)
            frac = ours * flops_per_step(k, n, d, depth) / peak
            rows.append(
                [
                    str(dtype).replace("torch.", ""),
                    act,
                    f"{ours:,.0f}",
                    f"{base:,.0f}",
                    f"{ours / base:.2f}×",
                    f"{frac:.1%}",
                ]
            )
    return md_table(
        ["dtype", "activation", "fastdnc steps/s", "autograd+torch.optim steps/s", "speed-up", "% of matmul peak"], rows
    )


def gemm_threads() -> str:
    """Speed-up of a second intra-op thread on GEMMs of a few sizes (the basis of fastdnc._threads)."""
    rows = []
    before = torch.get_num_threads()
    for m, k, n in ((64, 64, 40), (128, 128, 128), (256, 256, 256), (512, 512, 512)):
        a, b = torch.randn(m, k, dtype=torch.float64), torch.randn(k, n, dtype=torch.float64)
        times = {}
        for threads in (1, 2):
            torch.set_num_threads(threads)
            times[threads] = median_time(lambda: a @ b)
        rows.append([f"{m} × {k} × {n}", f"{2 * m * k * n:.1e}", f"{times[1] / times[2]:.2f}×"])
    torch.set_num_threads(before)
    return md_table(["GEMM", "flops", "2 threads vs 1 (alone)"], rows)


def under_load(steps: int = 1000) -> str:
    """Training steps/s of the ReLU UFM above alone and beside a process that keeps one core busy,
    with torch's two threads and with fastdnc's choice (one thread at this size)."""

    def rate(threads):
        m = fd.DeepUFM(4, 10, 64, 5, activation="relu")
        fd.train(m, 50, 0.01, progress=False, log_at=[], threads=threads)
        t0 = time.perf_counter()
        fd.train(m, steps, 0.01, progress=False, log_at=[], threads=threads)
        return steps / (time.perf_counter() - t0)

    alone = {t: rate(t) for t in (2, None)}
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        loaded = {t: rate(t) for t in (2, None)}
    finally:
        busy.kill()
        busy.wait()
    rows = [
        [label, f"{alone[t]:,.0f}", f"{loaded[t]:,.0f}", f"{alone[t] / loaded[t]:.1f}×"]
        for t, label in ((2, "2 threads (torch's default here)"), (None, "fastdnc's choice (threads=None)"))
    ]
    return md_table(["threads", "steps/s alone", "steps/s beside a busy core", "slow-down under load"], rows)


# What issue 24 measured slowing down 3.6-575x beside a busy core; each runs in a fresh process.
# A snippet prints its own seconds (imports and data loading excluded); a command is timed whole.
_DIGITS_MLP = """
import torch, fastdnc as fd
from fastdnc.data import load_dataset
d = load_dataset("digits"); g = torch.Generator().manual_seed(0)
x, y = d.inputs.reshape(len(d.labels), -1).float()[:600], d.labels[:600]
net = torch.nn.Sequential(torch.nn.Linear(64, 6), torch.nn.Tanh(), torch.nn.Linear(6, 10))
"""
LOADED_WORKLOADS = {
    "`fastdnc reproduce --preset real --dataset digits` (the embedded real-data default)": [
        "reproduce",
        "--preset",
        "real",
        "--dataset",
        "digits",
    ],
    "`fastdnc reproduce --preset real --dataset mnist` (the offline MNIST digits)": [
        "reproduce",
        "--preset",
        "real",
        "--dataset",
        "mnist",
    ],
    "full Hessian of a ReLU UFM (K=4, L=4, d=32), top 20 by Lanczos": """
import time, fastdnc as fd
m = fd.DeepUFM(4, 10, 32, 4, activation="relu", seed=0)
t0 = time.perf_counter(); fd.lanczos(fd.hessian(m), k=20); print(time.perf_counter() - t0)
""",
    "`fastdnc.compat.pyhessian`: `eigenvalues(top_n=3)` of an MLP (460 parameters, 600 digits)": _DIGITS_MLP
    + """
import time
from fastdnc.compat.pyhessian import hessian
t0 = time.perf_counter()
hessian(net, torch.nn.CrossEntropyLoss(), data=(x, y), cuda=False).eigenvalues(top_n=3)
print(time.perf_counter() - t0)
""",
}


def _seconds(work, again: bool = False) -> float:
    if isinstance(work, str):
        out = subprocess.run([sys.executable, "-c", work], check=True, capture_output=True, text=True).stdout
        return float(out.strip().splitlines()[-1])
    return command_run(work, again)[0]


def loaded_operations() -> str:
    """Each workload of :data:`LOADED_WORKLOADS` alone and beside a process that keeps one core busy,
    with fastdnc's thread choice (the default): the goal is at most 2× slower under load."""
    rows = []
    for name, work in LOADED_WORKLOADS.items():
        alone = _seconds(work)
        busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        try:
            time.sleep(0.5)
            loaded = _seconds(work, again=True)
        finally:
            busy.kill()
            busy.wait()
        ratio = loaded / alone
        rows.append([name, f"{alone:.2f} s", f"{loaded:.2f} s", f"{ratio:.2f}×", "met" if ratio <= 2 else "**missed**"])
    return md_table(["operation", "alone", "beside a busy core", "slow-down", "goal ≤ 2×"], rows)


if __name__ == "__main__":
    print(run())
    print(gemm_threads())
    print(under_load())
    print(loaded_operations())


def quick_preset_budget() -> str:
    """Wall time of the main job, ``fastdnc reproduce --preset quick`` in a fresh process and a fresh
    folder, alone and beside a process that keeps one core busy (issue 15's budget: 60 s / 120 s)."""
    import tempfile

    def wall() -> float:
        with tempfile.TemporaryDirectory() as out:
            t0 = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "fastdnc", "reproduce", "--preset", "quick", "--out", out, "--quiet"], check=True
            )
            return time.perf_counter() - t0

    alone = wall()
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        loaded = wall()
    finally:
        busy.kill()
        busy.wait()
    rows = [
        ["alone", f"{alone:.1f} s", "≤ 60 s", "met" if alone <= 60 else "**missed**"],
        ["beside a busy core", f"{loaded:.1f} s", "≤ 120 s", "met" if loaded <= 120 else "**missed**"],
    ]
    return md_table(["`fastdnc reproduce --preset quick` (fresh folder)", "wall time", "goal", "status"], rows)
