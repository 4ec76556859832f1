r"""ARMS: antithetic REINFORCE with many samples for binary variables (Dimitriev & Zhou 2021).

K ≥ 2 samples per example whose bits are negatively correlated through a copula, each still an
exact draw from `Bernoulli(σ(η))`; a leave-one-out baseline whose bias under that correlation
is removed by the factor `1 / (1 − ρ)`. With K = 2 the samples are an antithetic pair and the
estimate equals DisARM's.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch

from ..estimators._sampling import uniform
from ._problem import _num_samples, _Problem


def dirichlet_copula(k: int, shape: Sequence[int], *, dtype: torch.dtype, device: Union[str, torch.device, None],
                     generator: Optional[torch.Generator]) -> torch.Tensor:
    r"""`k` uniform numbers per entry of `shape`, negatively dependent: `U_i = (1 − d_i)^{k−1}`
    with `d ~ Dirichlet(1, …, 1)` over the `k` (the copula of Dimitriev & Zhou 2021).

    Each `U_i` is U(0, 1) (`d_i ~ Beta(1, k − 1)`); for `k = 2`, `U_2 = 1 − U_1`.

    Args:
        k: number of coupled draws (≥ 2).
        shape: the shape of one draw.
        dtype: as for `torch.rand`.
        device: as for `torch.rand`.
        generator: as for `torch.rand`.

    Returns:
        A tensor of shape `(k, *shape)`.
    """
    e = -torch.log(uniform((k,) + tuple(shape), dtype=dtype, device=device, generator=generator))   # ~Exp(1)
    d = e / e.sum(0, keepdim=True)                                                                    # ~Dirichlet(1)
    return (1 - d).pow(k - 1)


def copula_joint(q: torch.Tensor, k: int) -> torch.Tensor:
    r"""`P(U_i ≤ q, U_j ≤ q)` for two of the `k` coupled uniforms of `dirichlet_copula`:
    `max(2 q^{1/(k−1)} − 1, 0)^{k−1}` (the Dirichlet's `P(d_i ≥ s, d_j ≥ t) = (1 − s − t)_+^{k−1}`).

    Args:
        q: the level, a tensor of values in [0, 1].
        k: number of coupled draws (≥ 2).

    Returns:
        The joint probability, shaped like `q`.
    """
    return (2 * q.pow(1.0 / (k - 1)) - 1).clamp_min(0).pow(k - 1)


def _arms(f, logits, *, num_samples=None, dim=-1, variable="bernoulli", generator=None):
    r"""ARMS, antithetic-REINFORCE-multi-sample (Dimitriev & Zhou 2021, "ARMS: Antithetic-REINFORCE-
    Multi-Sample Gradient for Binary Variables"), for Bernoulli logits η with `p = σ(η)`.

    Per variable, `K` coupled uniforms `U` (`dirichlet_copula`) give the bits
    `b_k = 1[U_k < p]` when `p < ½` and `b_k = 1[1 − U_k < p]` otherwise (the antithetic
    copula), so each `b_k ~ Bernoulli(p)` while two of them are negatively correlated with
    correlation ρ: `1 − ρ = (q − C(q)) / (p(1 − p))`, `q = min(p, 1 − p)`,
    `C` = `copula_joint`. The estimate is the leave-one-out form corrected for ρ:

    $$
    \hat g = \frac{1}{(K - 1)(1 - \rho)} \sum_k \big(f(b_k) - \bar f\big)(b_k - p),
        \qquad \bar f = \frac1K \sum_k f(b_k).
    $$

    Unbiased for every `f` (variables are coupled across samples, never within one, so the
    one-variable identity `E[Σ_k (f_k − f̄)(b_k − p)] = (K − 1)(1 − ρ) p(1 − p) Δf` holds per
    variable). `K` evaluations of `f`, values only. For `K = 2` the pair is antithetic
    (`U_2 = 1 − U_1`) and the estimate is DisARM's. The value is the mean of the `K`
    evaluations (each an exact draw from p)."""
    if variable != "bernoulli":
        raise ValueError(f"estimator 'arms' is for binary variables: call it with variable='bernoulli' "
                         f"(Bernoulli logits), got variable={variable!r}")
    p = _Problem(f, logits, dim, variable, "arms")
    k = _num_samples(num_samples, 2, "arms", minimum=2)
    th = p.lg.detach()
    pr, q = torch.sigmoid(th), torch.sigmoid(-th.abs())                 # p, and min(p, 1 − p) without rounding
    u = dirichlet_copula(k, th.shape, dtype=p.cdt, device=th.device, generator=generator)
    b = torch.where(th >= 0, u > q, u < q).to(p.cdt)                    # 1[1 − U < p] when p ≥ ½, else 1[U < p]
    values = p.call_many(b)
    fv = values.detach()
    centred = fv - fv.mean(0, keepdim=True)
    gap = q - copula_joint(q, k)                                         # p(1 − p)(1 − ρ) ≥ 0
    scale = torch.where(gap > 0, torch.sigmoid(th) * torch.sigmoid(-th) / gap.clamp_min(torch.finfo(p.cdt).tiny),
                        torch.zeros_like(gap))                            # a deterministic bit: no gradient
    g = (p.expand_coef(centred) * (b - pr)).sum(0) * scale / (k - 1)
    return p.inject(values.mean(0), g)
