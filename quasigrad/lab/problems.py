r"""Problems small enough to enumerate, on which [quasigrad.lab.quality][] compares
estimators with the exact gradient.

A `Problem` is a set of independent categorical variables with logits `θ` of shape
`(V, C)` (one example; categories along the last dimension) and a loss `f(D)` of a one-hot
sample `D` shaped like `θ`, returning a scalar. `f` uses only batch-friendly tensor
operations, so that it can be mapped over many draws with `torch.vmap`. The gradient of
interest is `∇θ E_{D∼p_θ}[f(D)]`, computed exactly by [quasigrad.exact.gradient][]
(`C^V` outcomes).

Built-in problems (random ones drawn from a `generator`):

- `polynomial`: the ReinMax paper's loss `Σ_i |D_{i0} − c|^p / V` on two-way variables.
- `linear`: `⟨a, D⟩` (straight-through at τ = 1 is exact here).
- `quadratic`: `xᵀ A x + bᵀ x` with `x = vec(D)` (ReinMax at τ = 1 and ZGR are
  exact here: Liu et al. 2023, Shekhovtsov 2023).
- `cubic`: a random third-order polynomial in `x` (every estimator of layer 1 is
  biased).
- `decoder`: a small random neural network decoder `x ↦ MLP(x)` scored by the
  Bernoulli log-likelihood of a fixed random binary target, as in a VAE's reconstruction term.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, Optional, Tuple

import torch

__all__ = ["Problem", "polynomial", "linear", "quadratic", "cubic", "decoder", "PROBLEMS", "make"]


@dataclasses.dataclass
class Problem:
    """A loss of a few categorical variables, with the logits to evaluate gradients at.

    Attributes:
        name: short name (used as a key in results).
        logits: `(V, C)` logits, float64.
        f: `f(D) -> scalar` for a one-hot `D` of shape `(V, C)`.
        description: one line for tables.
    """

    name: str
    logits: torch.Tensor
    f: Callable[[torch.Tensor], torch.Tensor]
    description: str = ""

    @property
    def shape(self) -> Tuple[int, ...]:
        """The shape of the logits.

        Returns:
            `(V, C)`.
        """
        return tuple(self.logits.shape)


def _gen(generator: Optional[torch.Generator], seed: int) -> torch.Generator:
    return generator if generator is not None else torch.Generator().manual_seed(seed)


def _logits(num_vars: int, num_categories: int, gen: torch.Generator, scale: float = 1.0) -> torch.Tensor:
    return scale * torch.randn(num_vars, num_categories, generator=gen, dtype=torch.float64)


def polynomial(num_vars: int = 4, *, p: float = 2.0, c: float = 0.45, generator: Optional[torch.Generator] = None,
               seed: int = 0) -> Problem:
    """The ReinMax paper's loss (section 6.1): `f(D) = Σ_i |D_{i0} − c|^p / V` on `V` two-way
    variables, at logits drawn from N(0, 1). Quadratic in `D` for `p = 2`.

    Args:
        num_vars: `V`.
        p: the exponent.
        c: the target.
        generator: for the logits (default: one seeded with `seed`).
        seed: the seed when no generator is given.

    Returns:
        The problem.
    """
    gen = _gen(generator, seed)
    logits = _logits(num_vars, 2, gen)

    def f(d):
        return (d[..., 0] - c).abs().pow(p).sum(-1) / num_vars

    return Problem(f"polynomial(p={p:g})", logits, f, f"Σ|D_i0 − {c}|^{p:g}/{num_vars}, {num_vars} binary variables")


def linear(num_vars: int = 3, num_categories: int = 3, *, generator: Optional[torch.Generator] = None,
           seed: int = 0) -> Problem:
    """A linear loss `f(D) = ⟨a, D⟩` with `a ~ N(0, 1)`, at logits drawn from N(0, 1).

    Args:
        num_vars: `V`.
        num_categories: `C`.
        generator: for the logits and coefficients (default: one seeded with `seed`).
        seed: the seed when no generator is given.

    Returns:
        The problem.
    """
    gen = _gen(generator, seed)
    logits = _logits(num_vars, num_categories, gen)
    a = torch.randn(num_vars, num_categories, generator=gen, dtype=torch.float64)

    def f(d):
        return (a.to(d.dtype) * d).sum((-2, -1))

    return Problem("linear", logits, f, f"⟨a, D⟩, {num_vars} variables × {num_categories} categories")


def quadratic(num_vars: int = 3, num_categories: int = 3, *, generator: Optional[torch.Generator] = None,
              seed: int = 0) -> Problem:
    """A quadratic loss `f(D) = xᵀ A x + bᵀ x` with `x = vec(D)`, `A` symmetric with N(0, 1)
    entries and `b ~ N(0, 1)`, at logits drawn from N(0, 1).

    Args:
        num_vars: `V`.
        num_categories: `C`.
        generator: for the logits and coefficients (default: one seeded with `seed`).
        seed: the seed when no generator is given.

    Returns:
        The problem.
    """
    gen = _gen(generator, seed)
    logits = _logits(num_vars, num_categories, gen)
    n = num_vars * num_categories
    a = torch.randn(n, n, generator=gen, dtype=torch.float64)
    a = (a + a.T) / 2
    b = torch.randn(n, generator=gen, dtype=torch.float64)

    def f(d):
        x = d.reshape(d.shape[:-2] + (n,))
        return ((x @ a.to(d.dtype)) * x).sum(-1) + x @ b.to(d.dtype)

    return Problem("quadratic", logits, f, f"xᵀAx + bᵀx, {num_vars} variables × {num_categories} categories")


def cubic(num_vars: int = 3, num_categories: int = 3, *, generator: Optional[torch.Generator] = None,
          seed: int = 0) -> Problem:
    """A cubic loss `f(D) = Σ_{jkl} T_{jkl} x_j x_k x_l + xᵀ A x + bᵀ x` with `x = vec(D)` and
    N(0, 1) coefficients, at logits drawn from N(0, 1).

    Args:
        num_vars: `V`.
        num_categories: `C`.
        generator: for the logits and coefficients (default: one seeded with `seed`).
        seed: the seed when no generator is given.

    Returns:
        The problem.
    """
    gen = _gen(generator, seed)
    logits = _logits(num_vars, num_categories, gen)
    n = num_vars * num_categories
    t = torch.randn(n, n, n, generator=gen, dtype=torch.float64)
    a = torch.randn(n, n, generator=gen, dtype=torch.float64)
    b = torch.randn(n, generator=gen, dtype=torch.float64)

    def f(d):
        x = d.reshape(d.shape[:-2] + (n,))
        tt, aa, bb = t.to(d.dtype), a.to(d.dtype), b.to(d.dtype)
        cub = torch.einsum("...j,...k,...l,jkl->...", x, x, x, tt)
        return cub + ((x @ aa) * x).sum(-1) + x @ bb

    return Problem("cubic", logits, f, f"cubic polynomial of vec(D), {num_vars} variables × {num_categories} categories")


def decoder(num_vars: int = 4, num_categories: int = 3, *, hidden: int = 16, outputs: int = 12,
            generator: Optional[torch.Generator] = None, seed: int = 0) -> Problem:
    """A random two-layer tanh network from `x = vec(D)` to the logits of `outputs` pixels,
    scored by the negative Bernoulli log-likelihood of a fixed random binary target (a VAE's
    reconstruction term). Weights ~ N(0, 1/fan_in)·2, logits of D ~ N(0, 1).

    Args:
        num_vars: `V`.
        num_categories: `C`.
        hidden: the hidden layer's width.
        outputs: the number of pixels.
        generator: for the logits, weights and target (default: one seeded with `seed`).
        seed: the seed when no generator is given.

    Returns:
        The problem.
    """
    gen = _gen(generator, seed)
    logits = _logits(num_vars, num_categories, gen)
    n = num_vars * num_categories
    w1 = 2 * torch.randn(n, hidden, generator=gen, dtype=torch.float64) / n ** 0.5
    b1 = torch.randn(hidden, generator=gen, dtype=torch.float64)
    w2 = 2 * torch.randn(hidden, outputs, generator=gen, dtype=torch.float64) / hidden ** 0.5
    b2 = torch.randn(outputs, generator=gen, dtype=torch.float64)
    target = (torch.rand(outputs, generator=gen, dtype=torch.float64) < 0.5).to(torch.float64)

    def f(d):
        x = d.reshape(d.shape[:-2] + (n,))
        h = torch.tanh(x @ w1.to(d.dtype) + b1.to(d.dtype))
        out = h @ w2.to(d.dtype) + b2.to(d.dtype)
        return torch.nn.functional.binary_cross_entropy_with_logits(
            out, target.to(d.dtype).expand_as(out), reduction="none").sum(-1)

    return Problem("decoder", logits, f,
                   f"random MLP decoder {n}→{hidden}→{outputs}, Bernoulli NLL of a random target")


PROBLEMS: Dict[str, Callable[..., Problem]] = {"polynomial": polynomial, "linear": linear, "quadratic": quadratic,
                                               "cubic": cubic, "decoder": decoder}
"""The built-in problems by name (each a function of `generator=` / `seed=`)."""


def make(name: str, **kwargs: Any) -> Problem:
    """A built-in problem by name.

    Args:
        name: a key of `PROBLEMS`.
        **kwargs: the problem function's arguments.

    Returns:
        The problem.

    Raises:
        ValueError: an unknown name (the message lists the known ones).
    """
    if name not in PROBLEMS:
        raise ValueError(f"unknown problem {name!r}; known problems: {', '.join(sorted(PROBLEMS))}")
    return PROBLEMS[name](**kwargs)
