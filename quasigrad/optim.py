"""Optimisers for networks whose weights are discrete, from two theories of straight-through.

The straight-through estimator (forward ``sign(w)``, backward the identity) trains binary
networks well although it is not the gradient of anything. Two lines of work turn it into an
algorithm with a principle behind it, and this module offers both as ``torch.optim.Optimizer``:

* **Mirror descent** (Ajanthan et al. 2021): keep the weight ``w`` inside the convex hull of
  its levels (``(-1, 1)`` for binary weights, the interval ``[q_1, q_d]`` for ``d`` levels) and
  run mirror descent with a mirror map that makes the hull's boundary infinitely far away.
  :class:`MDTanh` (binary) and :class:`MDSoftmax` (multi-level, i.e. exponentiated gradient on
  the simplex of level probabilities). As the map's sharpness ``beta`` grows the update becomes
  the straight-through update on latent weights; at evaluation the weights are rounded.
* **The Bayesian learning rule** (Meng, Bachmann, Khan 2020): learn a mean-field Bernoulli
  distribution over ``{-1, +1}`` weights by natural-gradient variational inference with the
  Gumbel-softmax (concrete) reparameterisation: :class:`BayesBiNN`.

Which parameters are binary is said explicitly: :func:`mark_binary` tags the weights of the
binary layers, and these optimisers refuse any parameter without the tag (biases and
batch-norm parameters belong to an ordinary optimiser such as Adam)::

    binary = quasigrad.optim.mark_binary(model.fc1, model.fc2)        # their .weight
    rest = [p for p in model.parameters() if not quasigrad.optim.is_binary(p)]
    opt = quasigrad.optim.MDTanh(binary, lr=1e-3, beta=1.0, beta_growth=1.02, beta_every=200, adam=True)
    ...
    with opt.quantized():                                              # sign(w) for evaluation
        accuracy = evaluate(model)

All three keep their own state (the dual variable, or the natural parameter) and write into
each parameter the weight the network should use in the next forward pass: ``tanh(beta x)``
for :class:`MDTanh`, a Monte Carlo sample of the relaxed Bernoulli for :class:`BayesBiNN`.
A parameter's ``.grad`` is always read as the gradient with respect to that weight.

References:
    Thalaiyasingam Ajanthan, Kartik Gupta, Philip H. S. Torr, Richard Hartley, Puneet K. Dokania,
    "Mirror Descent View for Neural Network Quantization", AISTATS 2021 (arXiv:1910.08237).
    Xiangming Meng, Roman Bachmann, Mohammad Emtiyaz Khan, "Training Binary Neural Networks
    using the Bayesian Learning Rule", ICML 2020 (arXiv:2002.10778).
"""

from __future__ import annotations

import contextlib
import math
import numbers
from typing import Iterator, List, Optional, Sequence

import torch

from ._sampling import uniform
from ._validate import check_generator, check_int, check_positive

__all__ = ["MDTanh", "MDSoftmax", "BayesBiNN", "mark_binary", "is_binary"]

_TAG = "_quasigrad_binary"


# --------------------------------------------------------------------------- which weights

def mark_binary(*modules_or_params) -> List[torch.nn.Parameter]:
    """Mark the weights of binary (or quantized) layers for the optimisers of this module.

    Args:
        *modules_or_params: modules (their ``weight`` parameter is marked) or parameters.

    Returns:
        The marked parameters, in order, ready to be given to :class:`MDTanh`,
        :class:`MDSoftmax` or :class:`BayesBiNN`.
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
    """True if ``param`` was marked by :func:`mark_binary`."""
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


def _check_unit_interval(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= float(value) < 1.0:
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")
    return float(value)


@contextlib.contextmanager
def _swapped_weights(optimizer: torch.optim.Optimizer, make) -> Iterator[None]:
    """Inside the block every parameter ``p`` of ``optimizer`` holds ``make(p, group)``; the values
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

def _append_checked_group(optimizer: torch.optim.Optimizer, param_group: dict, check) -> dict:
    """``Optimizer.add_param_group`` followed by ``check(group)``; a group that fails its check is
    removed again, so a rejected group leaves no trace. Returns the new group."""
    torch.optim.Optimizer.add_param_group(optimizer, param_group)
    group = optimizer.param_groups[-1]
    try:
        check(group)
    except (TypeError, ValueError):
        optimizer.param_groups.pop()
        raise
    return group


class _MirrorDescent(torch.optim.Optimizer):
    """Shared machinery: a dual tensor per parameter, SGD or Adam in the dual space, ``beta``
    annealing, writing the primal weight back into the parameter, rounding for evaluation."""

    _name = "MirrorDescent"

    def __init__(self, params, defaults):
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
        """One mirror-descent step: ``x <- x - lr * d`` in the dual space, where ``d`` is the
        gradient with respect to the dual coordinates (or its Adam-scaled version), then
        ``beta`` annealing and ``w <- primal(x)`` written into each parameter.

        Args:
            closure: optional callable that re-evaluates the model (zeroing gradients, computing
                the loss and calling ``backward``) and returns the loss.
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

    def load_state_dict(self, state_dict) -> None:
        """Load the optimiser state and put ``primal(x)`` of the loaded dual into the parameters."""
        super().load_state_dict(state_dict)
        self.refresh()

    @torch.no_grad()
    def refresh(self) -> None:
        """Write ``primal(x)`` into every parameter again (after changing ``beta`` by hand)."""
        for group in self.param_groups:
            for p in group["params"]:
                p.copy_(self._primal(self.state[p]["dual"], group).to(p.dtype))

    @contextlib.contextmanager
    def quantized(self) -> Iterator[None]:
        """Inside the block every parameter holds its quantized value (``sign`` of the dual
        variable, or the most probable level); the soft weights come back on exit."""
        with _swapped_weights(self, lambda p, group: self._hard(self.state[p]["dual"], group)):
            yield


class MDTanh(_MirrorDescent):
    r"""Mirror descent with the tanh mirror map for binary weights (MD-tanh, Ajanthan et al. 2021).

    Each marked parameter ``w`` (any shape) gets a dual tensor ``x`` of the same shape with

    .. math::
        w = \tanh(\beta x), \qquad x_{t+1} = x_t - \eta\, \nabla_w \ell(w_t),

    i.e. mirror descent on ``w`` in ``(-1, 1)`` with the mirror map
    :math:`\Phi(w) = \frac{1}{2\beta}[(1+w)\log(1+w) + (1-w)\log(1-w)]` (whose gradient is
    :math:`\tanh^{-1}(w)/\beta`): the gradient with respect to the *weight* updates the *dual*
    variable. With ``adam=True`` that gradient is first scaled by Adam's bias-corrected moments
    (kept in the dual space), as in the paper's experiments. ``beta`` is multiplied by
    ``beta_growth`` every ``beta_every`` steps (the paper's CIFAR-10/ResNet-18 script uses Adam,
    ``lr=1e-3``, growth 1.02 every 200 iterations). At evaluation use :meth:`quantized`, which
    puts ``sign(x)`` (with ``sign(0) = +1``) into the parameters.

    **The straight-through limit.** As :math:`\beta \to \infty`, :math:`\tanh(\beta x) \to
    \operatorname{sign}(x)`: the forward pass sees ``sign(x)``, the gradient is taken with respect
    to the binary weight and subtracted from the latent ``x``. That is exactly the
    straight-through estimator (forward ``sign``, backward the identity) followed by SGD (or
    Adam) on latent weights. ``beta=float('inf')`` runs that limit (the dual starts at the
    current weight, like STE's latent weight); for finite ``beta`` the dual starts at
    :math:`\tanh^{-1}(w)/\beta` so that the weight is unchanged (clipped into ``(-1, 1)``).

    Args:
        params: weights marked with :func:`mark_binary` (or groups of them).
        lr: step size in the dual space.
        beta: initial sharpness of the mirror map, ``> 0`` (``inf`` allowed: the STE limit).
        beta_growth: factor ``>= 1`` applied to ``beta`` every ``beta_every`` steps.
        beta_every: steps between two growths of ``beta``.
        adam: scale the gradient by Adam's moments (``betas``, ``eps``) before the dual step.

    References:
        Ajanthan, Gupta, Torr, Hartley, Dokania, "Mirror Descent View for Neural Network
        Quantization", AISTATS 2021.
    """

    _name = "MDTanh"

    def __init__(self, params, lr: float = 1e-3, *, beta: float = 1.0, beta_growth: float = 1.0,
                 beta_every: int = 1, adam: bool = False, betas=(0.9, 0.999), eps: float = 1e-8):
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
    r"""Mirror descent with the softmax mirror map for weights with ``d`` levels (MD-softmax,
    Ajanthan et al. 2021): exponentiated gradient on the probabilities of the levels.

    Each marked parameter ``w`` gets a dual tensor ``x`` of shape ``(*w.shape, d)`` with

    .. math::
        u = \operatorname{softmax}(\beta x) \text{ (over the levels)}, \qquad
        w = \sum_j q_j u_j, \qquad
        x_{t+1} = x_t - \eta\, g_u, \quad g_u = \nabla_w \ell \otimes q ,

    since :math:`\partial w / \partial u_j = q_j`. In terms of ``u`` this is the exponentiated
    gradient update :math:`u_{t+1} \propto u_t \exp(-\beta\eta\, g_u)` (mirror descent on the
    simplex with the entropy as mirror map). With two levels ``(-1, 1)`` it is exactly
    :class:`MDTanh` on :math:`(x_2 - x_1)/2`. At evaluation :meth:`quantized` puts the most
    probable level :math:`q_{\arg\max_j x_j}` into each weight. As :math:`\beta\to\infty`,
    ``u`` becomes the one-hot vector of the arg-max and the update is the straight-through
    update of the latent ``x`` (forward: the hard level; backward: :math:`\partial w/\partial
    x_j` replaced by :math:`q_j`).

    The dual starts at the maximum-entropy distribution over the levels whose mean is the
    current weight (clipped just inside ``[q_1, q_d]``): :math:`x_j = s\, q_j / \beta` with the
    scalar ``s`` per weight found by bisection, so that the network starts from its current
    weights. (For two levels this is :math:`\tanh^{-1}(w)/\beta`, MD-tanh's start.) With
    ``beta=inf`` the dual starts at :math:`x_j = -(w - q_j)^2`, so the nearest level is chosen.

    Args:
        params: weights marked with :func:`mark_binary`.
        levels: the ``d >= 2`` strictly increasing quantization levels ``q`` (e.g. ``(-1, 0, 1)``).
        lr, beta, beta_growth, beta_every, adam, betas, eps: as in :class:`MDTanh`.

    References:
        Ajanthan, Gupta, Torr, Hartley, Dokania, "Mirror Descent View for Neural Network
        Quantization", AISTATS 2021.
    """

    _name = "MDSoftmax"

    def __init__(self, params, levels: Sequence[float] = (-1.0, 0.0, 1.0), lr: float = 1e-3, *,
                 beta: float = 1.0, beta_growth: float = 1.0, beta_every: int = 1, adam: bool = False,
                 betas=(0.9, 0.999), eps: float = 1e-8):
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


# --------------------------------------------------------------------------- BayesBiNN

def _log_sech2(x: torch.Tensor) -> torch.Tensor:
    # log(1 - tanh(x)^2) = log 4 - 2|x| - 2 log(1 + exp(-2|x|)), finite for every finite x.
    a = x.abs()
    return math.log(4.0) - 2 * a - 2 * torch.log1p(torch.exp(-2 * a))


class BayesBiNN(torch.optim.Optimizer):
    r"""BayesBiNN: the Bayesian learning rule for binary weights (Meng, Bachmann, Khan 2020).

    Learns a mean-field distribution :math:`q(w) = \prod_i p_i^{(1+w_i)/2}(1-p_i)^{(1-w_i)/2}`
    over ``w`` in ``{-1, +1}`` through its natural parameters :math:`\lambda` (one per weight;
    mean :math:`\mu = \tanh\lambda`, :math:`p = \sigma(2\lambda)`). Each step:

    .. math::
        \epsilon \sim U(0,1),\quad \delta = \tfrac12\log\frac{\epsilon}{1-\epsilon},\quad
        w^{(s)} = \tanh\big((\lambda + \delta^{(s)})/\tau\big)
        \qquad \text{(relaxed Bernoulli sample)}

        g = \frac{N}{S}\sum_{s=1}^{S}
            \frac{1 - (w^{(s)})^2 + \varepsilon}{\tau\,(1 - \mu^2 + \varepsilon)}
            \odot \nabla_w \ell(w^{(s)})

        m \leftarrow \beta m + (1-\beta)\big(g + \kappa(\lambda - \lambda_0)\big),\qquad
        \lambda \leftarrow \lambda - \alpha\, m / (1-\beta^t),\qquad \mu = \tanh\lambda

    where :math:`\ell` is the mean loss of the minibatch, ``N`` the size of the training set,
    :math:`\lambda_0` the prior's natural parameter (0: a uniform prior on ``{-1, +1}``) and
    :math:`\kappa` a weight on the KL term (1 in the paper). The paper's formula has
    :math:`\varepsilon = 0`; the public code adds :math:`\varepsilon = 10^{-10}` (the default
    here) in numerator and denominator. This matters: for the small temperatures used in
    practice (:math:`\tau = 10^{-10}`) the sample saturates, :math:`1-w^2` is 0 in floating
    point, and the factor becomes :math:`1/(1-\mu^2+\varepsilon)`. Both :math:`1-w^2` and
    :math:`1-\mu^2` are computed as :math:`\operatorname{sech}^2` without cancellation; with
    ``eps=0`` the ratio is computed in the log domain, so finite input never gives NaN.

    The gradient :math:`g` is a Monte Carlo estimate of the natural gradient of the
    expected loss through the Gumbel-softmax (concrete) relaxation of the Bernoulli; it is
    biased for ``tau > 0`` with respect to the discrete objective (the relaxation's bias),
    and its variance grows as ``tau`` shrinks.

    **Using it.** The parameter holds the current sample :math:`w^{(s)}`. With
    ``num_samples=1`` the ordinary loop works (``zero_grad``, forward, ``backward``,
    ``step``): ``step`` uses ``.grad`` at the sample already in the parameter and then draws
    the next one. With ``num_samples > 1`` pass a ``closure`` that zeroes gradients, computes
    the minibatch loss, calls ``backward`` and returns the loss; ``step`` calls it once per
    sample and returns the mean loss. Predict with :meth:`mean_weights` (``sign(mu)``, with
    ``sign(0) = +1``) or average predictions over :meth:`sampled_weights` (``w = +1`` with
    probability :math:`(1+\mu)/2`).

    Args:
        params: weights marked with :func:`mark_binary`.
        lr: step size :math:`\alpha` for the natural parameters (public MNIST code: ``1e-4``,
            decayed to ``1e-16`` by a cosine schedule).
        train_set_size: ``N``, the number of training examples.
        tau: temperature :math:`\tau > 0` of the relaxation (public MNIST code: ``1e-10``).
        momentum: :math:`\beta \in [0, 1)` (public MNIST code: 0).
        num_samples: ``S``, Monte Carlo samples per step (needs a closure when ``> 1``).
        lambda_init: initial :math:`|\lambda|`; the sign is that of the parameter's current
            value (public code: 10, random signs; a random initialisation has random signs).
        prior_lambda: :math:`\lambda_0`, a number or a list with one tensor per parameter
            (the posterior of a previous task, for continual learning).
        kl_weight: :math:`\kappa \ge 0`.
        eps: :math:`\varepsilon \ge 0` (see above).
        generator: a ``torch.Generator`` for the samples (on the parameters' device).

    References:
        Meng, Bachmann, Khan, "Training Binary Neural Networks using the Bayesian Learning
        Rule", ICML 2020; code: github.com/team-approx-bayes/BayesBiNN.
    """

    def __init__(self, params, lr: float = 1e-4, *, train_set_size: int, tau: float = 1e-10,
                 momentum: float = 0.0, num_samples: int = 1, lambda_init: float = 10.0,
                 prior_lambda=0.0, kl_weight: float = 1.0, eps: float = 1e-10,
                 generator: Optional[torch.Generator] = None):
        self.generator = generator
        self._prior = prior_lambda
        defaults = dict(lr=lr, train_set_size=train_set_size, tau=tau, momentum=momentum,
                        num_samples=num_samples, lambda_init=lambda_init, kl_weight=kl_weight, eps=eps)
        self._n_params = 0
        super().__init__(params, defaults)
        if isinstance(prior_lambda, (list, tuple)) and len(prior_lambda) != self._n_params:
            raise ValueError(f"prior_lambda has {len(prior_lambda)} tensors but the optimiser has "
                             f"{self._n_params} parameters")

    def add_param_group(self, param_group: dict) -> None:
        group = _append_checked_group(self, param_group, self._check_group)
        with torch.no_grad():
            for p in group["params"]:
                check_generator(self.generator, p.device)
                dtype = _state_dtype(p.dtype)
                w = p.detach().to(dtype)
                lam = torch.where(w >= 0, torch.ones_like(w), -torch.ones_like(w)) * group["lambda_init"]
                prior = self._prior
                if isinstance(prior, (list, tuple)):
                    if self._n_params >= len(prior):
                        raise ValueError(f"prior_lambda has {len(prior)} tensors, fewer than the parameters")
                    prior = prior[self._n_params]
                if isinstance(prior, torch.Tensor):
                    if prior.shape != p.shape and prior.numel() != 1:
                        raise ValueError(f"prior_lambda for parameter {self._n_params} has shape "
                                         f"{tuple(prior.shape)}, needs {tuple(p.shape)}")
                    prior_t = prior.detach().to(device=p.device, dtype=dtype).expand_as(w).clone()
                elif isinstance(prior, numbers.Real) and not isinstance(prior, bool) and math.isfinite(prior):
                    prior_t = torch.full_like(w, float(prior))
                else:
                    raise TypeError(f"prior_lambda must be a finite number, a tensor or a list of tensors, "
                                    f"got {prior!r}")
                state = self.state[p]
                state["lambda"] = lam
                state["prior_lambda"] = prior_t
                state["momentum_buffer"] = torch.zeros_like(w)
                state["step"] = 0
                self._n_params += 1
                self._draw(p, group)

    @staticmethod
    def _check_group(group: dict) -> None:
        _check_params(group, "BayesBiNN")
        group["lr"] = check_positive(group["lr"], "lr")
        group["tau"] = check_positive(group["tau"], "tau")
        group["train_set_size"] = check_int(group["train_set_size"], "train_set_size")
        group["num_samples"] = check_int(group["num_samples"], "num_samples")
        group["momentum"] = _check_unit_interval(group["momentum"], "momentum")
        group["lambda_init"] = check_positive(group["lambda_init"], "lambda_init")
        for name in ("kl_weight", "eps"):
            v = group[name]
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not (0.0 <= float(v) < math.inf):
                raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
            group[name] = float(v)

    # ---- the pieces of the update, each a formula of the docstring
    @torch.no_grad()
    def _draw(self, p: torch.Tensor, group: dict) -> None:
        """Put a fresh relaxed Bernoulli sample w = tanh((lambda + delta) / tau) into ``p``."""
        state = self.state[p]
        lam = state["lambda"]
        eps_u = uniform(lam.shape, dtype=lam.dtype, device=lam.device, generator=self.generator)  # ~U(0,1)
        delta = 0.5 * (torch.log(eps_u) - torch.log1p(-eps_u))      # logistic noise / 2
        z = (lam + delta) / group["tau"]
        state["z"] = z
        p.copy_(torch.tanh(z).to(p.dtype))

    @staticmethod
    def _scale(z: torch.Tensor, lam: torch.Tensor, tau: float, eps: float) -> torch.Tensor:
        """(1 - w^2 + eps) / (tau (1 - mu^2 + eps)) with w = tanh z, mu = tanh lambda."""
        if eps == 0.0:
            return torch.exp(_log_sech2(z) - _log_sech2(lam) - math.log(tau))
        return (torch.exp(_log_sech2(z)) + eps) / (tau * (torch.exp(_log_sech2(lam)) + eps))

    @torch.no_grad()
    def step(self, closure=None):
        """One step of the Bayesian learning rule (see the class docstring).

        Args:
            closure: re-evaluates the model at the sample in the parameters (zero gradients,
                loss, ``backward``) and returns the loss; required when ``num_samples > 1``.

        Returns:
            The mean loss over the samples when a closure is given, else ``None``.
        """
        n_samples = {g["num_samples"] for g in self.param_groups}
        S = max(n_samples)
        if closure is None and S > 1:
            raise ValueError(f"BayesBiNN with num_samples={S} needs a closure that computes the loss and "
                             f"calls backward (it is called once per Monte Carlo sample)")
        if len(n_samples) > 1 and closure is not None:
            raise ValueError(f"BayesBiNN: all parameter groups need the same num_samples, got {sorted(n_samples)}")
        params = [(g, p) for g in self.param_groups for p in g["params"]]
        acc = {p: torch.zeros_like(self.state[p]["lambda"]) for _, p in params}
        has_grad = set()
        losses = []
        for s in range(S if closure is not None else 1):
            if closure is not None:
                if s > 0:
                    for g, p in params:
                        self._draw(p, g)
                for _, p in params:
                    p.grad = None
                with torch.enable_grad():
                    loss = closure()
                losses.append(loss.detach() if isinstance(loss, torch.Tensor) else torch.as_tensor(loss))
            for g, p in params:
                if p.grad is None:
                    continue
                has_grad.add(p)
                state = self.state[p]
                acc[p].add_(self._scale(state["z"], state["lambda"], g["tau"], g["eps"])
                            * p.grad.to(acc[p].dtype))
        for g, p in params:
            if p not in has_grad:        # like torch's optimisers: no gradient, no update
                continue
            state = self.state[p]
            n_used = S if closure is not None else 1
            grad_hat = acc[p] * (g["train_set_size"] / n_used)
            beta = g["momentum"]
            state["step"] += 1
            buf = state["momentum_buffer"]
            buf.mul_(beta).add_(grad_hat + g["kl_weight"] * (state["lambda"] - state["prior_lambda"]),
                                alpha=1 - beta)
            state["lambda"].add_(buf, alpha=-g["lr"] / (1 - beta ** state["step"]))
            self._draw(p, g)
        if losses:
            return torch.stack([l.float() for l in losses]).mean()
        return None

    def load_state_dict(self, state_dict) -> None:
        """Load the optimiser state and put the loaded current sample ``tanh(z)`` into the
        parameters (the generator's state is not part of it: save ``generator.get_state()``)."""
        super().load_state_dict(state_dict)
        with torch.no_grad():
            for g in self.param_groups:
                for p in g["params"]:
                    p.copy_(torch.tanh(self.state[p]["z"]).to(p.dtype))

    def mean(self, p: torch.Tensor) -> torch.Tensor:
        """The posterior mean ``mu = tanh(lambda)`` of parameter ``p``, in (-1, 1)."""
        return torch.tanh(self.state[p]["lambda"])

    @contextlib.contextmanager
    def mean_weights(self) -> Iterator[None]:
        """Inside the block every parameter holds ``sign(mu)`` (``sign(0) = +1``): the mode of q."""
        with self._swap(lambda p, lam: torch.where(lam >= 0, torch.ones_like(lam), -torch.ones_like(lam))):
            yield

    @contextlib.contextmanager
    def sampled_weights(self, generator: Optional[torch.Generator] = None) -> Iterator[None]:
        """Inside the block every parameter holds a sample ``w ~ q`` in ``{-1, +1}``
        (``P(w = +1) = (1 + mu) / 2 = sigmoid(2 lambda)``). Use several blocks and average the
        predicted probabilities for the Bayesian model average."""
        def draw(p, lam):
            check_generator(generator, lam.device)
            u = torch.rand(lam.shape, dtype=lam.dtype, device=lam.device, generator=generator)
            return torch.where(u < torch.sigmoid(2 * lam), torch.ones_like(lam), -torch.ones_like(lam))
        with self._swap(draw):
            yield

    @contextlib.contextmanager
    def _swap(self, make) -> Iterator[None]:
        """Every parameter holds ``make(p, lambda_p)`` inside the block."""
        with _swapped_weights(self, lambda p, group: make(p, self.state[p]["lambda"])):
            yield
