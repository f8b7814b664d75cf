"""Work that cannot fit is refused before it allocates, with the estimate and a way out."""

from __future__ import annotations

import pytest
import torch

import fastdnc as fd
from fastdnc import _memory
from fastdnc.curvature.operator import DenseOperator


@pytest.fixture
def tiny_machine(monkeypatch):
    """A machine with 1 MiB available."""
    monkeypatch.setattr(_memory, "available_bytes", lambda device="cpu": 2**20)


def _refused(call, *needles):
    with pytest.raises(_memory.InsufficientMemoryError) as info:
        call()
    msg = str(info.value)
    for needle in ("needs ~", "this machine has 1 MiB available", "instead", *needles):
        assert needle in msg, msg
    return msg


def test_available_memory_is_known_here():
    have = _memory.available_bytes()
    assert isinstance(have, int) and have > 2**26


@pytest.mark.parametrize("method", ["to_dense", "eigh", "eigvalsh"])
def test_dense_fallbacks_are_refused(tiny_machine, method):
    op = DenseOperator(torch.eye(400))
    op.to_dense = lambda chunk=1024: pytest.fail("allocated before the check")  # noqa: ARG005
    base = fd.curvature.operator.CurvatureOperator
    msg = _refused(lambda: getattr(base, method)(op), f"{method} of a 400 × 400 operator")
    assert "lanczos" in msg


def test_the_estimate_is_the_measured_peak_not_the_output(tiny_machine):
    op = DenseOperator(torch.eye(150))  # 150² float64 = 0.17 MiB; to_dense's peak (×5) fits, eigh's (×6) does not
    assert fd.curvature.operator.CurvatureOperator.to_dense(op).shape == (150, 150)
    _refused(lambda: fd.curvature.operator.CurvatureOperator.eigh(op), "eigh of a 150 × 150")


def test_structured_operators_are_refused_too(tiny_machine):
    relu = fd.DeepUFM(3, 20, 30, 3, activation="relu")
    gn = fd.layer_hessian(relu, 2)  # batched Gauss-Newton block, P = 900
    for call in (gn.to_dense, lambda: gn.eigh(method="dense"), lambda: gn.eigvalsh(method="dense")):
        _refused(call, "900 × 900")
    vals, _ = gn.eigh()  # auto: the 180 × 180 sample-space Gram fits where the 900 × 900 block does not
    assert vals.numel() == 900
    kron = fd.layer_hessian(fd.DeepUFM(3, 20, 30, 3), 2)
    _refused(kron.to_dense, "900 × 900")
    vals, vecs = kron.eigh()  # exact from the factors: allowed
    assert vals.numel() == 900
    _refused(vecs.to_dense, "forming all eigenvectors")


def test_models_and_training_are_refused(tiny_machine, monkeypatch):
    _refused(lambda: fd.DeepUFM(4, 500, 200, 4), "a DeepUFM with layer widths [200, 200, 200, 200, 4]", "float32")
    monkeypatch.setattr(_memory, "available_bytes", lambda device="cpu": 2**20 + 64 * 2**10)
    model = fd.DeepUFM(3, 100, 60, 3)  # fits, but training it (gradients, states) does not
    _refused(lambda: fd.train(model, 5, 0.1, optimizer="adam", progress=False), "training DeepUFM")


def test_real_memory_refuses_an_impossible_model():
    with pytest.raises(MemoryError, match=r"needs ~\d+\.\d GiB, this machine has"):
        fd.DeepUFM(4, 5, 10**6, 4)


def test_slow_dense_eigendecompositions_warn_with_a_time():
    with pytest.warns(_memory.SlowComputationWarning, match=r"order 6000 takes about \d+ (s|min)"):
        _memory.require_dense(6000, 8, "cpu", "eigh", 0.0, eig="vectors")  # peak 0: the memory check passes
    assert _memory.dense_eigh_seconds(6000, True) > _memory.dense_eigh_seconds(6000, False) > 0


# ---------------------------------------------------------------- the limits that apply
def _fake_proc_and_cgroup(tmp_path, monkeypatch, version: int, limit: int, usage: int, inactive: int):
    proc, mount = tmp_path / "proc", tmp_path / "cgroup"
    (proc / "self").mkdir(parents=True)
    (proc / "meminfo").write_text("MemTotal: 100000000 kB\nMemAvailable: 50000000 kB\n")
    (proc / "self" / "status").write_text("VmSize: 1000 kB\n")
    if version == 2:
        (proc / "self" / "cgroup").write_text("0::/job/step\n")
        leaf = mount / "job" / "step"
        leaf.mkdir(parents=True)
        (mount / "cgroup.controllers").write_text("memory\n")
        (mount / "job" / "memory.max").write_text(f"{limit}\n")  # the limit sits on an ancestor
        (mount / "job" / "memory.current").write_text(f"{usage}\n")
        (mount / "job" / "memory.stat").write_text(f"anon 1\ninactive_file {inactive}\n")
        (leaf / "memory.max").write_text("max\n")
        (leaf / "memory.current").write_text(f"{usage}\n")
    else:
        (proc / "self" / "cgroup").write_text("5:cpu:/\n4:memory:/job\n")
        leaf = mount / "memory" / "job"
        leaf.mkdir(parents=True)
        (mount / "memory" / "memory.limit_in_bytes").write_text(f"{2**63 - 4096}\n")
        (mount / "memory" / "memory.usage_in_bytes").write_text("1\n")
        (leaf / "memory.limit_in_bytes").write_text(f"{limit}\n")
        (leaf / "memory.usage_in_bytes").write_text(f"{usage}\n")
        (leaf / "memory.stat").write_text(f"cache 5\ntotal_inactive_file {inactive}\n")
    monkeypatch.setattr(_memory, "PROC", proc)
    monkeypatch.setattr(_memory, "CGROUP_MOUNT", mount)


@pytest.mark.parametrize("version", [1, 2])
def test_a_cgroup_limit_is_the_available_memory(tmp_path, monkeypatch, version):
    gib = 2**30
    _fake_proc_and_cgroup(tmp_path, monkeypatch, version, limit=2 * gib, usage=gib, inactive=gib // 4)
    limits = _memory.cpu_limits()
    assert limits["machine"] == 50_000_000 * 1024
    assert limits["cgroup"] == 2 * gib - (gib - gib // 4)  # reclaimable file cache is not "used"
    assert _memory.available_bytes() == limits["cgroup"]
    op = DenseOperator(torch.eye(3))
    op.size = 22_000  # a 3.6 GiB dense result
    with pytest.raises(_memory.InsufficientMemoryError, match="this process's memory cgroup has 1.2 GiB available"):
        fd.curvature.operator.CurvatureOperator.to_dense(op)


def test_the_address_space_limit_counts_in_a_child_process():
    """``ulimit -v`` (RLIMIT_AS) bounds what the process can allocate: to_dense of a 3.8 GiB operator
    is refused with the estimate instead of dying in the allocator."""
    import subprocess
    import sys

    code = """
import resource, torch
from fastdnc import _memory
from fastdnc.curvature.operator import CurvatureOperator, DenseOperator
size = _memory.status_field(_memory.PROC / "self" / "status", "VmSize", 1024)
resource.setrlimit(resource.RLIMIT_AS, (size + 2 * 2**30, resource.RLIM_INFINITY))
assert 1.9 * 2**30 < _memory.available_bytes() <= 2 * 2**30
op = DenseOperator(torch.eye(3, dtype=torch.float64))
op.size = 22_500  # 3.8 GiB in float64
try:
    CurvatureOperator.to_dense(op)
except _memory.InsufficientMemoryError as e:
    print(e)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert (
        "address-space limit (ulimit -v) leaves 2.0 GiB" in out.stdout
        and "22500 × 22500 operator needs ~" in out.stdout
    )


@pytest.mark.parametrize(
    "call, needle",
    [
        (lambda op: fd.lanczos(op, k=20_000), "fd.lanczos with k=20000"),
        (lambda op: fd.spectral_density(op, steps=5000), "SLQ with 5000 steps"),
        (lambda op: fd.spectral.hutchpp_trace(op, 30_000), "Hutch++"),
        (lambda op: fd.spectral.hutchinson_trace(op, 30_000), "Hutchinson"),
    ],
    ids=["lanczos", "slq", "hutch++", "hutchinson"],
)
def test_spectral_methods_estimate_their_memory(call, needle):
    class Identity(fd.curvature.operator.CurvatureOperator):
        def _matmat(self, v):
            return v

    op = Identity(10**6, torch.float64, "cpu")
    with pytest.raises(_memory.InsufficientMemoryError, match=f"{needle}.*needs ~.*GiB.*available"):
        call(op)


def test_eigenvector_views_estimate_their_memory(tiny_machine):
    from fastdnc.curvature import KroneckerOperator
    from fastdnc.curvature.kronecker import Factor

    op = KroneckerOperator(Factor.dense(torch.eye(30)), Factor.dense(torch.eye(40)))
    _, vecs = op.eigh()
    assert vecs.top(0).shape == (1200, 0)
    _refused(lambda: vecs.top(500), "forming eigenvectors (500 vectors of length 1,200)")
    with pytest.raises(ValueError, match="k must be an int in 0..1200"):
        vecs.top(500_000)


def test_an_autograd_graph_that_would_not_fit_stops_while_it_is_built(monkeypatch):
    """The kept gradient graph of a batch is counted as autograd saves it: past half the available
    memory the product is refused with the batch size, before the graph exhausts the machine."""
    net = torch.nn.Sequential(torch.nn.Linear(20, 64), torch.nn.Tanh(), torch.nn.Linear(64, 3)).double()
    x, y = torch.randn(4000, 20, dtype=torch.float64), torch.arange(4000) % 3
    op = fd.HessianOperator(net, torch.nn.CrossEntropyLoss(), (x, y), fused=False)
    v = torch.randn(op.size, 1, dtype=torch.float64)
    before = op @ v  # fits: the same operator with memory to spare
    monkeypatch.setattr(_memory, "available_bytes", lambda device="cpu": 4 * 2**20)
    op.release_cache()
    with pytest.raises(
        _memory.InsufficientMemoryError, match=r"batch of 4,000 samples keeps more than .* MiB.*smaller batches"
    ):
        op @ v
    monkeypatch.undo()
    assert torch.equal(op @ v, before)  # nothing half-built was kept


def _memory_cgroup(limit: int):
    """A fresh memory cgroup (v1 or v2) limited to ``limit`` bytes, as (folder, write of a pid into
    it), or None where this process cannot make one (not root, no writable hierarchy)."""
    import os
    import uuid
    from pathlib import Path

    for base, limit_file in (
        (Path("/sys/fs/cgroup/memory"), "memory.limit_in_bytes"),
        (Path("/sys/fs/cgroup"), "memory.max"),
    ):
        if not (base / "cgroup.procs").exists() or not os.access(base, os.W_OK):
            continue
        if limit_file == "memory.max" and "memory" not in (base / "cgroup.subtree_control").read_text():
            continue
        folder = base / f"fastdnc-test-{uuid.uuid4().hex[:8]}"
        try:
            folder.mkdir()
            (folder / limit_file).write_text(str(limit))
            return folder
        except OSError:
            try:
                folder.rmdir()
            except OSError:
                pass
    return None


@pytest.mark.parametrize(
    "command, needle",
    [
        (
            ["train", "--width", "9000", "--steps", "5", "--quiet"],
            "a DeepUFM with layer widths [9000, 9000, 9000, 9000, 4] and N=20 samples needs ~",
        ),
        (["-c", "to_dense"], "to_dense of a 22500 × 22500 operator needs ~"),
    ],
    ids=["train", "to_dense"],
)
def test_work_beyond_a_real_limit_is_refused_with_the_estimate(tmp_path, command, needle):
    """In a 2 GiB memory cgroup (made here when this process may: root with a writable hierarchy, as in
    CI) the refusal names the cgroup instead of the OOM killer ending the process silently; where no
    cgroup can be made, the same work under an address-space limit 2 GiB above what the process has
    mapped (``ulimit -v``, which any user may set) is refused naming that limit."""
    import subprocess
    import sys

    folder = _memory_cgroup(2 * 2**30)
    if folder is not None:
        limit, named = f"open('{folder}/cgroup.procs', 'w').write(str(__import__('os').getpid()))", "memory cgroup has"
    else:
        limit = (
            "import resource, torch, fastdnc.cli.commands\nfrom fastdnc import _memory\n"
            "size = _memory.status_field(_memory.PROC / 'self' / 'status', 'VmSize', 1024)\n"
            "resource.setrlimit(resource.RLIMIT_AS, (size + 2 * 2**30, resource.RLIM_INFINITY))"
        )
        named = "address-space limit (ulimit -v)"
    if command[0] == "-c":
        body = (
            "import torch; from fastdnc.curvature.operator import CurvatureOperator, DenseOperator\n"
            "op = DenseOperator(torch.eye(3, dtype=torch.float64)); op.size = 22_500\n"
            "CurvatureOperator.to_dense(op)"
        )
    else:
        body = f"import sys\nfrom fastdnc.cli import main\nsys.exit(main({[*command, '--out', str(tmp_path / 'r')]!r}))"
    try:
        proc = subprocess.run([sys.executable, "-c", f"{limit}\n{body}"], capture_output=True, text=True, timeout=300)
    finally:
        if folder is not None:
            folder.rmdir()
    assert proc.returncode != -9, "killed by the OOM killer"
    assert needle in proc.stderr and named in proc.stderr, proc.stderr[-2000:]
