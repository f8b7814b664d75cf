"""The referees of the drop-in operator tests: Hessian- and GGN-vector products by plain autograd
(double backward) checked against finite differences, and the relative error."""

from __future__ import annotations

import torch


def rel(a, b):
    a, b = a.detach(), b.detach()
    return float((a - b).norm() / max(float(b.norm()), 1e-300)) if float(b.norm()) else float((a - b).norm())


def autograd_products(model, loss, x, y, params, v):
    """Hessian- and GGN-vector products by plain autograd (double backward) under the math attention
    kernel, and the Hessian product by central finite differences of the gradient: the referees."""
    from fastdnc.curvature.functional import autodiff_friendly_attention

    vs, i = [], 0
    for p in params:
        vs.append(v[i : i + p.numel()].reshape(p.shape))
        i += p.numel()
    flat = lambda ts: torch.cat([t.reshape(-1) for t in ts])  # noqa: E731
    with autodiff_friendly_attention():
        g = torch.autograd.grad(loss(model(x), y), params, create_graph=True)
        # materialize_grads: a parameter that the gradient does not depend on has a zero second derivative
        hv = flat(torch.autograd.grad(sum((a * b).sum() for a, b in zip(g, vs)), params, materialize_grads=True))
        z = model(x)
        w = torch.zeros_like(z, requires_grad=True)  # J v by the double-vjp trick
        jt = torch.autograd.grad(z, params, w, create_graph=True)
        jv = torch.autograd.grad(sum((a * b).sum() for a, b in zip(jt, vs)), w, materialize_grads=True)[0]
        zz = z.detach().requires_grad_(True)
        gz = torch.autograd.grad(loss(zz, y), zz, create_graph=True)[0]
        # a loss linear in the output (NLL or KL divergence of log-probabilities) has no second derivative
        hjv = torch.autograd.grad((gz * jv).sum(), zz)[0] if gz.requires_grad else torch.zeros_like(zz)
        ggnv = flat(torch.autograd.grad(z, params, hjv, materialize_grads=True))

        def grad_at(shift):
            with torch.no_grad():
                for p, d in zip(params, vs):
                    p.add_(shift * d)
            out = flat(torch.autograd.grad(loss(model(x), y), params))
            with torch.no_grad():
                for p, d in zip(params, vs):
                    p.sub_(shift * d)
            return out

        fdiff = (grad_at(1e-5) - grad_at(-1e-5)) / 2e-5
    return hv, ggnv, fdiff
