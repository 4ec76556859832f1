"""Pair estimators: ARM and DisARM, one antithetic pair of samples per draw."""

from __future__ import annotations

import torch

from ..estimators._sampling import uniform
from ._problem import _num_samples, _Problem


def _bernoulli_only(variable, name):
    if variable != "bernoulli":
        raise ValueError(f"estimator {name!r} is for binary variables: call it with variable='bernoulli' "
                         f"(Bernoulli logits), got variable={variable!r}")


def _arm(f, logits, *, num_samples=None, dim=-1, variable="bernoulli", generator=None):
    r"""ARM, augment-REINFORCE-merge (Yin & Zhou 2019, "ARM: Augment-REINFORCE-Merge Gradient
    for Stochastic Binary Networks"), for Bernoulli logits η. With one uniform vector u per pair,

    $$ \hat g = \big(f(1[u > \sigma(-\eta)]) - f(1[u < \sigma(\eta)])\big)\,(u - \tfrac12) $$

    (two evaluations per pair; `num_samples` pairs are averaged). Unbiased; values of `f` only.
    The value is the mean of the 2K evaluations (each is an exact draw from p)."""
    _bernoulli_only(variable, "arm")
    p = _Problem(f, logits, dim, variable, "arm")
    k = _num_samples(num_samples, 1, "arm")
    th = p.lg.detach()
    u = uniform((k,) + tuple(th.shape), dtype=p.cdt, device=th.device, generator=generator)
    b1 = (u > torch.sigmoid(-th)).to(p.cdt)
    b2 = (u < torch.sigmoid(th)).to(p.cdt)
    f1, f2 = p.call_many(b1), p.call_many(b2)
    g = (p.expand_coef((f1 - f2).detach()) * (u - 0.5)).mean(0)
    return p.inject(0.5 * (f1 + f2).mean(0), g)


def _stick_breaking_logits(lg):
    """Logits η of the C − 1 independent bits of the stick-breaking form of `Categorical(softmax(lg))`
    with categories in descending order of probability: bit j says "category j, given not one of the
    earlier ones", `η_j = log π_j − log Σ_{i>j} π_i`. Returns `(η, order)`, differentiable in `lg`;
    `order` (detached) maps sorted positions to categories."""
    order = lg.detach().argsort(-1, descending=True)
    logp = torch.log_softmax(lg, -1).gather(-1, order)
    logp = logp.clamp_min(torch.finfo(logp.dtype).min / 4)             # masked categories: finite, no NaN
    tail = torch.logcumsumexp(logp.flip(-1), -1).flip(-1)               # log Σ_{i≥j} π_i
    return logp[..., :-1] - tail[..., 1:], order


def _bits_to_onehot(bits, order, dtype):
    """Stick-breaking bits `(…, C−1)` → one-hot `(…, C)`: the first bit set, else the last category."""
    c = order.shape[-1]
    ones = torch.ones(bits.shape[:-1] + (1,), dtype=bits.dtype, device=bits.device)
    pos = torch.cat([bits, ones], -1).argmax(-1, keepdim=True)          # first 1 (argmax returns the first)
    cat = order.expand(bits.shape[:-1] + (c,)).gather(-1, pos)
    return torch.zeros(bits.shape[:-1] + (c,), dtype=dtype, device=bits.device).scatter_(-1, cat, 1)


def _disarm(f, logits, *, num_samples=None, dim=-1, variable="bernoulli", generator=None):
    r"""DisARM (Dong, Mnih, Tucker 2020, "DisARM: An Antithetic Gradient Estimator for Binary
    Latent Variables"; also Yin et al. 2020 U2G): ARM with the noise that does not change the
    antithetic pair integrated out. With `b = 1[1 − u < σ(η)]` and `b̃ = 1[u < σ(η)]`,

    $$ \hat g_j = \tfrac12\big(f(b) - f(\tilde b)\big)\,(-1)^{\tilde b_j}\,
       1[b_j \ne \tilde b_j]\,\sigma(|\eta_j|) $$

    Unbiased; variance at most ARM's (the paper's Theorem); values of `f` only, two per pair.

    Categorical variables use the stick-breaking form (Dong, Mnih, Tucker 2021, "Coupled Gradient
    Estimators for Discrete Latent Variables"): a categorical variable is a function of C − 1
    independent bits with logits `η_j = log π_j − log Σ_{i>j} π_i` (categories sorted by
    decreasing probability; the category is the first bit set, else the last). DisARM on the bits
    gives an unbiased `∇η`, carried to θ by the chain rule through `η(θ)`."""
    name = "disarm"
    p = _Problem(f, logits, dim, variable, name)
    k = _num_samples(num_samples, 1, name)
    if p.cat:
        eta, order = _stick_breaking_logits(p.lg)
    else:
        eta, order = p.lg, None
    th = eta.detach()
    u = uniform((k,) + tuple(th.shape), dtype=p.cdt, device=th.device, generator=generator)
    s = torch.sigmoid(th)
    b = (1 - u < s).to(p.cdt)
    bt = (u < s).to(p.cdt)
    if p.cat:
        fb, fbt = p.call_many(_bits_to_onehot(b, order, p.cdt)), p.call_many(_bits_to_onehot(bt, order, p.cdt))
    else:
        fb, fbt = p.call_many(b), p.call_many(bt)
    w = (1 - 2 * bt) * (b != bt).to(p.cdt) * torch.sigmoid(th.abs())
    g = (0.5 * p.expand_coef((fb - fbt).detach()) * w).mean(0)
    value = 0.5 * (fb + fbt).mean(0)
    if not p.cat:
        return p.inject(value, g)
    delta = (eta - eta.detach()).masked_fill(~torch.isfinite(th), 0.0)
    return value + p.per_example(g * delta)
