r"""Gradient-informed samplers for discrete distributions, and the models to test them on.

A model is an unnormalised log-probability ``f(x) = log π(x) + log Z`` over ``D`` discrete
variables. Binary models take states ``x ∈ {0, 1}^D`` shaped ``(..., D)``; categorical models
take one-hot states shaped ``(..., D, C)``. Leading dimensions are independent chains.

Samplers (each ``step(x, generator=None) -> x`` advances every chain by one transition):

=====================  ==========================================================================
:class:`Gibbs`         one coordinate per step from its exact conditional; ``scan="random"``
                       picks it uniformly per chain, ``scan="systematic"`` cycles 0, 1, …, D−1.
:class:`GibbsWithGradients`  (GWG, Grathwohl et al. 2021) proposes changing one coordinate,
                       chosen with ``q(i|x) = softmax(d̃(x)/2)``, ``d̃ = −(2x − 1) ⊙ ∇f(x)``
                       (categorical: ``d̃_ic = ∇f_ic − ⟨x_i, ∇f_i⟩`` over ``c ≠ x_i``), and
                       accepts with ``min(1, e^{f(x′) − f(x)} q(i|x′)/q(i|x))``.
:class:`DiscreteLangevin`  (DLP, Zhang, Liu & Liu 2022) changes every coordinate at once,
                       independently: binary ``P(flip i) = σ(½ ∇f_i (1 − 2x_i) − 1/(2α))``;
                       categorical ``q_i(c) ∝ exp(½(∇f_ic − ⟨x_i, ∇f_i⟩) − [c ≠ x_i]/α)``
                       (``‖e_c − x_i‖² = 2``). ``mh=False`` is DULA (no correction: biased,
                       the bias vanishing as α → 0); ``mh=True`` is DMALA (Metropolis–Hastings
                       with the product of reverse over forward flip probabilities: exact).
=====================  ==========================================================================

``make_sampler("gibbs" | "gibbs-systematic" | "gwg" | "dula" | "dmala", model, ...)`` builds
one by name. Every sampler can also build its exact transition matrix on a small model
(:meth:`transition_matrix`), so that ``π P = π`` can be checked to float64 precision.

Models: :class:`Ising` (with :meth:`Ising.lattice`), :class:`RBM` (visible marginal, with
the hidden layer summed out), and :class:`EnergyModel` for any ``f`` (gradient by autograd).
Each has exact marginals by enumeration for small sizes; a periodic lattice Ising model of
width ≤ 12 also has them by the transfer matrix (exact for 10×10).

:func:`effective_sample_size` is the multi-chain ESS of Stan / Vehtari et al. (2021, without
rank normalisation) with Geyer's initial monotone sequence, in PyTorch.

References:
    Grathwohl, Swersky, Hashemi, Duvenaud, Maddison. Oops I took a gradient: scalable
    sampling for discrete distributions. ICML 2021.
    Zhang, Liu, Liu. A Langevin-like sampler for discrete distributions. ICML 2022.
    Geyer. Practical Markov chain Monte Carlo. Statistical Science 1992.
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Tuple

import torch

from . import _validate as V
from ._sampling import sample_categorical, uniform

__all__ = ["EnergyModel", "Ising", "RBM", "Gibbs", "GibbsWithGradients", "DiscreteLangevin", "make_sampler",
           "SAMPLERS", "effective_sample_size", "stationary_distribution"]

DEFAULT_MAX_STATES = 1 << 20


# --------------------------------------------------------------------------------------------
# Models


class EnergyModel:
    """An unnormalised log-probability ``f`` over ``num_vars`` binary or categorical variables.

    Args:
        log_prob: callable ``x -> f(x)``: ``x`` shaped ``(..., D)`` in {0, 1} (binary,
            ``num_categories=2`` and ``one_hot=False``) or one-hot ``(..., D, C)``; returns
            shape ``(...)``. It must accept any number of leading dimensions and be
            differentiable in ``x`` (the samplers use ``∇f`` at the discrete point).
        num_vars: ``D``.
        num_categories: ``C`` (2 for binary variables).
        one_hot: represent states one-hot ``(..., D, C)`` (default: ``num_categories > 2``).
        dtype: the dtype of states it makes (default: torch's default dtype).

    Subclasses override :meth:`log_prob` and, for speed, :meth:`value_and_grad`.
    """

    def __init__(self, log_prob: Optional[Callable] = None, num_vars: int = 1, num_categories: int = 2, *,
                 one_hot: Optional[bool] = None, dtype: Optional[torch.dtype] = None):
        if log_prob is not None and not callable(log_prob):
            raise TypeError(f"log_prob must be callable, got {type(log_prob).__name__}")
        self._fn = log_prob
        self._dtype = dtype or torch.get_default_dtype()
        self.num_vars = V.check_int(num_vars, "num_vars")
        self.num_categories = V.check_int(num_categories, "num_categories", minimum=2)
        self.one_hot = (self.num_categories > 2) if one_hot is None else bool(one_hot)
        if not self.one_hot and self.num_categories != 2:
            raise ValueError(f"one_hot=False needs num_categories=2, got {self.num_categories}")

    # -- the energy -------------------------------------------------------------------------
    @property
    def event_shape(self) -> Tuple[int, ...]:
        return (self.num_vars, self.num_categories) if self.one_hot else (self.num_vars,)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Unnormalised ``f(x)``, shaped like ``x`` without the event dimensions."""
        if self._fn is None:
            raise NotImplementedError("EnergyModel needs a log_prob function or a subclass")
        return self._fn(x)

    def value_and_grad(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(f(x), ∇f(x))`` with ``∇f`` shaped like ``x`` (autograd by default)."""
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            f = self.log_prob(xg)
            (g,) = torch.autograd.grad(f.sum(), xg)
        return f.detach(), g

    @property
    def dtype(self) -> torch.dtype:
        return self._dtype

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    # -- states -----------------------------------------------------------------------------
    def check_state(self, x, name: str = "x") -> None:
        """Raise a clear error unless ``x`` is a batch of valid states of this model."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        shape = self.event_shape
        if x.dim() < len(shape) or tuple(x.shape[x.dim() - len(shape):]) != shape:
            kind = "one-hot states (..., D, C)" if self.one_hot else "binary states (..., D)"
            raise ValueError(f"{name} must hold {kind} with event shape {shape}, got shape {tuple(x.shape)}")
        if not x.dtype.is_floating_point:
            raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
        if not bool(((x == 0) | (x == 1)).all()):
            bad = x[(x != 0) & (x != 1)]
            raise ValueError(f"{name} must hold only 0s and 1s, got value {bad.flatten()[0].item()!r}")
        if self.one_hot and not bool((x.sum(-1) == 1).all()):
            raise ValueError(f"{name} must be one-hot along its last dimension (exactly one 1 per variable)")

    def random_state(self, num_chains: int, *, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """``num_chains`` states drawn uniformly at random."""
        num_chains = V.check_int(num_chains, "num_chains")
        logits = torch.zeros((num_chains, self.num_vars, self.num_categories), dtype=self.dtype, device=self.device)
        return from_index(sample_categorical(logits, generator=generator), self)

    def enumerate_states(self, *, max_states: int = DEFAULT_MAX_STATES) -> torch.Tensor:
        """Every state, shaped ``(C^D, *event_shape)``; state ``s`` has ``x_i = digit_i(s)`` in base C."""
        idx = _all_indices(self.num_vars, self.num_categories, max_states, self.device)
        return from_index(idx, self)

    def exact_log_probs(self, *, max_states: int = DEFAULT_MAX_STATES) -> torch.Tensor:
        """Normalised ``log π`` of every state, in the order of :meth:`enumerate_states`."""
        model = _model_double(self)           # Ising / RBM: computed in float64 whatever their dtype
        states = self.enumerate_states(max_states=max_states)
        f = model.log_prob(states.double() if model is not self else states).double()
        return f - torch.logsumexp(f, 0)

    def exact_marginals(self, *, max_states: int = DEFAULT_MAX_STATES) -> torch.Tensor:
        """``E_π[x]`` in float64: ``P(x_i = 1)`` shaped ``(D,)``, or ``P(x_i = c)`` shaped ``(D, C)``."""
        p = self.exact_log_probs(max_states=max_states).exp()
        return torch.tensordot(p, self.enumerate_states(max_states=max_states).double(), dims=1)


def _all_indices(num_vars, num_categories, max_states, device):
    n = num_categories ** num_vars
    if n > max_states:
        raise ValueError(f"enumeration needs {num_categories}^{num_vars} = {n} states, more than "
                         f"max_states={max_states}")
    s = torch.arange(n, device=device)
    powers = num_categories ** torch.arange(num_vars, device=device)
    return (s.unsqueeze(-1) // powers) % num_categories  # (S, D)


def to_index(x: torch.Tensor, model: EnergyModel) -> torch.Tensor:
    """Category index of every variable, shaped ``(..., D)`` (int64)."""
    return x.argmax(-1) if model.one_hot else x.long()


def from_index(index: torch.Tensor, model: EnergyModel, dtype=None) -> torch.Tensor:
    dtype = dtype or model.dtype
    if model.one_hot:
        return torch.nn.functional.one_hot(index, model.num_categories).to(dtype)
    return index.to(dtype)


def _as_one_hot(x, g, model):
    """States and gradients in the one-hot layout ``(..., D, C)`` (binary: ``[1 − x, x]``, ``[0, ∇f]``)."""
    if model.one_hot:
        return x, g
    return torch.stack([1 - x, x], -1), torch.stack([torch.zeros_like(g), g], -1)


class Ising(EnergyModel):
    r"""Ising model on binary ``x ∈ {0,1}^D`` with spins ``s = 2x − 1``:

    .. math:: f(x) = s^\top J s + b^\top s

    (the convention of Grathwohl et al. 2021: each edge ``{i, j}`` contributes
    ``2 J_ij s_i s_j``). ``∇_x f = 2(2 J s + b)``.

    Args:
        coupling: symmetric ``J`` shaped ``(D, D)`` with zero diagonal.
        bias: ``b`` shaped ``(D,)`` (or a number).
    """

    def __init__(self, coupling: torch.Tensor, bias=0.0):
        V.check_floating(coupling, "coupling")
        if coupling.dim() != 2 or coupling.shape[0] != coupling.shape[1]:
            raise ValueError(f"coupling must be a square (D, D) matrix, got shape {tuple(coupling.shape)}")
        if not torch.allclose(coupling, coupling.T):
            raise ValueError("coupling must be symmetric (J = Jᵀ)")
        if bool(coupling.diagonal().ne(0).any()):
            raise ValueError("coupling must have a zero diagonal (s_i² = 1 makes it a constant)")
        super().__init__(num_vars=coupling.shape[0], num_categories=2)
        bias = torch.as_tensor(bias, dtype=coupling.dtype, device=coupling.device)
        self.J = coupling
        self.b = bias.expand(coupling.shape[0]).clone()
        self.lattice_shape: Optional[Tuple[int, int]] = None

    @classmethod
    def lattice(cls, n: int, m: Optional[int] = None, *, coupling: float = 0.1, bias: float = 0.0,
                periodic: bool = True, dtype=torch.float32, device=None) -> "Ising":
        """An ``n × m`` square lattice, ``J = coupling ·`` adjacency (periodic: a torus), ``b = bias``.
        Variable ``(r, c)`` is index ``r·m + c``."""
        n = V.check_int(n, "n")
        m = n if m is None else V.check_int(m, "m")
        adj = torch.zeros(n * m, n * m, dtype=dtype, device=device)
        for r in range(n):
            for c in range(m):
                for dr, dc in ((1, 0), (0, 1)):
                    r2, c2 = r + dr, c + dc
                    if periodic:
                        r2, c2 = r2 % n, c2 % m
                    elif r2 >= n or c2 >= m:
                        continue
                    i, j = r * m + c, r2 * m + c2
                    if i != j:
                        adj[i, j] = adj[j, i] = 1.0
        model = cls(coupling * adj, bias)
        model.lattice_shape = (n, m) if periodic else None
        return model

    @property
    def dtype(self):
        return self.J.dtype

    @property
    def device(self):
        return self.J.device

    def log_prob(self, x):
        s = 2 * x - 1
        return ((s @ self.J) * s).sum(-1) + s @ self.b

    def value_and_grad(self, x):
        s = 2 * x - 1
        js = s @ self.J
        return (js * s).sum(-1) + s @ self.b, 2 * (2 * js + self.b)

    def exact_marginals(self, *, max_states: int = DEFAULT_MAX_STATES) -> torch.Tensor:
        """``P(x_i = 1)`` in float64: by enumeration for ``D ≤ log2(max_states)``, else by the
        transfer matrix for a periodic lattice of width ≤ 12 (at least 3 rows)."""
        if 2 ** self.num_vars <= max_states or self.lattice_shape is None:
            return super().exact_marginals(max_states=max_states)
        n, m = self.lattice_shape
        if m > 12 or n < 3:
            raise ValueError(f"exact marginals of a {n}×{m} lattice need a width ≤ 12 and ≥ 3 rows "
                             f"(transfer matrix), or at most log2(max_states) variables (enumeration)")
        return _transfer_matrix_marginals(self.J.double(), self.b.double(), n, m)


def _transfer_matrix_marginals(J, b, n, m):
    """``E[x]`` of a periodic ``n × m`` lattice Ising model by ``Z = Tr(M_0 ⋯ M_{n−1})`` with
    ``M_r[a, a′] = exp(s_aᵀ J_rr s_a + b_rᵀ s_a + 2 s_aᵀ J_{r,r+1} s_a′)``; marginals are
    ``∂ log Z/∂b`` (autograd)."""
    b = b.clone().requires_grad_(True)
    spins = 2.0 * _all_indices(m, 2, 1 << 12, J.device).to(J.dtype) - 1  # (2^m, m)
    log_z = torch.zeros((), dtype=J.dtype, device=J.device)
    prod = None
    for r in range(n):
        rows = slice(r * m, (r + 1) * m)
        nxt = slice(((r + 1) % n) * m, ((r + 1) % n + 1) * m)
        within = ((spins @ J[rows, rows]) * spins).sum(-1) + spins @ b[rows]
        across = 2 * (spins @ J[rows, nxt]) @ spins.T
        logm = within.unsqueeze(-1) + across
        shift = logm.max()
        mat = torch.exp(logm - shift)
        log_z = log_z + shift
        prod = mat if prod is None else prod @ mat
        scale = prod.abs().max()
        prod = prod / scale
        log_z = log_z + torch.log(scale)
    log_z = log_z + torch.log(prod.diagonal().sum())
    (grad,) = torch.autograd.grad(log_z, b)
    return (1 + grad.detach()) / 2


class RBM(EnergyModel):
    r"""Restricted Boltzmann machine, as the marginal of its binary visible units ``x``:

    .. math:: f(x) = b^\top x + \sum_j \operatorname{softplus}(c_j + (x W)_j),
              \qquad \nabla f = b + W\,\sigma(c + W^\top x)

    from the joint ``exp(bᵀx + cᵀh + xᵀ W h)`` over ``h ∈ {0,1}^H`` summed out.

    Args:
        weight: ``W`` shaped ``(V, H)``; visible_bias ``b`` ``(V,)``; hidden_bias ``c`` ``(H,)``.
    """

    def __init__(self, weight: torch.Tensor, visible_bias: torch.Tensor, hidden_bias: torch.Tensor):
        V.check_floating(weight, "weight")
        if weight.dim() != 2:
            raise ValueError(f"weight must be (V, H), got shape {tuple(weight.shape)}")
        nv, nh = weight.shape
        for name, t, size in (("visible_bias", visible_bias, nv), ("hidden_bias", hidden_bias, nh)):
            V.check_floating(t, name)
            if tuple(t.shape) != (size,):
                raise ValueError(f"{name} must have shape ({size},), got {tuple(t.shape)}")
        super().__init__(num_vars=nv, num_categories=2)
        self.W, self.b, self.c = weight, visible_bias, hidden_bias

    @classmethod
    def random(cls, num_visible: int = 100, num_hidden: int = 25, *, weight_std: float = 0.1, bias_std: float = 1.0,
               generator: Optional[torch.Generator] = None, dtype=torch.float32) -> "RBM":
        """Gaussian random parameters: ``W ~ N(0, weight_std²)``, biases ``~ N(0, bias_std²)``."""
        nv, nh = V.check_int(num_visible, "num_visible"), V.check_int(num_hidden, "num_hidden")
        w = torch.randn(nv, nh, generator=generator, dtype=dtype) * weight_std
        b = torch.randn(nv, generator=generator, dtype=dtype) * bias_std
        c = torch.randn(nh, generator=generator, dtype=dtype) * bias_std
        return cls(w, b, c)

    @property
    def dtype(self):
        return self.W.dtype

    @property
    def device(self):
        return self.W.device

    def log_prob(self, x):
        return x @ self.b + torch.nn.functional.softplus(x @ self.W + self.c).sum(-1)

    def value_and_grad(self, x):
        pre = x @ self.W + self.c
        f = x @ self.b + torch.nn.functional.softplus(pre).sum(-1)
        return f, self.b + torch.sigmoid(pre) @ self.W.T

    def block_gibbs(self, x: torch.Tensor, *, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """One step of block Gibbs: ``h ~ p(h|x)``, then ``x ~ p(x|h)`` (exact kernel of the RBM)."""
        h = uniform(x.shape[:-1] + (self.W.shape[1],), dtype=x.dtype, device=x.device, generator=generator)
        h = (h < torch.sigmoid(x @ self.W + self.c)).to(x.dtype)
        u = uniform(x.shape, dtype=x.dtype, device=x.device, generator=generator)
        return (u < torch.sigmoid(h @ self.W.T + self.b)).to(x.dtype)

    def exact_marginals(self, *, max_states: int = DEFAULT_MAX_STATES, chunk: int = 1 << 14) -> torch.Tensor:
        """``P(x_i = 1)`` in float64, enumerating the smaller layer: visible states directly, or
        hidden states ``h`` with ``E[x | h] = σ(b + W h)`` weighted by
        ``p(h) ∝ exp(cᵀh + Σ_i softplus(b_i + (W h)_i))`` (in chunks)."""
        nv, nh = self.W.shape
        if nv <= nh:
            return super().exact_marginals(max_states=max_states)
        if 2 ** nh > max_states:
            raise ValueError(f"enumeration needs 2^{nh} hidden states, more than max_states={max_states}")
        W, b, c = self.W.double(), self.b.double(), self.c.double()
        logw, means = [], []
        for start in range(0, 2 ** nh, chunk):
            s = torch.arange(start, min(start + chunk, 2 ** nh), device=W.device)
            h = ((s.unsqueeze(-1) >> torch.arange(nh, device=W.device)) & 1).double()
            pre = h @ W.T + b
            lw = h @ c + torch.nn.functional.softplus(pre).sum(-1)
            logw.append(torch.logsumexp(lw, 0))
            wts = torch.softmax(lw, 0)
            means.append(wts @ torch.sigmoid(pre))
        logw = torch.stack(logw)
        return torch.softmax(logw, 0) @ torch.stack(means)


# --------------------------------------------------------------------------------------------
# Samplers


class _Sampler:
    """Shared machinery: a cache of ``(f, ∇f)`` at the chains' current state, validation of
    states the sampler did not produce itself, and acceptance statistics."""

    name = ""
    needs_grad = True

    def __init__(self, model: EnergyModel):
        if not isinstance(model, EnergyModel):
            raise TypeError(f"model must be a quasigrad.samplers.EnergyModel, got {type(model).__name__}")
        self.model = model
        self._cache = None
        self.num_steps = 0
        self.accepted = 0.0   # sum over steps of the fraction of chains that moved / accepted
        self.last_accept_prob = None

    @property
    def accept_rate(self) -> float:
        """Mean over steps and chains of the acceptance indicator; for kernels without an MH
        test (Gibbs, DULA) the fraction of chains whose state changed."""
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
        raise NotImplementedError

    def run(self, x: torch.Tensor, num_steps: int, *, generator: Optional[torch.Generator] = None,
            callback: Optional[Callable] = None) -> torch.Tensor:
        """``num_steps`` steps from ``x``; ``callback(t, x)`` after each. Returns the last state."""
        num_steps = V.check_int(num_steps, "num_steps", minimum=0)
        for t in range(num_steps):
            x = self.step(x, generator=generator)
            if callback is not None:
                callback(t, x)
        return x

    # -- exact transition matrix on small models --------------------------------------------
    def transition_matrix(self, *, max_states: int = 1 << 12) -> torch.Tensor:
        """The exact kernel ``P[s, s′] = P(x_{t+1} = s′ | x_t = s)`` over all states (float64),
        in the order of :meth:`EnergyModel.enumerate_states`. Rows sum to 1."""
        raise NotImplementedError


def _neighbour_index(idx_states, i, c, num_categories):
    """State index after setting variable ``i`` of each state to ``c``."""
    power = num_categories ** i
    s = (idx_states * (num_categories ** torch.arange(idx_states.shape[-1], device=idx_states.device))).sum(-1)
    return s + (c - idx_states[..., i]) * power


class Gibbs(_Sampler):
    """Single-site Gibbs sampling: one variable per step is redrawn from ``π(x_i | x_{−i})``
    (``C`` evaluations of ``f``, no gradient). ``scan="random"``: the variable is uniform and
    independent per chain; ``scan="systematic"``: variable ``t mod D`` at step ``t``. Exact (each
    single-site kernel leaves π invariant); a systematic sweep of ``D`` steps is the classic
    Gibbs sweep."""

    needs_grad = False

    def __init__(self, model: EnergyModel, *, scan: str = "random"):
        super().__init__(model)
        if scan not in ("random", "systematic"):
            raise ValueError(f"scan must be 'random' or 'systematic', got {scan!r}")
        self.scan = scan
        self.name = "gibbs" if scan == "random" else "gibbs-systematic"

    def step(self, x, *, generator=None):
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

    def transition_matrix(self, *, max_states: int = 1 << 12):
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
    would increase ``f``.

    Binary: ``d̃(x) = −(2x − 1) ⊙ ∇f(x)`` estimates ``f(flip_i x) − f(x)``; propose flipping
    ``i ~ q(i|x) = softmax(d̃(x)/2)``, accept with ``min(1, e^{f(x′) − f(x)} q(i|x′)/q(i|x))``.
    Categorical: ``d̃_ic = ∇f_ic − ⟨x_i, ∇f_i⟩`` over the ``D(C − 1)`` changes ``(i, c ≠ x_i)``.
    Exact (π-invariant by the MH correction); two gradient evaluations per step, one of which
    is cached for the next step.
    """

    name = "gwg"

    def _proposal_logits(self, x, g):
        xo, go = _as_one_hot(x, g, self.model)
        d = go - (xo * go).sum(-1, keepdim=True)
        d = d.masked_fill(xo.bool(), float("-inf"))                   # no "change" to the current value
        return (d / 2).flatten(-2)                                    # (..., D·C)

    def step(self, x, *, generator=None):
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

    def transition_matrix(self, *, max_states: int = 1 << 12):
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
    once, independently given ``x``, with

    .. math:: q_i(x'_i | x) \propto \exp\big(\tfrac12 \nabla f(x)_i^\top (x'_i - x_i)
              - \tfrac{1}{2\alpha}\|x'_i - x_i\|^2\big),

    i.e. binary ``P(flip i) = σ(½ ∇f_i (1 − 2x_i) − 1/(2α))``, categorical (one-hot,
    ``‖e_c − x_i‖² = 2``) ``q_i(c) = softmax_c(½(∇f_ic − ⟨x_i, ∇f_i⟩) − [c ≠ x_i]/α)``.

    ``mh=False`` is DULA: the proposal is the step (one gradient per step). It is **biased**:
    its stationary distribution differs from π by an amount that vanishes as α → 0 (measure
    it with :meth:`transition_matrix` and :func:`stationary_distribution`). ``mh=True`` is
    DMALA: accept with ``min(1, e^{f(x′) − f(x)} q(x|x′)/q(x′|x))``, ``q(x′|x) = Π_i q_i``
    (exact; the gradient at ``x′`` is cached for the next step).

    Step-size adaptation (DMALA only): with ``target_accept`` set, the first ``adapt_steps``
    steps update ``log α ← log α + (ā_t − target)/(t + 1)^0.6`` with ``ā_t`` the chains' mean
    acceptance probability; α is then frozen. Discard the adaptation steps as burn-in: the
    chain is Markov (and exact) only once α is fixed.

    Args:
        model: the target. step_size: ``α > 0``. mh: DMALA (True) or DULA (False).
        target_accept: in (0, 1), or None (no adaptation). adapt_steps: how many steps adapt.
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
        """``log q(target | ·)`` = Σ_i log q_i(target_i)."""
        return torch.log_softmax(logits, -1).gather(-1, target_idx.unsqueeze(-1)).squeeze(-1).sum(-1)

    def step(self, x, *, generator=None):
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

    def transition_matrix(self, *, max_states: int = 1 << 12):
        m = self.model
        X = m.enumerate_states(max_states=max_states).double()
        idx = _all_indices(m.num_vars, m.num_categories, max_states, X.device)
        f, g = _model_double(m).value_and_grad(X)
        logqi = torch.log_softmax(self._proposal_logits(X, g), -1)   # (S, D, C)
        # log q(s′ | s) = Σ_i log q_i(digit_i(s′) | s)
        logq = sum(logqi[:, i, :][:, idx[:, i]] for i in range(m.num_vars))   # (S, S)
        if not self.mh:
            return logq.exp()
        log_a = (f.unsqueeze(0) - f.unsqueeze(1) + logq.T - logq).clamp(max=0)
        P = torch.exp(logq + log_a)
        P.fill_diagonal_(0)
        P[torch.arange(len(f)), torch.arange(len(f))] = 1 - P.sum(-1)
        return P


def _model_double(model):
    """The model in float64 (for exact transition matrices)."""
    if isinstance(model, Ising):
        out = Ising(model.J.double(), model.b.double())
        return out
    if isinstance(model, RBM):
        return RBM(model.W.double(), model.b.double(), model.c.double())
    return model


SAMPLERS = {
    "gibbs": lambda model, **kw: Gibbs(model, scan="random", **kw),
    "gibbs-systematic": lambda model, **kw: Gibbs(model, scan="systematic", **kw),
    "gwg": GibbsWithGradients,
    "dula": lambda model, **kw: DiscreteLangevin(model, mh=False, **kw),
    "dmala": lambda model, **kw: DiscreteLangevin(model, mh=True, **kw),
}


def make_sampler(name: str, model: EnergyModel, **kwargs) -> _Sampler:
    """A sampler by name: ``gibbs`` (random scan), ``gibbs-systematic``, ``gwg``, ``dula``, ``dmala``."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; known samplers: {', '.join(SAMPLERS)}")
    return SAMPLERS[name](model, **kwargs)


def stationary_distribution(P: torch.Tensor) -> torch.Tensor:
    """The stationary distribution of an irreducible transition matrix ``P`` (rows sum to 1):
    the solution of ``π (P − I) = 0``, ``Σ π = 1``, by least squares in float64."""
    P = P.double()
    S = P.shape[0]
    A = torch.cat([(P - torch.eye(S, dtype=P.dtype, device=P.device)).T, torch.ones(1, S, dtype=P.dtype,
                                                                                      device=P.device)])
    rhs = torch.zeros(S + 1, dtype=P.dtype, device=P.device)
    rhs[-1] = 1
    return torch.linalg.lstsq(A, rhs.unsqueeze(-1)).solution.squeeze(-1)


# --------------------------------------------------------------------------------------------
# Effective sample size


def effective_sample_size(samples: torch.Tensor) -> torch.Tensor:
    r"""Multi-chain effective sample size of each scalar statistic.

    Args:
        samples: ``(num_steps, num_chains, ...)``: ``num_steps ≥ 4`` draws of every chain.

    Returns:
        ESS shaped ``samples.shape[2:]`` (float64). It can exceed ``num_steps · num_chains``
        for anticorrelated chains (as in Stan), up to ``n m log10(n m)``.

    With ``W`` the mean within-chain variance, ``B/n`` the variance of the chain means,
    ``var⁺ = (n − 1)/n W + B/n``, and ``ρ_t = 1 − (W − \bar{γ}_t)/var⁺`` (``\bar{γ}_t`` the
    chains' mean autocovariance at lag ``t``, by FFT), ``ESS = m n / τ`` with
    ``τ = −1 + 2 Σ_k P_k``, ``P_k = ρ_{2k} + ρ_{2k+1}`` summed while positive and made
    monotone (Geyer's initial monotone sequence). A statistic constant over every draw has
    ESS ``m n``. (Stan reference manual; Vehtari et al. 2021 without rank normalisation.)
    """
    if not isinstance(samples, torch.Tensor):
        raise TypeError(f"samples must be a torch.Tensor, got {type(samples).__name__}")
    if samples.dim() < 2:
        raise ValueError(f"samples must be shaped (num_steps, num_chains, ...), got shape {tuple(samples.shape)}")
    n, m = samples.shape[0], samples.shape[1]
    if n < 4:
        raise ValueError(f"samples needs at least 4 steps along dim 0, got {n}")
    x = samples.double()
    if not bool(torch.isfinite(x).all()):
        raise ValueError("samples contains NaN or inf")
    chain_mean = x.mean(0)
    xc = x - chain_mean
    # autocovariance by FFT, zero-padded to avoid wrap-around (biased estimator, / n)
    size = 1 << (2 * n - 1).bit_length()
    spec = torch.fft.rfft(xc, n=size, dim=0)
    acov = torch.fft.irfft(spec * spec.conj(), n=size, dim=0)[:n] / n          # (n, m, ...)
    w = (acov[0] * n / (n - 1)).mean(0)                                          # mean within-chain var
    b_over_n = chain_mean.var(0, unbiased=True) if m > 1 else torch.zeros_like(w)
    var_plus = (n - 1) / n * w + b_over_n
    constant = var_plus <= 1e-300 * torch.ones_like(var_plus)
    safe = torch.where(constant, torch.ones_like(var_plus), var_plus)
    rho = 1 - (w - acov.mean(1)) / safe                                          # (n, ...)
    k = n // 2
    pairs = rho[0:2 * k:2] + rho[1:2 * k:2]                                      # (k, ...)
    positive = torch.cumprod((pairs > 0).to(x.dtype), 0)                          # initial positive sequence
    mono = torch.cummin(torch.where(positive > 0, pairs, torch.full_like(pairs, float("inf"))), 0).values
    mono = torch.where(positive > 0, mono, torch.zeros_like(mono))
    tau = (-1 + 2 * mono.sum(0)).clamp(min=1.0 / math.log10(max(n * m, 10)))
    ess = n * m / tau
    return torch.where(constant, torch.full_like(ess, float(n * m)), ess)
