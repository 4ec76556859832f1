"""What the optimisers share: marking binary parameters, checked parameter groups, state
dtypes, and swapping weights in and out."""

from __future__ import annotations

import contextlib
import numbers
from typing import Any, Callable, Dict, Iterable, Iterator, List, Union

import torch

#: what the optimisers accept as `params`: tensors, or dicts of parameter groups
Params = Union[Iterable[torch.Tensor], Iterable[Dict[str, Any]]]


_TAG = "_quasigrad_binary"


# --------------------------------------------------------------------------- which weights

def mark_binary(*modules_or_params: Union[torch.nn.Module, torch.nn.Parameter]) -> List[torch.nn.Parameter]:
    """Mark the weights of binary (or quantized) layers for the optimisers of this module.

    Args:
        *modules_or_params: modules (their `weight` parameter is marked) or parameters.

    Returns:
        The marked parameters, in order, ready to be given to [MDTanh][quasigrad.optim.MDTanh],
        [MDSoftmax][quasigrad.optim.MDSoftmax] or [BayesBiNN][quasigrad.optim.BayesBiNN].

    Raises:
        TypeError: an argument is neither a parameter nor a module with a `weight` parameter.
    """
    marked = []
    for i, item in enumerate(modules_or_params):
        if isinstance(item, torch.nn.Module):
            weight = getattr(item, "weight", None)
            if not isinstance(weight, torch.nn.Parameter):
                raise TypeError(f"mark_binary: argument {i} is a {type(item).__name__} without a 'weight' "
                                f"parameter; pass the layer whose weight is binary, or the parameter itself")
            item = weight
        if not isinstance(item, torch.nn.Parameter):
            raise TypeError(f"mark_binary: argument {i} must be an nn.Module or an nn.Parameter, "
                            f"got {type(item).__name__}")
        setattr(item, _TAG, True)
        marked.append(item)
    return marked


def is_binary(param: torch.Tensor) -> bool:
    """Whether a parameter is the weight of a binary layer.

    Args:
        param: a parameter.

    Returns:
        True if it was marked by [mark_binary][quasigrad.optim.mark_binary].
    """
    return bool(getattr(param, _TAG, False))


def _check_params(group: dict, owner: str) -> None:
    for i, p in enumerate(group["params"]):
        if not is_binary(p):
            raise ValueError(
                f"{owner}: parameter {i} of shape {tuple(p.shape)} is not the weight of a binary layer; "
                f"{owner} only trains weights marked with quasigrad.optim.mark_binary(layer) (give biases, "
                f"batch-norm and other real-valued parameters to an ordinary optimiser such as Adam)")
        if not p.dtype.is_floating_point:
            raise TypeError(f"{owner}: parameter {i} must be floating point, got dtype {p.dtype}")


def _state_dtype(dtype: torch.dtype) -> torch.dtype:
    # Optimiser state of half-precision weights is kept in float32: small updates of the dual
    # variable would otherwise round away.
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _check_unit_interval(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= float(value) < 1.0:
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")
    return float(value)


@contextlib.contextmanager
def _swapped_weights(optimizer: torch.optim.Optimizer,
                     make: Callable[[torch.Tensor, Dict[str, Any]], torch.Tensor]) -> Iterator[None]:
    """Inside the block every parameter `p` of `optimizer` holds `make(p, group)`; the values
    it held come back on exit (also on an exception)."""
    saved = []
    with torch.no_grad():
        for group in optimizer.param_groups:
            for p in group["params"]:
                saved.append((p, p.detach().clone()))
                p.copy_(make(p, group).to(p.dtype))
    try:
        yield
    finally:
        with torch.no_grad():
            for p, value in saved:
                p.copy_(value)


# --------------------------------------------------------------------------- mirror descent

def _append_checked_group(optimizer: torch.optim.Optimizer, param_group: dict,
                          check: Callable[[dict], None]) -> dict:
    """`Optimizer.add_param_group` followed by `check(group)`; a group that fails its check is
    removed again, so a rejected group leaves no trace. Returns the new group."""
    torch.optim.Optimizer.add_param_group(optimizer, param_group)
    group = optimizer.param_groups[-1]
    try:
        check(group)
    except (TypeError, ValueError):
        optimizer.param_groups.pop()
        raise
    return group
