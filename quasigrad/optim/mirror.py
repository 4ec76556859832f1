"""Mirror descent for quantized weights (Ajanthan et al. 2021): MDTanh for binary weights
and MDSoftmax for weights on a set of levels."""

from __future__ import annotations

import contextlib
import math
import numbers
from typing import Any, Dict, Iterator, Sequence, Tuple

import torch

from .._util.validate import check_int, check_positive
from ._common import Params, _append_checked_group, _check_params, _check_unit_interval, _state_dtype, _swapped_weights


class _MirrorDescent(torch.optim.Optimizer):
    """Shared machinery: a dual tensor per parameter, SGD or Adam in the dual space, `beta`
    annealing, writing the primal weight back into the parameter, rounding for evaluation."""

    _name = "MirrorDescent"

    def __init__(self, params: Params, defaults: Dict[str, Any]):
        super().__init__(params, defaults)

    # ---- subclass interface
    def _init_dual(self, w: torch.Tensor, group: dict) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def _primal(self, dual: torch.Tensor, group: dict) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def _hard(self, dual: torch.Tensor, group: dict) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def _dual_grad(self, grad_w: torch.Tensor, group: dict) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def _check_group(self, group: dict) -> None:
        group["lr"] = check_positive(group["lr"], "lr")
        group["beta"] = check_positive(group["beta"], "beta", allow_inf=True)
        growth = group["beta_growth"]
        if isinstance(growth, bool) or not isinstance(growth, numbers.Real) or not (1.0 <= float(growth) < math.inf):
            raise ValueError(f"beta_growth must be a finite number >= 1 (beta only grows), got {growth!r}")
        group["beta_growth"] = float(growth)
        group["beta_every"] = check_int(group["beta_every"], "beta_every")
        b1, b2 = group["betas"]
        _check_unit_interval(b1, "betas[0]")
        _check_unit_interval(b2, "betas[1]")
        group["eps"] = check_positive(group["eps"], "eps")
        if not isinstance(group["adam"], bool):
            raise TypeError(f"adam must be True or False, got {group['adam']!r}")
        group.setdefault("num_steps", 0)

    def add_param_group(self, param_group: dict) -> None:
        """Add a group of marked weights (as `torch.optim.Optimizer.add_param_group`) and write
        the primal weight of its new dual variables into them.

        Args:
            param_group: `{"params": [...], ...}` with any option of the constructor.

        Raises:
            ValueError: a parameter is not marked by `mark_binary`, or a bad option.
            TypeError: a parameter is not floating point.
        """
        def check(group):
            _check_params(group, self._name)
            self._check_group(group)

        group = _append_checked_group(self, param_group, check)
        with torch.no_grad():
            for p in group["params"]:
                w = p.detach().to(_state_dtype(p.dtype))
                dual = self._init_dual(w, group)
                self.state[p]["dual"] = dual
                p.copy_(self._primal(dual, group).to(p.dtype))

    @torch.no_grad()
    def step(self, closure=None):
        """One mirror-descent step: `x <- x - lr * d` in the dual space, where `d` is the
        gradient with respect to the dual coordinates (or its Adam-scaled version), then
        `beta` annealing and `w <- primal(x)` written into each parameter.

        Args:
            closure (Callable[[], Tensor] | None): re-evaluates the model (zeroing gradients,
                computing the loss and calling `backward`) and returns the loss.

        Returns:
            (Tensor | None): The closure's loss, or None without a closure.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr = group["lr"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError(f"{self._name} does not support sparse gradients")
                state = self.state[p]
                dual = state["dual"]
                g = self._dual_grad(p.grad.to(dual.dtype), group)
                if group["adam"]:
                    b1, b2 = group["betas"]
                    if "exp_avg" not in state:
                        state["step"] = 0
                        state["exp_avg"] = torch.zeros_like(dual)
                        state["exp_avg_sq"] = torch.zeros_like(dual)
                    state["step"] += 1
                    t = state["step"]
                    state["exp_avg"].mul_(b1).add_(g, alpha=1 - b1)
                    state["exp_avg_sq"].mul_(b2).addcmul_(g, g, value=1 - b2)
                    m_hat = state["exp_avg"] / (1 - b1 ** t)
                    v_hat = state["exp_avg_sq"] / (1 - b2 ** t)
                    g = m_hat / (v_hat.sqrt() + group["eps"])
                dual.add_(g, alpha=-lr)
            group["num_steps"] += 1
            if group["num_steps"] % group["beta_every"] == 0:
                group["beta"] = group["beta"] * group["beta_growth"]
            for p in group["params"]:
                p.copy_(self._primal(self.state[p]["dual"], group).to(p.dtype))
        return loss

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """Load the optimiser state and put `primal(x)` of the loaded dual into the parameters.

        Args:
            state_dict: what `state_dict()` returned.
        """
        super().load_state_dict(state_dict)
        self.refresh()

    @torch.no_grad()
    def refresh(self) -> None:
        """Write `primal(x)` into every parameter again (after changing `beta` by hand)."""
        for group in self.param_groups:
            for p in group["params"]:
                p.copy_(self._primal(self.state[p]["dual"], group).to(p.dtype))

    @contextlib.contextmanager
    def quantized(self) -> Iterator[None]:
        """A context manager for evaluation: inside the block every parameter holds its
        quantized value (`sign` of the dual variable, or the most probable level); the soft
        weights come back on exit.

        Yields:
            None.
        """
        with _swapped_weights(self, lambda p, group: self._hard(self.state[p]["dual"], group)):
            yield


class MDTanh(_MirrorDescent):
    r"""Mirror descent with the tanh mirror map for binary weights (MD-tanh, Ajanthan et al. 2021).

    Each marked parameter `w` (any shape) gets a dual tensor `x` of the same shape with

    $$
    w = \tanh(\beta x), \qquad x_{t+1} = x_t - \eta\, \nabla_w \ell(w_t),
    $$

    i.e. mirror descent on `w` in `(-1, 1)` with the mirror map
    $\Phi(w) = \frac{1}{2\beta}[(1+w)\log(1+w) + (1-w)\log(1-w)]$ (whose gradient is
    $\tanh^{-1}(w)/\beta$): the gradient with respect to the *weight* updates the *dual*
    variable. With `adam=True` that gradient is first scaled by Adam's bias-corrected moments
    (kept in the dual space), as in the paper's experiments. `beta` is multiplied by
    `beta_growth` every `beta_every` steps (the paper's CIFAR-10/ResNet-18 script uses Adam,
    `lr=1e-3`, growth 1.02 every 200 iterations). At evaluation use `quantized()`, which
    puts `sign(x)` (with `sign(0) = +1`) into the parameters.

    **The straight-through limit.** As $\beta \to \infty$, $\tanh(\beta x) \to
    \operatorname{sign}(x)$: the forward pass sees `sign(x)`, the gradient is taken with respect
    to the binary weight and subtracted from the latent `x`. That is exactly the
    straight-through estimator (forward `sign`, backward the identity) followed by SGD (or
    Adam) on latent weights. `beta=float('inf')` runs that limit (the dual starts at the
    current weight, like STE's latent weight); for finite `beta` the dual starts at
    $\tanh^{-1}(w)/\beta$ so that the weight is unchanged (clipped into `(-1, 1)`).

    Args:
        params: weights marked with [mark_binary][quasigrad.optim.mark_binary] (or groups of
            them).
        lr: step size in the dual space.
        beta: initial sharpness of the mirror map, `> 0` (`inf` allowed: the STE limit).
        beta_growth: factor `>= 1` applied to `beta` every `beta_every` steps.
        beta_every: steps between two growths of `beta`.
        adam: scale the gradient by Adam's moments (`betas`, `eps`) before the dual step.
        betas: Adam's moment decay rates.
        eps: Adam's denominator term.

    Raises:
        ValueError: a parameter not marked as binary, or a bad option.

    References:
        Ajanthan, Gupta, Torr, Hartley, Dokania, "Mirror Descent View for Neural Network
        Quantization", AISTATS 2021.
    """

    _name = "MDTanh"

    def __init__(self, params: Params, lr: float = 1e-3, *, beta: float = 1.0, beta_growth: float = 1.0,
                 beta_every: int = 1, adam: bool = False, betas: Tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8):
        defaults = dict(lr=lr, beta=beta, beta_growth=beta_growth, beta_every=beta_every, adam=adam,
                        betas=tuple(betas), eps=eps)
        super().__init__(params, defaults)

    def _init_dual(self, w, group):
        if math.isinf(group["beta"]):
            return w.clone()
        limit = 1.0 - 1e-6 if w.dtype == torch.float64 else 1.0 - 1e-4
        return torch.atanh(w.clamp(-limit, limit)) / group["beta"]

    def _primal(self, dual, group):
        if math.isinf(group["beta"]):
            return self._hard(dual, group)
        return torch.tanh(group["beta"] * dual)

    def _hard(self, dual, group):
        return torch.where(dual >= 0, torch.ones_like(dual), -torch.ones_like(dual))

    def _dual_grad(self, grad_w, group):
        return grad_w


def _check_levels(levels) -> tuple:
    if isinstance(levels, torch.Tensor):
        levels = levels.detach().flatten().tolist()
    try:
        values = [float(v) for v in levels]
    except (TypeError, ValueError):
        raise TypeError(f"levels must be a sequence of numbers, got {levels!r}") from None
    if len(values) < 2:
        raise ValueError(f"levels must hold at least 2 values, got {values}")
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"levels must be finite, got {values}")
    if any(b <= a for a, b in zip(values, values[1:])):
        raise ValueError(f"levels must be strictly increasing, got {values}")
    return tuple(values)


class MDSoftmax(_MirrorDescent):
    r"""Mirror descent with the softmax mirror map for weights with `d` levels (MD-softmax,
    Ajanthan et al. 2021): exponentiated gradient on the probabilities of the levels.

    Each marked parameter `w` gets a dual tensor `x` of shape `(*w.shape, d)` with

    $$
    u = \operatorname{softmax}(\beta x) \text{ (over the levels)}, \qquad
    w = \sum_j q_j u_j, \qquad
    x_{t+1} = x_t - \eta\, g_u, \quad g_u = \nabla_w \ell \otimes q ,
    $$

    since $\partial w / \partial u_j = q_j$. In terms of `u` this is the exponentiated
    gradient update $u_{t+1} \propto u_t \exp(-\beta\eta\, g_u)$ (mirror descent on the
    simplex with the entropy as mirror map). With two levels `(-1, 1)` it is exactly
    [MDTanh][quasigrad.optim.MDTanh] on $(x_2 - x_1)/2$. At evaluation `quantized()` puts the
    most probable level $q_{\arg\max_j x_j}$ into each weight. As $\beta\to\infty$,
    `u` becomes the one-hot vector of the arg-max and the update is the straight-through
    update of the latent `x` (forward: the hard level; backward: $\partial w/\partial
    x_j$ replaced by $q_j$).

    The dual starts at the maximum-entropy distribution over the levels whose mean is the
    current weight (clipped just inside `[q_1, q_d]`): $x_j = s\, q_j / \beta$ with the
    scalar `s` per weight found by bisection, so that the network starts from its current
    weights. (For two levels this is $\tanh^{-1}(w)/\beta$, MD-tanh's start.) With
    `beta=inf` the dual starts at $x_j = -(w - q_j)^2$, so the nearest level is chosen.

    Args:
        params: weights marked with [mark_binary][quasigrad.optim.mark_binary].
        levels: the `d >= 2` strictly increasing quantization levels `q` (e.g. `(-1, 0, 1)`).
        lr: step size in the dual space.
        beta: initial sharpness of the mirror map, `> 0` (`inf` allowed).
        beta_growth: factor `>= 1` applied to `beta` every `beta_every` steps.
        beta_every: steps between two growths of `beta`.
        adam: scale the gradient by Adam's moments (`betas`, `eps`) before the dual step.
        betas: Adam's moment decay rates.
        eps: Adam's denominator term.

    Raises:
        ValueError: a parameter not marked as binary, bad levels, or a bad option.

    References:
        Ajanthan, Gupta, Torr, Hartley, Dokania, "Mirror Descent View for Neural Network
        Quantization", AISTATS 2021.
    """

    _name = "MDSoftmax"

    def __init__(self, params: Params, levels: Sequence[float] = (-1.0, 0.0, 1.0), lr: float = 1e-3, *,
                 beta: float = 1.0, beta_growth: float = 1.0, beta_every: int = 1, adam: bool = False,
                 betas: Tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        defaults = dict(levels=_check_levels(levels), lr=lr, beta=beta, beta_growth=beta_growth,
                        beta_every=beta_every, adam=adam, betas=tuple(betas), eps=eps)
        super().__init__(params, defaults)

    def _check_group(self, group):
        group["levels"] = _check_levels(group["levels"])
        super()._check_group(group)

    @staticmethod
    def _q(group, like):
        return torch.tensor(group["levels"], dtype=like.dtype, device=like.device)

    def _init_dual(self, w, group):
        q = self._q(group, w)
        if math.isinf(group["beta"]):
            return -(w.unsqueeze(-1) - q) ** 2
        q64 = q.double()
        span = float(q64[-1] - q64[0])
        target = w.double().clamp(float(q64[0]) + 1e-4 * span, float(q64[-1]) - 1e-4 * span).unsqueeze(-1)
        gap = float((q64[1:] - q64[:-1]).min())
        # mean_s = sum_j q_j softmax(s q)_j increases with s (its derivative is a variance);
        # |s| <= hi reaches every target within 1e-4 of the span from the ends.
        hi = (math.log(len(group["levels"])) + 12.0) / gap * max(1.0, span / gap)
        lo_s = torch.full_like(target, -hi)
        hi_s = torch.full_like(target, hi)
        for _ in range(80):
            mid = 0.5 * (lo_s + hi_s)
            mean = (torch.softmax(mid * q64, dim=-1) * q64).sum(-1, keepdim=True)
            below = mean < target
            lo_s = torch.where(below, mid, lo_s)
            hi_s = torch.where(below, hi_s, mid)
        s = 0.5 * (lo_s + hi_s)
        return (s * q64 / group["beta"]).to(w.dtype)

    def _primal(self, dual, group):
        if math.isinf(group["beta"]):
            return self._hard(dual, group)
        q = self._q(group, dual)
        return (torch.softmax(group["beta"] * dual, dim=-1) * q).sum(-1)

    def _hard(self, dual, group):
        return self._q(group, dual)[dual.argmax(dim=-1)]

    def _dual_grad(self, grad_w, group):
        return grad_w.unsqueeze(-1) * self._q(group, grad_w)
