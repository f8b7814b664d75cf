"""The second hostile pass, rerun: every case that issue 22 reported, with what fastdnc does now.

Each case is run as a user would meet it: the curvature cases in this process against dense autograd
double backward of the model as it is (hooks and patched code run); the run-folder, file and message
cases through the command line in child processes; the memory cases in a child whose peak resident
memory growth (``VmHWM``, reset before the call) is measured. Writes a Markdown page::

    python benchmarks/hostile_pass.py --out docs/hostile-pass.md   # about 5 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from common import md_table
from torch import nn
from torch.nn.utils import prune

import fastdnc as fd
from fastdnc.compat import curvlinops
from fastdnc.curvature.kronecker import Factor

# the tests' builders of hostile inputs and their small network, shared with this script
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "curvature")]
from security.test_hostile_files import checkpoint_bytes, rewrite_zip  # noqa: E402
from test_module_operator import Net  # noqa: E402

LOSS = nn.CrossEntropyLoss()
ENV = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
TRAIN = ["train", "--steps", "40", "--width", "6", "--depth", "2", "--quiet"]
LONG = ["train", "--steps", "5000000", "--width", "6", "--depth", "2", "--checkpoint-every", "4000000", "--quiet"]


# ----------------------------------------------------------------------------------- curvature
class Listed(Net):
    """Uses l1's weight through a plain Python list (outside named_parameters' substitution)."""

    def __init__(self) -> None:
        super().__init__()
        self.ws = [self.l1.weight]

    def forward(self, x):
        return self.l2(torch.relu(x @ self.ws[0].T + self.l1.bias))


class WithBuffer(Net):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("shift", torch.zeros(6))

    def forward(self, x):
        return self.l2(torch.tanh(self.l1(x) + self.shift))


def models() -> dict[str, Callable[[], nn.Module]]:
    def seeded(make):
        def build():
            torch.manual_seed(0)
            return make().double()

        return build

    return {
        "sequential": seeded(lambda: nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 3))),
        "own": seeded(Net),
        "listed": seeded(Listed),
        "buffer": seeded(WithBuffer),
    }


def batch():
    g = torch.Generator().manual_seed(1)
    return torch.randn(20, 5, generator=g, dtype=torch.float64), torch.randint(0, 3, (20,), generator=g)


def autograd_dense(model: nn.Module, x, y, ggn: bool) -> torch.Tensor:
    """The dense Hessian (or GGN) of LOSS(model(x), y) over model.parameters() by plain autograd on
    the model as it is."""
    params = list(model.parameters())
    flat = lambda ts: torch.cat([t.reshape(-1) for t in ts])  # noqa: E731
    z = model(x)
    if ggn:
        zf = z.reshape(-1)
        jac = torch.stack([flat(torch.autograd.grad(zf[i], params, retain_graph=True)) for i in range(zf.numel())])
        zz = z.detach().requires_grad_()
        gz = torch.autograd.grad(LOSS(zz, y), zz, create_graph=True)[0].reshape(-1)
        hz = torch.stack([torch.autograd.grad(gz[i], zz, retain_graph=True)[0].reshape(-1) for i in range(gz.numel())])
        return jac.T @ hz @ jac
    g = flat(torch.autograd.grad(LOSS(z, y), params, create_graph=True))
    return torch.stack(
        [
            flat(torch.autograd.grad(g[i], params, retain_graph=True, allow_unused=True, materialize_grads=True))
            for i in range(g.numel())
        ]
    )


def _global_hook(m):
    return nn.modules.module.register_module_forward_hook(
        lambda mod, i, o: o * 1.5 if isinstance(mod, nn.Linear) else None
    )


def _patch_class(m):
    original = nn.Linear.forward
    nn.Linear.forward = lambda self, t: nn.functional.linear(t, 2 * self.weight, self.bias)  # type: ignore[method-assign]
    return type("Undo", (), {"remove": staticmethod(lambda: setattr(nn.Linear, "forward", original))})()


# case: (model, change before building, change after the first product)
CURVATURE: dict[str, tuple[str, Callable | None, Callable | None]] = {
    "forward hook": ("sequential", lambda m: m[0].register_forward_hook(lambda mod, i, o: o * 2), None),
    "forward pre-hook": ("sequential", lambda m: m[2].register_forward_pre_hook(lambda mod, i: (i[0] * 0.7,)), None),
    "global module forward hook": ("sequential", _global_hook, None),
    "torch.nn.utils.prune": ("sequential", lambda m: prune.random_unstructured(m[0], "weight", 0.5), None),
    "patched Linear.forward (class)": ("sequential", _patch_class, None),
    "patched forward (instance)": (
        "sequential",
        lambda m: setattr(m[0], "forward", lambda x: nn.functional.linear(x, 2 * m[0].weight, m[0].bias)),
        None,
    ),
    "hook added after the first product": (
        "sequential",
        None,
        lambda m: m[0].register_forward_hook(lambda mod, i, o: o * 2),
    ),
    "p.data.mul_(1.7) after the first product (fused)": ("sequential", None, lambda m: m[0].weight.data.mul_(1.7)),
    "p.data.mul_(1.7) after the first product (generic)": ("own", None, lambda m: m[0].weight.data.mul_(1.7)),
    "buffer changed after the first product": ("buffer", None, lambda m: m.shift.data.add_(1.0)),
    "parameter held in a plain list": ("listed", None, None),
}

BUILDERS = {
    "HessianOperator": lambda m, x, y: fd.HessianOperator(m, LOSS, (x, y)),
    "GGNOperator": lambda m, x, y: fd.GGNOperator(m, LOSS, (x, y)),
    "compat.curvlinops": lambda m, x, y: curvlinops.HessianLinearOperator(m, LOSS, list(m.parameters()), [(x, y)]),
}


def first_line(text: str, limit: int = 170) -> str:
    line = " ".join(str(text).strip().splitlines()[0].split()) if str(text).strip() else "(nothing)"
    line = line.replace("|", "\\|")
    return line if len(line) <= limit else line[: limit - 1] + "…"


def curvature_rows() -> list[list[str]]:
    rows = []
    x, y = batch()
    for case, (kind, before, after) in CURVATURE.items():
        for name, build in BUILDERS.items():
            model = models()[kind]()
            handle = before(model) if before else None
            try:
                op = build(model, x, y)
                op @ torch.ones(op.size, dtype=torch.float64)  # fills the caches
                handle = after(model) if after else handle
                dense = op.to_dense()
                ref = autograd_dense(model, x, y, ggn=name == "GGNOperator")
                err = float((dense - ref).norm() / ref.norm())
                fused = getattr(op, "fused", None)
                path = "fused" if fused else "generic"
                result = f"rel {err:.1e} ({path} path)"
            except Exception as e:  # noqa: BLE001 - a refusal is an observed behaviour
                result = f"refused: {type(e).__name__}: {first_line(str(e), 130)}"
            finally:
                if hasattr(handle, "remove"):
                    handle.remove()
            rows.append([case, name, result])
    return rows


def api_message_rows() -> list[list[str]]:
    """Messages of the operator API: non-scalar loss, NaN data and weights, old weight_norm, float16."""
    x, y = batch()
    cases: dict[str, Callable[[], object]] = {}

    def nonscalar():
        fd.HessianOperator(models()["own"](), lambda z, t: z.sum(1), (x, y))

    def nan_data():
        bad = x.clone()
        bad[0, 0] = float("nan")
        fd.HessianOperator(models()["own"](), LOSS, (bad, y))

    def nan_weight():
        m = models()["own"]()
        m.l1.weight.data[0, 0] = float("inf")
        fd.HessianOperator(m, LOSS, (x, y))

    def old_weight_norm():
        m = models()["sequential"]()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            nn.utils.weight_norm(m[0])
        fd.HessianOperator(m, LOSS, (x, y))

    def half(dtype):
        def run():
            m = models()["sequential"]().to(dtype)
            op = fd.HessianOperator(m, LOSS, (x.to(dtype), y), check_deterministic=False)
            ref = autograd_dense(models()["sequential"](), x, y, ggn=False)
            err = float((op.to_dense().double() - ref).norm() / ref.norm())
            return f"accepted on the {'fused' if op.fused else 'generic'} path: rel {err:.1e} against float64 autograd"

        return run

    def eigenvector_top():
        op = fd.curvature.KroneckerOperator(Factor.dense(torch.eye(30)), Factor.dense(torch.eye(40)))
        op.eigh()[1].top(500_000)

    def infinite():
        import itertools

        fd.HessianOperator(models()["own"](), LOSS, itertools.cycle([(x, y)]))

    cases = {
        "non-scalar loss (reduction per sample)": nonscalar,
        "NaN in the data": nan_data,
        "Inf in a weight": nan_weight,
        "old-style nn.utils.weight_norm": old_weight_norm,
        "float16 model": half(torch.float16),
        "bfloat16 model": half(torch.bfloat16),
        "infinite data iterable (itertools.cycle)": infinite,
        "lazy eigenvectors .top(500000) of a 1,200-parameter Kronecker operator": eigenvector_top,
    }
    rows = []
    for case, run in cases.items():
        try:
            out = run()
            rows.append([case, str(out)])
        except Exception as e:  # noqa: BLE001
            rows.append([case, f"refused: {type(e).__name__}: {first_line(str(e))}"])
    return rows


# ----------------------------------------------------------------------------------- command line
def cli(*args: str, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fastdnc", *args], capture_output=True, text=True, timeout=timeout, env=ENV, **kw
    )


def outcome(proc: subprocess.CompletedProcess) -> str:
    err = proc.stderr.strip().splitlines()
    lines = f"{len(err)} line{'s' if len(err) != 1 else ''}"
    return f"exit {proc.returncode}, stderr {lines}: {first_line(proc.stderr) if err else '—'}"


def _wait_for(path: Path, proc: subprocess.Popen, seconds: float = 60.0) -> None:
    t0 = time.perf_counter()
    while not path.exists():
        if proc.poll() is not None or time.perf_counter() - t0 > seconds:
            raise RuntimeError(f"{path} did not appear")
        time.sleep(0.02)


def run_folder_rows(tmp: Path) -> list[list[str]]:
    rows = []
    run = tmp / "run"
    cli(*TRAIN, "--out", str(run))
    recorded = json.loads((run / "config.json").read_text())
    (run / "config.json").unlink()
    proc = cli(*TRAIN, "--loss", "ce", "--out", str(run))
    rows.append(
        [
            "train with other settings on a folder whose config.json is missing",
            f"{outcome(proc)}; config.json written: {(run / 'config.json').exists()}",
        ]
    )
    proc = cli("spectrum", "--run", str(run), "--quiet", "-k", "4")
    loss = json.loads((run / "spectrum.json").read_text())["loss"]
    rows.append(["spectrum --run on that folder", f"{outcome(proc)}; Hessian of the checkpoint's loss: {loss}"])
    (run / "config.json").write_text(json.dumps({**recorded, "loss": "ce"}))
    rows.append(["hand-edited config.json (loss mse → ce)", outcome(cli("spectrum", "--run", str(run), "--quiet"))])
    (run / "config.json").write_text(json.dumps(recorded))

    for lost in ("history.json", "metrics.json"):
        (run / lost).unlink()
    proc = cli(*TRAIN, "--out", str(run))
    present = [n for n in ("history.json", "metrics.json") if (run / n).exists()]
    rows.append(
        ["killed between the final checkpoint and history/metrics; rerun", f"{outcome(proc)}; repaired: {present}"]
    )

    foreign = tmp / "foreign"
    foreign.mkdir()
    for name in ("config.json", "metrics.json", "history.json"):
        (foreign / name).write_text('{"mine": true}')
    proc = cli(*TRAIN, "--out", str(foreign))
    kept = all(json.loads((foreign / n).read_text()) == {"mine": True} for n in ("config.json", "metrics.json"))
    rows.append(["foreign config/metrics/history in --out", f"{outcome(proc)}; the user's files kept: {kept}"])

    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True).stdout)
    in_flight = run / f".metrics.json.{alive.pid}-abcdefgh.tmp"
    stale = run / f".history.json.{dead}-zzzzzzzz.tmp"
    for p in (in_flight, stale):
        p.write_bytes(b"half")
    cli(*TRAIN, "--steps", "80", "--out", str(run))
    alive.kill()
    rows.append(
        [
            "another process's in-flight temporary / a dead writer's temporary",
            f"kept: {in_flight.exists()} / removed: {not stale.exists()}",
        ]
    )

    shared = tmp / "shared"
    shared.mkdir()
    (shared / "notes.txt").write_text("the user's")
    first = subprocess.Popen(
        [sys.executable, "-m", "fastdnc", *LONG, "--out", str(shared)], stderr=subprocess.PIPE, text=True, env=ENV
    )
    try:
        _wait_for(shared / "config.json", first)
        rows.append(["a second train --out SAME while the first runs", outcome(cli(*TRAIN, "--out", str(shared)))])
        first.send_signal(signal.SIGINT)
        _, err = first.communicate(timeout=60)
    finally:
        first.kill()
    left = sorted(p.name for p in shared.iterdir())
    rows.append(
        [
            "Ctrl-C of the first before its first checkpoint",
            f"exit {first.returncode}: {first_line(err)}; left in the folder: {left}",
        ]
    )

    zero = tmp / "zero"
    proc = cli(*TRAIN[:2], "0", *TRAIN[3:], "--out", str(zero))
    rows.append(
        ["--steps 0", f"{outcome(proc)}; files: {sorted(p.name for p in zero.iterdir()) if zero.exists() else []}"]
    )
    for flags, case in (
        (["--threads", "10000"], "--threads 10000 (a 1-second job)"),
        (["--out", str(tmp / ("a" * 300))], "--out name of 300 bytes"),
        (["--seed", "99999999999999999999999"], "--seed 99999999999999999999999"),
    ):
        args = [*TRAIN, *flags] if "--out" in flags else [*TRAIN, *flags, "--out", str(tmp / "t")]
        t0 = time.perf_counter()
        proc = cli(*args)
        rows.append([case, f"{outcome(proc)} ({time.perf_counter() - t0:.1f} s)"])

    deep = tmp / "deep"
    cli(*TRAIN, "--out", str(deep))
    (deep / "config.json").write_text("[" * 200_000 + "]" * 200_000)
    rows.append(["config.json nested 200,000 deep; spectrum --run", outcome(cli("spectrum", "--run", str(deep)))])

    nan = tmp / "nan"
    cli(*TRAIN, "--out", str(nan))
    ck = torch.load(nan / "checkpoint.pt", weights_only=True)  # written by this script's own run
    first_key = next(iter(ck["model"]))
    ck["model"][first_key].view(-1)[0] = float("nan")
    torch.save(ck, nan / "checkpoint.pt")
    rows.append(["a checkpoint holding NaN; resume", outcome(cli(*TRAIN[:2], "80", *TRAIN[3:], "--out", str(nan)))])
    return rows


def distributed_row(tmp: Path, runs: int) -> list[str]:
    import shutil

    run = tmp / "dist"
    cli(*TRAIN[:2], "30", *TRAIN[3:], "--out", str(run))
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
    cmd = [torchrun, "--nproc-per-node", "2", "-m", "fastdnc", "spectrum", "--run-dir", str(run), "--distributed"]
    codes, aborts = [], 0
    for _ in range(runs):
        proc = subprocess.run([*cmd, "--quiet", "-k", "4"], capture_output=True, text=True, timeout=180, env=ENV)
        codes.append(proc.returncode)
        aborts += "terminate called" in proc.stderr
    counts = {c: codes.count(c) for c in sorted(set(codes))}
    return [
        f"torchrun --nproc-per-node 2 -m fastdnc spectrum --run-dir RUN --distributed, {runs} times",
        f"exit codes {counts}; 'terminate called' in {aborts} runs",
    ]


# ----------------------------------------------------------------------------------- memory
CHILD = textwrap.dedent(
    """
    import json, sys, time
    import numpy, torch, fastdnc, fastdnc.training, fastdnc.cli.commands
    def kb(field):
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith(field))
    {setup}
    open("/proc/self/clear_refs", "w").write("5")
    before = kb("VmRSS")
    error = None
    try:
        {call}
    except BaseException as e:
        error = f"{{type(e).__name__}}: {{e}}"
    print(json.dumps({{"error": error, "growth_mb": (kb("VmHWM") - before) / 1024}}))
    """
)


def child(call: str, setup: str = "") -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", CHILD.format(setup=setup, call=call)],
        capture_output=True,
        text=True,
        timeout=300,
        env=ENV,
    )
    lines = proc.stdout.strip().splitlines()
    if proc.returncode or not lines:
        return {"error": f"child exited {proc.returncode}: {first_line(proc.stderr)}", "growth_mb": float("nan")}
    res = json.loads(lines[-1])
    res["error"] = res["error"] or proc.stderr.strip() or None  # the command line's one-line message
    return res


def deflate_bomb(path: Path, mib: int) -> None:
    """A checkpoint whose one tensor record declares ``mib`` MiB and is stored deflated (zeros)."""
    rewrite_zip(
        checkpoint_bytes(model={"w": torch.zeros(10, dtype=torch.uint8)}),
        path,
        records={"data/0": lambda: (bytes(2**20) for _ in range(mib))},
        pickle_edit=lambda p: p.replace(b"K\x0a", b"J" + struct.pack("<i", mib * 2**20)),  # 10 → mib MiB
        deflate=("data/0",),
    )


def memory_rows(tmp: Path) -> list[list[str]]:
    bomb, memo = tmp / "bomb.ckpt", tmp / "memo.ckpt"
    deflate_bomb(bomb, 2000)
    memo.write_bytes(checkpoint_bytes(history={"step": [1] * 2500, "note": ["x" * 2**20] * 2500}))
    rows = []
    for case, path in (
        ("checkpoint: a tensor record deflated from 2,000 MiB", bomb),
        ("checkpoint: history of one 1 MiB string referenced 2,500 times", memo),
    ):
        res = child(f"fastdnc.load_checkpoint({str(path)!r}, fastdnc.DeepUFM(3, 2, 4, 2))")
        size, growth = f"{path.stat().st_size / 2**20:.1f} MiB", f"{res['growth_mb']:.0f} MiB"
        rows.append([case, size, growth, first_line(res["error"] or "loaded")])
    run = tmp / "sparse"
    cli(*TRAIN, "--out", str(run))
    (run / "config.json").unlink()
    with open(run / "config.json", "wb") as f:
        f.truncate(3 * 2**30)
    res = child(f"fastdnc.cli.main(['spectrum', '--run', {str(run)!r}, '--quiet'])")
    rows.append(
        [
            "a sparse 3 GiB config.json; spectrum --run",
            "3,072 MiB (sparse)",
            f"{res['growth_mb']:.0f} MiB",
            first_line(res["error"]),
        ]
    )

    ident = (
        "class Identity(fastdnc.curvature.operator.CurvatureOperator):\n"
        "    def _matmat(self, v):\n        return v\n"
        "op = Identity(10**6, torch.float64, 'cpu')"
    )
    for case, call in (
        ("fd.lanczos(k=20,000) at P = 10⁶", "fastdnc.lanczos(op, k=20_000)"),
        ("fd.spectral_density(steps=5,000) (SLQ) at P = 10⁶", "fastdnc.spectral_density(op, steps=5000)"),
        ("Hutch++ with 30,000 probes at P = 10⁶", "fastdnc.spectral.hutchpp_trace(op, 30_000)"),
        (
            "to_dense of a P = 22,500 operator under ulimit -v (+2 GiB)",
            "fastdnc.curvature.operator.CurvatureOperator.to_dense(op2)",
        ),
    ):
        setup = ident
        if "ulimit" in case:
            setup = (
                "import resource\nfrom fastdnc import _memory\nfrom fastdnc.curvature.operator import DenseOperator\n"
                "size = _memory.status_field(_memory.PROC / 'self' / 'status', 'VmSize', 1024)\n"
                "resource.setrlimit(resource.RLIMIT_AS, (size + 2 * 2**30, resource.RLIM_INFINITY))\n"
                "op2 = DenseOperator(torch.eye(3, dtype=torch.float64)); op2.size = 22_500"
            )
        res = child(call, setup=setup)
        rows.append([case, "—", f"{res['growth_mb']:.0f} MiB", first_line(res["error"] or "ran")])
    return rows


def cgroup_rows(tmp: Path) -> list[list[str]]:
    """train --width 9000 and a 3.8 GiB to_dense in a fresh 2 GiB memory cgroup (v1; root only)."""
    import uuid

    base = Path("/sys/fs/cgroup/memory")
    folder = base / f"fastdnc-hostile-{uuid.uuid4().hex[:8]}"
    try:
        folder.mkdir()
        (folder / "memory.limit_in_bytes").write_text(str(2 * 2**30))
    except OSError as e:
        return [["in a 2 GiB memory cgroup", f"not run here: cannot make a cgroup v1 ({e.strerror})"]]
    join = f"open('{folder}/cgroup.procs', 'w').write(str(__import__('os').getpid()))"
    calls = {
        "train --width 9000 in a 2 GiB memory cgroup": "import sys\nfrom fastdnc.cli import main\n"
        f"sys.exit(main(['train', '--width', '9000', '--steps', '5', '--quiet', '--out', {str(tmp / 'wide')!r}]))",
        "to_dense of a 3.8 GiB operator in a 2 GiB memory cgroup": "import torch\n"
        "from fastdnc.curvature.operator import CurvatureOperator, DenseOperator\n"
        "op = DenseOperator(torch.eye(3, dtype=torch.float64)); op.size = 22_500\n"
        "CurvatureOperator.to_dense(op)",
    }
    rows = []
    try:
        for case, body in calls.items():
            proc = subprocess.run([sys.executable, "-c", f"{join}\n{body}"], capture_output=True, text=True, env=ENV)
            killed = " (killed by the OOM killer)" if proc.returncode == -9 else ""
            rows.append([case, f"exit {proc.returncode}{killed}: {first_line(proc.stderr.strip().splitlines()[-1])}"])
    finally:
        folder.rmdir()
    return rows


def spectrum_k_row(tmp: Path) -> list[str]:
    run = tmp / "k"
    cli("train", "--steps", "5", "--width", "600", "--depth", "3", "--n-per-class", "50", "--quiet", "--out", str(run))
    proc = cli("spectrum", "--run", str(run), "-k", "1000000", "--quiet")
    return ["spectrum -k 1000000 of a width-600, depth-3 UFM (P = 360,000)", outcome(proc)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/hostile-pass.md")
    parser.add_argument("--distributed-runs", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        curv = curvature_rows()
        api = api_message_rows()
        folders = run_folder_rows(tmp)
        memory = memory_rows(tmp)
        folders.append(spectrum_k_row(tmp))
        folders += cgroup_rows(tmp)
        dist = distributed_row(tmp, args.distributed_runs)
        took = time.perf_counter() - t0
        hide = lambda rows: [[str(c).replace(str(tmp), "TMP") for c in r] for r in rows]  # noqa: E731
        curv, api, folders, memory, distributed = map(hide, (curv, api, folders, memory, [dist]))
    page = [
        "# The hostile pass, rerun",
        "",
        "Generated by `python benchmarks/hostile_pass.py --out docs/hostile-pass.md` "
        f"({took:.0f} s on this machine). Every case that the second hostile pass (issue 22) reported, "
        "run again as a user meets it; nothing on this page is typed by hand.",
        "",
        "## Curvature products against autograd double backward",
        "",
        "The model is Linear(5, 6)–ReLU–Linear(6, 3) in float64 with cross-entropy on 20 samples: an "
        "`nn.Sequential` (eligible for the fused R-op path) or the same layers in a module of the user's "
        "own (the generic path). The reference is the dense Hessian (GGN for `GGNOperator`) by plain "
        "autograd of the model as it is, hooks and patched code included; *rel* is the relative "
        "Frobenius error of `to_dense()` after one product has filled the caches and the change (if "
        "any) has been made.",
        "",
        md_table(["case", "operator", "observed"], curv),
        "",
        "## Operator inputs",
        "",
        md_table(["case", "observed"], api),
        "",
        "## Run folders and the command line",
        "",
        md_table(["case", "observed"], folders),
        "",
        "## Memory bounded by the input",
        "",
        "Peak resident memory growth of a child process during the call (`VmHWM`, reset before it).",
        "",
        md_table(["case", "file", "peak growth", "observed"], memory),
        "",
        "## Distributed exit",
        "",
        md_table(["command", "observed"], distributed),
        "",
    ]
    Path(args.out).write_text("\n".join(page))
    print(f"wrote {args.out} in {took:.0f} s")


if __name__ == "__main__":
    main()
