"""Models that users reuse, apart from the benchmarks that train them.

`vae`: the categorical and Bernoulli MNIST VAEs of the estimator literature, with the
loss of one step under any registered estimator
([estimator_step][quasigrad.models.vae.estimator_step]). `tree_lstm`: the Gumbel tree-LSTM
that parses ListOps, and `nas`: the GDAS supernet over the NAS-Bench-201 cell and the fixed
network it derives (the ReinMax paper's downstream experiments), both taking any sample-level
estimator by name. May import the estimators, the objective layer and `quasigrad._util`;
nothing above.
"""

from .vae import BernoulliVAE, CategoricalVAE, estimator_step, evaluate

__all__ = ["CategoricalVAE", "BernoulliVAE", "estimator_step", "evaluate"]
