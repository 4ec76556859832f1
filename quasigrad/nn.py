r"""Modules around the estimators, and the straight-through argmax.

`CategoricalSample` and `BernoulliSample` turn logits into a hard sample: in
training mode they draw it with the chosen estimator's gradient; in evaluation mode they return
the mode (the argmax, or `1[logits > 0]`) with a straight-through gradient, so that a model's
evaluation is deterministic:

```python
layer = quasigrad.nn.CategoricalSample(estimator="reinmax", tau=1.3)
z = layer(logits)        # training: a one-hot draw, ReinMax gradient
layer.eval()
z = layer(logits)        # evaluation: one_hot(argmax(logits)), straight-through gradient
```

`eval_mode="sample"` keeps drawing in evaluation mode. The settings show in `repr` and can be
changed after construction (`layer.estimator = "st"`, `layer.tau = 0.5`).

`st_argmax` is the straight-through argmax as one call: forward `one_hot(argmax θ)`,
backward `(1/τ) J(softmax(θ/τ)) g` (`J(q) = diag(q) − q qᵀ`), the gradient of
`softmax(θ/τ)`. It is [`quasigrad.st`][quasigrad.st] on the argmax instead of a draw.
`st_threshold` is its binary form.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import nn

from ._util import validate as V
from .distributions import estimator_sampler
from .estimators import bernoulli as _bernoulli
from .estimators import categorical as _categorical

__all__ = ["st_argmax", "st_threshold", "CategoricalSample", "BernoulliSample"]

_EVAL_MODES = ("mode", "sample")


def st_argmax(logits: torch.Tensor, *, tau: float = 1.0, dim: int = -1) -> torch.Tensor:
    r"""Straight-through argmax.

    Forward: `one_hot(argmax(logits))` along `dim` (the first maximum on ties), in the
    logits' dtype. Backward: the gradient of `softmax(logits/τ)`,

    $$ \hat\nabla_\theta = \tfrac{1}{\tau} J\big(\mathrm{softmax}(\theta/\tau)\big)\, g. $$

    Args:
        logits: floating tensor of any shape.
        tau: temperature of the surrogate softmax (> 0).
        dim: the category dimension.

    Returns:
        The one-hot argmax, shaped like `logits`.

    Example:
        >>> theta = torch.tensor([[0.5, 2.0, -1.0]], requires_grad=True)
        >>> st_argmax(theta).tolist()
        [[0.0, 1.0, 0.0]]
    """
    V.check_floating(logits)
    dim = V.normalize_dim(dim, logits.dim())
    return _categorical.st(logits, tau=tau, dim=dim, index=logits.detach().argmax(dim))


def st_threshold(logits: torch.Tensor, *, tau: float = 1.0) -> torch.Tensor:
    r"""Straight-through threshold, the binary form of `st_argmax`.

    Forward: `1[logits > 0]` (0 at exactly 0), in the logits' dtype. Backward: the gradient of
    `σ(logits/τ)`, i.e. `σ'(a/τ)/τ · g`.

    Args:
        logits: floating tensor of Bernoulli log-odds, any shape.
        tau: temperature of the surrogate sigmoid (> 0).

    Returns:
        0/1 values shaped like `logits`.
    """
    V.check_floating(logits)
    return _bernoulli.st(logits, tau=tau, index=logits.detach() > 0)


class _Sample(nn.Module):
    _variable = "categorical"

    def __init__(self, estimator: str, tau: float, eval_mode: str, generator: Optional[torch.Generator],
                 params: dict):
        super().__init__()
        self._resolve(estimator, tau, params)
        if eval_mode not in _EVAL_MODES:
            raise ValueError(f"eval_mode must be one of {_EVAL_MODES}, got {eval_mode!r}")
        self.eval_mode = eval_mode
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        self.generator = generator

    def _resolve(self, estimator, tau, params) -> None:
        name, fn, kwargs = estimator_sampler(estimator, self._variable, tau=tau, **params)
        self._estimator, self._fn, self._kwargs = name, fn, kwargs
        self._tau, self.params = float(tau), dict(params)

    @property
    def estimator(self) -> str:
        """The estimator used in training (a registered layer-1 name)."""
        return self._estimator

    @estimator.setter
    def estimator(self, name: str) -> None:
        self._resolve(name, self._tau, self.params)

    @property
    def tau(self) -> float:
        """The temperature of the estimator and of the evaluation-mode straight-through gradient."""
        return self._tau

    @tau.setter
    def tau(self, value: float) -> None:
        self._resolve(self._estimator, value, self.params)

    def _sampling(self) -> bool:
        return self.training or self.eval_mode == "sample"

    def _settings(self) -> str:
        return f"estimator={self._estimator!r}, tau={self._tau}" + "".join(
            f", {k}={v!r}" for k, v in self.params.items())


class CategoricalSample(_Sample):
    """Logits to a one-hot sample: the estimator's draw in training, the straight-through argmax
    (`st_argmax`) in evaluation.

    Args:
        estimator: a registered layer-1 estimator name (`"st"`, `"reinmax"`, `"gst"`, …).
        tau: the estimator's temperature (`1.0` for those without one); evaluation mode uses
            it for the straight-through surrogate.
        dim: the category dimension.
        eval_mode: `"mode"` (argmax in evaluation) or `"sample"` (draw in both modes).
        generator: optional `torch.Generator` for the draws.
        **params: the estimator's other parameters (`gap=`, `k=`).

    Example:
        >>> layer = CategoricalSample("reinmax", tau=1.5)
        >>> layer
        CategoricalSample(estimator='reinmax', tau=1.5, dim=-1, eval_mode='mode')
        >>> layer.eval()(torch.tensor([[0.1, 3.0, 0.2]])).tolist()
        [[0.0, 1.0, 0.0]]
    """

    _variable = "categorical"

    def __init__(self, estimator: str = "st", tau: float = 1.0, dim: int = -1, *, eval_mode: str = "mode",
                 generator: Optional[torch.Generator] = None, **params: Any):
        super().__init__(estimator, tau, eval_mode, generator, params)
        if isinstance(dim, bool) or not isinstance(dim, int):
            raise TypeError(f"dim must be an int, got {dim!r}")
        self.dim = dim

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        if self._sampling():
            return self._fn(logits, dim=self.dim, generator=self.generator, **self._kwargs)
        return st_argmax(logits, tau=self._tau, dim=self.dim)

    def extra_repr(self) -> str:
        return f"{self._settings()}, dim={self.dim}, eval_mode={self.eval_mode!r}"


class BernoulliSample(_Sample):
    """Bernoulli logits to a 0/1 sample: the estimator's draw in training, the straight-through
    threshold (`st_threshold`) in evaluation. Arguments as `CategoricalSample`,
    without `dim`."""

    _variable = "bernoulli"

    def __init__(self, estimator: str = "st", tau: float = 1.0, *, eval_mode: str = "mode",
                 generator: Optional[torch.Generator] = None, **params: Any):
        super().__init__(estimator, tau, eval_mode, generator, params)

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        if self._sampling():
            return self._fn(logits, generator=self.generator, **self._kwargs)
        return st_threshold(logits, tau=self._tau)

    def extra_repr(self) -> str:
        return f"{self._settings()}, eval_mode={self.eval_mode!r}"
