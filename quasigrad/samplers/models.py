"""Energy-based models over discrete variables: the interface samplers need, and the Ising
model and RBM with their exact marginals where those are tractable."""

from __future__ import annotations

from typing import Callable, Optional, Tuple, Union

import torch

from .._util import validate as V
from ..estimators._sampling import sample_categorical

DEFAULT_MAX_STATES = 1 << 20


# --------------------------------------------------------------------------------------------
# Models


class EnergyModel:
    """An unnormalised log-probability `f` over `num_vars` binary or categorical variables.

    Subclasses override [log_prob][quasigrad.samplers.EnergyModel.log_prob] and, for speed,
    [value_and_grad][quasigrad.samplers.EnergyModel.value_and_grad].

    Args:
        log_prob: callable `x -> f(x)`: `x` shaped `(..., D)` in {0, 1} (binary,
            `num_categories=2` and `one_hot=False`) or one-hot `(..., D, C)`; returns
            shape `(...)`. It must accept any number of leading dimensions and be
            differentiable in `x` (the samplers use `∇f` at the discrete point).
        num_vars: `D`.
        num_categories: `C` (2 for binary variables).
        one_hot: represent states one-hot `(..., D, C)` (default: `num_categories > 2`).
        dtype: the dtype of states it makes (default: torch's default dtype).

    Raises:
        TypeError: `log_prob` is not callable.
        ValueError: bad sizes, or `one_hot=False` with more than two categories.
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
        """The shape of one state.

        Returns:
            `(D, C)` for a one-hot model, `(D,)` for a binary one.
        """
        return (self.num_vars, self.num_categories) if self.one_hot else (self.num_vars,)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """The unnormalised log-probability.

        Args:
            x: states `(..., *event_shape)`.

        Returns:
            `f(x)`, shaped `(...)`.

        Raises:
            NotImplementedError: the model was made without a `log_prob` function.
        """
        if self._fn is None:
            raise NotImplementedError("EnergyModel needs a log_prob function or a subclass")
        return self._fn(x)

    def value_and_grad(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """The log-probability and its gradient at discrete states (by autograd here).

        Args:
            x: states `(..., *event_shape)`.

        Returns:
            `(f(x), ∇f(x))`: `f` shaped `(...)` and detached, `∇f` shaped like `x`.
        """
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            f = self.log_prob(xg)
            (g,) = torch.autograd.grad(f.sum(), xg)
        return f.detach(), g

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the states the model makes.

        Returns:
            The dtype given to the constructor (default: torch's default dtype).
        """
        return self._dtype

    @property
    def device(self) -> torch.device:
        """The device of the states the model makes.

        Returns:
            The CPU, for a model given by a function.
        """
        return torch.device("cpu")

    # -- states -----------------------------------------------------------------------------
    def check_state(self, x: torch.Tensor, name: str = "x") -> None:
        """Raise a clear error unless `x` is a batch of valid states of this model.

        Args:
            x: the value to check: floating point, 0s and 1s, one-hot along the last
                dimension for a one-hot model, ending in `event_shape`.
            name: the argument's name, for the message.

        Raises:
            TypeError: `x` is not a floating-point tensor.
            ValueError: its shape or values are not those of states.
        """
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
        """States drawn uniformly at random.

        Args:
            num_chains: how many.
            generator: for the draw.

        Returns:
            States shaped `(num_chains, *event_shape)`.
        """
        num_chains = V.check_int(num_chains, "num_chains")
        logits = torch.zeros((num_chains, self.num_vars, self.num_categories), dtype=self.dtype, device=self.device)
        return from_index(sample_categorical(logits, generator=generator), self)

    def enumerate_states(self, *, max_states: int = DEFAULT_MAX_STATES) -> torch.Tensor:
        """Every state, in a fixed order: state `s` has `x_i = digit_i(s)` in base `C`.

        Args:
            max_states: refuse to enumerate more states than this.

        Returns:
            States shaped `(C^D, *event_shape)`.

        Raises:
            ValueError: `C^D > max_states`.
        """
        idx = _all_indices(self.num_vars, self.num_categories, max_states, self.device)
        return from_index(idx, self)

    def exact_log_probs(self, *, max_states: int = DEFAULT_MAX_STATES) -> torch.Tensor:
        """The normalised log-probability of every state (by enumeration, in float64 for the
        Ising model and the RBM).

        Args:
            max_states: refuse to enumerate more states than this.

        Returns:
            `log π` shaped `(C^D,)`, in the order of
            [enumerate_states][quasigrad.samplers.EnergyModel.enumerate_states].

        Raises:
            ValueError: `C^D > max_states`.
        """
        model = _model_double(self)           # Ising / RBM: computed in float64 whatever their dtype
        states = self.enumerate_states(max_states=max_states)
        f = model.log_prob(states.double() if model is not self else states).double()
        return f - torch.logsumexp(f, 0)

    def exact_marginals(self, *, max_states: int = DEFAULT_MAX_STATES) -> torch.Tensor:
        """The exact marginals `E_π[x]` by enumeration, in float64.

        Args:
            max_states: refuse to enumerate more states than this.

        Returns:
            `P(x_i = 1)` shaped `(D,)` for a binary model, `P(x_i = c)` shaped `(D, C)` for
            a one-hot one.

        Raises:
            ValueError: `C^D > max_states`.
        """
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
    """The category index of every variable of some states.

    Args:
        x: states of `model`.
        model: the model they belong to.

    Returns:
        An int64 tensor shaped `(..., D)`.
    """
    return x.argmax(-1) if model.one_hot else x.long()


def from_index(index: torch.Tensor, model: EnergyModel, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """States from the category index of every variable (the inverse of
    [to_index][quasigrad.samplers.to_index]).

    Args:
        index: integer tensor `(..., D)`.
        model: the model the states are for.
        dtype: the states' dtype (default: the model's).

    Returns:
        States shaped `(..., *model.event_shape)`.
    """
    dtype = dtype or model.dtype
    if model.one_hot:
        return torch.nn.functional.one_hot(index, model.num_categories).to(dtype)
    return index.to(dtype)


def _as_one_hot(x, g, model):
    """States and gradients in the one-hot layout `(..., D, C)` (binary: `[1 − x, x]`, `[0, ∇f]`)."""
    if model.one_hot:
        return x, g
    return torch.stack([1 - x, x], -1), torch.stack([torch.zeros_like(g), g], -1)


class Ising(EnergyModel):
    r"""Ising model on binary `x ∈ {0,1}^D` with spins `s = 2x − 1`:

    $$
    f(x) = s^\top J s + b^\top s
    $$

    (the convention of Grathwohl et al. 2021: each edge `{i, j}` contributes
    `2 J_ij s_i s_j`). `∇_x f = 2(2 J s + b)`.

    Args:
        coupling: symmetric `J` shaped `(D, D)` with zero diagonal.
        bias: `b` shaped `(D,)` (or a number).

    Raises:
        TypeError: `coupling` is not a floating-point tensor.
        ValueError: `coupling` is not square, symmetric, with a zero diagonal.
    """

    def __init__(self, coupling: torch.Tensor, bias: Union[float, torch.Tensor] = 0.0):
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
                periodic: bool = True, dtype: torch.dtype = torch.float32,
                device: Optional[Union[torch.device, str]] = None) -> "Ising":
        """An Ising model on a square lattice: `J = coupling ·` adjacency, `b = bias`.

        Args:
            n: rows.
            m: columns (default: `n`).
            coupling: the coupling of each edge.
            bias: the bias of each variable.
            periodic: wrap around (a torus); its exact marginals then come from the transfer
                matrix.
            dtype: the parameters' dtype.
            device: the parameters' device.

        Returns:
            The model; variable `(r, c)` is index `r·m + c`.
        """
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
    def dtype(self) -> torch.dtype:
        """The dtype of the states the model makes.

        Returns:
            The coupling's dtype.
        """
        return self.J.dtype

    @property
    def device(self) -> torch.device:
        """The device of the states the model makes.

        Returns:
            The coupling's device.
        """
        return self.J.device

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """The unnormalised log-probability `sᵀJs + bᵀs`, `s = 2x − 1`.

        Args:
            x: binary states `(..., D)`.

        Returns:
            `f(x)`, shaped `(...)`.
        """
        s = 2 * x - 1
        return ((s @ self.J) * s).sum(-1) + s @ self.b

    def value_and_grad(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """The log-probability and its gradient in closed form.

        Args:
            x: binary states `(..., D)`.

        Returns:
            `(f(x), 2(2Js + b))`.
        """
        s = 2 * x - 1
        js = s @ self.J
        return (js * s).sum(-1) + s @ self.b, 2 * (2 * js + self.b)

    def exact_marginals(self, *, max_states: int = DEFAULT_MAX_STATES) -> torch.Tensor:
        """The exact marginals, in float64.

        By enumeration for `D ≤ log2(max_states)`, else by the transfer matrix for a periodic
        lattice of width ≤ 12 (at least 3 rows).

        Args:
            max_states: the most states to enumerate.

        Returns:
            `P(x_i = 1)` shaped `(D,)`.

        Raises:
            ValueError: neither method applies.
        """
        if 2 ** self.num_vars <= max_states or self.lattice_shape is None:
            return super().exact_marginals(max_states=max_states)
        n, m = self.lattice_shape
        if m > 12 or n < 3:
            raise ValueError(f"exact marginals of a {n}×{m} lattice need a width ≤ 12 and ≥ 3 rows "
                             f"(transfer matrix), or at most log2(max_states) variables (enumeration)")
        return _transfer_matrix_marginals(self.J.double(), self.b.double(), n, m)

    def _double(self) -> "Ising":
        return Ising(self.J.double(), self.b.double())


def _transfer_matrix_marginals(J, b, n, m):
    """`E[x]` of a periodic `n × m` lattice Ising model by `Z = Tr(M_0 ⋯ M_{n−1})` with
    `M_r[a, a′] = exp(s_aᵀ J_rr s_a + b_rᵀ s_a + 2 s_aᵀ J_{r,r+1} s_a′)`; marginals are
    `∂ log Z/∂b` (autograd)."""
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


def _model_double(model: EnergyModel) -> EnergyModel:
    """The model in float64 (for exact transition matrices); models without a float64 form as they are."""
    double = getattr(model, "_double", None)
    return double() if double is not None else model
