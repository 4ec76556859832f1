"""quasigrad: gradients through discrete things for PyTorch.

Layer 1, sample-level estimators (forward: the hard one-hot sample; backward: the estimator)::

    y = quasigrad.reinmax(logits, tau=1.0, dim=-1)
    b = quasigrad.bernoulli.reinmax(logits)

Layer 2, objectives: :mod:`quasigrad.objective`. Ground truth by enumeration:
:mod:`quasigrad.exact`. The estimator registry: :mod:`quasigrad.registry`. Neighbouring
families: :mod:`quasigrad.quant`, :mod:`quasigrad.optim`, :mod:`quasigrad.sort`,
:mod:`quasigrad.samplers`, :mod:`quasigrad.em`, :mod:`quasigrad.vae`. The lab: :mod:`quasigrad.lab` and
``quasigrad bench``.
"""

import importlib as _importlib

from . import registry
from ._sampling import sample_categorical
from .categorical import darn, gapped_st, gumbel_rao, gumbel_softmax, reinmax, st, zgr
from . import bernoulli, exact

__version__ = "0.1.0"

_LAZY = ("objective", "lab", "data", "quant", "optim", "sort", "samplers", "em", "vae", "bench")

__all__ = ["st", "gumbel_softmax", "gumbel_rao", "gapped_st", "reinmax", "zgr", "darn", "sample_categorical",
           "bernoulli", "exact", "registry", *_LAZY]


def __getattr__(name):
    # Submodules that pull in more (training loops, plotting) load on first use.
    if name in _LAZY:
        return _importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'quasigrad' has no attribute {name!r}")
