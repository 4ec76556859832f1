"""The samplers: Gibbs, Gibbs-with-gradients and discrete Langevin, one step at a time on a
batch of chains, and the names `make_sampler` knows (`SAMPLERS`)."""

from __future__ import annotations

import math
from typing import Any, Callable, Optional, cast

import torch

from .._util import validate as V
from .._util.registry import Registry
from ..estimators._sampling import sample_categorical, uniform
from .models import EnergyModel, _all_indices, _as_one_hot, _model_double, from_index, to_index

# --------------------------------------------------------------------------------------------
# Samplers


class _Sampler:
    """Shared machinery: a cache of `(f, ∇f)` at the chains' current state, validation of
    states the sampler did not produce itself, and acceptance statistics."""

    name = ""
    needs_grad = True

    def __init__(self, model: EnergyModel):
        if not isinstance(model, EnergyModel):
            raise TypeError(f"model must be a quasigrad.samplers.EnergyModel, got {type(model).__name__}")
        self.model = model
        self._cache: Any = None
        self.num_steps = 0
        self.accepted = 0.0   # sum over steps of the fraction of chains that moved / accepted
        self.last_accept_prob: Any = None

    @property
    def accept_rate(self) -> float:
        """The mean over steps and chains of the acceptance indicator; for kernels without an
        MH test (Gibbs, DULA) the fraction of chains whose state changed (NaN before a step)."""
        return self.accepted / self.num_steps if self.num_steps else float("nan")

    def _eval(self, x):
        c = self._cache
        if c is not None and c[0] is x and c[1] == x._version:
            return c[2], c[3]
        self.model.check_state(x)
        f, g = self.model.value_and_grad(x) if self.needs_grad else (self.model.log_prob(x), None)
        self._cache = (x, x._version, f, g)
        return f, g

    def _remember(self, x, f, g):
        self._cache = (x, x._version, f, g)
        return x

    def _accept(self, x, f, g, y, fy, gy, log_a, generator):
        u = uniform(log_a.shape, dtype=log_a.dtype, device=log_a.device, generator=generator)
        acc = torch.log(u) < log_a
        self.last_accept_prob = torch.exp(log_a.clamp(max=0))
        ev = (1,) * len(self.model.event_shape)
        out = torch.where(acc.view(acc.shape + ev), y, x)
        fo = torch.where(acc, fy, f)
        go = torch.where(acc.view(acc.shape + ev), gy, g)
        self.num_steps += 1
        self.accepted += acc.to(torch.float64).mean().item()
        return self._remember(out, fo, go)

    def step(self, x: torch.Tensor, *, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Advance every chain by one transition.

        Args:
            x: the chains' states `(..., *model.event_shape)`.
            generator: for the draws.

        Returns:
            The new states, shaped like `x`.
        """
        raise NotImplementedError

    def run(self, x: torch.Tensor, num_steps: int, *, generator: Optional[torch.Generator] = None,
            callback: Optional[Callable[[int, torch.Tensor], Any]] = None) -> torch.Tensor:
        """Several steps in a row.

        Args:
            x: the chains' starting states.
            num_steps: how many steps (0: none).
            generator: for the draws.
            callback: `callback(t, x)`, run after step `t` with the new states.

        Returns:
            The last states.
        """
        num_steps = V.check_int(num_steps, "num_steps", minimum=0)
        for t in range(num_steps):
            x = self.step(x, generator=generator)
            if callback is not None:
                callback(t, x)
        return x

    # -- exact transition matrix on small models --------------------------------------------
    def transition_matrix(self, *, max_states: int = 1 << 12) -> torch.Tensor:
        """The exact transition kernel over all states of a small model, in float64.

        Args:
            max_states: refuse to enumerate more states than this.

        Returns:
            `P[s, s′] = P(x_{t+1} = s′ | x_t = s)` shaped `(S, S)`, states in the order of
            [EnergyModel.enumerate_states][quasigrad.samplers.EnergyModel.enumerate_states].
            Rows sum to 1.

        Raises:
            ValueError: the model has more than `max_states` states.
        """
        raise NotImplementedError


def _neighbour_index(idx_states, i, c, num_categories):
    """State index after setting variable `i` of each state to `c`."""
    power = num_categories ** i
    s = (idx_states * (num_categories ** torch.arange(idx_states.shape[-1], device=idx_states.device))).sum(-1)
    return s + (c - idx_states[..., i]) * power


class Gibbs(_Sampler):
    """Single-site Gibbs sampling: one variable per step is redrawn from `π(x_i | x_{−i})`
    (`C` evaluations of `f`, no gradient).

    Exact (each single-site kernel leaves π invariant); a systematic sweep of `D` steps is the
    classic Gibbs sweep.

    Args:
        model: the target.
        scan: `"random"`: the variable is uniform and independent per chain;
            `"systematic"`: variable `t mod D` at step `t`.

    Raises:
        TypeError: `model` is not an `EnergyModel`.
        ValueError: an unknown `scan`.
    """

    needs_grad = False

    def __init__(self, model: EnergyModel, *, scan: str = "random"):
        super().__init__(model)
        if scan not in ("random", "systematic"):
            raise ValueError(f"scan must be 'random' or 'systematic', got {scan!r}")
        self.scan = scan
        self.name = "gibbs" if scan == "random" else "gibbs-systematic"

    def step(self, x: torch.Tensor, *, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Redraw one variable of every chain from its conditional.

        Args:
            x: the chains' states.
            generator: for the draws.

        Returns:
            The new states.
        """
        m = self.model
        c = self._cache
        if c is None or c[0] is not x or c[1] != x._version:
            m.check_state(x)
        idx = to_index(x, m)                                         # (..., D)
        batch = idx.shape[:-1]
        if self.scan == "random":
            site = torch.randint(m.num_vars, batch, device=x.device, generator=generator)
        else:
            site = torch.full(batch, self.num_steps % m.num_vars, dtype=torch.long, device=x.device)
        cands = idx.unsqueeze(0).repeat((m.num_categories,) + (1,) * idx.dim())  # (C, ..., D)
        values = torch.arange(m.num_categories, device=x.device).view((-1,) + (1,) * len(batch))
        cands.scatter_(-1, site.unsqueeze(0).unsqueeze(-1).expand(cands.shape[:-1] + (1,)),
                       values.expand(cands.shape[:-1]).unsqueeze(-1))
        f = m.log_prob(from_index(cands, m, x.dtype))                # (C, ...)
        choice = sample_categorical(f.movedim(0, -1), generator=generator)  # (...)
        new = cands.movedim(0, -1).gather(-1, choice.unsqueeze(-1).unsqueeze(-1).expand(
            idx.shape + (1,))).squeeze(-1)
        moved = (new != idx).any(-1).to(torch.float64).mean().item()
        self.num_steps += 1
        self.accepted += moved
        out = from_index(new, m, x.dtype)
        self._cache = (out, out._version, None, None)
        return out

    def transition_matrix(self, *, max_states: int = 1 << 12) -> torch.Tensor:
        """The exact kernel: the mean of the single-site kernels (random scan) or their
        product over one sweep (systematic scan).

        Args:
            max_states: refuse to enumerate more states than this.

        Returns:
            `P` shaped `(S, S)` in float64, rows summing to 1.
        """
        m = self.model
        logp = m.exact_log_probs(max_states=max_states)
        idx = _all_indices(m.num_vars, m.num_categories, max_states, logp.device)
        S = idx.shape[0]
        kernels = []
        for i in range(m.num_vars):
            P = torch.zeros(S, S, dtype=torch.float64, device=logp.device)
            nbrs = torch.stack([_neighbour_index(idx, i, c, m.num_categories) for c in range(m.num_categories)], -1)
            cond = torch.softmax(logp[nbrs], -1)                     # π(x_i = c | x_{−i})
            P.scatter_add_(1, nbrs, cond)
            kernels.append(P)
        if self.scan == "random":
            return torch.stack(kernels).mean(0)
        P = kernels[0]
        for K in kernels[1:]:
            P = P @ K
        return P


class GibbsWithGradients(_Sampler):
    r"""Gibbs-with-Gradients (Grathwohl et al. 2021): a Metropolis–Hastings sampler that
    changes one variable per step, chosen by a first-order estimate of how much each change
    would increase `f`.

    Binary: `d̃(x) = −(2x − 1) ⊙ ∇f(x)` estimates `f(flip_i x) − f(x)`; propose flipping
    `i ~ q(i|x) = softmax(d̃(x)/2)`, accept with `min(1, e^{f(x′) − f(x)} q(i|x′)/q(i|x))`.
    Categorical: `d̃_ic = ∇f_ic − ⟨x_i, ∇f_i⟩` over the `D(C − 1)` changes `(i, c ≠ x_i)`.
    Exact (π-invariant by the MH correction); two gradient evaluations per step, one of which
    is cached for the next step.

    Args:
        model: the target.

    Raises:
        TypeError: `model` is not an `EnergyModel`.
    """

    name = "gwg"

    def _proposal_logits(self, x, g):
        xo, go = _as_one_hot(x, g, self.model)
        d = go - (xo * go).sum(-1, keepdim=True)
        d = d.masked_fill(xo.bool(), float("-inf"))                   # no "change" to the current value
        return (d / 2).flatten(-2)                                    # (..., D·C)

    def step(self, x: torch.Tensor, *, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Propose one change per chain and accept or reject it.

        Args:
            x: the chains' states.
            generator: for the draws.

        Returns:
            The new states.
        """
        m = self.model
        f, g = self._eval(x)
        logits = self._proposal_logits(x, g)
        logq = torch.log_softmax(logits, -1)
        move = sample_categorical(logits, generator=generator)       # (...) index into D·C
        var, cat = move // m.num_categories, move % m.num_categories
        idx = to_index(x, m)
        old_cat = idx.gather(-1, var.unsqueeze(-1)).squeeze(-1)
        new_idx = idx.scatter(-1, var.unsqueeze(-1), cat.unsqueeze(-1))
        y = from_index(new_idx, m, x.dtype)
        fy, gy = m.value_and_grad(y)
        logq_rev = torch.log_softmax(self._proposal_logits(y, gy), -1)
        rev = var * m.num_categories + old_cat
        log_a = fy - f + logq_rev.gather(-1, rev.unsqueeze(-1)).squeeze(-1) - logq.gather(-1, move.unsqueeze(-1)).squeeze(-1)
        return self._accept(x, f, g, y, fy, gy, log_a, generator)

    def transition_matrix(self, *, max_states: int = 1 << 12) -> torch.Tensor:
        """The exact kernel: proposal times acceptance, the rejected mass on the diagonal.

        Args:
            max_states: refuse to enumerate more states than this.

        Returns:
            `P` shaped `(S, S)` in float64, rows summing to 1.
        """
        m = self.model
        X = m.enumerate_states(max_states=max_states).double()
        idx = _all_indices(m.num_vars, m.num_categories, max_states, X.device)
        S, C = X.shape[0], m.num_categories
        f, g = _model_double(m).value_and_grad(X)
        logq = torch.log_softmax(self._proposal_logits(X, g), -1)    # (S, D·C)
        P = torch.zeros(S, S, dtype=torch.float64, device=X.device)
        for i in range(m.num_vars):
            for c in range(C):
                t = _neighbour_index(idx, i, c, C)                    # target states
                valid = idx[:, i] != c
                j = i * C + c
                rev = i * C + idx[:, i]
                log_a = f[t] - f + logq[t].gather(-1, rev.unsqueeze(-1)).squeeze(-1) - logq[:, j]
                p = torch.where(valid, logq[:, j].exp() * torch.exp(log_a.clamp(max=0)), torch.zeros_like(f))
                P[torch.arange(S), t] += p
        P[torch.arange(S), torch.arange(S)] += 1 - P.sum(-1)
        return P


class DiscreteLangevin(_Sampler):
    r"""The discrete Langevin proposal (DLP; Zhang, Liu & Liu 2022): every variable changes at
    once, independently given `x`, with

    $$
    q_i(x'_i | x) \propto \exp\big(\tfrac12 \nabla f(x)_i^\top (x'_i - x_i)
    - \tfrac{1}{2\alpha}\|x'_i - x_i\|^2\big),
    $$

    i.e. binary `P(flip i) = σ(½ ∇f_i (1 − 2x_i) − 1/(2α))`, categorical (one-hot,
    `‖e_c − x_i‖² = 2`) `q_i(c) = softmax_c(½(∇f_ic − ⟨x_i, ∇f_i⟩) − [c ≠ x_i]/α)`.

    `mh=False` is DULA: the proposal is the step (one gradient per step). It is **biased**:
    its stationary distribution differs from π by an amount that vanishes as α → 0 (measure
    it with [transition_matrix][quasigrad.samplers.DiscreteLangevin.transition_matrix] and
    [stationary_distribution][quasigrad.samplers.stationary_distribution]). `mh=True` is
    DMALA: accept with `min(1, e^{f(x′) − f(x)} q(x|x′)/q(x′|x))`, `q(x′|x) = Π_i q_i`
    (exact; the gradient at `x′` is cached for the next step).

    Step-size adaptation (DMALA only): with `target_accept` set, the first `adapt_steps`
    steps update `log α ← log α + (ā_t − target)/(t + 1)^0.6` with `ā_t` the chains' mean
    acceptance probability; α is then frozen. Discard the adaptation steps as burn-in: the
    chain is Markov (and exact) only once α is fixed.

    Args:
        model: the target.
        step_size: `α > 0`.
        mh: DMALA (True) or DULA (False).
        target_accept: the acceptance rate to adapt α toward, in (0, 1), or None (no
            adaptation).
        adapt_steps: how many of the first steps adapt α.

    Raises:
        TypeError: `model` is not an `EnergyModel`.
        ValueError: a bad `step_size`, `target_accept` or `adapt_steps`, or adaptation
            without `mh`.
    """

    def __init__(self, model: EnergyModel, *, step_size: float = 0.2, mh: bool = True,
                 target_accept: Optional[float] = None, adapt_steps: int = 0):
        super().__init__(model)
        self.step_size = V.check_positive(step_size, "step_size (α)")
        self.mh = bool(mh)
        self.name = "dmala" if self.mh else "dula"
        if target_accept is not None:
            if not self.mh:
                raise ValueError("step-size adaptation toward target_accept needs the Metropolis-Hastings "
                                 "correction (mh=True, DMALA); DULA has no acceptance rate")
            if isinstance(target_accept, bool) or not isinstance(target_accept, (int, float)) \
                    or not 0 < float(target_accept) < 1:
                raise ValueError(f"target_accept must be a number in (0, 1), got {target_accept!r}")
            target_accept = float(target_accept)
        self.target_accept = target_accept
        self.adapt_steps = V.check_int(adapt_steps, "adapt_steps", minimum=0)

    def _penalty(self):
        # ‖x′_i − x_i‖²/(2α): 1/(2α) for a flipped bit, 2/(2α) = 1/α for a changed one-hot row.
        return 1 / self.step_size if self.model.one_hot else 1 / (2 * self.step_size)

    def _proposal_logits(self, x, g):
        xo, go = _as_one_hot(x, g, self.model)
        d = go - (xo * go).sum(-1, keepdim=True)
        return d / 2 - self._penalty() * (1 - xo)                   # (..., D, C)

    def _log_q(self, logits, target_idx):
        """`log q(target | ·)` = Σ_i log q_i(target_i)."""
        return torch.log_softmax(logits, -1).gather(-1, target_idx.unsqueeze(-1)).squeeze(-1).sum(-1)

    def step(self, x: torch.Tensor, *, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Propose a new value for every variable at once; DMALA accepts or rejects it.

        Args:
            x: the chains' states.
            generator: for the draws.

        Returns:
            The new states.
        """
        m = self.model
        f, g = self._eval(x)
        logits = self._proposal_logits(x, g)
        new_idx = sample_categorical(logits, generator=generator)    # (..., D): all variables at once
        y = from_index(new_idx, m, x.dtype)
        if not self.mh:
            idx = to_index(x, m)
            self.num_steps += 1
            self.accepted += (new_idx != idx).any(-1).to(torch.float64).mean().item()
            self._cache = None
            fy, gy = m.value_and_grad(y)
            return self._remember(y, fy, gy)
        fy, gy = m.value_and_grad(y)
        idx = to_index(x, m)
        log_a = fy - f + self._log_q(self._proposal_logits(y, gy), idx) - self._log_q(logits, new_idx)
        out = self._accept(x, f, g, y, fy, gy, log_a, generator)
        if self.target_accept is not None and self.num_steps <= self.adapt_steps:
            t = self.num_steps - 1
            mean_a = float(self.last_accept_prob.mean())
            self.step_size = float(math.exp(math.log(self.step_size) + (mean_a - self.target_accept) / (t + 1) ** 0.6))
        return out

    def transition_matrix(self, *, max_states: int = 1 << 12) -> torch.Tensor:
        """The exact kernel: the proposal itself (DULA) or proposal times acceptance (DMALA).

        Args:
            max_states: refuse to enumerate more states than this.

        Returns:
            `P` shaped `(S, S)` in float64, rows summing to 1; DULA's stationary distribution
            ([stationary_distribution][quasigrad.samplers.stationary_distribution] of it) is
            not π.
        """
        m = self.model
        X = m.enumerate_states(max_states=max_states).double()
        idx = _all_indices(m.num_vars, m.num_categories, max_states, X.device)
        f, g = _model_double(m).value_and_grad(X)
        logqi = torch.log_softmax(self._proposal_logits(X, g), -1)   # (S, D, C)
        # log q(s′ | s) = Σ_i log q_i(digit_i(s′) | s)
        logq = cast(torch.Tensor, sum(logqi[:, i, :][:, idx[:, i]] for i in range(m.num_vars)))   # (S, S)
        if not self.mh:
            return logq.exp()
        log_a = (f.unsqueeze(0) - f.unsqueeze(1) + logq.T - logq).clamp(max=0)
        P = torch.exp(logq + log_a)
        P.fill_diagonal_(0)
        P[torch.arange(len(f)), torch.arange(len(f))] = 1 - P.sum(-1)
        return P


SAMPLERS: Registry[Callable[..., _Sampler]] = Registry("sampler")
SAMPLERS.register("gibbs", lambda model, **kw: Gibbs(model, scan="random", **kw))
SAMPLERS.register("gibbs-systematic", lambda model, **kw: Gibbs(model, scan="systematic", **kw))
SAMPLERS.register("gwg", GibbsWithGradients)
SAMPLERS.register("dula", lambda model, **kw: DiscreteLangevin(model, mh=False, **kw))
SAMPLERS.register("dmala", lambda model, **kw: DiscreteLangevin(model, mh=True, **kw))
"""Sampler name → a function `(model, **kwargs)` that makes it (see `make_sampler`)."""


def make_sampler(name: str, model: EnergyModel, **kwargs: Any) -> _Sampler:
    """A sampler by name.

    Args:
        name: `"gibbs"` (random scan), `"gibbs-systematic"`, `"gwg"`, `"dula"` or `"dmala"`.
        model: the target.
        **kwargs: the sampler's options (`step_size=` for DULA and DMALA, ...).

    Returns:
        A [Gibbs][quasigrad.samplers.Gibbs], [GibbsWithGradients][quasigrad.samplers.GibbsWithGradients]
        or [DiscreteLangevin][quasigrad.samplers.DiscreteLangevin] sampler.

    Raises:
        ValueError: an unknown name.
    """
    return SAMPLERS.get(name)(model, **kwargs)
