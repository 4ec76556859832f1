r"""Expectation maximisation for a mixture of Bernoullis, and the same model fitted by gradient
descent through its discrete assignment: the baseline that needs no gradient estimator.

The model over `x ∈ {0, 1}^D` with `K` components,

$$
p(x) = \sum_k \pi_k \prod_d \mu_{kd}^{x_d} (1 - \mu_{kd})^{1 - x_d},
$$

has an exact posterior over the assignment `z`, so EM (Dempster, Laird & Rubin 1977) fits
it without any gradient: the E-step computes responsibilities `r_nk = p(z = k | x_n)`, the
M-step sets

$$
\pi_k = \frac{N_k + a}{N + K a}, \qquad
\mu_{kd} = \frac{\sum_n r_{nk} x_{nd} + a}{N_k + 2a}, \qquad N_k = \sum_n r_{nk},
$$

the maximiser of the expected complete-data log-likelihood plus the log of a symmetric
`Dirichlet(1 + a)` / `Beta(1 + a, 1 + a)` prior (`a = pseudo_count`; `a = 0` is maximum
likelihood). Each iteration never decreases `log p(X) + log prior` (with `a = 0`: the
log-likelihood).

The gradient alternative maximises the evidence lower bound with an amortised posterior
`q(z | x) = softmax(encoder(x))`,

$$
\mathrm{ELBO}(x) = E_{z \sim q}[f_x(z)] + H(q), \qquad
f_x(z) = z^\top \log\pi + \sum_d x_d (z\Lambda)_d - \operatorname{softplus}((z\Lambda)_d),
$$

`Λ = logit μ` (a linear decoder of the one-hot `z`), whose gradient through the discrete
`z` comes from any registered estimator: a layer-1 function (`st`, `reinmax`, …: `z` is
the estimator's one-hot sample and `f` is differentiated at it) or, for score-function
estimators such as `rloo`, [quasigrad.objective.expectation][]. The entropy is exact.
`f` is not linear in `z` for the straight-through family (`softplus` of `zΛ`), so their
bias shows.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable, List, Optional, Tuple

import torch

from . import objective, registry
from ._util import validate as V

__all__ = ["BernoulliMixture", "fit_em", "elbo", "fit_gradient", "check_binary"]


def check_binary(x: Any, name: str = "x") -> None:
    """Require a floating-point `(N, D)` tensor of 0s and 1s.

    Args:
        x: the value to check.
        name: the argument's name, for the message.

    Raises:
        TypeError: `x` is not a floating-point tensor.
        ValueError: `x` is not 2-dimensional or holds a value other than 0 and 1.
    """
    V.check_floating(x, name)
    if x.dim() != 2:
        raise ValueError(f"{name} must be shaped (N, D), got {tuple(x.shape)}")
    if x.numel() and not bool(((x == 0) | (x == 1)).all()):
        bad = x[(x != 0) & (x != 1)].flatten()[0].item()
        raise ValueError(f"{name} must hold only 0s and 1s (binarise it first), got value {bad!r}")


def _xlogy_matmul(x, logp):
    """`Σ_d x_nd logp_kd` with `0 · (−inf) = 0` (a probability of exactly 0 that the data never hit)."""
    finite = torch.isfinite(logp)
    out = x @ torch.where(finite, logp, torch.zeros_like(logp)).T
    hits = x @ (~finite).to(x.dtype).T
    return torch.where(hits > 0, torch.full_like(out, float("-inf")), out)


class BernoulliMixture(torch.nn.Module):
    """A mixture of `K` product-Bernoulli components over `D` binary features.

    The parameters are logits: `mix_logits` `(K,)` with `π = softmax(mix_logits)`, and
    `logits` `(K, D)` with `μ = sigmoid(logits)`. EM writes them through
    [set_probabilities][quasigrad.em.BernoulliMixture.set_probabilities] (a probability of 0 or 1
    becomes an infinite logit); gradient training moves them directly. Both start at zero
    (uniform weights, means 1/2); see
    [init_from_data][quasigrad.em.BernoulliMixture.init_from_data].

    Args:
        num_components: `K`.
        num_features: `D`.
        dtype: the parameters' dtype.
        device: the parameters' device.
    """

    def __init__(self, num_components: int, num_features: int, *, dtype: torch.dtype = torch.float32,
                 device: Optional[torch.device | str] = None):
        super().__init__()
        K = V.check_int(num_components, "num_components")
        D = V.check_int(num_features, "num_features")
        self.mix_logits = torch.nn.Parameter(torch.zeros(K, dtype=dtype, device=device))
        self.logits = torch.nn.Parameter(torch.zeros(K, D, dtype=dtype, device=device))

    @property
    def num_components(self) -> int:
        """The number of components.

        Returns:
            `K`.
        """
        return self.logits.shape[0]

    # -- views ---------------------------------------------------------------------------
    def log_weights(self) -> torch.Tensor:
        """The log mixture weights.

        Returns:
            `log π` shaped `(K,)`.
        """
        return torch.log_softmax(self.mix_logits, -1)

    def log_means(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """The log means and log complements.

        Returns:
            `(log μ, log(1 − μ))`, each `(K, D)`; `−inf` where a probability is exactly 0.
        """
        return torch.nn.functional.logsigmoid(self.logits), torch.nn.functional.logsigmoid(-self.logits)

    @torch.no_grad()
    def set_probabilities(self, weights: torch.Tensor, means: torch.Tensor) -> None:
        """Set the parameters from probabilities.

        Args:
            weights: π shaped `(K,)`, summing to 1.
            means: μ shaped `(K, D)` in [0, 1] (0 and 1 become ∓inf logits).
        """
        self.mix_logits.copy_(torch.log(weights))
        self.logits.copy_(torch.log(means) - torch.log1p(-means))

    @torch.no_grad()
    def init_from_data(self, x: torch.Tensor, *, generator: Optional[torch.Generator] = None) -> "BernoulliMixture":
        """The usual EM initialisation, used for both training methods: uniform weights, each
        component's means halfway between a random data point and the data mean, kept in
        [0.05, 0.95].

        Args:
            x: binary data `(N, D)`.
            generator: for the choice of data points.

        Returns:
            The model itself, so that the call can follow the constructor.

        Raises:
            ValueError: `x` is not binary `(N, D)` data or is empty.
        """
        check_binary(x)
        if x.shape[0] == 0:
            raise ValueError("x must hold at least one example")
        if x.shape[0] >= self.num_components:
            idx = torch.randperm(x.shape[0], generator=generator, device=x.device)[: self.num_components]
        else:                                                       # fewer examples than components
            idx = torch.randint(x.shape[0], (self.num_components,), generator=generator, device=x.device)
        means = (0.5 * x[idx] + 0.5 * x.mean(0)).clamp(0.05, 0.95).to(self.logits.dtype)
        K = self.num_components
        self.set_probabilities(torch.full((K,), 1.0 / K, dtype=self.logits.dtype, device=x.device), means)
        return self

    # -- likelihood ----------------------------------------------------------------------
    def component_log_likelihood(self, x: torch.Tensor) -> torch.Tensor:
        """The log-likelihood of each example under each component.

        Args:
            x: binary data `(N, D)`.

        Returns:
            `log p(x_n | z = k)` shaped `(N, K)`.

        Raises:
            ValueError: `x` is not binary, or has another number of features than the model.
        """
        check_binary(x)
        if x.shape[1] != self.logits.shape[1]:
            raise ValueError(f"x has {x.shape[1]} features but the model has {self.logits.shape[1]}")
        log_mu, log_1m = self.log_means()
        x = x.to(self.logits.dtype)
        return _xlogy_matmul(x, log_mu) + _xlogy_matmul(1 - x, log_1m)

    def log_likelihood(self, x: torch.Tensor) -> torch.Tensor:
        """The exact log-likelihood of each example (the assignment summed out).

        Args:
            x: binary data `(N, D)`.

        Returns:
            `log p(x_n)` shaped `(N,)`.
        """
        return torch.logsumexp(self.log_weights() + self.component_log_likelihood(x), -1)

    def responsibilities(self, x: torch.Tensor) -> torch.Tensor:
        """The exact posterior over the assignment.

        Args:
            x: binary data `(N, D)`.

        Returns:
            `p(z = k | x_n)` shaped `(N, K)`.
        """
        return torch.softmax(self.log_weights() + self.component_log_likelihood(x), -1)

    def log_prior(self, pseudo_count: float) -> torch.Tensor:
        """The log of the Dirichlet(1 + a) × Beta(1 + a, 1 + a) prior density, up to a constant.

        Args:
            pseudo_count: `a`; 0 gives 0 (maximum likelihood).

        Returns:
            A scalar tensor.
        """
        if pseudo_count == 0:
            return torch.zeros((), dtype=self.logits.dtype)
        log_mu, log_1m = self.log_means()
        return pseudo_count * (self.log_weights().sum() + log_mu.sum() + log_1m.sum())

    # -- EM --------------------------------------------------------------------------------
    @torch.no_grad()
    def em_step(self, x: torch.Tensor, *, pseudo_count: float = 0.0) -> torch.Tensor:
        """One EM iteration: exact E-step, closed-form M-step (in place).

        Args:
            x: binary data `(N, D)`.
            pseudo_count: `a` of the prior, ≥ 0 (0: maximum likelihood).

        Returns:
            The mean log-likelihood per example *before* the update (a by-product of the
            E-step), a scalar tensor.

        Raises:
            ValueError: a negative or infinite `pseudo_count`, or bad data.
        """
        a = _check_pseudo_count(pseudo_count)
        x = x.to(self.logits.dtype)
        joint = self.log_weights() + self.component_log_likelihood(x)
        ll = torch.logsumexp(joint, -1)
        r = torch.exp(joint - ll.unsqueeze(-1))                       # (N, K)
        nk = r.sum(0)
        K, N = self.num_components, x.shape[0]
        weights = (nk + a) / (N + K * a)
        denom = (nk + 2 * a).unsqueeze(-1)
        means = (r.T @ x + a) / denom
        # A component with no responsibility (and a = 0) keeps its means: any value maximises.
        old = torch.sigmoid(self.logits)
        means = torch.where(denom > 0, means, old).clamp(0, 1)
        self.set_probabilities(weights, means)
        return ll.mean()


def _check_pseudo_count(a: Any) -> float:
    if isinstance(a, bool) or not isinstance(a, (int, float)) or not a >= 0 or math.isinf(a):
        raise ValueError(f"pseudo_count must be a finite number >= 0, got {a!r}")
    return float(a)


def fit_em(model: BernoulliMixture, x: torch.Tensor, *, num_iters: int = 50, pseudo_count: float = 0.0,
           tol: Optional[float] = None, callback: Optional[Callable] = None) -> List[float]:
    """Fit `model` by EM, in place.

    Args:
        model: the mixture, initialised (for instance by `init_from_data`).
        x: binary data `(N, D)`.
        num_iters: the most iterations to run (0: only evaluate).
        pseudo_count: `a` of the symmetric prior, ≥ 0 (0: maximum likelihood).
        tol: stop early when an iteration gains less than this (None: never).
        callback: `callback(iteration, model)`, run after each iteration.

    Returns:
        The objective at the initial parameters and after each iteration: the mean over
        examples of `log p(x_n)` plus `log prior / N` (with `pseudo_count=0`: the mean
        log-likelihood). It never decreases.

    Raises:
        ValueError: bad data, a negative `num_iters` or `pseudo_count`.
    """
    check_binary(x)
    num_iters = V.check_int(num_iters, "num_iters", minimum=0)
    a = _check_pseudo_count(pseudo_count)
    n = x.shape[0]

    def objective():
        with torch.no_grad():
            return float(model.log_likelihood(x).mean() + model.log_prior(a) / n)

    history = [objective()]
    for it in range(num_iters):
        model.em_step(x, pseudo_count=a)
        history.append(objective())
        if callback is not None:
            callback(it, model)
        if tol is not None and history[-1] - history[-2] < tol:
            break
    return history


def _decoder_f(model: BernoulliMixture, x: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """`f_x(z) = zᵀ log π + Σ_d x_d (zΛ)_d − softplus((zΛ)_d)` for `z` shaped `(..., N, K)`."""
    log_w = model.log_weights()
    lam = model.logits
    x = x.to(lam.dtype)

    def f(z):
        eta = z @ lam                                                   # (..., N, D)
        return (z * log_w).sum(-1) + (x * eta - torch.nn.functional.softplus(eta)).sum(-1)
    return f


def elbo(model: BernoulliMixture, x: torch.Tensor, q_logits: torch.Tensor, *, estimator: str = "reinmax",
         num_samples: Optional[int] = None, generator: Optional[torch.Generator] = None,
         **estimator_kwargs: Any) -> torch.Tensor:
    """A Monte Carlo estimate of each example's ELBO whose gradient with respect to the
    posterior's logits is the estimator's (and pathwise for the model's parameters).

    The expectation runs through [quasigrad.objective.expectation][]; pathwise estimators
    average `f` over their draws. The entropy term is exact.

    Args:
        model: the mixture (its parameters receive the gradient of `f`).
        x: binary data `(N, D)`.
        q_logits: logits of `q(z | x)`, shaped `(N, K)`.
        estimator: a registered estimator name (`"reinmax"`, `"st"`, `"rloo"`, ...).
        num_samples: samples per example (default: the estimator's own, 2 for `rloo`).
        generator: for the draws.
        **estimator_kwargs: the estimator's options (`tau`, ...).

    Returns:
        The ELBO estimate of each example, shaped `(N,)`.

    Raises:
        ValueError: bad data, `q_logits` of the wrong shape, a bad `num_samples`.
        UnknownEstimatorError: an unknown estimator name.
    """
    check_binary(x)
    V.check_floating(q_logits, "q_logits")
    if q_logits.shape != (x.shape[0], model.num_components):
        raise ValueError(f"q_logits must be shaped (N, K) = {(x.shape[0], model.num_components)}, "
                         f"got {tuple(q_logits.shape)}")
    if num_samples is not None:
        num_samples = V.check_int(num_samples, "num_samples")
    f = _decoder_f(model, x)
    logq = torch.log_softmax(q_logits, -1)
    entropy = -(logq.exp() * logq).sum(-1)
    return objective.expectation(f, q_logits, estimator=estimator, num_samples=num_samples,
                                 generator=generator, **estimator_kwargs) + entropy


def fit_gradient(model: BernoulliMixture, encoder: torch.nn.Module, x: torch.Tensor, *, estimator: str = "reinmax",
                 num_steps: int = 1000, batch_size: int = 100, lr: float = 3e-3, num_samples: Optional[int] = None,
                 generator: Optional[torch.Generator] = None, callback: Optional[Callable] = None,
                 **estimator_kwargs: Any) -> List[float]:
    """Fit `model` by maximising the ELBO (see [elbo][quasigrad.em.elbo]) with Adam on random
    minibatches, the model and the encoder together.

    Args:
        model: the mixture, initialised (for instance by `init_from_data`).
        encoder: maps a minibatch `(B, D)` to the logits `(B, K)` of `q(z | x)`.
        x: binary data `(N, D)`.
        estimator: a registered estimator name (checked before the first step).
        num_steps: optimisation steps (0: none).
        batch_size: examples per minibatch, drawn with replacement (at most `N`).
        lr: Adam's learning rate.
        num_samples: samples per example (default: the estimator's own).
        generator: for the minibatches and the draws.
        callback: `callback(step, seconds)`, run after each step with the training time so
            far (the callback's own time excluded).
        **estimator_kwargs: the estimator's options (`tau`, ...).

    Returns:
        The minibatch ELBO estimate (mean per example) of each step.

    Raises:
        ValueError: bad data or a bad step count, batch size or learning rate.
        UnknownEstimatorError: an unknown estimator name.
    """
    check_binary(x)
    num_steps = V.check_int(num_steps, "num_steps", minimum=0)
    batch_size = V.check_int(batch_size, "batch_size")
    lr = V.check_positive(lr, "lr")
    registry.get(estimator)                                             # fail early on a bad name
    params = list(model.parameters()) + list(encoder.parameters())
    opt = torch.optim.Adam(params, lr=lr)
    history, elapsed = [], 0.0
    n = x.shape[0]
    for step in range(num_steps):
        t0 = time.perf_counter()
        idx = torch.randint(n, (min(batch_size, n),), generator=generator, device=x.device)
        xb = x[idx]
        loss = -elbo(model, xb, encoder(xb.to(model.logits.dtype)), estimator=estimator, num_samples=num_samples,
                     generator=generator, **estimator_kwargs).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        elapsed += time.perf_counter() - t0
        history.append(-float(loss.detach()))
        if callback is not None:
            callback(step, elapsed)
    return history
