"""The backward formulas of the categorical sample-level estimators in
[`quasigrad.estimators.categorical`][quasigrad.estimators.categorical], by PyTorch operators.

Notation as there: `π = softmax(θ)`, `π_τ = softmax(θ/τ)`, `J(q) = diag(q) − q qᵀ`, `g = ∂L/∂D`, `D` the drawn
one-hot.
"""

from __future__ import annotations

import torch


def _dot(a, b, dim):
    """`⟨a, b⟩` along `dim`, kept as a size-1 dimension (no elementwise temporary)."""
    return torch.linalg.vecdot(a, b, dim=dim).unsqueeze(dim)


def _jvp_softmax(q, g, dim):
    """`J(q) g = q ⊙ (g − ⟨q, g⟩)`: the softmax backward at output `q`."""
    return (g - _dot(q, g, dim)).mul_(q)


def _softmax_backward(g, q, dim):
    """`J(q) g` by PyTorch's fused softmax-backward kernel where available."""
    try:
        return torch._softmax_backward_data(g, q, dim, q.dtype)
    except (AttributeError, RuntimeError, TypeError):  # private API: fall back to the formula
        return _jvp_softmax(q, g, dim)


# Backward kernels. Each gets g (compute dtype), the index, dim and the saved tensors.

def _k_st(g, index, dim, q, *, scale=None):
    out = _softmax_backward(g, q, dim)
    return out if scale is None else out * scale


def _k_reinmax(g, index, dim, pi, pi_tau):
    # 2 J(π1) g − ½ J(π) g with π1 = ½(π_τ + D), expanded so that D enters only at the index:
    # 2 J(π1) g = π_τ ⊙ (g − c) + D (g_D − c),  c = ½(⟨π_τ, g⟩ + g_D).
    idx = index.unsqueeze(dim)
    g_d = g.gather(dim, idx)
    c = (_dot(pi_tau, g, dim) + g_d).mul_(0.5)
    out = (g - c).mul_(pi_tau).add_(_jvp_softmax(pi, g, dim), alpha=-0.5)
    return out.scatter_add_(dim, idx, g_d - c)


def _k_zgr(g, index, dim, pi):
    # ½ [J(π) g + ⟨g, D − π⟩ (D − π)] = ½ π ⊙ (g − g_D) + ½ (g_D − ⟨π, g⟩) D
    # (also ReinMax's kernel at τ = 1, where the two estimators coincide)
    idx = index.unsqueeze(dim)
    g_d = g.gather(dim, idx)
    out = torch.add(g_d * -0.5, g, alpha=0.5).mul_(pi)   # ½ (g − g_D) ⊙ π in two passes
    return out.scatter_add_(dim, idx, (g_d - _dot(pi, g, dim)).mul_(0.5))


def _k_darn(g, index, dim, pi):
    # ⟨g, D − π⟩ (D − π) = (g_D − ⟨π, g⟩)(D − π)
    idx = index.unsqueeze(dim)
    w = g.gather(dim, idx) - _dot(pi, g, dim)
    return torch.mul(pi, -w).scatter_add_(dim, idx, w)
