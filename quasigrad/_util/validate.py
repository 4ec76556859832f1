"""Argument checks shared by every public function.

Each check raises an error that names the argument, what it got and what it needs
(`TypeError` for a wrong kind of thing, `ValueError` for a wrong value). The checks are
cheap: only those whose docstring says so read a tensor's values (one reduction and one sync
each, skipped under `torch.compile`); `check_finite_rows` is given per-row totals the caller
computed anyway.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Optional

import torch

__all__ = [
    "check_floating",
    "check_positive",
    "check_temperature",
    "check_generator",
    "check_index",
    "check_index_possible",
    "check_int",
    "normalize_dim",
    "category_dim",
    "check_logits",
    "check_not_nan",
    "is_compiling",
]

def is_compiling() -> bool:
    """Whether `torch.compile` is tracing the caller or a `torch.func` transform (vmap, grad,
    jacrev, ...) is running: checks that read tensor values are skipped then.

    Returns:
        True inside a `torch.compile` trace or a `torch.func` transform, False in eager mode.
    """
    fn = getattr(torch.compiler, "is_compiling", None)
    if fn is None:  # torch < 2.3
        from torch import _dynamo

        fn = _dynamo.is_compiling
    return bool(fn()) or bool(torch._C._are_functorch_transforms_active())



_FLOATING = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_floating(x: Any, name: str = "logits") -> None:
    """Require a floating-point tensor (float16, bfloat16, float32 or float64) of at least one
    dimension.

    Args:
        x: the value to check.
        name: the argument's name, for the message.

    Raises:
        TypeError: `x` is not a tensor, or not a floating-point one.
        ValueError: `x` is 0-dimensional.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in _FLOATING:
        raise TypeError(
            f"{name} must be a floating-point tensor (float16, bfloat16, float32 or float64), "
            f"got dtype {x.dtype}"
        )
    if x.dim() == 0:
        raise ValueError(f"{name} must have at least one dimension, got a 0-dimensional tensor")


def check_positive(value: Any, name: str, *, allow_inf: bool = False) -> float:
    """Require a real positive number (a Python number or a one-element tensor).

    Args:
        value: the value to check.
        name: the argument's name, for the message.
        allow_inf: accept `float("inf")`.

    Returns:
        `value` as a Python float.

    Raises:
        TypeError: `value` is not a real number (a bool is not).
        ValueError: `value` is NaN, not positive, infinite without `allow_inf`, or a tensor of
            more than one element.
    """
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} must be a positive number, got a tensor of shape {tuple(value.shape)}")
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a positive real number, got {value!r} ({type(value).__name__})")
    value = float(value)
    if math.isnan(value) or value <= 0 or (math.isinf(value) and not allow_inf):
        need = "a positive number" if allow_inf else "a positive finite number"
        raise ValueError(f"{name} must be {need}, got {value}")
    return value


def check_temperature(tau: Any, dtype: torch.dtype, name: str = "tau") -> float:
    """Require a positive finite temperature whose reciprocal is finite in `dtype`.

    Gradients scale with `1/τ`, so a smaller temperature can only give inf.

    Args:
        tau: the temperature.
        dtype: the dtype the estimator computes in.
        name: the argument's name, for the message.

    Returns:
        `tau` as a float.

    Raises:
        ValueError: `tau` is not positive and finite, or `1/tau` overflows `dtype`.
    """
    tau = check_positive(tau, name)
    if 1.0 / tau > torch.finfo(dtype).max:
        raise ValueError(f"{name}={tau} is too small for computation in {dtype}: 1/{name} overflows; "
                         f"it needs to be at least {1.0 / torch.finfo(dtype).max:.3g}")
    return tau


def check_int(value: Any, name: str, *, minimum: int = 1) -> int:
    """Require an integer at least `minimum`.

    Args:
        value: the value to check (any `numbers.Integral` but a bool).
        name: the argument's name, for the message.
        minimum: the smallest value accepted.

    Returns:
        `value` as a Python int.

    Raises:
        TypeError: `value` is not an integer.
        ValueError: `value` is below `minimum`.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer >= {minimum}, got {value!r} ({type(value).__name__})")
    value = int(value)
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")
    return value


def normalize_dim(dim: int, ndim: int, name: str = "dim") -> int:
    """Turn a possibly negative dimension into a non-negative one.

    Args:
        dim: a dimension in `[-ndim, ndim - 1]`.
        ndim: the number of dimensions of the tensor.
        name: the argument's name, for the message.

    Returns:
        `dim` as an index in `[0, ndim - 1]`.

    Raises:
        TypeError: `dim` is not an integer.
        IndexError: `dim` is out of range.
    """
    if isinstance(dim, bool) or not isinstance(dim, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {dim!r} ({type(dim).__name__})")
    if not -ndim <= dim < ndim:
        raise IndexError(
            f"{name}={dim} is out of range for a tensor with {ndim} dimension(s) "
            f"(it needs to be in [{-ndim}, {ndim - 1}])"
        )
    return dim % ndim


def category_dim(logits: torch.Tensor, dim: int, name: str = "logits") -> int:
    """The category dimension of `logits`, normalised (see `normalize_dim`) and required to
    hold at least one category.

    Args:
        logits: the logits.
        dim: their category dimension, possibly negative.
        name: the argument's name, for the message.

    Returns:
        `dim` as an index in `[0, logits.dim() - 1]`.

    Raises:
        TypeError: `dim` is not an integer.
        IndexError: `dim` is out of range.
        ValueError: `logits` has size 0 along `dim`.
    """
    dim = normalize_dim(dim, logits.dim())
    if logits.shape[dim] == 0:
        raise ValueError(f"{name} has size 0 along dim {dim} (shape {tuple(logits.shape)}); "
                         f"the category dimension needs at least one category")
    return dim


def check_logits(logits: torch.Tensor, dim: int, name: str = "logits") -> None:
    """Require categorical logits without NaN or +inf and with a finite logit in every row along
    `dim` (-inf masks a category). Reads the values (skipped under `torch.compile`).

    Args:
        logits: the logits.
        dim: their category dimension (non-negative).
        name: the argument's name, for the message.

    Raises:
        ValueError: NaN, +inf, or a row whose logits are all -inf.
    """
    if is_compiling() or logits.numel() == 0:
        return
    if bool(torch.isnan(logits).any() | torch.isposinf(logits).any() | torch.isneginf(logits).all(dim).any()):
        describe_bad_logits(logits, dim, name)


def check_not_nan(x: torch.Tensor, name: str = "logits") -> None:
    """Require no NaN in `x` (Bernoulli logits may be ±inf: a certain outcome). Reads the values
    (skipped under `torch.compile`).

    Args:
        x: the tensor to check.
        name: the argument's name, for the message.

    Raises:
        ValueError: `x` contains NaN.
    """
    if is_compiling():
        return
    n = int(torch.isnan(x).sum())
    if n:
        raise ValueError(f"{name} contains NaN ({n} value(s)); it needs real values")



def check_generator(generator: Optional[torch.Generator], device: torch.device) -> None:
    """Require `generator` to be None or a `torch.Generator` on `device`'s type.

    Args:
        generator: the generator to check, or None.
        device: the device of the tensor it will draw for.

    Raises:
        TypeError: `generator` is not a `torch.Generator`.
        ValueError: it is on another device type.
    """
    if generator is None:
        return
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    if generator.device.type != torch.device(device).type:
        raise ValueError(
            f"generator is on device {generator.device} but the tensor is on {device}; "
            f"create it with torch.Generator(device={str(torch.device(device).type)!r})"
        )


def check_index(index: Any, logits: torch.Tensor, dim: int, name: str = "index") -> torch.Tensor:
    """Require a drawn category per row: an integer tensor shaped like `logits` without `dim`,
    with values in `[0, logits.shape[dim])`, on the logits' device.

    Args:
        index: the value to check.
        logits: the logits it indexes.
        dim: the category dimension of `logits` (non-negative).
        name: the argument's name, for the message.

    Returns:
        `index` as an int64 tensor.

    Raises:
        TypeError: `index` is not an integer tensor.
        ValueError: its shape, device or values do not fit `logits`.
    """
    if not isinstance(index, torch.Tensor):
        raise TypeError(f"{name} must be a LongTensor, got {type(index).__name__}")
    if index.dtype.is_floating_point or index.dtype.is_complex or index.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor (a drawn category per row), got dtype {index.dtype}")
    expected = logits.shape[:dim] + logits.shape[dim + 1:]
    if index.shape != expected:
        raise ValueError(
            f"{name} must have the shape of logits without dim {dim}, i.e. {tuple(expected)}, "
            f"got {tuple(index.shape)}"
        )
    if index.device != logits.device:
        raise ValueError(f"{name} is on {index.device} but logits are on {logits.device}")
    n = logits.shape[dim]
    if index.numel() and not is_compiling():
        lo, hi = int(index.min()), int(index.max())
        if lo < 0 or hi >= n:
            raise ValueError(f"{name} must hold categories in [0, {n - 1}], got values in [{lo}, {hi}]")
    return index.long()


def check_index_possible(logits: torch.Tensor, index: torch.Tensor, dim: int, name: str = "index") -> None:
    """Require a sample to select no masked category (logit -inf). Reads the values (skipped
    under `torch.compile`).

    Args:
        logits: the logits.
        index: the drawn category per row, already checked by `check_index`.
        dim: the category dimension of `logits` (non-negative).
        name: the argument's name, for the message.

    Raises:
        ValueError: `index` selects a category whose logit is -inf.
    """
    if is_compiling() or index.numel() == 0:
        return
    if bool(torch.isneginf(logits.detach().gather(dim, index.unsqueeze(dim))).any()):
        raise ValueError(f"{name} selects a category whose probability is 0 (logit -inf); "
                         f"a sample can only hold categories with finite logits")


def check_finite_rows(total: torch.Tensor, logits: torch.Tensor, dim: int, name: str = "logits") -> None:
    """Raise a clear error if any row has NaN logits, +inf logits or only -inf logits.

    Args:
        total: per-row totals of the normalised probabilities (NaN where a row is invalid).
        logits: the logits they came from.
        dim: the category dimension.
        name: the argument's name, for the message.

    Raises:
        ValueError: some row is invalid; the message says how (see `describe_bad_logits`).
    """
    if is_compiling():
        return
    if math.isfinite(float(total.sum())):  # one reduction and one sync: finite in the common case
        return
    if bool(torch.isfinite(total).all()):  # finite rows whose sum overflows (totals that are not ~1)
        return
    describe_bad_logits(logits, dim, name)


def describe_bad_logits(logits: torch.Tensor, dim: int, name: str = "logits") -> None:
    """Raise the error that says what is wrong with `logits` (the slow path, run only on failure).

    Args:
        logits: logits known to give a non-finite softmax.
        dim: the category dimension.
        name: the argument's name, for the message.

    Raises:
        ValueError: always; the message names NaN, +inf, an all-masked row, or overflow.
    """
    if torch.isnan(logits).any():
        n = int(torch.isnan(logits).sum())
        raise ValueError(f"{name} contains NaN ({n} value(s)); it needs finite values or -inf for masked categories")
    if torch.isposinf(logits).any():
        raise ValueError(f"{name} contains +inf; it needs finite values or -inf for masked categories")
    all_masked = torch.isneginf(logits).all(dim=dim)
    if all_masked.any():
        where = tuple(all_masked.nonzero()[0].tolist())
        raise ValueError(
            f"{name} has a row whose values are all -inf along dim {dim} (first at batch index {where}); "
            f"every row needs at least one category with finite logit"
        )
    raise ValueError(f"{name} gives a non-finite softmax (values too large for {logits.dtype}?)")
