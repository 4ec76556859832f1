"""Checks and formats shared by the benchmarks: devices, positive numbers, MNIST, estimator
specifications, `mean ± std` cells and figures (re-exported by [`quasigrad.bench.runner`][quasigrad.bench.runner])."""

from __future__ import annotations

import math
from typing import Any, Iterable, List, Optional, Sequence

from .._util.files import atomic_write_bytes
from .._util.tables import mean_std
from .store import BenchmarkError

__all__ = ["resolve_device", "check_positive", "load_mnist_arg", "estimator_specs", "mean_pm", "save_figure"]


def save_figure(fig: Any, path: Any) -> None:
    """Save a matplotlib figure as PNG, atomically."""
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    atomic_write_bytes(path, buffer.getvalue())


def resolve_device(text: str) -> Any:
    """The `torch.device` named by `--device`, checked: CUDA (or MPS) must be present.

    Raises:
        BenchmarkError: a malformed name, or a device this machine does not have.
    """
    import torch

    try:
        device = torch.device(text)
    except (RuntimeError, ValueError, TypeError) as exc:
        raise BenchmarkError(f"--device {text!r} is not a device name like cpu, cuda or cuda:1 ({exc})") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise BenchmarkError(f"--device {text!r}: CUDA is not available here (torch {torch.__version__}, "
                                 f"{'built without CUDA' if torch.version.cuda is None else 'no GPU found'}); "
                                 f"use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise BenchmarkError(f"--device {text!r}: there are {torch.cuda.device_count()} CUDA device(s)")
    elif device.type == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise BenchmarkError(f"--device {text!r}: MPS is not available here; use --device cpu")
    elif device.type != "cpu":
        raise BenchmarkError(f"--device {text!r}: the benchmarks run on cpu, cuda or mps")
    return device


def check_positive(**values: Any) -> None:
    """Raise `BenchmarkError` naming the first option whose value is not a positive finite
    number (keyword `train_size` names `--train-size`; `None` values are skipped)."""
    for key, value in values.items():
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
            raise BenchmarkError(f"--{key.replace('_', '-')} must be a positive number, got {value!r}")


def load_mnist_arg(data: Optional[str]) -> Any:
    """MNIST for a benchmark's `--data` option (`None`: the loader's search path); a missing,
    unreadable or damaged file becomes a `BenchmarkError` raised before any work starts."""
    from ..data import DataError, load_mnist

    try:
        return load_mnist(data)
    except DataError as exc:
        raise BenchmarkError(f"--data: {exc}") from None
    except OSError as exc:
        where = exc.filename if exc.filename else (data or "the MNIST directory")
        raise BenchmarkError(f"--data: {where} cannot be read ({exc.strerror or exc})") from None


def estimator_specs(requested: Optional[Sequence[str]], *, default: Sequence[str], variable: str = "categorical",
                    need: str = "any") -> List[Any]:
    """Parse `--estimators` (`name` or `name:key=value,...`) and try each on a tiny problem,
    so that a bad name or option fails before any work.

    Args:
        requested: the user's specifications (`None`: `default`).
        default: the benchmark's list.
        variable: `"categorical"` or `"bernoulli"`.
        need: `"sample"` when the benchmark needs a sample-level function.

    Returns:
        The [`quasigrad.lab.Spec`][quasigrad.lab.Spec] objects, labelled as typed.

    Raises:
        UnknownEstimatorError: an unknown name (listing the known ones).
        BenchmarkError: any other bad specification, naming it.
    """
    import torch

    from ..lab._specs import parse_specs

    try:
        specs = parse_specs(requested, default=default, variable=variable, need=need)
    except KeyError:
        raise
    except ValueError as exc:
        raise BenchmarkError(f"--estimators: {exc}") from None
    for spec in specs:
        for key, value in spec.kwargs.items():
            if isinstance(value, float) and not math.isfinite(value):
                raise BenchmarkError(f"--estimators {spec.label!r}: {key}={value} is not a finite number")
        weights = torch.arange(1.0, 4.0, dtype=torch.float64)
        logits = torch.zeros(2, 3, dtype=torch.float64, requires_grad=True)
        try:
            with torch.random.fork_rng(devices=[]):
                value = spec.surrogate(lambda d: (d * weights).sum(-1), logits, variable=variable,
                                       tau=None if "tau" in spec.kwargs else 1.0,
                                       generator=torch.Generator().manual_seed(0))
                value.sum().backward()
        except (ValueError, TypeError) as exc:
            raise BenchmarkError(f"--estimators {spec.label!r}: {exc}") from None
        if logits.grad is None or not bool(torch.isfinite(logits.grad).all()):
            raise BenchmarkError(f"--estimators {spec.label!r}: gives a non-finite gradient on a test problem")
    return specs


def mean_pm(values: Iterable[Optional[float]], fmt: str = ".5f") -> str:
    """`"mean ± std"` over `values` (`None` skipped); `"mean (n = 1)"` for a single value,
    whose spread is unknown rather than zero; `"n/a"` for none."""
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return "n/a"
    m, s = mean_std(vals)
    return f"{m:{fmt}} (n = 1)" if len(vals) == 1 else f"{m:{fmt}} ± {s:{fmt}}"


def sample_level_names(requested: Optional[Sequence[str]], *, default: Sequence[str], model: str) -> List[str]:
    """`--estimators` for a model that draws categorical samples itself: the names as typed, each
    required to have a sample-level (layer-1) categorical function.

    Args:
        requested: the user's names (`None`: `default`).
        default: the benchmark's list.
        model: what needs them, for the message ("the tree model").

    Returns:
        The names, as typed.

    Raises:
        BenchmarkError: a registered estimator without a sample-level categorical function.
    """
    from .. import registry

    names = registry.resolve_names(requested, default=default)
    for e in names:
        if registry.get(e).categorical is None:
            raise BenchmarkError(f"--estimators: {e!r} has no sample-level function for categorical variables; "
                                 f"{model} needs one of {registry.names(variable='categorical', layer=1)}")
    return names

