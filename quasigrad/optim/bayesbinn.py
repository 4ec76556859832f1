"""BayesBiNN (Meng, Bachmann, Khan 2020): the Bayesian learning rule for binary weights."""

from __future__ import annotations

import contextlib
import math
import numbers
from typing import Any, Callable, Dict, Iterator, Optional, Sequence, Union

import torch

from .._util.validate import check_generator, check_int, check_positive
from ..estimators._sampling import uniform
from ._common import Params, _append_checked_group, _check_params, _check_unit_interval, _state_dtype, _swapped_weights

# --------------------------------------------------------------------------- BayesBiNN

def _log_sech2(x: torch.Tensor) -> torch.Tensor:
    # log(1 - tanh(x)^2) = log 4 - 2|x| - 2 log(1 + exp(-2|x|)), finite for every finite x.
    a = x.abs()
    return math.log(4.0) - 2 * a - 2 * torch.log1p(torch.exp(-2 * a))


class BayesBiNN(torch.optim.Optimizer):
    r"""BayesBiNN: the Bayesian learning rule for binary weights (Meng, Bachmann, Khan 2020).

    Learns a mean-field distribution $q(w) = \prod_i p_i^{(1+w_i)/2}(1-p_i)^{(1-w_i)/2}$
    over `w` in `{-1, +1}` through its natural parameters $\lambda$ (one per weight;
    mean $\mu = \tanh\lambda$, $p = \sigma(2\lambda)$). Each step draws a relaxed
    Bernoulli sample,

    $$
    \epsilon \sim U(0,1),\quad \delta = \tfrac12\log\frac{\epsilon}{1-\epsilon},\quad
    w^{(s)} = \tanh\big((\lambda + \delta^{(s)})/\tau\big),
    $$

    estimates the natural gradient

    $$
    g = \frac{N}{S}\sum_{s=1}^{S}
        \frac{1 - (w^{(s)})^2 + \varepsilon}{\tau\,(1 - \mu^2 + \varepsilon)}
        \odot \nabla_w \ell(w^{(s)}),
    $$

    and updates

    $$
    m \leftarrow \beta m + (1-\beta)\big(g + \kappa(\lambda - \lambda_0)\big),\qquad
    \lambda \leftarrow \lambda - \alpha\, m / (1-\beta^t),\qquad \mu = \tanh\lambda,
    $$

    where $\ell$ is the mean loss of the minibatch, `N` the size of the training set,
    $\lambda_0$ the prior's natural parameter (0: a uniform prior on `{-1, +1}`) and
    $\kappa$ a weight on the KL term (1 in the paper). The paper's formula has
    $\varepsilon = 0$; the public code adds $\varepsilon = 10^{-10}$ (the default
    here) in numerator and denominator. This matters: for the small temperatures used in
    practice ($\tau = 10^{-10}$) the sample saturates, $1-w^2$ is 0 in floating
    point, and the factor becomes $1/(1-\mu^2+\varepsilon)$. Both $1-w^2$ and
    $1-\mu^2$ are computed as $\operatorname{sech}^2$ without cancellation; with
    `eps=0` the ratio is computed in the log domain, so finite input never gives NaN.

    The gradient $g$ is a Monte Carlo estimate of the natural gradient of the
    expected loss through the Gumbel-softmax (concrete) relaxation of the Bernoulli; it is
    biased for `tau > 0` with respect to the discrete objective (the relaxation's bias),
    and its variance grows as `tau` shrinks.

    **Using it.** The parameter holds the current sample $w^{(s)}$. With
    `num_samples=1` the ordinary loop works (`zero_grad`, forward, `backward`,
    `step`): `step` uses `.grad` at the sample already in the parameter and then draws
    the next one. With `num_samples > 1` pass a `closure` that zeroes gradients, computes
    the minibatch loss, calls `backward` and returns the loss; `step` calls it once per
    sample and returns the mean loss. Predict with
    [mean_weights][quasigrad.optim.BayesBiNN.mean_weights] (`sign(mu)`, with
    `sign(0) = +1`) or average predictions over
    [sampled_weights][quasigrad.optim.BayesBiNN.sampled_weights] (`w = +1` with
    probability $(1+\mu)/2$).

    Args:
        params: weights marked with [mark_binary][quasigrad.optim.mark_binary].
        lr: step size $\alpha$ for the natural parameters (public MNIST code: `1e-4`,
            decayed to `1e-16` by a cosine schedule).
        train_set_size: `N`, the number of training examples.
        tau: temperature $\tau > 0$ of the relaxation (public MNIST code: `1e-10`).
        momentum: $\beta \in [0, 1)$ (public MNIST code: 0).
        num_samples: `S`, Monte Carlo samples per step (needs a closure when `> 1`).
        lambda_init: initial $|\lambda|$; the sign is that of the parameter's current
            value (public code: 10, random signs; a random initialisation has random signs).
        prior_lambda: $\lambda_0$, a number or a list with one tensor per parameter
            (the posterior of a previous task, for continual learning).
        kl_weight: $\kappa \ge 0$.
        eps: $\varepsilon \ge 0$ (see above).
        generator: a `torch.Generator` for the samples (on the parameters' device).

    Raises:
        ValueError: a parameter not marked as binary, a bad option, or a `prior_lambda` list
            that does not fit the parameters.
        TypeError: a `prior_lambda` of the wrong kind.

    References:
        Meng, Bachmann, Khan, "Training Binary Neural Networks using the Bayesian Learning
        Rule", ICML 2020; code: github.com/team-approx-bayes/BayesBiNN.
    """

    def __init__(self, params: Params, lr: float = 1e-4, *, train_set_size: int, tau: float = 1e-10,
                 momentum: float = 0.0, num_samples: int = 1, lambda_init: float = 10.0,
                 prior_lambda: Union[float, torch.Tensor, Sequence[torch.Tensor]] = 0.0,
                 kl_weight: float = 1.0, eps: float = 1e-10,
                 generator: Optional[torch.Generator] = None):
        self.generator = generator
        self._prior = prior_lambda
        defaults = dict(lr=lr, train_set_size=train_set_size, tau=tau, momentum=momentum,
                        num_samples=num_samples, lambda_init=lambda_init, kl_weight=kl_weight, eps=eps)
        self._n_params = 0
        super().__init__(params, defaults)
        if isinstance(prior_lambda, (list, tuple)) and len(prior_lambda) != self._n_params:
            raise ValueError(f"prior_lambda has {len(prior_lambda)} tensors but the optimiser has "
                             f"{self._n_params} parameters")

    def add_param_group(self, param_group: dict) -> None:
        """Add a group of marked weights (as `torch.optim.Optimizer.add_param_group`) and set
        up their natural parameters, prior and first sample.

        Args:
            param_group: `{"params": [...], ...}` with any option of the constructor.

        Raises:
            ValueError: a parameter is not marked by `mark_binary`, or a bad option.
            TypeError: a parameter is not floating point, or a bad `prior_lambda`.
        """
        group = _append_checked_group(self, param_group, self._check_group)
        with torch.no_grad():
            for p in group["params"]:
                check_generator(self.generator, p.device)
                dtype = _state_dtype(p.dtype)
                w = p.detach().to(dtype)
                lam = torch.where(w >= 0, torch.ones_like(w), -torch.ones_like(w)) * group["lambda_init"]
                prior = self._prior
                if isinstance(prior, (list, tuple)):
                    if self._n_params >= len(prior):
                        raise ValueError(f"prior_lambda has {len(prior)} tensors, fewer than the parameters")
                    prior = prior[self._n_params]
                if isinstance(prior, torch.Tensor):
                    if prior.shape != p.shape and prior.numel() != 1:
                        raise ValueError(f"prior_lambda for parameter {self._n_params} has shape "
                                         f"{tuple(prior.shape)}, needs {tuple(p.shape)}")
                    prior_t = prior.detach().to(device=p.device, dtype=dtype).expand_as(w).clone()
                elif isinstance(prior, numbers.Real) and not isinstance(prior, bool) and math.isfinite(prior):
                    prior_t = torch.full_like(w, float(prior))
                else:
                    raise TypeError(f"prior_lambda must be a finite number, a tensor or a list of tensors, "
                                    f"got {prior!r}")
                state = self.state[p]
                state["lambda"] = lam
                state["prior_lambda"] = prior_t
                state["momentum_buffer"] = torch.zeros_like(w)
                state["step"] = 0
                self._n_params += 1
                self._draw(p, group)

    @staticmethod
    def _check_group(group: dict) -> None:
        _check_params(group, "BayesBiNN")
        group["lr"] = check_positive(group["lr"], "lr")
        group["tau"] = check_positive(group["tau"], "tau")
        group["train_set_size"] = check_int(group["train_set_size"], "train_set_size")
        group["num_samples"] = check_int(group["num_samples"], "num_samples")
        group["momentum"] = _check_unit_interval(group["momentum"], "momentum")
        group["lambda_init"] = check_positive(group["lambda_init"], "lambda_init")
        for name in ("kl_weight", "eps"):
            v = group[name]
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not (0.0 <= float(v) < math.inf):
                raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
            group[name] = float(v)

    # ---- the pieces of the update, each a formula of the docstring
    @torch.no_grad()
    def _draw(self, p: torch.Tensor, group: dict) -> None:
        """Put a fresh relaxed Bernoulli sample w = tanh((lambda + delta) / tau) into `p`."""
        state = self.state[p]
        lam = state["lambda"]
        eps_u = uniform(lam.shape, dtype=lam.dtype, device=lam.device, generator=self.generator)  # ~U(0,1)
        delta = 0.5 * (torch.log(eps_u) - torch.log1p(-eps_u))      # logistic noise / 2
        z = (lam + delta) / group["tau"]
        state["z"] = z
        p.copy_(torch.tanh(z).to(p.dtype))

    @staticmethod
    def _scale(z: torch.Tensor, lam: torch.Tensor, tau: float, eps: float) -> torch.Tensor:
        """(1 - w^2 + eps) / (tau (1 - mu^2 + eps)) with w = tanh z, mu = tanh lambda."""
        if eps == 0.0:
            return torch.exp(_log_sech2(z) - _log_sech2(lam) - math.log(tau))
        return (torch.exp(_log_sech2(z)) + eps) / (tau * (torch.exp(_log_sech2(lam)) + eps))

    @torch.no_grad()
    def step(self, closure=None):
        """One step of the Bayesian learning rule (see the class docstring).

        Args:
            closure (Callable[[], Tensor] | None): re-evaluates the model at the sample in the
                parameters (zero gradients, loss, `backward`) and returns the loss; required
                when `num_samples > 1`.

        Returns:
            (Tensor | None): The mean loss over the samples when a closure is given, else None.

        Raises:
            ValueError: `num_samples > 1` without a closure, or groups with different
                `num_samples` with one.
        """
        n_samples = {g["num_samples"] for g in self.param_groups}
        S = max(n_samples)
        if closure is None and S > 1:
            raise ValueError(f"BayesBiNN with num_samples={S} needs a closure that computes the loss and "
                             f"calls backward (it is called once per Monte Carlo sample)")
        if len(n_samples) > 1 and closure is not None:
            raise ValueError(f"BayesBiNN: all parameter groups need the same num_samples, got {sorted(n_samples)}")
        params = [(g, p) for g in self.param_groups for p in g["params"]]
        acc = {p: torch.zeros_like(self.state[p]["lambda"]) for _, p in params}
        has_grad = set()
        losses = []
        for s in range(S if closure is not None else 1):
            if closure is not None:
                if s > 0:
                    for g, p in params:
                        self._draw(p, g)
                for _, p in params:
                    p.grad = None
                with torch.enable_grad():
                    loss = closure()
                losses.append(loss.detach() if isinstance(loss, torch.Tensor) else torch.as_tensor(loss))
            for g, p in params:
                if p.grad is None:
                    continue
                has_grad.add(p)
                state = self.state[p]
                acc[p].add_(self._scale(state["z"], state["lambda"], g["tau"], g["eps"])
                            * p.grad.to(acc[p].dtype))
        for g, p in params:
            if p not in has_grad:        # like torch's optimisers: no gradient, no update
                continue
            state = self.state[p]
            n_used = S if closure is not None else 1
            grad_hat = acc[p] * (g["train_set_size"] / n_used)
            beta = g["momentum"]
            state["step"] += 1
            buf = state["momentum_buffer"]
            buf.mul_(beta).add_(grad_hat + g["kl_weight"] * (state["lambda"] - state["prior_lambda"]),
                                alpha=1 - beta)
            state["lambda"].add_(buf, alpha=-g["lr"] / (1 - beta ** state["step"]))
            self._draw(p, g)
        if losses:
            return torch.stack([l.float() for l in losses]).mean()
        return None

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """Load the optimiser state and put the loaded current sample `tanh(z)` into the
        parameters (the generator's state is not part of it: save `generator.get_state()`).

        Args:
            state_dict: what `state_dict()` returned.
        """
        super().load_state_dict(state_dict)
        with torch.no_grad():
            for g in self.param_groups:
                for p in g["params"]:
                    p.copy_(torch.tanh(self.state[p]["z"]).to(p.dtype))

    def mean(self, p: torch.Tensor) -> torch.Tensor:
        """The posterior mean of one parameter.

        Args:
            p: a parameter this optimiser trains.

        Returns:
            `mu = tanh(lambda)`, shaped like `p`, in (-1, 1).
        """
        return torch.tanh(self.state[p]["lambda"])

    @contextlib.contextmanager
    def mean_weights(self) -> Iterator[None]:
        """A context manager for evaluation: inside the block every parameter holds
        `sign(mu)` (`sign(0) = +1`), the mode of q; the current samples come back on exit.

        Yields:
            None.
        """
        with self._swap(lambda p, lam: torch.where(lam >= 0, torch.ones_like(lam), -torch.ones_like(lam))):
            yield

    @contextlib.contextmanager
    def sampled_weights(self, generator: Optional[torch.Generator] = None) -> Iterator[None]:
        """A context manager for evaluation: inside the block every parameter holds a sample
        `w ~ q` in `{-1, +1}` (`P(w = +1) = (1 + mu) / 2 = sigmoid(2 lambda)`). Use several
        blocks and average the predicted probabilities for the Bayesian model average.

        Args:
            generator: for the draw (on the parameters' device).

        Yields:
            None.
        """
        def draw(p, lam):
            check_generator(generator, lam.device)
            u = torch.rand(lam.shape, dtype=lam.dtype, device=lam.device, generator=generator)
            return torch.where(u < torch.sigmoid(2 * lam), torch.ones_like(lam), -torch.ones_like(lam))
        with self._swap(draw):
            yield

    @contextlib.contextmanager
    def _swap(self, make: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Iterator[None]:
        """Every parameter holds `make(p, lambda_p)` inside the block."""
        with _swapped_weights(self, lambda p, group: make(p, self.state[p]["lambda"])):
            yield
