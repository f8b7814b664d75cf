"""Case tables expanded into fixtures. Tests run in float64 unless they test precision."""

from __future__ import annotations

import os

import pytest
import torch

# Without a GPU the Triton kernels run on CPU tensors in Triton's interpreter (set before any
# kernel module is imported, since @triton.jit reads it at decoration time).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

import fastdnc as fd  # noqa: E402
from fastdnc.kernels import backend_status  # noqa: E402

torch.set_default_dtype(torch.float64)


def backends_for(kernel: str, device: str = "cpu", dtype: torch.dtype = torch.float64) -> list[str]:
    """The backends that can run ``kernel`` here (torch always; cpp when built; triton when
    installed, under the interpreter on CPU; cuda on a GPU with the extension built)."""
    return [
        b for b in ("torch", "cpp", "triton", "cuda") if backend_status(b, torch.device(device), dtype, kernel) is None
    ]


# Every model kind the package supports, at small odd shapes.
MODEL_CASES = [
    dict(id="linear-mse", activation="linear", loss="mse", K=3, n=2, d=5, L=3),
    dict(id="relu-mse", activation="relu", loss="mse", K=3, n=3, d=6, L=4),
    dict(id="linear-ce", activation="linear", loss="ce", K=4, n=2, d=5, L=2),
    dict(id="relu-ce", activation="relu", loss="ce", K=2, n=3, d=3, L=3),
    dict(id="depth1-mse", activation="relu", loss="mse", K=3, n=2, d=4, L=1),
    dict(
        id="perlayer-decay",
        activation="relu",
        loss="ce",
        K=3,
        n=2,
        d=4,
        L=3,
        weight_decay=[1e-2, 3e-2, 2e-3],
        feature_decay=5e-2,
    ),
]

MLP_CASES = [
    dict(id="mlp-relu-bias", activation="relu", loss="mse", d_in=7, N=11, K=3, d=6, L=3, bias=True),
    dict(id="mlp-linear-ce", activation="linear", loss="ce", d_in=4, N=9, K=4, d=5, L=2, bias=False),
    dict(id="mlp-relu-ce-bias", activation="relu", loss="ce", d_in=5, N=8, K=2, d=4, L=1, bias=True),
]


def make_ufm(case: dict, seed: int = 0, dtype=torch.float64) -> fd.DeepUFM:
    return fd.DeepUFM(
        case["K"],
        case["n"],
        case["d"],
        case["L"],
        activation=case["activation"],
        loss=case["loss"],
        weight_decay=case.get("weight_decay", 1e-2),
        feature_decay=case.get("feature_decay"),
        seed=seed,
        dtype=dtype,
        init_std=case.get("init_std"),
    )


def make_mlp(case: dict, seed: int = 0, dtype=torch.float64) -> fd.MLPHead:
    g = torch.Generator().manual_seed(seed + 100)
    x = torch.randn(case["d_in"], case["N"], generator=g, dtype=dtype)
    y = torch.arange(case["N"]) % case["K"]
    m = fd.MLPHead(
        x,
        y,
        case["d"],
        case["L"],
        num_classes=case["K"],
        activation=case["activation"],
        loss=case["loss"],
        bias=case["bias"],
        seed=seed,
        weight_decay=1e-2,
    )
    if m.biases is not None:  # non-zero biases so that they matter
        with torch.no_grad():
            for b in m.biases:
                b.copy_(0.3 * torch.randn(b.shape, generator=g, dtype=dtype))
    return m


ALL_CASES = [dict(c, kind="ufm") for c in MODEL_CASES] + [dict(c, kind="mlp") for c in MLP_CASES]


def build(case: dict, seed: int = 0, dtype=torch.float64) -> fd.models.LayeredModel:
    return make_ufm(case, seed, dtype) if case["kind"] == "ufm" else make_mlp(case, seed, dtype)


@pytest.fixture(params=MODEL_CASES, ids=lambda c: c["id"])
def ufm_case(request) -> dict:
    return request.param


@pytest.fixture(params=ALL_CASES, ids=lambda c: c["id"])
def model_case(request) -> dict:
    """Every UFM and MLP-head case."""
    return request.param
