"""The score-function family: REINFORCE with a constant, moving-average or learned baseline,
leave-one-out, and sum-and-sample Rao-Blackwellisation. Each needs values of `f` only."""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch

from .._util import validate as V
from ._problem import _num_samples, _one_per_example, _Problem, _surrogate_score


def _reinforce(f, logits, *, num_samples=None, dim=-1, variable="categorical", generator=None, baseline=None):
    r"""REINFORCE / score function (Williams 1992, "Simple statistical gradient-following
    algorithms for connectionist reinforcement learning"):

    $$
    \hat g = \frac1K \sum_k (f(D_k) - b)\, \nabla_\theta \log p_\theta(D_k)
    $$

    with an optional constant `baseline` b (a number, or a tensor broadcastable to the
    examples). Unbiased for every `f`; needs only values of `f`."""
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

    $$
    \hat g = \frac1K \sum_k \Big(f_k - \frac{1}{K-1}\sum_{j\ne k} f_j\Big)\nabla_\theta\log p(D_k).
    $$

    Unbiased (the baseline of sample k does not depend on D_k); values of `f` only."""
    p = _Problem(f, logits, dim, variable, "rloo")
    k = _num_samples(num_samples, 2, "rloo", minimum=2)
    x = p.sample(k, generator)
    values = p.call_many(x)
    fv = values.detach()
    signal = (fv - (fv.sum(0, keepdim=True) - fv) / (k - 1))
    return _surrogate_score(p, values, p.log_prob(x), signal)


class EMABaseline(torch.nn.Module):
    r"""REINFORCE with an exponential-moving-average baseline (a stateful estimator).

    Each call uses the baseline `b` from earlier calls (so the estimate stays unbiased),
    then updates `b ← β b + (1 − β) mean(f)` over this call's examples and samples. The first
    call has no baseline yet (`b = 0`). Create once, pass as `estimator=` every step:

    ```python
    ema = quasigrad.objective.EMABaseline(beta=0.9)
    est = quasigrad.objective.expectation(f, logits, estimator=ema)
    ```

    Args:
        beta: the moving average's decay, in [0, 1).

    Raises:
        ValueError: `beta` outside [0, 1).
    """

    unbiased = True
    needs_grad_f = False
    value: torch.Tensor
    steps: torch.Tensor

    def __init__(self, beta: float = 0.9):
        super().__init__()
        beta = float(beta)
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"beta must be in [0, 1), got {beta}")
        self.beta = beta
        self.register_buffer("value", torch.zeros(()))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def forward(self, f: Callable[[torch.Tensor], torch.Tensor], logits: torch.Tensor, *,
                num_samples: Optional[int] = None, dim: int = -1, variable: str = "categorical",
                generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """The estimate, as [quasigrad.objective.expectation][] with `estimator=` this object.

        Args:
            f: the loss of a sample, one value per example.
            logits: the logits of the variables.
            num_samples: samples per example (default 1).
            dim: the category dimension.
            variable: `"categorical"` or `"bernoulli"`.
            generator: for the draws.

        Returns:
            One estimate of `E[f]` per example, whose gradient is REINFORCE's with the
            baseline of the earlier calls.
        """
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


class LearnedBaseline(torch.nn.Module):
    r"""REINFORCE with a learned, input-dependent baseline (NVIL: Mnih & Gregor 2014, "Neural
    variational inference and learning in belief networks").

    `net` maps a per-example input `context` (keyword argument of the call; by default the
    detached logits flattened per example, shape `(*example, features)`) to a baseline
    `b(x)` per example. The learning signal is `f − b(x)` and the network is trained on
    `(f − b(x))²`: that loss is inside the returned surrogate with value zero, so the same
    `backward()` trains it (its parameters must be in the optimiser). The context is detached:
    the baseline's loss never reaches the model.

    With `normalize_variance=True` (NVIL's variance normalisation) the signal is also centred
    by a running mean `c` and divided by `max(1, √v)`, `v` a running variance (β-moving
    averages of earlier calls). This rescales the gradient by a positive factor: the direction
    is unbiased, the magnitude is not.

    Args:
        net: the baseline network, `context -> one baseline per example`.
        normalize_variance: NVIL's variance normalisation (see above).
        beta: the decay of the running mean and variance.

    Raises:
        TypeError: `net` is not callable.
    """

    needs_grad_f = False
    mean: torch.Tensor
    var: torch.Tensor
    steps: torch.Tensor

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

    def forward(self, f: Callable[[torch.Tensor], torch.Tensor], logits: torch.Tensor, *,
                num_samples: Optional[int] = None, dim: int = -1, variable: str = "categorical",
                generator: Optional[torch.Generator] = None, context: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The estimate, as [quasigrad.objective.expectation][] with `estimator=` this object.

        Args:
            f: the loss of a sample, one value per example.
            logits: the logits of the variables.
            num_samples: samples per example (default 1).
            dim: the category dimension.
            variable: `"categorical"` or `"bernoulli"`.
            generator: for the draws.
            context: the baseline network's input, one row per example (default: the detached
                logits flattened per example).

        Returns:
            One estimate of `E[f]` per example, whose gradient is NVIL's (and trains `net`).

        Raises:
            TypeError: `net` returned something other than a tensor.
        """
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


def _top_outcomes(lp, k):
    """The `k` most probable joint outcomes of independent variables: `lp` is `(E, n, C)`
    log-probabilities; returns category indices `(E, k, n)`. Exact, by merging one variable
    at a time and keeping the best `k` partial outcomes (the best `k` of a product keep
    prefixes among the best `k` of the prefix)."""
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
    Stochastic Gradients for Discrete Distributions"): the set C of the `k` most probable joint
    outcomes of an example is summed exactly, the rest is sampled from `p` restricted to the
    complement (`num_samples` draws, by rejection):

    $$
    \hat g = \sum_{c \in C} f(c)\,\nabla_\theta p(c)
    + (1 - p(C))\,\frac1K\sum_k f(\tilde D_k)\,\nabla_\theta \log p(\tilde D_k),
    \quad \tilde D_k \sim p(\cdot \mid D \notin C).
    $$

    Unbiased, and its variance is at most that of REINFORCE with K samples (a conditional
    expectation of it). `k + num_samples` evaluations of `f`. The top-k set is found exactly
    with a loop over an example's variables. When `p(C)` is so close to 1 that `max_rounds`
    rounds of rejection find no outcome outside C, that example's sampled term is dropped (a
    bias of at most `(1 − p(C)) max|f|`)."""
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
