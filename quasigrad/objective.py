r"""Objectives (layer 2): ``E_{D ~ p_θ}[f(D)]`` as a surrogate loss whose gradient is the chosen estimator.

One call for every estimator, score-function and pathwise alike::

    est = quasigrad.objective.expectation(f, logits, estimator="rloo", num_samples=4)
    est.mean().backward()

``logits`` θ hold independent categorical variables (categories along ``dim``) or, with
``variable="bernoulli"``, independent binary variables (Bernoulli logits, samples in {0, 1}).
``f`` takes a sample shaped like ``logits`` (one-hot along ``dim``; {0, 1} for Bernoulli) and
returns one loss per example: a tensor whose shape is a leading part of the sample's batch
shape (a scalar means one example). The log-probability of an example is the sum over its
remaining variables. The returned tensor has one entry per example; its value is the Monte
Carlo estimate of ``E[f]`` and its gradient (with respect to ``logits``, and to anything
``f`` itself depends on, such as a decoder) is the estimator's.

Estimators (``quasigrad.registry.table()`` lists their flags):

=================  ==========================================================================
``exact``          enumeration of every outcome (:func:`quasigrad.exact.expectation`)
``reinforce``      score function, optional constant ``baseline`` (Williams 1992)
``rloo``           leave-one-out baseline, K ≥ 2 (Kool, van Hoof, Welling 2019)
``arm``            augment-REINFORCE-merge, Bernoulli (Yin & Zhou 2019)
``disarm``         ARM with the antithetic noise integrated out (Dong, Mnih, Tucker 2020; categorical
                   variables by stick-breaking, 2021)
``double_cv``      leave-one-out plus a Taylor (second) control variate, K = 2 (Titsias & Shi 2022)
``rao_blackwell``  sum-and-sample: top-k outcomes summed, the rest sampled (Liu et al. 2019)
``rebar``          REBAR with fixed η, λ (Tucker et al. 2017); trained: :class:`REBAR`
``st`` … ``darn``  the sample-level (layer-1) estimators, through the same call
=================  ==========================================================================

Estimators that keep state are objects created once and passed as ``estimator=`` each step
(they are also callable with the same arguments minus ``estimator``): :class:`EMABaseline`,
:class:`LearnedBaseline` (NVIL), :class:`REBAR` and :class:`RELAX`. Their learned parts
carry their own loss inside the returned surrogate (a term whose value is zero), so that one
``backward()`` trains the model and the control variate together.

Costs are detached where the estimator says so: a score-function estimator never
differentiates ``f`` with respect to the sample (``f`` may return integers, or come from a
simulator), while ``f``'s own parameters still receive ``∇ f``.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch

from . import _validate as V
from . import bernoulli as _bern
from . import exact as _exact
from . import registry
from ._sampling import compute_dtype, sample_categorical, uniform

__all__ = ["expectation", "EMABaseline", "LearnedBaseline", "REBAR", "RELAX", "control_variate_mlp",
           "PathwiseError"]


class PathwiseError(ValueError):
    """A pathwise estimator (one that differentiates ``f``) was given an ``f`` that is not
    differentiable in the sample."""


_VARIABLES = ("categorical", "bernoulli")


# --------------------------------------------------------------------------------------------
# The problem: canonical layout, calls to f, log-probabilities


class _Problem:
    """Logits in a canonical layout (categories last for categorical variables), the calls to
    ``f`` with their shape checks, and per-example sums.

    ``lg``: canonical logits in the compute dtype, differentiable (a view of ``logits``).
    ``batch``: the batch shape (logits without the category dimension). ``e``: how many leading
    batch dimensions index examples (known after the first call to ``f``).
    """

    def __init__(self, f, logits, dim, variable, estimator_name):
        if not callable(f):
            raise TypeError(f"f must be callable (a sample -> one loss per example), got {type(f).__name__}")
        V.check_floating(logits)
        if variable not in _VARIABLES:
            raise ValueError(f"variable must be 'categorical' or 'bernoulli', got {variable!r}")
        self.f, self.logits, self.variable, self.name = f, logits, variable, estimator_name
        self.cdt = compute_dtype(logits.dtype)
        if variable == "categorical":
            self.dim = V.normalize_dim(dim, logits.dim())
            raw = logits.movedim(self.dim, -1)
            self.batch = tuple(raw.shape[:-1])
            self.n_cat = raw.shape[-1]
        else:
            self.dim = None
            raw = logits
            self.batch = tuple(raw.shape)
            self.n_cat = 2
        self.raw = raw                     # canonical, original dtype
        self.lg = raw.to(self.cdt)         # canonical, compute dtype, differentiable
        self.e = None
        self.cat = variable == "categorical"

    # -- layout ------------------------------------------------------------------------------
    def to_user(self, s):
        """A canonical sample (no leading dims) -> the layout and dtype ``f`` expects."""
        s = s.to(self.logits.dtype)
        return s.movedim(-1, self.dim) if self.cat else s

    @property
    def var_dims(self):
        """Number of trailing dims of a canonical logits-shaped tensor that belong to one example."""
        return len(self.batch) - self.e + (1 if self.cat else 0)

    def per_example(self, x):
        """Sum a tensor shaped ``(*lead, *canonical logits shape)`` over each example's variables."""
        k = self.var_dims
        return x.flatten(x.dim() - k).sum(-1) if k else x

    def per_example_batch(self, x):
        """Sum a tensor shaped ``(*lead, *batch)`` (no category dim) over each example's variables."""
        k = len(self.batch) - self.e
        return x.flatten(x.dim() - k).sum(-1) if k else x

    def expand_coef(self, c):
        """Broadcast a per-example tensor ``(*lead, *example)`` against ``(*lead, *canonical)``."""
        return c.reshape(tuple(c.shape) + (1,) * self.var_dims)

    # -- f -----------------------------------------------------------------------------------
    def call(self, sample_canonical, *, user_sample=None):
        """Evaluate ``f`` on one canonical sample; check it returns one loss per example."""
        s = self.to_user(sample_canonical) if user_sample is None else user_sample
        out = self.f(s)
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"f must return a tensor (one loss per example), got {type(out).__name__}")
        e = out.dim()
        if tuple(out.shape) != self.batch[:e]:
            raise ValueError(
                f"f must return one loss per example: a tensor whose shape is a leading part of the sample's "
                f"batch shape {self.batch}, got shape {tuple(out.shape)}")
        if self.e is None:
            self.e = e
        elif e != self.e:
            raise ValueError(f"f returned shape {tuple(out.shape)} on one sample and "
                             f"{self.batch[:self.e]} on another; it must return one loss per example")
        if out.is_complex():
            raise TypeError(f"f must return real losses, got dtype {out.dtype}")
        return out.to(self.cdt)

    def call_many(self, samples):
        """``f`` on each canonical sample along the leading dim; returns ``(K, *example)``."""
        return torch.stack([self.call(s) for s in samples.unbind(0)])

    # -- sampling and scores -------------------------------------------------------------------
    def sample(self, k, generator):
        """``k`` independent draws, canonical, as floats in the compute dtype: ``(k, *canonical)``."""
        with torch.no_grad():
            lg = self.lg.detach().unsqueeze(0).expand((k,) + tuple(self.lg.shape))
            if self.cat:
                idx = sample_categorical(lg, dim=-1, generator=generator)
                return torch.zeros_like(lg).scatter_(-1, idx.unsqueeze(-1), 1)
            return _bern.sample(lg, generator=generator).to(self.cdt)

    def log_prob(self, x, lg=None):
        """Per-example ``log p(x)`` for canonical samples ``x`` ``(*lead, *canonical)``, differentiable in ``lg``."""
        lg = self.lg if lg is None else lg
        if self.cat:
            # gather, not a product with the one-hot: a masked category (logit -inf) gives no NaN
            logp = torch.log_softmax(lg, -1).expand(x.shape)
            lp = logp.gather(-1, x.argmax(-1, keepdim=True)).squeeze(-1)
        else:
            lp = torch.where(x > 0, torch.nn.functional.logsigmoid(lg), torch.nn.functional.logsigmoid(-lg))
        return self.per_example_batch(lp)

    def score(self, x):
        """``∇θ log p(x)`` for canonical samples, shaped like ``x`` (``onehot − π`` or ``b − σ(a)``)."""
        th = self.lg.detach()
        return x - (torch.softmax(th, -1) if self.cat else torch.sigmoid(th))

    def mean_jvp(self, a):
        """``∇θ E[⟨a, D⟩]`` for a direction ``a`` shaped like the canonical logits (any leading dims):
        ``J(π) a`` per categorical variable, ``σ'(θ) a`` per binary one."""
        th = self.lg.detach()
        if self.cat:
            p = torch.softmax(th, -1)
            return p * (a - (p * a).sum(-1, keepdim=True))
        p = torch.sigmoid(th)
        return p * (1 - p) * a

    def inject(self, value, grad):
        """A surrogate whose value is ``value`` and whose gradient w.r.t. the logits is ``grad``
        (canonical shape, detached), per example."""
        delta = self.lg - self.lg.detach()                    # value 0, gradient 1
        delta = delta.masked_fill(~torch.isfinite(self.lg.detach()), 0.0)   # ±inf logits: no NaN, no gradient
        return value + self.per_example(grad.detach() * delta)

    def wants_grad(self):
        return torch.is_grad_enabled() and self.logits.requires_grad


def _num_samples(num_samples, default, name, minimum=1):
    if num_samples is None:
        return default
    k = V.check_int(num_samples, "num_samples")
    if k < minimum:
        raise ValueError(f"estimator {name!r} needs num_samples >= {minimum}, got {k}")
    return k


def _surrogate_score(p, values, logp, signal):
    """``mean_k f_k`` in value (keeping ``f``'s own graph) plus ``mean_k sg(signal_k) ∇ log p_k``."""
    k = values.shape[0]
    return values.mean(0) + (signal.detach() * (logp - logp.detach())).sum(0) / k


# --------------------------------------------------------------------------------------------
# Score-function family


def _reinforce(f, logits, *, num_samples=None, dim=-1, variable="categorical", generator=None, baseline=None):
    r"""REINFORCE / score function (Williams 1992, "Simple statistical gradient-following
    algorithms for connectionist reinforcement learning"):

    .. math:: \hat g = \frac1K \sum_k (f(D_k) - b)\, \nabla_\theta \log p_\theta(D_k)

    with an optional constant ``baseline`` b (a number, or a tensor broadcastable to the
    examples). Unbiased for every ``f``; needs only values of ``f``."""
    p = _Problem(f, logits, dim, variable, "reinforce")
    k = _num_samples(num_samples, 1, "reinforce")
    x = p.sample(k, generator)
    values = p.call_many(x)
    b = 0.0 if baseline is None else torch.as_tensor(baseline, dtype=p.cdt, device=values.device).detach()
    return _surrogate_score(p, values, p.log_prob(x), values.detach() - b)


def _rloo(f, logits, *, num_samples=None, dim=-1, variable="categorical", generator=None):
    r"""REINFORCE leave-one-out (Kool, van Hoof, Welling 2019, "Buy 4 REINFORCE samples, get a
    baseline for free!"; Mnih & Rezende 2016): K ≥ 2 samples, each baselined by the mean of the
    others,

    .. math:: \hat g = \frac1K \sum_k \Big(f_k - \frac{1}{K-1}\sum_{j\ne k} f_j\Big)\nabla_\theta\log p(D_k).

    Unbiased (the baseline of sample k does not depend on D_k); values of ``f`` only."""
    p = _Problem(f, logits, dim, variable, "rloo")
    k = _num_samples(num_samples, 2, "rloo", minimum=2)
    x = p.sample(k, generator)
    values = p.call_many(x)
    fv = values.detach()
    signal = (fv - (fv.sum(0, keepdim=True) - fv) / (k - 1))
    return _surrogate_score(p, values, p.log_prob(x), signal)


class EMABaseline(torch.nn.Module):
    r"""REINFORCE with an exponential-moving-average baseline (a stateful estimator).

    Each call uses the baseline ``b`` from earlier calls (so the estimate stays unbiased),
    then updates ``b ← β b + (1 − β) mean(f)`` over this call's examples and samples. The first
    call has no baseline yet (``b = 0``). Create once, pass as ``estimator=`` every step::

        ema = quasigrad.objective.EMABaseline(beta=0.9)
        est = quasigrad.objective.expectation(f, logits, estimator=ema)
    """

    unbiased = True
    needs_grad_f = False

    def __init__(self, beta: float = 0.9):
        super().__init__()
        beta = float(beta)
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"beta must be in [0, 1), got {beta}")
        self.beta = beta
        self.register_buffer("value", torch.zeros(()))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def forward(self, f, logits, *, num_samples=None, dim=-1, variable="categorical", generator=None):
        p = _Problem(f, logits, dim, variable, "EMABaseline")
        k = _num_samples(num_samples, 1, "EMABaseline")
        x = p.sample(k, generator)
        values = p.call_many(x)
        b = (self.value.to(device=values.device, dtype=p.cdt) if int(self.steps) > 0
             else torch.zeros((), dtype=p.cdt, device=values.device))
        out = _surrogate_score(p, values, p.log_prob(x), values.detach() - b)
        with torch.no_grad():
            m = values.detach().mean().to(self.value)
            self.value.copy_(m if int(self.steps) == 0 else self.beta * self.value + (1 - self.beta) * m)
            self.steps += 1
        return out


def _one_per_example(out: torch.Tensor, want: tuple, what: str) -> torch.Tensor:
    """A network's output shaped ``want`` (a trailing size-1 dimension is dropped), else a
    ValueError that starts with ``what``."""
    if tuple(out.shape) == want + (1,):
        out = out.squeeze(-1)
    if tuple(out.shape) != want:
        raise ValueError(f"{what} per example, shape {want} (or {want + (1,)}), got {tuple(out.shape)}")
    return out


class LearnedBaseline(torch.nn.Module):
    r"""REINFORCE with a learned, input-dependent baseline (NVIL: Mnih & Gregor 2014, "Neural
    variational inference and learning in belief networks").

    ``net`` maps a per-example input ``context`` (keyword argument of the call; by default the
    detached logits flattened per example, shape ``(*example, features)``) to a baseline
    ``b(x)`` per example. The learning signal is ``f − b(x)`` and the network is trained on
    ``(f − b(x))²``: that loss is inside the returned surrogate with value zero, so the same
    ``backward()`` trains it (its parameters must be in the optimiser). The context is detached:
    the baseline's loss never reaches the model.

    With ``normalize_variance=True`` (NVIL's variance normalisation) the signal is also centred
    by a running mean ``c`` and divided by ``max(1, √v)``, ``v`` a running variance (β-moving
    averages of earlier calls). This rescales the gradient by a positive factor: the direction
    is unbiased, the magnitude is not.
    """

    needs_grad_f = False

    def __init__(self, net: Callable, *, normalize_variance: bool = False, beta: float = 0.9):
        super().__init__()
        if not callable(net):
            raise TypeError(f"net must be callable (context -> one baseline per example), got {type(net).__name__}")
        self.net = net
        self.normalize_variance = bool(normalize_variance)
        self.beta = float(beta)
        self.unbiased = not self.normalize_variance
        self.register_buffer("mean", torch.zeros(()))
        self.register_buffer("var", torch.ones(()))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def forward(self, f, logits, *, num_samples=None, dim=-1, variable="categorical", generator=None, context=None):
        p = _Problem(f, logits, dim, variable, "LearnedBaseline")
        k = _num_samples(num_samples, 1, "LearnedBaseline")
        x = p.sample(k, generator)
        values = p.call_many(x)
        ctx = p.lg.detach().flatten(p.lg.dim() - p.var_dims) if context is None else context.detach()
        ref = next(iter(self.net.parameters()), None) if isinstance(self.net, torch.nn.Module) else None
        b = self.net(ctx if ref is None or not ctx.is_floating_point() else ctx.to(ref.dtype))
        if not isinstance(b, torch.Tensor):
            raise TypeError(f"net must return a tensor, got {type(b).__name__}")
        b = _one_per_example(b, tuple(values.shape[1:]), "net must return one baseline").to(p.cdt)
        signal = values.detach() - b.detach()
        if self.normalize_variance:
            c = self.mean.to(device=values.device, dtype=p.cdt)
            v = self.var.to(device=values.device, dtype=p.cdt)
            centred = signal - c
            signal = centred / v.sqrt().clamp_min(1.0)
            with torch.no_grad():
                m, s2 = (values.detach() - b.detach()).mean(), ((values.detach() - b.detach()) - c).pow(2).mean()
                self.mean.mul_(self.beta).add_((1 - self.beta) * m.to(self.mean))
                self.var.mul_(self.beta).add_((1 - self.beta) * s2.to(self.var))
        self.steps += 1
        loss = (values.detach() - b).pow(2).mean(0)
        return _surrogate_score(p, values, p.log_prob(x), signal) + (loss - loss.detach())


# --------------------------------------------------------------------------------------------
# Pair estimators for binary variables


def _bernoulli_only(variable, name):
    if variable != "bernoulli":
        raise ValueError(f"estimator {name!r} is for binary variables: call it with variable='bernoulli' "
                         f"(Bernoulli logits), got variable={variable!r}")


def _arm(f, logits, *, num_samples=None, dim=-1, variable="bernoulli", generator=None):
    r"""ARM, augment-REINFORCE-merge (Yin & Zhou 2019, "ARM: Augment-REINFORCE-Merge Gradient
    for Stochastic Binary Networks"), for Bernoulli logits η. With one uniform vector u per pair,

    .. math:: \hat g = \big(f(1[u > \sigma(-\eta)]) - f(1[u < \sigma(\eta)])\big)\,(u - \tfrac12)

    (two evaluations per pair; ``num_samples`` pairs are averaged). Unbiased; values of ``f`` only.
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
    """Logits η of the C − 1 independent bits of the stick-breaking form of ``Categorical(softmax(lg))``
    with categories in descending order of probability: bit j says "category j, given not one of the
    earlier ones", ``η_j = log π_j − log Σ_{i>j} π_i``. Returns ``(η, order)``, differentiable in ``lg``;
    ``order`` (detached) maps sorted positions to categories."""
    order = lg.detach().argsort(-1, descending=True)
    logp = torch.log_softmax(lg, -1).gather(-1, order)
    logp = logp.clamp_min(torch.finfo(logp.dtype).min / 4)             # masked categories: finite, no NaN
    tail = torch.logcumsumexp(logp.flip(-1), -1).flip(-1)               # log Σ_{i≥j} π_i
    return logp[..., :-1] - tail[..., 1:], order


def _bits_to_onehot(bits, order, dtype):
    """Stick-breaking bits ``(…, C−1)`` → one-hot ``(…, C)``: the first bit set, else the last category."""
    c = order.shape[-1]
    ones = torch.ones(bits.shape[:-1] + (1,), dtype=bits.dtype, device=bits.device)
    pos = torch.cat([bits, ones], -1).argmax(-1, keepdim=True)          # first 1 (argmax returns the first)
    cat = order.expand(bits.shape[:-1] + (c,)).gather(-1, pos)
    return torch.zeros(bits.shape[:-1] + (c,), dtype=dtype, device=bits.device).scatter_(-1, cat, 1)


def _disarm(f, logits, *, num_samples=None, dim=-1, variable="bernoulli", generator=None):
    r"""DisARM (Dong, Mnih, Tucker 2020, "DisARM: An Antithetic Gradient Estimator for Binary
    Latent Variables"; also Yin et al. 2020 U2G): ARM with the noise that does not change the
    antithetic pair integrated out. With ``b = 1[1 − u < σ(η)]`` and ``b̃ = 1[u < σ(η)]``,

    .. math:: \hat g_j = \tfrac12\big(f(b) - f(\tilde b)\big)\,(-1)^{\tilde b_j}\,
              1[b_j \ne \tilde b_j]\,\sigma(|\eta_j|)

    Unbiased; variance at most ARM's (the paper's Theorem); values of ``f`` only, two per pair.

    Categorical variables use the stick-breaking form (Dong, Mnih, Tucker 2021, "Coupled Gradient
    Estimators for Discrete Latent Variables"): a categorical variable is a function of C − 1
    independent bits with logits ``η_j = log π_j − log Σ_{i>j} π_i`` (categories sorted by
    decreasing probability; the category is the first bit set, else the last). DisARM on the bits
    gives an unbiased ``∇η``, carried to θ by the chain rule through ``η(θ)``."""
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


# --------------------------------------------------------------------------------------------
# Double control variates


def _value_and_grad(p, x):
    """``f`` on canonical sample ``x`` and its gradient with respect to the sample (canonical)."""
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


def _double_cv(f, logits, *, num_samples=None, dim=-1, variable="bernoulli", generator=None, expansion="mean"):
    r"""Double control variates (Titsias & Shi 2022, "Double Control Variates for Gradient
    Estimation in Discrete Latent Variable Models"), two samples.

    The leave-one-out estimator with K = 2 baselines sample k by ``f(D_j)``; the second control
    variate subtracts a first-order Taylor expansion ``h(D) = ⟨a, D⟩`` of ``f`` from both
    values and adds back its exact expected gradient:

    .. math:: \hat g = \tfrac12 \sum_{k \ne j}\big(f_k - f_j - \langle a_{(k)}, D_k - D_j\rangle\big)
              \nabla_\theta \log p(D_k) + \tfrac12 \sum_k \nabla_\theta E_D\langle a_{(k)}, D\rangle,

    with ``∇θ E⟨a, D⟩ = J(π) a`` (categorical) or ``σ'(θ) ⊙ a`` (Bernoulli). The slope:

    - ``expansion="mean"`` (default): ``a = ∇f(μ)`` at the mean ``μ = E[D]`` (``π`` or ``σ(θ)``),
      the same for both terms: three evaluations of ``f`` (two samples, one at ``μ``) and one
      gradient. ``f`` must accept the relaxed point ``μ``.
    - ``expansion="other"``: ``a_(k) = ∇f(D_j)``, the gradient at the other sample (no extra
      evaluation; gradients at both samples).

    Unbiased in both forms (the slope used for sample k does not depend on D_k); exact (zero
    variance) when ``f`` is linear. Needs ``∂f/∂D``. These are the forms we derive and test
    here; the paper's general-K estimator and its optimally scaled variant are not implemented.
    Works for categorical variables too."""
    p = _Problem(f, logits, dim, variable, "double_cv")
    k = _num_samples(num_samples, 2, "double_cv", minimum=2)
    if k != 2:
        raise ValueError(f"estimator 'double_cv' uses exactly two samples, got num_samples={k}")
    if expansion not in ("mean", "other"):
        raise ValueError(f"expansion must be 'mean' or 'other', got {expansion!r}")
    x = p.sample(2, generator)
    d = x[0] - x[1]
    s = p.score(x)
    if expansion == "mean":
        f1, f2 = p.call(x[0]), p.call(x[1])
        th = p.lg.detach()
        mu = torch.softmax(th, -1) if p.cat else torch.sigmoid(th)
        _, a = _value_and_grad(p, mu)
        r = (f1 - f2).detach() - p.per_example(a * d)                   # residual of f − h, antisymmetric
        g = 0.5 * p.expand_coef(r) * (s[0] - s[1]) + p.mean_jvp(a)
    else:
        f1, a1 = _value_and_grad(p, x[0])
        f2, a2 = _value_and_grad(p, x[1])
        r1 = (f1 - f2).detach() - p.per_example(a2 * d)                  # Taylor residual around D_2, at D_1
        r2 = (f2 - f1).detach() + p.per_example(a1 * d)                  # around D_1, at D_2
        g = 0.5 * (p.expand_coef(r1) * s[0] + p.expand_coef(r2) * s[1] + p.mean_jvp(a1 + a2))
    return p.inject(0.5 * (f1 + f2), g)


# --------------------------------------------------------------------------------------------
# Sum-and-sample (Rao-Blackwellisation)


def _top_outcomes(lp, k):
    """The ``k`` most probable joint outcomes of independent variables: ``lp`` is ``(E, n, C)``
    log-probabilities; returns category indices ``(E, k, n)``. Exact, by merging one variable
    at a time and keeping the best ``k`` partial outcomes (the best ``k`` of a product keep
    prefixes among the best ``k`` of the prefix)."""
    E, n, C = lp.shape
    best = torch.zeros(E, 1, dtype=lp.dtype, device=lp.device)
    idx = torch.zeros(E, 1, 0, dtype=torch.long, device=lp.device)
    for i in range(n):
        cand = (best.unsqueeze(-1) + lp[:, i].unsqueeze(1)).flatten(1)           # (E, m*C)
        m = min(k, cand.shape[1])
        best, top = cand.topk(m, dim=1)
        parent, cat = top // C, top % C
        idx = torch.cat([idx.gather(1, parent.unsqueeze(-1).expand(-1, -1, idx.shape[2])), cat.unsqueeze(-1)], -1)
    return idx


def _rao_blackwell(f, logits, *, num_samples=None, dim=-1, variable="categorical", generator=None, k=4,
                   max_rounds=64):
    r"""Sum-and-sample (Liu, Regier, Tripuraneni, Jordan, McAuliffe 2019, "Rao-Blackwellized
    Stochastic Gradients for Discrete Distributions"): the set C of the ``k`` most probable joint
    outcomes of an example is summed exactly, the rest is sampled from ``p`` restricted to the
    complement (``num_samples`` draws, by rejection):

    .. math:: \hat g = \sum_{c \in C} f(c)\,\nabla_\theta p(c)
              + (1 - p(C))\,\frac1K\sum_k f(\tilde D_k)\,\nabla_\theta \log p(\tilde D_k),
              \quad \tilde D_k \sim p(\cdot \mid D \notin C).

    Unbiased, and its variance is at most that of REINFORCE with K samples (a conditional
    expectation of it). ``k + num_samples`` evaluations of ``f``. The top-k set is found exactly
    with a loop over an example's variables. When ``p(C)`` is so close to 1 that ``max_rounds``
    rounds of rejection find no outcome outside C, that example's sampled term is dropped (a
    bias of at most ``(1 − p(C)) max|f|``)."""
    p = _Problem(f, logits, dim, variable, "rao_blackwell")
    K = _num_samples(num_samples, 1, "rao_blackwell")
    k = V.check_int(k, "k")
    # Call f once to learn the example layout.
    x0 = p.sample(1, generator)
    f0 = p.call(x0[0])
    e = p.e
    ex, var_shape = p.batch[:e], p.batch[e:]
    n = math.prod(var_shape)
    C = p.n_cat
    th = p.lg
    if p.cat:
        logp_all = torch.log_softmax(th, -1)
    else:
        logp_all = torch.stack([torch.nn.functional.logsigmoid(-th), torch.nn.functional.logsigmoid(th)], -1)
    E = math.prod(ex)
    lp = logp_all.detach().reshape(E, n, C)
    top = _top_outcomes(lp, k)                                           # (E, m, n)
    m = top.shape[1]
    onehot = torch.nn.functional.one_hot(top, C).to(p.cdt)               # (E, m, n, C)
    lp_sel = logp_all.reshape(E, 1, n, C).expand(E, m, n, C)
    logq = torch.where(onehot > 0, lp_sel, torch.zeros_like(lp_sel)).sum(-1).sum(-1)   # (E, m), differentiable
    q = logq.exp()
    mass = q.sum(1)                                                      # p(C)
    sets = onehot.permute(1, 0, 2, 3).reshape((m,) + tuple(ex) + tuple(var_shape) + (C,))
    sets_c = sets if p.cat else sets[..., 1]
    fc = p.call_many(sets_c)                                             # (m, *ex)
    qc = q.t().reshape((m,) + tuple(ex))
    value = (qc.detach() * fc).sum(0) + ((qc - qc.detach()) * fc.detach()).sum(0)
    rest = (1 - mass.detach()).clamp_min(0).reshape(ex)
    if C ** n <= m:                                                      # everything enumerated
        return value
    # Rejection sampling from the complement of C, vectorised over examples.
    draws, found = None, torch.zeros((K, E), dtype=torch.bool, device=th.device)
    per_round = 4                                                        # candidates per draw and round
    for _ in range(max_rounds):
        x = p.sample(K * per_round, generator).reshape((per_round, K) + tuple(p.lg.shape))
        xi = (x.argmax(-1) if p.cat else x.long()).reshape(per_round, K, E, 1, n)
        outside = ~(xi == top.reshape(1, 1, E, m, n)).all(-1).any(-1)     # (R, K, E)
        first = outside.to(torch.uint8).argmax(0)                          # first candidate outside C
        pick = x.gather(0, first.reshape((1, K) + tuple(ex) + (1,) * p.var_dims)
                        .expand((1,) + tuple(x.shape[1:]))).squeeze(0)
        take = outside.any(0) & ~found
        draws = pick if draws is None else torch.where(p.expand_coef(take.reshape((K,) + tuple(ex))), pick, draws)
        found |= take
        if bool(found.all()):
            break
    ok = found.reshape((K,) + tuple(ex)).to(p.cdt)
    fs = p.call_many(draws)
    logp = p.log_prob(draws)
    w = rest * ok                                                        # (K, *ex)
    sampled = (w.detach() * fs).sum(0) / K + (w * fs.detach() * (logp - logp.detach())).sum(0) / K
    del f0
    return value + sampled


# --------------------------------------------------------------------------------------------
# REBAR and RELAX


def _conditional_logistic(theta, b, v):
    """Logistic-perturbed logits ``z̃ = θ + L`` conditioned on ``1[z̃ > 0] = b``, differentiable in θ:
    ``u' = (1 − p) + v p`` if ``b = 1`` else ``v (1 − p)``, ``z̃ = θ + logit(u')``."""
    pr = torch.sigmoid(theta)
    u = torch.where(b > 0, (1 - pr) + v * pr, v * (1 - pr))
    u = u.clamp(torch.finfo(u.dtype).tiny, 1 - torch.finfo(u.dtype).eps)
    return theta + torch.log(u) - torch.log1p(-u)


def _conditional_gumbel(theta, idx, log_e):
    """Gumbel-perturbed logits conditioned on ``argmax = idx`` along the last dim, differentiable
    in θ (Maddison et al. 2014): ``z_D = log Z − log E_D``, ``z_j = −log(E_j e^{−θ_j} + E_D / Z)``,
    with ``log_e = log E``, ``E ~ Exp(1)``."""
    log_z = torch.logsumexp(theta, -1, keepdim=True)
    i = idx.unsqueeze(-1)
    log_e_d = log_e.gather(-1, i)
    top = log_z - log_e_d
    rest = -torch.logaddexp(log_e - theta, log_e_d - log_z)
    return rest.scatter(-1, i, top)


class _AttachGrads(torch.autograd.Function):
    """Forward: zeros shaped like the examples. Backward: precomputed gradients for ``params``,
    scaled by the mean of the incoming gradient (1/B for ``est.mean()``, 1 for ``est.sum()``)."""

    @staticmethod
    def forward(ctx, like, grads, *params):
        ctx.grads = grads
        return torch.zeros_like(like)

    @staticmethod
    def backward(ctx, grad):
        s = grad.mean()
        return (None, None) + tuple(g * s.to(g.dtype) for g in ctx.grads)


def control_variate_mlp(num_inputs: int, hidden: int = 100) -> torch.nn.Module:
    """A small control-variate network for :class:`RELAX`: ``(*example, num_inputs) → (*example,)``,
    one hidden layer of ``hidden`` tanh units. ``num_inputs`` is the number of variables per
    example times the categories (binary: the number of variables)."""
    V.check_int(num_inputs, "num_inputs")
    V.check_int(hidden, "hidden")
    return torch.nn.Sequential(torch.nn.Linear(num_inputs, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 1))


class RELAX(torch.nn.Module):
    r"""RELAX (Grathwohl, Choi, Wu, Roeder, Duvenaud 2018, "Backpropagation through the Void:
    Optimizing control variates for black-box gradient estimation"), a stateful estimator.

    With ``z = θ + G`` (Gumbel noise; logistic for binary variables), ``D = H(z)`` (argmax, or
    ``1[z > 0]``) and ``z̃ ~ p(z | D)`` (conditional noise, reparameterised in θ),

    .. math:: \hat g = \big(f(D) - c_\phi(\tilde z)\big)\nabla_\theta \log p(D)
              + \nabla_\theta c_\phi(z) - \nabla_\theta c_\phi(\tilde z).

    The control variate is ``c_φ(z) = net(σ_λ(z))`` (``σ_λ``: softmax or sigmoid at temperature
    λ, learned when ``learn_temperature``), plus ``η f(σ_λ(z))`` when ``use_f=True`` (the form
    of the paper's VAE experiments; then ``f`` must be differentiable). ``net`` takes the relaxed
    sample flattened per example, ``(*example, features)`` with categories last, and returns one
    value per example (see :func:`control_variate_mlp`).

    Unbiased for any φ. The parameters φ (net, λ, η) are trained to minimise the variance, i.e.
    the squared norm of the estimate ``Σ ||ĝ_i||²`` (through ``create_graph``): the returned
    surrogate carries a zero-valued term whose backward gives φ that gradient (scaled by the
    mean weight the examples receive, so ``est.mean()`` gives the gradient of the mean squared
    norm). Put ``relax.parameters()`` in the optimiser. ``last_variance`` holds the detached
    mean of ``||ĝ_i||²`` of the latest call.
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
        return torch.softmax(z / t, -1) if p.cat else torch.sigmoid(z / t)

    def _cv(self, p, z, k):
        """``c_φ(z)`` per example for ``z`` shaped ``(k, *canonical)``: returns ``(k, *example)``."""
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
                z0 = th0 + (-torch.log(-torch.log(uniform(shape, dtype=p.cdt, device=th0.device, generator=generator))))
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
                z = theta + (z0 - th0)
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
    gradient estimates for discrete latent variable models"): :class:`RELAX` with the control
    variate ``c(z) = η f(σ_λ(z))``, the continuous relaxation of ``f`` itself, with η and the
    temperature λ trained to minimise the variance (``train_cv=False`` keeps them fixed).
    Unbiased for any η, λ; needs ``f`` differentiable in the sample (three evaluations of ``f``
    per sample: at D, σ_λ(z) and σ_λ(z̃))."""

    def __init__(self, *, temperature: float = 0.5, eta: float = 1.0, learn_temperature: bool = True,
                 learn_eta: bool = True, train_cv: bool = True):
        super().__init__(None, temperature=temperature, learn_temperature=learn_temperature, use_f=True, eta=eta,
                         learn_eta=learn_eta, train_cv=train_cv)


def _rebar_fixed(f, logits, *, num_samples=None, dim=-1, variable="categorical", generator=None,
                 temperature=0.5, eta=1.0):
    """REBAR with fixed η and λ (by name; for trained ones create :class:`REBAR` once)."""
    est = REBAR(temperature=temperature, eta=eta, learn_temperature=False, learn_eta=False, train_cv=False)
    est = est.to(device=logits.device)
    return est(f, logits, num_samples=num_samples, dim=dim, variable=variable, generator=generator)


def _relax_by_name(f, logits, **kwargs):
    raise TypeError("'relax' learns its control variate, so it is an object created once: "
                    "relax = quasigrad.objective.RELAX(quasigrad.objective.control_variate_mlp(num_inputs)); "
                    "put relax.parameters() in the optimiser and pass estimator=relax each step")


# --------------------------------------------------------------------------------------------
# Layer-1 (pathwise) estimators through the same call


def _reaches(out, target_fn, limit=100_000):
    """Whether ``target_fn`` (a grad_fn) is in the autograd graph of ``out``."""
    if out.grad_fn is None:
        return False
    if target_fn is None:
        return True
    seen, stack = set(), [out.grad_fn]
    while stack:
        fn = stack.pop()
        if fn is target_fn:
            return True
        if fn is None or id(fn) in seen:
            continue
        seen.add(id(fn))
        if len(seen) > limit:
            return True  # too large to search: assume connected
        stack.extend(nxt for nxt, _ in fn.next_functions)
    return False


def _pathwise(info):
    """The layer-2 form of a sample-level estimator: draw ``num_samples`` samples with the
    layer-1 function (its backward is the estimator), evaluate ``f`` on each, average."""

    def objective(f, logits, *, num_samples=None, dim=-1, variable="categorical", generator=None, **kwargs):
        fn = info.function(variable)
        p = _Problem(f, logits, dim, variable, info.name)
        k = _num_samples(num_samples, 1, info.name)
        V.check_generator(generator, logits.device)
        x = p.raw.unsqueeze(0).expand((k,) + tuple(p.raw.shape))
        y = fn(x, dim=-1, generator=generator, **kwargs) if p.cat else fn(x, generator=generator, **kwargs)
        check = p.wants_grad()
        outs = []
        for i, yi in enumerate(y.unbind(0)):
            s = yi.movedim(-1, p.dim) if p.cat else yi
            try:
                out = p.call(None, user_sample=s)
            except (TypeError, ValueError):
                raise
            except Exception as exc:  # f failed on a sample that carries a gradient
                raise PathwiseError(
                    f"f raised {type(exc).__name__}: {exc} when called on the sample of the pathwise estimator "
                    f"{info.name!r}, which needs f differentiable in the sample; if f is not differentiable, use a "
                    f"score-function estimator such as 'rloo'") from exc
            if check and i == 0 and not _reaches(out, s.grad_fn):
                raise PathwiseError(
                    f"pathwise estimator {info.name!r} needs f differentiable in the sample, but f's output does "
                    f"not depend on the sample through autograd (no grad_fn connects them: .item(), .detach(), "
                    f"integer ops or a simulator?); use a score-function estimator such as 'rloo'")
            outs.append(out)
        return torch.stack(outs).mean(0)

    objective.__name__ = f"pathwise_{info.name}"
    objective.__doc__ = (f"Layer-1 estimator {info.name!r} ({info.reference}) as an objective: the mean of f over "
                         f"num_samples samples drawn by its sample-level function; gradient through f.")
    return objective


def _exact_objective(f, logits, *, num_samples=None, dim=-1, variable="categorical", generator=None, **kwargs):
    """Exact ``E[f]`` by enumeration (:func:`quasigrad.exact.expectation`); ``num_samples`` and
    ``generator`` are ignored. Raises :class:`quasigrad.exact.TooManyOutcomesError` beyond its limit."""
    if not callable(f):
        raise TypeError(f"f must be callable (a sample -> one loss per example), got {type(f).__name__}")
    return _exact.expectation(f, logits, dim=dim, variable=variable, **kwargs)


# --------------------------------------------------------------------------------------------
# The one call


def expectation(f: Callable[[torch.Tensor], torch.Tensor], logits: torch.Tensor, *, estimator="rloo",
                num_samples: Optional[int] = None, dim: int = -1, variable: str = "categorical",
                generator: Optional[torch.Generator] = None, **estimator_kwargs) -> torch.Tensor:
    r"""Estimate ``E_{D ~ p_θ}[f(D)]`` per example; the gradient of the result is the estimator's.

    Args:
        f: a sample shaped like ``logits`` (one-hot along ``dim``; {0, 1} floats for Bernoulli)
            → one loss per example, shape a leading part of the batch shape (``logits`` without
            ``dim``; a scalar: one example). May be non-differentiable for estimators that do not
            need ``∂f/∂D`` (``registry.get(name).needs_grad_f``).
        logits: θ, floating, any shape (categorical: categories along ``dim``; Bernoulli: logits).
        estimator: a registered name (``quasigrad.registry.names()``) or an estimator object
            (:class:`EMABaseline`, :class:`LearnedBaseline`, :class:`REBAR`, :class:`RELAX`, or any
            callable taking ``(f, logits, *, num_samples, dim, variable, generator, **kw)``).
        num_samples: samples (pairs for ``arm``/``disarm``) per example; ``None`` takes the
            estimator's default (2 for ``rloo`` and ``double_cv``, 1 otherwise).
        dim: the category dimension (categorical only).
        variable: ``"categorical"`` or ``"bernoulli"``.
        generator: ``torch.Generator`` for the draws.
        **estimator_kwargs: the estimator's options (``tau`` for layer-1 estimators, ``baseline``
            for ``reinforce``, ``k`` for ``rao_blackwell``, ...).

    Returns:
        A tensor of shape ``f``'s output: the Monte Carlo estimate of ``E[f]`` per example (the
        exact value for ``exact``), whose gradient is the estimator's.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> logits = torch.zeros(3, 4, requires_grad=True)            # one example, three variables
        >>> f = lambda d: (d * torch.arange(4.0)).sum()                # a linear loss
        >>> est = expectation(f, logits, estimator="rloo", num_samples=4, generator=g)
        >>> est.backward(); logits.grad.shape
        torch.Size([3, 4])
    """
    if isinstance(estimator, str):
        info = registry.get(estimator)
        if variable not in _VARIABLES:
            raise ValueError(f"variable must be 'categorical' or 'bernoulli', got {variable!r}")
        if variable not in info.variables:
            raise ValueError(f"estimator {estimator!r} supports {sorted(info.variables)} variables, not {variable!r}")
        impl = info.objective
        if impl is None:
            if info.categorical is None and info.bernoulli is None:
                raise ValueError(f"estimator {estimator!r} has no objective implementation")
            impl = _pathwise(info)
        kwargs = {**info.defaults, **estimator_kwargs}
    elif callable(estimator):
        impl, kwargs = estimator, estimator_kwargs
    else:
        raise TypeError(f"estimator must be a registered name or an estimator object, got {type(estimator).__name__}")
    V.check_generator(generator, logits.device if isinstance(logits, torch.Tensor) else "cpu")
    return impl(f, logits, num_samples=num_samples, dim=dim, variable=variable, generator=generator, **kwargs)


# --------------------------------------------------------------------------------------------
# Registry

_BOTH = ("categorical", "bernoulli")
registry.register("exact", family="exact", unbiased=True, needs_grad_f=False, grad_depends_on_sample_only=False,
                  variables=_BOTH, evaluations=None, reference="enumeration of every outcome (C ** variables)",
                  objective=_exact_objective, replace=True)
registry.register("reinforce", family="score-function", unbiased=True, needs_grad_f=False,
                  grad_depends_on_sample_only=False, variables=_BOTH, evaluations=None,
                  reference="Williams 1992", objective=_reinforce, replace=True)
registry.register("rloo", family="score-function", unbiased=True, needs_grad_f=False,
                  grad_depends_on_sample_only=False, variables=_BOTH, evaluations=None,
                  reference="Kool, van Hoof, Welling 2019", objective=_rloo, replace=True)
registry.register("arm", family="pair", unbiased=True, needs_grad_f=False, grad_depends_on_sample_only=False,
                  variables=("bernoulli",), evaluations=2, reference="Yin & Zhou 2019", objective=_arm,
                  replace=True)
registry.register("disarm", family="pair", unbiased=True, needs_grad_f=False, grad_depends_on_sample_only=False,
                  variables=_BOTH, evaluations=2, reference="Dong, Mnih, Tucker 2020; categorical: 2021",
                  objective=_disarm, replace=True)
registry.register("double_cv", family="control-variate", unbiased=True, needs_grad_f=True,
                  grad_depends_on_sample_only=False, variables=_BOTH, evaluations=3,
                  reference="Titsias & Shi 2022", objective=_double_cv, replace=True)
registry.register("rao_blackwell", family="score-function", unbiased=True, needs_grad_f=False,
                  grad_depends_on_sample_only=False, variables=_BOTH, evaluations=None,
                  reference="Liu, Regier, Tripuraneni, Jordan, McAuliffe 2019", objective=_rao_blackwell,
                  defaults={"k": 4}, replace=True)
registry.register("rebar", family="control-variate", unbiased=True, needs_grad_f=True,
                  grad_depends_on_sample_only=False, variables=_BOTH, evaluations=3,
                  reference="Tucker et al. 2017", objective=_rebar_fixed, replace=True)
registry.register("relax", family="control-variate", unbiased=True, needs_grad_f=False,
                  grad_depends_on_sample_only=False, variables=_BOTH, evaluations=1,
                  reference="Grathwohl et al. 2018 (stateful: quasigrad.objective.RELAX)", objective=_relax_by_name,
                  replace=True)
for _info in list(registry._REGISTRY.values()):
    if _info.objective is None and (_info.categorical is not None or _info.bernoulli is not None):
        registry.update(_info.name, objective=_pathwise(_info))
