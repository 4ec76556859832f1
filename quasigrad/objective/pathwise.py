"""The layer-1 (pathwise) estimators and exact enumeration through the objective call."""

from __future__ import annotations

import torch

from .. import exact as _exact
from .._util import validate as V
from ._problem import PathwiseError, _num_samples, _Problem


def _reaches(out, target_fn, limit=100_000):
    """Whether `target_fn` (a grad_fn) is in the autograd graph of `out`."""
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
    """The layer-2 form of a sample-level estimator: draw `num_samples` samples with the
    layer-1 function (its backward is the estimator), evaluate `f` on each, average."""

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
    """Exact `E[f]` by enumeration (`quasigrad.exact.expectation`); `num_samples` and
    `generator` are ignored. Raises `quasigrad.exact.TooManyOutcomesError` beyond its limit."""
    if not callable(f):
        raise TypeError(f"f must be callable (a sample -> one loss per example), got {type(f).__name__}")
    return _exact.expectation(f, logits, dim=dim, variable=variable, **kwargs)
