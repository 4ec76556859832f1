"""The problem every objective-level estimator works on: logits in a canonical layout, the
calls to `f` with their shape checks, draws, log-probabilities and the surrogate that carries
a given gradient."""

from __future__ import annotations

import torch

from .._util import validate as V
from ..estimators import bernoulli as _bern
from ..estimators._sampling import compute_dtype, sample_categorical


class PathwiseError(ValueError):
    """A pathwise estimator (one that differentiates `f`) was given an `f` that is not
    differentiable in the sample."""


_VARIABLES = ("categorical", "bernoulli")


# --------------------------------------------------------------------------------------------
# The problem: canonical layout, calls to f, log-probabilities


class _Problem:
    """Logits in a canonical layout (categories last for categorical variables), the calls to
    `f` with their shape checks, and per-example sums.

    `lg`: canonical logits in the compute dtype, differentiable (a view of `logits`).
    `batch`: the batch shape (logits without the category dimension). `e`: how many leading
    batch dimensions index examples (known after the first call to `f`).
    """

    def __init__(self, f, logits, dim, variable, estimator_name):
        if not callable(f):
            raise TypeError(f"f must be callable (a sample -> one loss per example), got {type(f).__name__}")
        V.check_floating(logits)
        if variable not in _VARIABLES:
            raise ValueError(f"variable must be 'categorical' or 'bernoulli', got {variable!r}")
        self.f, self.logits, self.variable, self.name = f, logits, variable, estimator_name
        self.cdt = compute_dtype(logits.dtype)
        if variable == "categorical":
            self.dim = V.category_dim(logits, dim)
            V.check_logits(logits, self.dim)      # NaN, +inf, a row with every category masked
            raw = logits.movedim(self.dim, -1)
            self.batch = tuple(raw.shape[:-1])
            self.n_cat = raw.shape[-1]
        else:
            self.dim = None
            V.check_not_nan(logits)               # ±inf is a certain outcome; NaN is no probability
            raw = logits
            self.batch = tuple(raw.shape)
            self.n_cat = 2
        self.raw = raw                     # canonical, original dtype
        self.lg = raw.to(self.cdt)         # canonical, compute dtype, differentiable
        self.e = None
        self.cat = variable == "categorical"

    # -- layout ------------------------------------------------------------------------------
    def to_user(self, s):
        """A canonical sample (no leading dims) -> the layout and dtype `f` expects."""
        s = s.to(self.logits.dtype)
        return s.movedim(-1, self.dim) if self.cat else s

    @property
    def var_dims(self):
        """Number of trailing dims of a canonical logits-shaped tensor that belong to one example."""
        return len(self.batch) - self.e + (1 if self.cat else 0)

    def per_example(self, x):
        """Sum a tensor shaped `(*lead, *canonical logits shape)` over each example's variables."""
        k = self.var_dims
        return x.flatten(x.dim() - k).sum(-1) if k else x

    def per_example_batch(self, x):
        """Sum a tensor shaped `(*lead, *batch)` (no category dim) over each example's variables."""
        k = len(self.batch) - self.e
        return x.flatten(x.dim() - k).sum(-1) if k else x

    def expand_coef(self, c):
        """Broadcast a per-example tensor `(*lead, *example)` against `(*lead, *canonical)`."""
        return c.reshape(tuple(c.shape) + (1,) * self.var_dims)

    # -- f -----------------------------------------------------------------------------------
    def call(self, sample_canonical, *, user_sample=None):
        """Evaluate `f` on one canonical sample; check it returns one loss per example."""
        s = self.to_user(sample_canonical) if user_sample is None else user_sample
        out = self.f(s)
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"f must return a tensor (one loss per example), got {type(out).__name__}")
        e = out.dim()
        if tuple(out.shape) != self.batch[:e]:
            raise ValueError(
                f"f must return one loss per example: a tensor whose shape is a leading part of the sample's "
                f"batch shape {self.batch}, got shape {tuple(out.shape)}")
        if self.e is None:
            self.e = e
        elif e != self.e:
            raise ValueError(f"f returned shape {tuple(out.shape)} on one sample and "
                             f"{self.batch[:self.e]} on another; it must return one loss per example")
        if out.is_complex():
            raise TypeError(f"f must return real losses, got dtype {out.dtype}")
        return out.to(self.cdt)

    def call_many(self, samples):
        """`f` on each canonical sample along the leading dim; returns `(K, *example)`."""
        return torch.stack([self.call(s) for s in samples.unbind(0)])

    # -- sampling and scores -------------------------------------------------------------------
    def sample(self, k, generator):
        """`k` independent draws, canonical, as floats in the compute dtype: `(k, *canonical)`."""
        with torch.no_grad():
            lg = self.lg.detach().unsqueeze(0).expand((k,) + tuple(self.lg.shape))
            if self.cat:
                idx = sample_categorical(lg, dim=-1, generator=generator)
                return torch.zeros_like(lg).scatter_(-1, idx.unsqueeze(-1), 1)
            return _bern.sample(lg, generator=generator).to(self.cdt)

    def log_prob(self, x, lg=None):
        """Per-example `log p(x)` for canonical samples `x` `(*lead, *canonical)`, differentiable in `lg`."""
        lg = self.lg if lg is None else lg
        if self.cat:
            # gather, not a product with the one-hot: a masked category (logit -inf) gives no NaN
            logp = torch.log_softmax(lg, -1).expand(x.shape)
            lp = logp.gather(-1, x.argmax(-1, keepdim=True)).squeeze(-1)
        else:
            lp = torch.where(x > 0, torch.nn.functional.logsigmoid(lg), torch.nn.functional.logsigmoid(-lg))
        return self.per_example_batch(lp)

    def score(self, x):
        """`∇θ log p(x)` for canonical samples, shaped like `x` (`onehot − π` or `b − σ(a)`)."""
        th = self.lg.detach()
        return x - (torch.softmax(th, -1) if self.cat else torch.sigmoid(th))

    def mean_jvp(self, a):
        """`∇θ E[⟨a, D⟩]` for a direction `a` shaped like the canonical logits (any leading dims):
        `J(π) a` per categorical variable, `σ'(θ) a` per binary one."""
        th = self.lg.detach()
        if self.cat:
            p = torch.softmax(th, -1)
            return p * (a - (p * a).sum(-1, keepdim=True))
        p = torch.sigmoid(th)
        return p * (1 - p) * a

    def inject(self, value, grad):
        """A surrogate whose value is `value` and whose gradient w.r.t. the logits is `grad`
        (canonical shape, detached), per example."""
        delta = self.lg - self.lg.detach()                    # value 0, gradient 1
        infinite = ~torch.isfinite(self.lg.detach())
        delta = delta.masked_fill(infinite, 0.0)                 # ±inf logits: no NaN, no gradient
        return value + self.per_example(grad.detach().masked_fill(infinite, 0.0) * delta)

    def wants_grad(self):
        return torch.is_grad_enabled() and self.logits.requires_grad


def _num_samples(num_samples, default, name, minimum=1):
    if num_samples is None:
        return default
    k = V.check_int(num_samples, "num_samples")
    if k < minimum:
        raise ValueError(f"estimator {name!r} needs num_samples >= {minimum}, got {k}")
    return k


def _surrogate_score(p, values, logp, signal):
    """`mean_k f_k` in value (keeping `f`'s own graph) plus `mean_k sg(signal_k) ∇ log p_k`."""
    k = values.shape[0]
    return values.mean(0) + (signal.detach() * (logp - logp.detach())).sum(0) / k


def _one_per_example(out: torch.Tensor, want: tuple, what: str) -> torch.Tensor:
    """A network's output shaped `want` (a trailing size-1 dimension is dropped), else a
    ValueError that starts with `what`."""
    if tuple(out.shape) == want + (1,):
        out = out.squeeze(-1)
    if tuple(out.shape) != want:
        raise ValueError(f"{what} per example, shape {want} (or {want + (1,)}), got {tuple(out.shape)}")
    return out
