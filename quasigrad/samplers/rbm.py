"""The restricted Boltzmann machine as an energy model over its visible units (hidden units
summed out), with exact marginals by enumeration where the visible layer is small."""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch

from .._util import validate as V
from ..estimators._sampling import uniform
from .models import DEFAULT_MAX_STATES, EnergyModel


class RBM(EnergyModel):
    r"""Restricted Boltzmann machine, as the marginal of its binary visible units `x`:

    $$
    f(x) = b^\top x + \sum_j \operatorname{softplus}(c_j + (x W)_j),
    \qquad \nabla f = b + W\,\sigma(c + W^\top x)
    $$

    from the joint `exp(bᵀx + cᵀh + xᵀ W h)` over `h ∈ {0,1}^H` summed out.

    Args:
        weight: `W` shaped `(V, H)` (visible × hidden).
        visible_bias: `b` shaped `(V,)`.
        hidden_bias: `c` shaped `(H,)`.

    Raises:
        TypeError: a parameter is not a floating-point tensor.
        ValueError: their shapes do not fit.
    """

    def __init__(self, weight: torch.Tensor, visible_bias: torch.Tensor, hidden_bias: torch.Tensor):
        V.check_floating(weight, "weight")
        if weight.dim() != 2:
            raise ValueError(f"weight must be (V, H), got shape {tuple(weight.shape)}")
        nv, nh = weight.shape
        for name, t, size in (("visible_bias", visible_bias, nv), ("hidden_bias", hidden_bias, nh)):
            V.check_floating(t, name)
            if tuple(t.shape) != (size,):
                raise ValueError(f"{name} must have shape ({size},), got {tuple(t.shape)}")
        super().__init__(num_vars=nv, num_categories=2)
        self.W, self.b, self.c = weight, visible_bias, hidden_bias

    @classmethod
    def random(cls, num_visible: int = 100, num_hidden: int = 25, *, weight_std: float = 0.1, bias_std: float = 1.0,
               generator: Optional[torch.Generator] = None, dtype: torch.dtype = torch.float32) -> "RBM":
        """An RBM with Gaussian random parameters.

        Args:
            num_visible: `V`.
            num_hidden: `H`.
            weight_std: `W ~ N(0, weight_std²)`.
            bias_std: both biases `~ N(0, bias_std²)`.
            generator: for the draw.
            dtype: the parameters' dtype.

        Returns:
            The model.
        """
        nv, nh = V.check_int(num_visible, "num_visible"), V.check_int(num_hidden, "num_hidden")
        w = torch.randn(nv, nh, generator=generator, dtype=dtype) * weight_std
        b = torch.randn(nv, generator=generator, dtype=dtype) * bias_std
        c = torch.randn(nh, generator=generator, dtype=dtype) * bias_std
        return cls(w, b, c)

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the states the model makes.

        Returns:
            The weight's dtype.
        """
        return self.W.dtype

    @property
    def device(self) -> torch.device:
        """The device of the states the model makes.

        Returns:
            The weight's device.
        """
        return self.W.device

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """The unnormalised log-probability of the visible units (hidden units summed out).

        Args:
            x: binary visible states `(..., V)`.

        Returns:
            `f(x)`, shaped `(...)`.
        """
        return x @ self.b + torch.nn.functional.softplus(x @ self.W + self.c).sum(-1)

    def value_and_grad(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """The log-probability and its gradient in closed form.

        Args:
            x: binary visible states `(..., V)`.

        Returns:
            `(f(x), b + W σ(c + Wᵀx))`.
        """
        pre = x @ self.W + self.c
        f = x @ self.b + torch.nn.functional.softplus(pre).sum(-1)
        return f, self.b + torch.sigmoid(pre) @ self.W.T

    def block_gibbs(self, x: torch.Tensor, *, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """One step of block Gibbs, `h ~ p(h|x)` then `x ~ p(x|h)` (an exact kernel of the RBM).

        Args:
            x: binary visible states `(..., V)`.
            generator: for the draws.

        Returns:
            The new visible states, shaped like `x`.
        """
        h = uniform(x.shape[:-1] + (self.W.shape[1],), dtype=x.dtype, device=x.device, generator=generator)
        h = (h < torch.sigmoid(x @ self.W + self.c)).to(x.dtype)
        u = uniform(x.shape, dtype=x.dtype, device=x.device, generator=generator)
        return (u < torch.sigmoid(h @ self.W.T + self.b)).to(x.dtype)

    def exact_marginals(self, *, max_states: int = DEFAULT_MAX_STATES, chunk: int = 1 << 14) -> torch.Tensor:
        """The exact marginals, in float64, enumerating the smaller layer.

        Visible states directly, or hidden states `h` with `E[x | h] = σ(b + W h)` weighted by
        `p(h) ∝ exp(cᵀh + Σ_i softplus(b_i + (W h)_i))` (in chunks).

        Args:
            max_states: the most states to enumerate.
            chunk: hidden states per chunk.

        Returns:
            `P(x_i = 1)` shaped `(V,)`.

        Raises:
            ValueError: the smaller layer has more than `max_states` states.
        """
        nv, nh = self.W.shape
        if nv <= nh:
            return super().exact_marginals(max_states=max_states)
        if 2 ** nh > max_states:
            raise ValueError(f"enumeration needs 2^{nh} hidden states, more than max_states={max_states}")
        W, b, c = self.W.double(), self.b.double(), self.c.double()
        logw: List[torch.Tensor] = []
        means: List[torch.Tensor] = []
        for start in range(0, 2 ** nh, chunk):
            s = torch.arange(start, min(start + chunk, 2 ** nh), device=W.device)
            h = ((s.unsqueeze(-1) >> torch.arange(nh, device=W.device)) & 1).double()
            pre = h @ W.T + b
            lw = h @ c + torch.nn.functional.softplus(pre).sum(-1)
            logw.append(torch.logsumexp(lw, 0))
            wts = torch.softmax(lw, 0)
            means.append(wts @ torch.sigmoid(pre))
        return torch.softmax(torch.stack(logw), 0) @ torch.stack(means)

    def _double(self) -> "RBM":
        return RBM(self.W.double(), self.b.double(), self.c.double())
