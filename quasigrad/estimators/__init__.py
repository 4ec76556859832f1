"""Layer 1: sample-level estimators, the functions people put inside their models.

Each function's forward value is the hard sample (one-hot along `dim` for categorical
variables, {0, 1} for Bernoulli ones); its backward pass is the estimator.

What this package owns:

- `.categorical`: ST, Gumbel-softmax (and STGS), GR-MCK, GST, ReinMax, ZGR, DARN;
- `.bernoulli`: the same names for binary variables;
- `_sampling`: the draws every estimator shares (one uniform per row, Gumbel noise,
  conditional Gumbel noise), so that one generator gives one sample on every path;
- `_native`: the fused CPU kernels (`_kernels.c`) behind the straight-through family.

What it may import: [`quasigrad._util`][quasigrad._util] and [`quasigrad.registry`][quasigrad.registry] (where each estimator
registers itself). Nothing above it (objectives, the lab, benchmarks) is imported here.
"""

from . import bernoulli, categorical
from ._sampling import sample_categorical
from .categorical import darn, gapped_st, gumbel_rao, gumbel_softmax, reinmax, st, zgr

__all__ = ["st", "gumbel_softmax", "gumbel_rao", "gapped_st", "reinmax", "zgr", "darn", "sample_categorical",
           "categorical", "bernoulli"]
