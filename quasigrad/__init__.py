"""quasigrad: gradients through discrete things for PyTorch.

Layer 1, sample-level estimators (forward: the hard one-hot sample; backward: the estimator)::

    y = quasigrad.reinmax(logits, tau=1.0, dim=-1)
    b = quasigrad.bernoulli.reinmax(logits)

The layers, each a package that imports only from those before it:

- :mod:`quasigrad.registry`: names → estimators, with their flags;
- :mod:`quasigrad.estimators` (layer 1): the sample-level estimators;
- :mod:`quasigrad.exact`: the ground truth by enumeration;
- :mod:`quasigrad.objective` (layer 2): ``E[f(D)]`` with any estimator's gradient;
- :mod:`quasigrad.distributions` (``torch.distributions`` classes whose ``rsample`` is an estimator)
  and :mod:`quasigrad.nn` (modules: sample in training, the mode in evaluation);
- the neighbouring families :mod:`quasigrad.quant`, :mod:`quasigrad.optim`, :mod:`quasigrad.sort`,
  :mod:`quasigrad.samplers`, :mod:`quasigrad.em`, and the reusable :mod:`quasigrad.models`;
- :mod:`quasigrad.lab` (layer 3): quality against the exact gradient, built-in problems, and
  ``quasigrad bench NAME`` (:mod:`quasigrad.bench`).
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
