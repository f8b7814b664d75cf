"""The GPU benchmark shapes, with the flops and bytes each kernel moves per call at them.

Shared by ``bench_gpu.py`` (which times them on a GPU) and ``gpu_model.py`` (which predicts their
times on paper, ``docs/gpu.md``), so that a GPU run is judged against the model at the same shapes.
Bytes count one read of every input and one write of every output (plus the intermediates that a
backend writes to memory and reads back); a cache that keeps operands on chip only lowers them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Case:
    """One kernel at one shape, with the work of each backend (``flops``, ``bytes`` per element size)."""

    kernel: str
    shape: dict[str, int]
    label: str

    def work(self, backend: str, itemsize: int) -> tuple[float, float]:
        """(flops, bytes) of one call on ``backend`` (``torch`` or a fused kernel)."""
        return WORK[self.kernel](backend, itemsize, **self.shape)


def _two_sided(backend: str, s: int, batch: int, d: int) -> tuple[float, float]:
    # two GEMMs: T = O V (batch d³ · 2), Y = T I; T is written and read back by either backend
    return 4.0 * batch * d**3, s * (2 * d * d + 4 * batch * d * d)


def _core(backend: str, s: int, n: int, kk: int, p: int, k: int) -> tuple[float, float]:
    # w = Bᵀu, out = B w for k vectors; torch's two einsums read the roots twice, a fused kernel once
    roots = n * kk * p * (2 if backend == "torch" else 1)
    return 4.0 * k * n * kk * p, s * (roots + 2 * k * n * p + (2 * k * n * kk if backend == "torch" else 0))


def _assemble(backend: str, s: int, n: int, kk: int, p: int, q: int) -> tuple[float, float]:
    size, tp, tq = p * q, p * (p + 1) // 2, q * (q + 1) // 2
    if backend == "torch":  # packed triangles G (N × tp), Y (N × tq), one GEMM into tp × tq, unpack
        flops = 2.0 * n * tp * tq + 2.0 * n * kk * p * p
        return flops, s * (n * kk * p + q * n + 2 * n * (tp + tq) + 2 * tp * tq + 2 * size * size)
    # one triangle of slabs: columns (a', b') with a' ≥ a, S generated on chip
    flops = 2.0 * n * q * q * p * (p + 1) / 2 + 2.0 * n * kk * p * p * q
    return flops, s * (n * kk * p + q * n + size * size)


def _gram(backend: str, s: int, n: int, kk: int, p: int) -> tuple[float, float]:
    m = n * kk  # out += c (R Rᵀ) ∘ (G ⊗ 1): torch forms the whole R Rᵀ, a fused kernel one triangle
    if backend == "torch":
        return 2.0 * m * m * p, s * (m * p + n * n + 4 * m * m)
    return 1.0 * m * m * p, s * (m * p + n * n + 2 * m * m)


WORK = {"two_sided_product": _two_sided, "gn_sample_core": _core, "gn_assemble": _assemble, "gn_gram": _gram}

CASES = [
    Case("two_sided_product", {"batch": 8, "d": 1024}, "batch 8, d = 1024"),
    Case("two_sided_product", {"batch": 8, "d": 4096}, "batch 8, d = 4096"),
    Case("gn_sample_core", {"n": 20000, "kk": 10, "p": 512, "k": 1}, "N = 20000, K = 10, p = 512, 1 vector"),
    Case("gn_sample_core", {"n": 20000, "kk": 10, "p": 512, "k": 16}, "N = 20000, K = 10, p = 512, 16 vectors"),
    Case("gn_sample_core", {"n": 5000, "kk": 100, "p": 256, "k": 4}, "N = 5000, K = 100, p = 256, 4 vectors"),
    Case("gn_assemble", {"n": 2000, "kk": 10, "p": 64, "q": 64}, "N = 2000, K = 10, p = q = 64"),
    Case("gn_gram", {"n": 2000, "kk": 10, "p": 512}, "N = 2000, K = 10, p = 512"),
]
