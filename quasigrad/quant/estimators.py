r"""Gradient estimators for deterministic quantizers, selected by name.

A quantizer's forward value is exact (a rounding, a sign, a clamp); its backward pass
multiplies the incoming gradient `g` by a *surrogate derivative* `Q̂′`. Every estimator
here is written as a function of `t`, the signed distance from the input to the nearest
rounding threshold, in units of the quantizer's step:

- multi-level quantizers (`round`, `floor`, `ceil`, fake quantization, LSQ, DoReFa):
  `t ∈ [-1/2, 1/2)`, the same in every cell (`t = u - floor(u) - 1/2` for rounding of
  `u = x / step`);
- single-threshold quantizers (`sign`, `heaviside`, `ternary`): `t = x` minus the
  threshold, not wrapped.

So the backward of `y = Q(x)` is `∂L/∂x = g · Q̂′(t) · mask` (`mask`: zero where a
clamp is active), except for EWGS, whose factor also depends on `g`.

The class covered by the theorem of Schoenbauer et al. (2024): `Q̂′` positive, the same
shape in every cell, and a function of the weight alone. `QuantEstimator.in_class`
checks it for given parameters (positivity on a grid over a cell); estimators that depend
on anything but the weight's position in its cell (the clipped STE, magnitude-aware sign,
EWGS) declare themselves outside it.

The estimators live in a small registry of their own (`get_estimator`,
`estimator_names`, `estimator_table`) rather than in `quasigrad.registry`:
that registry's flags (unbiased, needs ∂f/∂D, per-sample functions for categorical and
Bernoulli variables) describe stochastic estimators, and its loader does not import
`quasigrad.quant`, so entries registered here would appear there only in processes that
happened to import this module first.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Dict, Optional, Tuple, Union

import torch

from .._util.registry import Registry

__all__ = ["QuantEstimator", "register_estimator", "get_estimator", "estimator_names", "estimator_table"]


@dataclasses.dataclass(frozen=True)
class QuantEstimator:
    """One surrogate derivative.

    Attributes:
        name: registered name (`estimator="..."`).
        derivative: `(t, x, **params) -> factor` with `t` as in the module docstring and
            `x` the raw input (used only by estimators outside the theorem's class).
        defaults: default parameters (`{"k": 4.0}`).
        local: whether the factor is a function of `t` alone (same shape in every cell, of the
            weight alone); the theorem also needs it positive, see `in_class`.
        needs_grad: EWGS: the factor depends on the incoming gradient (handled by the quantizers).
        inv_antiderivative: optional closed form `H(t) = ∫_0^t ds / Q̂′(s)` on `[-1/2, 1/2]`
            used by `quasigrad.quant.remap` (numerical integration otherwise).
        formula, reference: documentation.
    """

    name: str
    derivative: Callable
    defaults: Dict[str, float]
    local: bool
    formula: str
    reference: str = ""
    needs_grad: bool = False
    inv_antiderivative: Optional[Callable] = None

    def params(self, given: Optional[dict] = None) -> dict:
        """The defaults updated with `given`; unknown parameter names are an error.

        Args:
            given: parameter values to override the defaults with (finite numbers).

        Returns:
            The full parameter dict, every value a float.

        Raises:
            TypeError: an unknown parameter name, or a value that is not a finite number.
        """
        given = dict(given or {})
        unknown = sorted(set(given) - set(self.defaults))
        if unknown:
            raise TypeError(f"estimator {self.name!r} takes parameters {sorted(self.defaults) or 'none'}, "
                            f"got unknown {unknown}")
        out = dict(self.defaults)
        for key, value in given.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise TypeError(f"estimator {self.name!r}: parameter {key} must be a finite number, got {value!r}")
            out[key] = float(value)
        return out

    def factor(self, t: torch.Tensor, x: torch.Tensor, params: dict) -> torch.Tensor:
        """The gradient factor `Q̂′(t)` at the position `t` in the cell (and the input `x`).

        Args:
            t: the position of each input in its quantization cell.
            x: the input.
            params: the estimator's parameters (from `params`).

        Returns:
            `derivative(t, x, **params)`, shaped like `t`.
        """
        return self.derivative(t, x, **params)

    def in_class(self, params: Optional[dict] = None) -> Tuple[bool, str]:
        """Whether `Q̂′` with these parameters is in the theorem's class, and why not.

        Args:
            params: parameters over the defaults.

        Returns:
            `(True, "")`, or `(False, reason)`.
        """
        if not self.local:
            return False, (f"{self.name!r} is not a function of the weight's position in its cell alone "
                           f"(the theorem needs the same positive shape in every cell)")
        p = self.params(params)
        t = torch.linspace(-0.5, 0.5, 2049, dtype=torch.float64)
        d = self.derivative(t, t, **p)
        if not bool(torch.isfinite(d).all()) or float(d.min()) <= 0:
            return False, (f"{self.name!r} with {p} is not positive on the whole cell "
                           f"(min {float(d.min()):.3g}); the theorem needs Q̂′ > 0")
        return True, ""


_ESTIMATORS: Registry[QuantEstimator] = Registry("quantizer estimator")


def register_estimator(est: QuantEstimator, *, replace: bool = False) -> QuantEstimator:
    """Add `est` to the quantizer-estimator registry (a name twice is an error unless `replace`).

    Args:
        est: the estimator.
        replace: replace an estimator of the same name.

    Returns:
        `est`.

    Raises:
        ValueError: the name is already registered and `replace` is false.
    """
    if est.name in _ESTIMATORS and not replace:
        raise ValueError(f"quantizer estimator {est.name!r} is already registered")
    _ESTIMATORS.register(est.name, est, replace=replace)
    return est


def get_estimator(name: Union[str, QuantEstimator]) -> QuantEstimator:
    """Look up a quantizer estimator by name (or pass a `QuantEstimator` through).

    Args:
        name: a registered name, or a `QuantEstimator`.

    Returns:
        The `QuantEstimator`.

    Raises:
        TypeError: `name` is neither a str nor a `QuantEstimator`.
        ValueError: no estimator has that name.
    """
    if isinstance(name, QuantEstimator):
        return name
    if not isinstance(name, str):
        raise TypeError(f"estimator must be a name (str), got {type(name).__name__}")
    return _ESTIMATORS.get(name)


def estimator_names(*, in_class: Optional[bool] = None) -> list:
    """Registered names, optionally only those (not) in the theorem's class at default parameters.

    Args:
        in_class: `True` or `False` to keep only the names in (or not in) the class; `None` for all.

    Returns:
        The sorted names.
    """
    out = []
    for name in sorted(_ESTIMATORS):
        if in_class is None or _ESTIMATORS[name].in_class()[0] == in_class:
            out.append(name)
    return out


def estimator_table() -> str:
    """Plain-text table: name, formula, defaults, in the theorem's class (at defaults).

    Returns:
        The table, one line per estimator under a header line.
    """
    rows = [("name", "Q̂′(t)", "defaults", "in class")]
    for name in sorted(_ESTIMATORS):
        e = _ESTIMATORS[name]
        rows.append((name, e.formula, ", ".join(f"{k}={v:g}" for k, v in e.defaults.items()) or "-",
                     "yes" if e.in_class()[0] else "no"))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


# --------------------------------------------------------------------------------------------
# The estimators. `t`: signed distance to the nearest threshold (in steps); `x`: raw input.


def _sech2(z):
    return 1.0 - torch.tanh(z) ** 2


register_estimator(QuantEstimator(
    "ste", lambda t, x: torch.ones_like(t), {}, True, "1",
    "Bengio, Léonard, Courville 2013, Estimating or propagating gradients through stochastic neurons",
    inv_antiderivative=lambda t: t))

register_estimator(QuantEstimator(
    "clipped-ste", lambda t, x, clip_value: (x.abs() <= clip_value).to(t.dtype), {"clip_value": 1.0}, False,
    "1[|x| ≤ clip_value]",
    "Hubara et al. 2016, Binarized neural networks (the hard-tanh STE)"))

register_estimator(QuantEstimator(
    "piecewise-linear", lambda t, x, width: torch.clamp(1.0 - t.abs() / width, min=0.0) / width, {"width": 1.0},
    True, "max(0, 1 − |t|/width) / width",
    "a hat-shaped surrogate derivative (the derivative of a piecewise-quadratic soft step); "
    "positive on a cell iff width > 1/2"))

register_estimator(QuantEstimator(
    "approx-sign", lambda t, x: 2.0 * torch.clamp(1.0 - t.abs(), min=0.0), {}, True,
    "2(1 − |t|)·1[|t| ≤ 1]",
    "Liu et al. 2018, Bi-Real Net (ApproxSign)",
    inv_antiderivative=lambda t: -torch.sign(t) * torch.log1p(-t.abs()) / 2.0))

register_estimator(QuantEstimator(
    "swish-sign",
    lambda t, x, beta: beta * (2.0 - beta * t * torch.tanh(beta * t / 2.0)) / (1.0 + torch.cosh(beta * t)),
    {"beta": 5.0}, True, "β(2 − βt·tanh(βt/2)) / (1 + cosh βt)",
    "Darabi et al. 2018, BNN+ (SignSwish); negative far from the threshold, so in the class only for small β"))

register_estimator(QuantEstimator(
    "magnitude-aware",
    lambda t, x: x.abs().mean() * (t.abs() <= 1).to(t.dtype), {}, False,
    "mean|x|·1[|t| ≤ 1]",
    "Liu et al. 2018, Bi-Real Net (magnitude-aware gradient of the scaled sign); depends on all weights"))

register_estimator(QuantEstimator(
    "tanh", lambda t, x, k: k * _sech2(k * t), {"k": 4.0}, True, "k(1 − tanh²(kt))",
    "a tanh soft step at each threshold (Schoenbauer et al. 2024 use it as an example)",
    inv_antiderivative=None))

register_estimator(QuantEstimator(
    "dsq", lambda t, x, k: k * _sech2(k * t) / (2.0 * math.tanh(k / 2.0)), {"k": 4.0}, True,
    "k(1 − tanh²(kt)) / (2 tanh(k/2))",
    "Gong et al. 2019, Differentiable soft quantization (a tanh per cell, normalised to span one step)"))

register_estimator(QuantEstimator(
    "ewgs", lambda t, x, delta: torch.ones_like(t), {"delta": 1e-3}, False,
    "g·(1 + δ·sign(g)·(x − q))",
    "Lee, Kim, Ham 2021, Network quantization with element-wise gradient scaling; depends on g",
    needs_grad=True))


def _tanh_family_H(scale):
    # ∫_0^t cosh²(ks)/k ds · scale = scale·(t/2 + sinh(2kt)/(4k))/k
    def H(t, k):
        return scale(k) * (t / 2.0 + torch.sinh(2.0 * k * t) / (4.0 * k)) / k
    return H


_ESTIMATORS.replace("tanh", dataclasses.replace(_ESTIMATORS["tanh"], inv_antiderivative=_tanh_family_H(lambda k: 1.0)))
_ESTIMATORS.replace("dsq", dataclasses.replace(_ESTIMATORS["dsq"],
                                               inv_antiderivative=_tanh_family_H(lambda k: 2.0 * math.tanh(k / 2.0))))
