"""Who is right when Hessian-vector products disagree: finite differences as the referee.

Run: ``python benchmarks/referee.py --out docs/drop-in.md``. For each model, one Hessian-vector
product in float64 by fastdnc's ``HessianOperator``, plain autograd (double backward),
``torch.func.hessian`` (jacfwd over jacrev of ``functional_call``) and curvlinops (when the peers
extra is installed), each compared with central finite differences of the gradient (step 1e-5,
error O(1e-10) in float64). The models and data are fixed (seeded).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "curvature"))
from test_generic_habits import Encoder, autograd_products, dense, layernorm_mlp, rel  # noqa: E402

import fastdnc as fd  # noqa: E402
from fastdnc.curvature.functional import autodiff_friendly_attention  # noqa: E402
from fastdnc.io import atomic_write_text  # noqa: E402


def _func_hessian(model, loss, x, y, params, v):
    with autodiff_friendly_attention():
        return dense(model, loss, x, y, params) @ v  # torch.func.hessian of functional_call


def _curvlinops(model, loss, x, y, params, v):
    from curvlinops import HessianLinearOperator

    return HessianLinearOperator(model, loss, params, [(x, y)], check_deterministic=False) @ v


def rows() -> list[tuple[str, str, str]]:
    torch.manual_seed(8)
    enc = Encoder().double().eval()
    cases = {
        "MLP with LayerNorm (5-8-3, 16 samples)": (*layernorm_mlp(), None),
        "2-layer Transformer encoder (d 16, 4 heads, eval)": (
            enc,
            torch.randint(0, 11, (5, 6)),
            torch.randint(0, 3, (5,)),
            "embed",
        ),
    }
    out = []
    for name, (model, x, y, skip) in cases.items():
        loss = nn.CrossEntropyLoss()
        params = [p for n, p in model.named_parameters() if skip is None or not n.startswith(skip)]
        v = torch.randn(sum(p.numel() for p in params), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        hv, _, fdiff = autograd_products(model, loss, x, y, params, v)
        methods = {
            "fastdnc HessianOperator": lambda: fd.HessianOperator(model, loss, (x, y), params=params) @ v,
            "autograd double backward": lambda: hv,
            "torch.func.hessian": lambda: _func_hessian(model, loss, x, y, params, v),
            "curvlinops HessianLinearOperator": lambda: _curvlinops(model, loss, x, y, params, v),
        }
        for method, call in methods.items():
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    err = f"{rel(call(), fdiff):.1e}"
            except Exception as e:  # noqa: BLE001 - a failure is a result
                err = f"fails: {type(e).__name__}: {str(e).splitlines()[0][:90]}"
            out.append((name, method, err))
    return out


def page(table: list[tuple[str, str, str]]) -> str:
    lines = [
        "# Drop-in operators: who is right when products disagree",
        "",
        "Regenerate with `python benchmarks/referee.py --out docs/drop-in.md`. One float64 Hessian-vector "
        "product per method, as its relative distance to central finite differences of the gradient (the "
        f"referee; step 1e-5). torch {torch.__version__}.",
        "",
        "| model | method | relative error against finite differences |",
        "|---|---|---|",
    ]
    lines += [f"| {m} | {meth} | {err} |" for m, meth, err in table]
    lines += [
        "",
        "fastdnc runs attention on PyTorch's math SDPA kernel with the transformer fast path off "
        "(forward-mode AD is not implemented for the flash kernels). Its products are Jacobian-vector products "
        "of the gradient, one per column; the dense `torch.func.hessian` column above is the same function's "
        "Hessian formed by nested vmapped Jacobians. fastdnc substitutes parameters itself instead of through "
        "`torch.func.functional_call`, which leaves a plain tensor in place of the parameter of a module used "
        "twice in a model.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    torch.set_default_dtype(torch.float64)
    text = page(rows())
    print(text)
    if a.out:
        atomic_write_text(a.out, text)


if __name__ == "__main__":
    main()
