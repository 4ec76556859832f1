r"""Gradient quality: each estimator against the exact gradient on a problem small enough to
enumerate.

For an estimator `ĝ` of `g = ∇θ E_{D∼p_θ}[f(D)]` (θ of shape `(V, C)`), `quality`
reports

- `bias`: `‖E[ĝ] − g‖ / ‖g‖` (relative bias),
- `variance`: `E‖ĝ − E[ĝ]‖²`, the trace of the covariance of `ĝ`,
- `mse`: `E‖ĝ − g‖² = ‖E[ĝ] − g‖² + variance` (and `mse_rel = mse / ‖g‖²`),
- `cosine`: `E[cos(ĝ, g)]`, the expected cosine between a single draw and the exact gradient,

for every temperature in `taus` where the estimator has one.

**Exact** (`method="exact"`): for an estimator whose gradient is a function of the sample
`D` alone (`st`, `gst`, `reinmax`, `zgr`, `darn`), every outcome `d` of the `C^V`
is passed as `index=` and weighted by `p_θ(d)`: the numbers are expectations, not estimates
(standard errors 0). The mean agrees with [quasigrad.exact.estimator_expectation][].

**Monte Carlo** (`method="mc"`): otherwise (Gumbel noise beyond `D`; score-function
estimators of `quasigrad.objective`), `num_samples` independent draws of `ĝ`; every
number comes with a standard error: `bias_se = sqrt(variance / N) / ‖g‖` is the size of the
Monte Carlo error of the mean (an unbiased estimator has a measured `bias` of about this
size), and `*_se` of the others are standard errors of their sample means.

Examples:
    >>> from quasigrad.lab import quality, problems
    >>> rows = quality(problems.quadratic(), ["st", "reinmax"], taus=[1.0])
    >>> [(r["estimator"], r["method"], round(r["bias"], 6)) for r in rows][1]
    ('reinmax', 'exact', 0.0)
"""

from __future__ import annotations

import math
from typing import Iterable, List, Optional, Sequence

import torch

from .. import exact as _exact
from .._util.tables import format_table
from ._specs import Spec, default_specs, parse_specs
from .problems import Problem

__all__ = ["quality", "format_quality", "estimator_gradients"]

DEFAULT_TAUS = (0.25, 0.5, 1.0, 2.0, 4.0)


def _flat_f(f, event_dims: int = 2):
    """`f` for one example (`(V, C) → scalar`) mapped over any leading dimensions."""

    def batched(d):
        lead = d.shape[:-event_dims]
        flat = d.reshape((-1,) + tuple(d.shape[-event_dims:]))
        try:
            out = torch.vmap(f)(flat)
        except Exception:  # f not vmappable: loop
            out = torch.stack([f(x) for x in flat.unbind(0)])
        return out.reshape(lead)

    return batched


def _outcomes(logits: torch.Tensor):
    """Every joint outcome of `(V, C)` categoricals as indices `(C^V, V)` and their probabilities."""
    n_var, n_cat = logits.shape
    total = n_cat ** n_var
    if total > _exact.DEFAULT_MAX_OUTCOMES:
        raise _exact.TooManyOutcomesError(f"{n_cat} categories ^ {n_var} variables = {total} outcomes; "
                                          f"exact quality needs at most {_exact.DEFAULT_MAX_OUTCOMES}")
    powers = n_cat ** torch.arange(n_var - 1, -1, -1, device=logits.device)
    codes = torch.arange(total, device=logits.device)
    idx = (codes.unsqueeze(1) // powers) % n_cat
    logp = torch.log_softmax(logits.detach(), -1)
    prob = logp.unsqueeze(0).expand((total,) + tuple(logp.shape)).gather(-1, idx.unsqueeze(-1)).squeeze(-1).sum(-1).exp()
    return idx, prob


def estimator_gradients(problem: Problem, spec: Spec, *, tau: Optional[float] = None, num_samples: int = 1000,
                        generator: Optional[torch.Generator] = None,
                        index: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Draws of an estimator's gradient on a problem.

    With `index` and a sample-level estimator, the gradient is evaluated at those samples
    (used for exact enumeration); otherwise at `num_samples` draws. Objective-level
    estimators get a batch of `N` independent copies of the problem.

    Args:
        problem: the problem (logits `(V, C)`, loss `f`).
        spec: the estimator, from [parse_specs][quasigrad.lab.parse_specs].
        tau: a temperature for estimators that take one.
        num_samples: `N`, the number of draws when no `index` is given.
        generator: for the draws.
        index: `(N, V)` category indices of the samples to evaluate the gradient at.

    Returns:
        The gradients with respect to the logits, shaped `(N, V, C)`.
    """
    theta = problem.logits.detach()
    n = index.shape[0] if index is not None else num_samples
    rep = theta.unsqueeze(0).expand((n,) + tuple(theta.shape)).clone().requires_grad_(True)
    f = _flat_f(problem.f)
    if index is not None:
        fn = spec.info.function("categorical")
        values = f(fn(rep, dim=-1, index=index, **spec.tau_kwargs(tau)))
    else:
        values = spec.surrogate(f, rep, tau=tau, dim=-1, generator=generator)
    (grads,) = torch.autograd.grad(values.sum(), rep)
    return grads


def _row(spec, tau, method, n, g, mean, variance, mse, cosine, *, bias_se=0.0, var_se=0.0, mse_se=0.0, cos_se=0.0):
    gn = float(g.norm())
    bias_abs = float((mean - g).norm())
    return {"estimator": spec.label, "name": spec.name, "tau": tau, "method": method, "num_samples": n,
            "bias": bias_abs / gn, "bias_abs": bias_abs, "bias_se": bias_se / gn,
            "variance": variance, "variance_se": var_se, "mse": mse, "mse_se": mse_se,
            "mse_rel": mse / gn ** 2, "cosine": cosine, "cosine_se": cos_se, "grad_norm": gn}


def _cos(grads, g):
    flat = grads.flatten(1)
    return (flat @ g.flatten()) / (flat.norm(dim=1) * g.norm()).clamp_min(torch.finfo(flat.dtype).tiny)


def quality(problem: Problem, estimators: Optional[Iterable[str]] = None, *, taus: Sequence[float] = DEFAULT_TAUS,
            num_samples: int = 2000, generator: Optional[torch.Generator] = None,
            exact: bool = True) -> List[dict]:
    """Bias, variance, mean squared error and single-draw cosine of each estimator on a problem.

    Args:
        problem: a [Problem][quasigrad.lab.problems.Problem] (logits `(V, C)`, loss `f`).
        estimators: registered names or specifications (`"gumbel_rao:k=100"`); default every
            registered estimator of the straight-through, relaxation, score-function,
            control-variate and pair families that handles categorical variables.
        taus: temperatures, for estimators that have one (unless fixed in the specification).
        num_samples: Monte Carlo draws for estimators that cannot be enumerated.
        generator: random source for the Monte Carlo draws.
        exact: enumerate where possible (False: Monte Carlo for every estimator).

    Returns:
        One dict per (estimator, τ) with keys `estimator, name, tau, method, num_samples,
        bias, bias_abs, bias_se, variance, variance_se, mse, mse_se, mse_rel, cosine, cosine_se,
        grad_norm` (see the module docstring; `tau` is None for estimators without one).

    Raises:
        UnknownEstimatorError: an unknown estimator name.
        ValueError: bad specifications, `num_samples < 2`, or bad temperatures.
    """
    specs = parse_specs(estimators, default=default_specs())
    if not isinstance(num_samples, int) or num_samples < 2:
        raise ValueError(f"num_samples must be an integer >= 2, got {num_samples!r}")
    taus = [float(t) for t in taus]
    if not taus or not all(t > 0 and math.isfinite(t) for t in taus):
        raise ValueError(f"taus must be a non-empty list of positive numbers, got {taus}")
    g = _exact.gradient(problem.f, problem.logits.detach())
    rows = []
    for spec in specs:
        info = spec.info
        spec_taus = taus if info.has_tau and "tau" not in spec.kwargs else [None]
        for tau in spec_taus:
            if exact and info.grad_depends_on_sample_only and spec.has_sample_function():
                idx, prob = _outcomes(problem.logits)
                grads = estimator_gradients(problem, spec, tau=tau, index=idx)
                w = prob.view(-1, 1, 1).to(grads.dtype)
                mean = (w * grads).sum(0)
                variance = float((prob * ((grads - mean) ** 2).flatten(1).sum(1)).sum())
                mse = float((prob * ((grads - g) ** 2).flatten(1).sum(1)).sum())
                cosine = float((prob * _cos(grads, g)).sum())
                rows.append(_row(spec, tau, "exact", int(idx.shape[0]), g, mean, variance, mse, cosine))
                continue
            grads = estimator_gradients(problem, spec, tau=tau, num_samples=num_samples, generator=generator)
            n = grads.shape[0]
            mean = grads.mean(0)
            dev2 = ((grads - mean) ** 2).flatten(1).sum(1)
            variance = float(dev2.sum() / (n - 1))
            err2 = ((grads - g) ** 2).flatten(1).sum(1)
            cos = _cos(grads, g)
            rows.append(_row(spec, tau, "mc", n, g, mean, variance, float(err2.mean()), float(cos.mean()),
                             bias_se=math.sqrt(variance / n), var_se=float(dev2.std() / math.sqrt(n)),
                             mse_se=float(err2.std() / math.sqrt(n)), cos_se=float(cos.std() / math.sqrt(n))))
    return rows


def format_quality(rows: List[dict]) -> str:
    """A plain-text table of [quality][quasigrad.lab.quality]'s rows.

    Args:
        rows: what `quality` returned.

    Returns:
        The table: one line per row, Monte Carlo numbers with ± one standard error.
    """

    def pm(r, key, fmt=".3g"):
        v = format(r[key], fmt)
        return v if r["method"] == "exact" else f"{v} ± {format(r[key + '_se'], '.2g')}"

    out = [(r["estimator"], "-" if r["tau"] is None else f"{r['tau']:g}", r["method"], pm(r, "bias"),
            pm(r, "variance"), pm(r, "mse"), pm(r, "cosine")) for r in rows]
    return format_table(out, ["estimator", "tau", "method", "rel. bias", "variance (tr cov)", "MSE", "E cos"])
