"""quasigrad: gradients through discrete things for PyTorch.

Layer 1, sample-level estimators (forward: the hard one-hot sample; backward: the estimator):

```python
y = quasigrad.reinmax(logits, tau=1.0, dim=-1)
b = quasigrad.bernoulli.reinmax(logits)
```

The layers, each a package that imports only from those before it:

- [`quasigrad.registry`][quasigrad.registry]: names → estimators, with their flags;
- [`quasigrad.estimators`][quasigrad.estimators] (layer 1): the sample-level estimators;
- [`quasigrad.exact`][quasigrad.exact]: the ground truth by enumeration;
- [`quasigrad.objective`][quasigrad.objective] (layer 2): `E[f(D)]` with any estimator's gradient;
- [`quasigrad.distributions`][quasigrad.distributions] (`torch.distributions` classes whose `rsample` is an estimator)
  and [`quasigrad.nn`][quasigrad.nn] (modules: sample in training, the mode in evaluation);
- the neighbouring families [`quasigrad.quant`][quasigrad.quant], [`quasigrad.optim`][quasigrad.optim], [`quasigrad.sort`][quasigrad.sort],
  [`quasigrad.samplers`][quasigrad.samplers], [`quasigrad.em`][quasigrad.em], and the reusable [`quasigrad.models`][quasigrad.models];
- [`quasigrad.lab`][quasigrad.lab] (layer 3): quality against the exact gradient, built-in problems, and
  `quasigrad bench NAME` ([`quasigrad.bench`][quasigrad.bench]).
"""

import importlib as _importlib

from . import _compat, exact, objective, registry
from .estimators import bernoulli, darn, gapped_st, gumbel_rao, gumbel_softmax, reinmax, sample_categorical, st, zgr

__version__ = "0.1.0"

_LAZY = ("lab", "data", "quant", "optim", "sort", "samplers", "em", "models", "vae", "bench", "distributions",
         "nn")

__all__ = ["st", "gumbel_softmax", "gumbel_rao", "gapped_st", "reinmax", "zgr", "darn", "sample_categorical",
           "bernoulli", "exact", "registry", "objective", "estimators", *_LAZY]

_compat.install()


def __getattr__(name: str):
    # Submodules that pull in more (training loops, plotting) load on first use.
    if name in _LAZY:
        return _importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'quasigrad' has no attribute {name!r}")
