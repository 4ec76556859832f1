"""`quasigrad check`: the bias of every registered estimator against the exact gradient.

Three small problems of `V` independent categorical variables with `C` categories each
(float64, fixed random logits), with `d` the flattened one-hot sample:

- linear: `f(D) = w·d`
- quadratic: `f(D) = dᵀ A d + w·d`
- cubic: `f(D) = (u·d)³ + dᵀ A d + w·d`

For an estimator whose gradient is a function of `D` alone the expected gradient is
computed exactly by enumeration ([quasigrad.exact.estimator_expectation][]); for the
others (Gumbel noise, score-function estimators) it is a Monte Carlo mean over `--draws`
draws, reported with its standard error. The figure printed is the relative bias
`‖E[ĝ] − ∇‖ / ‖∇‖`.
"""

from __future__ import annotations

import argparse
import math
from typing import Any, Callable, Dict, List, Tuple

import torch

from .. import exact, objective, registry
from .._util.tables import format_table

__all__ = ["problems", "relative_bias", "run", "add_arguments"]


def problems(num_vars: int = 3, num_cats: int = 4, seed: int = 0) -> Dict[str, Tuple[torch.Tensor, Callable]]:
    """The three test problems.

    Args:
        num_vars: `V`, the number of categorical variables.
        num_cats: `C`, categories per variable.
        seed: for the logits and coefficients.

    Returns:
        `{"linear": (logits, f), "quadratic": ..., "cubic": ...}`, logits `(V, C)` in
        float64, `f` a loss of a one-hot sample shaped like the logits.
    """
    gen = torch.Generator().manual_seed(seed)
    n = num_vars * num_cats
    theta = torch.randn(num_vars, num_cats, generator=gen, dtype=torch.float64)
    w = torch.randn(n, generator=gen, dtype=torch.float64)
    a = torch.randn(n, n, generator=gen, dtype=torch.float64) / math.sqrt(n)
    u = torch.randn(n, generator=gen, dtype=torch.float64) / math.sqrt(n)

    def linear(d):
        return d.flatten(-2) @ w

    def quadratic(d):
        x = d.flatten(-2)
        return ((x @ a) * x).sum(-1) + x @ w

    def cubic(d):
        x = d.flatten(-2)
        return (x @ u) ** 3 + ((x @ a) * x).sum(-1) + x @ w

    return {"linear": (theta, linear), "quadratic": (theta, quadratic), "cubic": (theta, cubic)}


def _mc_gradients(info: registry.EstimatorInfo, theta: torch.Tensor, f: Callable, draws: int, seed: int,
                  **kwargs: Any) -> torch.Tensor:
    """`draws` independent single-draw gradient estimates, shape `(draws, *theta.shape)`."""
    gen = torch.Generator().manual_seed(seed)
    batch = theta.detach().unsqueeze(0).expand((draws,) + tuple(theta.shape)).clone().requires_grad_(True)
    total = objective.expectation(torch.vmap(f), batch, estimator=info.name, generator=gen, **kwargs).sum()
    (grads,) = torch.autograd.grad(total, batch)
    return grads


def relative_bias(name: str, theta: torch.Tensor, f: Callable, *, draws: int = 4000, seed: int = 0,
                  **kwargs: Any) -> Tuple[float, float, str]:
    """The relative bias `‖E[ĝ] − ∇‖ / ‖∇‖` of one estimator on one problem.

    Args:
        name: a registered estimator name.
        theta: the logits `(V, C)`.
        f: the loss of a one-hot sample.
        draws: Monte Carlo draws, for estimators that cannot be enumerated.
        seed: for the draws.
        **kwargs: the estimator's options.

    Returns:
        `(relative bias, standard error, method)`: the standard error is 0 and the method
        `"exact"` for an exact computation, the method `"MC n=<draws>"` otherwise.

    Raises:
        UnknownEstimatorError: an unknown name.
    """
    info = registry.get(name)
    true = exact.gradient(f, theta)
    norm = float(true.norm())
    if info.family == "exact":
        th = theta.detach().requires_grad_(True)
        (mean,) = torch.autograd.grad(exact.expectation(f, th).sum(), th)
        return float((mean - true).norm()) / norm, 0.0, "exact"
    if info.grad_depends_on_sample_only and info.categorical is not None:
        th = theta.detach().requires_grad_(True)
        (mean,) = torch.autograd.grad(exact.estimator_expectation(f, th, name, **kwargs).sum(), th)
        return float((mean - true).norm()) / norm, 0.0, "exact"
    grads = _mc_gradients(info, theta, f, draws, seed, **kwargs)
    mean = grads.mean(0)
    se = grads.std(0) / math.sqrt(draws)
    return float((mean - true).norm()) / norm, float(se.norm()) / norm, f"MC n={draws}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of `quasigrad check` to a parser.

    Args:
        parser: the parser of the `check` command.
    """
    parser.add_argument("--estimators", nargs="+", default=None, help="names (default: every registered one)")
    parser.add_argument("--draws", type=int, default=4000, help="Monte Carlo draws for noisy estimators")
    parser.add_argument("--vars", type=int, default=3, help="number of categorical variables")
    parser.add_argument("--cats", type=int, default=4, help="categories per variable")
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    """Print the bias table of `quasigrad check`.

    Args:
        args: the parsed options (see `add_arguments`).

    Returns:
        The exit status, 0.

    Raises:
        UnknownEstimatorError: an unknown name among `--estimators`.
    """
    names = registry.resolve_names(args.estimators, default=[e.name for e in registry.entries()
                                                             if "categorical" in e.variables])
    probs = problems(args.vars, args.cats, args.seed)
    rows: List[list] = []
    notes: List[str] = []
    for name in names:
        row, method = [name], "-"
        for _, (theta, f) in probs.items():
            try:
                bias, se, method = relative_bias(name, theta, f, draws=args.draws, seed=args.seed)
            except (TypeError, ValueError, RuntimeError) as exc:  # an estimator that cannot run by name
                row.append("n/a")
                reason = f"{name}: {str(exc).splitlines()[0]}"
                if reason not in notes:
                    notes.append(reason)
                continue
            row.append(f"{bias:.2e}" if method == "exact" else f"{bias:.2e} ± {se:.1e}")
        rows.append(row + [method])
    print(f"Relative bias ‖E[ĝ] − ∇‖/‖∇‖ on {args.vars} categorical variables × {args.cats} categories "
          f"(τ = 1, float64, seed {args.seed}); '±' is one standard error of a Monte Carlo mean.\n")
    print(format_table(rows, ["estimator", "linear", "quadratic", "cubic", "E[ĝ] by"]))
    for line in notes:
        print(f"n/a  {line}")
    return 0
