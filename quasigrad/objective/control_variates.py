"""Control variates: double control variates, REBAR and RELAX."""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch

from .._util import validate as V
from ..estimators._sampling import uniform
from ._problem import PathwiseError, _num_samples, _one_per_example, _Problem


def _value_and_grad(p, x):
    """`f` on canonical sample `x` and its gradient with respect to the sample (canonical)."""
    s = p.to_user(x).detach().requires_grad_(True)
    with torch.enable_grad():
        out = p.call(x, user_sample=s)
        if not out.requires_grad:
            raise PathwiseError(f"estimator {p.name!r} needs f differentiable in the sample, but f's output "
                                f"does not depend on it through autograd; use a score-function estimator "
                                f"such as 'rloo' for a non-differentiable f")
        (g,) = torch.autograd.grad(out.sum(), s, retain_graph=True, allow_unused=True)
    if g is None:
        raise PathwiseError(f"estimator {p.name!r} needs f differentiable in the sample, but f's output does not "
                            f"depend on it; use a score-function estimator such as 'rloo'")
    g = g.to(p.cdt)
    return out, (g.movedim(p.dim, -1) if p.cat else g)


def _values_and_grads(p, x):
    """`f` and its gradient with respect to the sample at each canonical sample along the leading
    dim: `(K, *example)` values (keeping `f`'s own graph) and `(K, *canonical)` gradients."""
    pairs = [_value_and_grad(p, xi) for xi in x.unbind(0)]
    return torch.stack([v for v, _ in pairs]), torch.stack([g.detach() for _, g in pairs])


def _double_cv(f, logits, *, num_samples=None, dim=-1, variable="bernoulli", generator=None, expansion="mean"):
    r"""Double control variates (Titsias & Shi 2022, "Double Control Variates for Gradient
    Estimation in Discrete Latent Variable Models"), K ≥ 2 samples.

    The leave-one-out estimator baselines sample k by the mean of the other samples' values;
    the second control variate subtracts a first-order Taylor expansion `h_k(D) = ⟨a_(k), D⟩`
    of `f` from every value in sample k's term and adds back its exact expected gradient:

    $$
    \hat g = \frac1K \sum_k \Big(f_k - h_k(D_k) - \frac1{K-1}\sum_{j \ne k}\big(f_j - h_k(D_j)\big)\Big)
        \nabla_\theta \log p(D_k) + \frac1K \sum_k \nabla_\theta E_D\langle a_{(k)}, D\rangle,
    $$

    with `∇θ E⟨a, D⟩ = J(π) a` (categorical) or `σ'(θ) ⊙ a` (Bernoulli). The slope:

    - `expansion="mean"` (default): `a = ∇f(μ)` at the mean `μ = E[D]` (`π` or `σ(θ)`),
      the same for every term: K + 1 evaluations of `f` (K samples, one at `μ`) and one
      gradient. `f` must accept the relaxed point `μ`.
    - `expansion="other"`: `a_(k)` is the mean of `∇f(D_j)` over the other samples `j ≠ k`
      (no extra evaluation; gradients at every sample), as in the paper.

    Unbiased in both forms (the slope used in sample k's term does not depend on D_k);
    exact (zero variance) when `f` is linear. Needs `∂f/∂D`. The paper also scales the
    Taylor term by a learned coefficient; this is the unscaled estimator (coefficient 1).
    Works for categorical variables too."""
    p = _Problem(f, logits, dim, variable, "double_cv")
    k = _num_samples(num_samples, 2, "double_cv", minimum=2)
    if expansion not in ("mean", "other"):
        raise ValueError(f"expansion must be 'mean' or 'other', got {expansion!r}")
    x = p.sample(k, generator)
    if expansion == "mean":
        fx = p.call_many(x)
        th = p.lg.detach()
        mu = torch.softmax(th, -1) if p.cat else torch.sigmoid(th)
        _, centre = _value_and_grad(p, mu)
        slopes = centre.expand_as(x)                                    # the same slope in every term
    else:
        fx, grads = _values_and_grads(p, x)
        slopes = (grads.sum(0) - grads) / (k - 1)                       # a_(k): the others' mean
        centre = grads.mean(0)                                          # the mean of the a_(k)
    own = p.per_example(slopes * x)                                     # h_k(D_k)
    others = p.per_example(slopes * x.sum(0)) - own                     # the sum of h_k(D_j) over j ≠ k
    fd = fx.detach()
    coef = ((fd - own) - ((fd.sum(0) - fd) - others) / (k - 1)) / k
    g = p.mean_jvp(centre) + (p.expand_coef(coef) * p.score(x)).sum(0)
    return p.inject(fx.mean(0), g)


def _conditional_logistic(theta, b, v):
    """Logistic-perturbed logits `z̃ = θ + L` conditioned on `1[z̃ > 0] = b`, differentiable in θ:
    `u' = (1 − p) + v p` if `b = 1` else `v (1 − p)`, `z̃ = θ + logit(u')`."""
    pr = torch.sigmoid(theta)
    u = torch.where(b > 0, (1 - pr) + v * pr, v * (1 - pr))
    u = u.clamp(torch.finfo(u.dtype).tiny, 1 - torch.finfo(u.dtype).eps)
    return theta + torch.log(u) - torch.log1p(-u)


def _conditional_gumbel(theta, idx, log_e):
    """Gumbel-perturbed logits conditioned on `argmax = idx` along the last dim, differentiable
    in θ (Maddison et al. 2014): `z_D = log Z − log E_D`, `z_j = −log(E_j e^{−θ_j} + E_D / Z)`,
    with `log_e = log E`, `E ~ Exp(1)`."""
    log_z = torch.logsumexp(theta, -1, keepdim=True)
    i = idx.unsqueeze(-1)
    log_e_d = log_e.gather(-1, i)
    top = log_z - log_e_d
    rest = -torch.logaddexp(log_e - theta, log_e_d - log_z)
    return rest.scatter(-1, i, top)


class _AttachGrads(torch.autograd.Function):
    """Forward: zeros shaped like the examples. Backward: precomputed gradients for `params`,
    scaled by the mean of the incoming gradient (1/B for `est.mean()`, 1 for `est.sum()`)."""

    @staticmethod
    def forward(ctx, like, grads, *params):
        ctx.grads = grads
        return torch.zeros_like(like)

    @staticmethod
    def backward(ctx, grad):
        s = grad.mean()
        return (None, None) + tuple(g * s.to(g.dtype) for g in ctx.grads)


def control_variate_mlp(num_inputs: int, hidden: int = 100) -> torch.nn.Module:
    """A small control-variate network for `RELAX`: `(*example, num_inputs) → (*example,)`,
    one hidden layer of `hidden` tanh units.

    Args:
        num_inputs: the number of variables per example times the categories (binary: the number of
            variables).
        hidden: the number of hidden units.

    Returns:
        The network, a `torch.nn.Sequential`.
    """
    V.check_int(num_inputs, "num_inputs")
    V.check_int(hidden, "hidden")
    return torch.nn.Sequential(torch.nn.Linear(num_inputs, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 1))


class RELAX(torch.nn.Module):
    r"""RELAX (Grathwohl, Choi, Wu, Roeder, Duvenaud 2018, "Backpropagation through the Void:
    Optimizing control variates for black-box gradient estimation"), a stateful estimator.

    With `z = θ + G` (Gumbel noise; logistic for binary variables), `D = H(z)` (argmax, or
    `1[z > 0]`) and `z̃ ~ p(z | D)` (conditional noise, reparameterised in θ),

    $$
    \hat g = \big(f(D) - c_\phi(\tilde z)\big)\nabla_\theta \log p(D)
        + \nabla_\theta c_\phi(z) - \nabla_\theta c_\phi(\tilde z).
    $$

    The control variate is `c_φ(z) = net(σ_λ(z))` (`σ_λ`: softmax or sigmoid at temperature
    λ, learned when `learn_temperature`), plus `η f(σ_λ(z))` when `use_f=True` (the form
    of the paper's VAE experiments; then `f` must be differentiable). `net` takes the relaxed
    sample flattened per example, `(*example, features)` with categories last, and returns one
    value per example (see `control_variate_mlp`).

    Unbiased for any φ. The parameters φ (net, λ, η) are trained to minimise the variance, i.e.
    the squared norm of the estimate `Σ ||ĝ_i||²` (through `create_graph`): the returned
    surrogate carries a zero-valued term whose backward gives φ that gradient (scaled by the
    mean weight the examples receive, so `est.mean()` gives the gradient of the mean squared
    norm). Put `relax.parameters()` in the optimiser. `last_variance` holds the detached
    mean of `||ĝ_i||²` of the latest call.
    """

    unbiased = True

    def __init__(self, net: Optional[Callable] = None, *, temperature: float = 0.5, learn_temperature: bool = True,
                 use_f: bool = False, eta: float = 1.0, learn_eta: bool = True, train_cv: bool = True):
        super().__init__()
        if net is None and not use_f:
            raise ValueError("RELAX needs a control-variate net (e.g. control_variate_mlp(num_inputs)) "
                             "or use_f=True (the REBAR control variate)")
        self.net = net
        self.use_f = bool(use_f)
        t = V.check_positive(temperature, "temperature")
        self.log_temperature = torch.nn.Parameter(torch.tensor(math.log(t)), requires_grad=bool(learn_temperature))
        self.eta = torch.nn.Parameter(torch.tensor(float(eta)), requires_grad=bool(learn_eta) and self.use_f)
        self.train_cv = bool(train_cv)
        self.needs_grad_f = self.use_f
        self.last_variance = None

    def _relaxed(self, p, z):
        t = self.log_temperature.exp().to(z.dtype)
        # Categorical: shifted by the row max (detached). Both: kept within ±√(largest float), where
        # exp(−|z|/λ) is already 0 for any λ below ~1e15 (float32), so that a masked category (−inf)
        # or |z|/λ beyond the float range gives the softmax's or sigmoid's limit without inf − inf
        # in the value or 0 · inf in the first and second derivatives in z and λ.
        bound = torch.finfo(z.dtype).max ** 0.5
        if p.cat:
            return torch.softmax((z - z.detach().amax(-1, keepdim=True)).clamp_min(-bound) / t, -1)
        return torch.sigmoid(z.clamp(-bound, bound) / t)

    def _cv(self, p, z, k):
        """`c_φ(z)` per example for `z` shaped `(k, *canonical)`: returns `(k, *example)`."""
        r = self._relaxed(p, z)
        c = 0.0
        if self.net is not None:
            flat = r.flatten(r.dim() - p.var_dims) if p.var_dims else r.unsqueeze(-1)
            ref = next(iter(self.net.parameters()), None) if isinstance(self.net, torch.nn.Module) else None
            out = self.net(flat if ref is None else flat.to(ref.dtype))
            c = _one_per_example(out, (k,) + p.batch[:p.e], "the control-variate net must return one value").to(p.cdt)
        if self.use_f:
            fr = torch.stack([p.call(ri) for ri in r.unbind(0)])
            if not fr.requires_grad:
                raise PathwiseError(f"{type(self).__name__} with use_f=True evaluates f on relaxed samples and "
                                    f"needs f differentiable in the sample; f's output has no gradient")
            c = c + self.eta.to(p.cdt) * fr
        return c

    def forward(self, f, logits, *, num_samples=None, dim=-1, variable="categorical", generator=None):
        name = type(self).__name__
        p = _Problem(f, logits, dim, variable, name)
        k = _num_samples(num_samples, 1, name)
        shape = (k,) + tuple(p.lg.shape)
        th0 = p.lg.detach()
        with torch.no_grad():
            if p.cat:
                gumbel = -torch.log(-torch.log(uniform(shape, dtype=p.cdt, device=th0.device, generator=generator)))
                z0 = th0 + gumbel
                idx = z0.argmax(-1)
                x = torch.zeros(shape, dtype=p.cdt, device=th0.device).scatter_(-1, idx.unsqueeze(-1), 1)
                log_e = torch.log(-torch.log(uniform(shape, dtype=p.cdt, device=th0.device, generator=generator)))
            else:
                u = uniform(shape, dtype=p.cdt, device=th0.device, generator=generator)
                noise = torch.log(u) - torch.log1p(-u)
                x = (th0 + noise > 0).to(p.cdt)
                v = uniform(shape, dtype=p.cdt, device=th0.device, generator=generator)
        values = p.call_many(x)                                          # f(D), keeps f's own graph
        if not p.wants_grad():
            return values.mean(0)
        theta = th0.clone().requires_grad_(True)
        train = self.train_cv and self.training
        with torch.enable_grad():
            if p.cat:
                z = theta + gumbel                 # not z0 − θ: −inf − (−inf) at a masked category
                zt = _conditional_gumbel(theta, idx, log_e)
            else:
                z = theta + noise
                zt = _conditional_logistic(theta, x, v)
            c_z, c_zt = self._cv(p, z, k), self._cv(p, zt, k)
            if not isinstance(c_z, torch.Tensor):
                raise ValueError(f"{name} has no control variate")
            (gc,) = torch.autograd.grad((c_z - c_zt).sum(), theta, create_graph=train, allow_unused=True)
            if gc is None:
                gc = torch.zeros_like(theta)
            coef = values.detach() - c_zt
            g = (p.expand_coef(coef) * p.score(x)).sum(0) / k + gc / k
            var = p.per_example(g.pow(2))
            self.last_variance = var.detach().mean()
            params = [q for q in self.parameters() if q.requires_grad]
            attach = None
            if train and params:
                grads = torch.autograd.grad(var.sum(), params, allow_unused=True)
                grads = tuple(torch.zeros_like(q) if gq is None else gq.detach() for q, gq in zip(params, grads))
                attach = _AttachGrads.apply(values[0].detach(), grads, *params)
        out = p.inject(values.mean(0), g.detach())
        return out if attach is None else out + attach.to(out.dtype)


class REBAR(RELAX):
    r"""REBAR (Tucker, Mnih, Maddison, Lawson, Sohl-Dickstein 2017, "REBAR: Low-variance, unbiased
    gradient estimates for discrete latent variable models"): `RELAX` with the control
    variate `c(z) = η f(σ_λ(z))`, the continuous relaxation of `f` itself, with η and the
    temperature λ trained to minimise the variance (`train_cv=False` keeps them fixed).
    Unbiased for any η, λ; needs `f` differentiable in the sample (three evaluations of `f`
    per sample: at D, σ_λ(z) and σ_λ(z̃))."""

    def __init__(self, *, temperature: float = 0.5, eta: float = 1.0, learn_temperature: bool = True,
                 learn_eta: bool = True, train_cv: bool = True):
        super().__init__(None, temperature=temperature, learn_temperature=learn_temperature, use_f=True, eta=eta,
                         learn_eta=learn_eta, train_cv=train_cv)


def _rebar_fixed(f, logits, *, num_samples=None, dim=-1, variable="categorical", generator=None,
                 temperature=0.5, eta=1.0):
    """REBAR with fixed η and λ (by name; for trained ones create `REBAR` once)."""
    V.check_floating(logits)
    est = REBAR(temperature=temperature, eta=eta, learn_temperature=False, learn_eta=False, train_cv=False)
    est = est.to(device=logits.device)
    return est(f, logits, num_samples=num_samples, dim=dim, variable=variable, generator=generator)
