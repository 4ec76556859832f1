r"""Gradient-informed samplers for discrete distributions, and the models to test them on.

A model is an unnormalised log-probability `f(x) = log π(x) + log Z` over `D` discrete
variables. Binary models take states `x ∈ {0, 1}^D` shaped `(..., D)`; categorical models
take one-hot states shaped `(..., D, C)`. Leading dimensions are independent chains.

Samplers (each `step(x, generator=None) -> x` advances every chain by one transition):

- `Gibbs`: one coordinate per step from its exact conditional; `scan="random"` picks it
  uniformly per chain, `scan="systematic"` cycles 0, 1, …, D−1.
- `GibbsWithGradients` (GWG, Grathwohl et al. 2021): proposes changing one coordinate,
  chosen with `q(i|x) = softmax(d̃(x)/2)`, `d̃ = −(2x − 1) ⊙ ∇f(x)` (categorical:
  `d̃_ic = ∇f_ic − ⟨x_i, ∇f_i⟩` over `c ≠ x_i`), and accepts with
  `min(1, e^{f(x′) − f(x)} q(i|x′)/q(i|x))`.
- `DiscreteLangevin` (DLP, Zhang, Liu & Liu 2022): changes every coordinate at once,
  independently: binary `P(flip i) = σ(½ ∇f_i (1 − 2x_i) − 1/(2α))`; categorical
  `q_i(c) ∝ exp(½(∇f_ic − ⟨x_i, ∇f_i⟩) − [c ≠ x_i]/α)` (`‖e_c − x_i‖² = 2`). `mh=False` is
  DULA (no correction: biased, the bias vanishing as α → 0); `mh=True` is DMALA
  (Metropolis–Hastings with the product of reverse over forward flip probabilities: exact).

`make_sampler("gibbs" | "gibbs-systematic" | "gwg" | "dula" | "dmala", model, ...)` builds
one by name. Every sampler can also build its exact transition matrix on a small model
(`transition_matrix()`), so that `π P = π` can be checked to float64 precision.

Models: `Ising` (with `Ising.lattice`), `RBM` (visible marginal, with the hidden layer summed
out), and `EnergyModel` for any `f` (gradient by autograd). Each has exact marginals by
enumeration for small sizes; a periodic lattice Ising model of width ≤ 12 also has them by
the transfer matrix (exact for 10×10).

`effective_sample_size` is the multi-chain ESS of Stan / Vehtari et al. (2021, without
rank normalisation) with Geyer's initial monotone sequence, in PyTorch.

References:
    Grathwohl, Swersky, Hashemi, Duvenaud, Maddison. Oops I took a gradient: scalable
    sampling for discrete distributions. ICML 2021.

    Zhang, Liu, Liu. A Langevin-like sampler for discrete distributions. ICML 2022.

    Geyer. Practical Markov chain Monte Carlo. Statistical Science 1992.
"""

from .diagnostics import effective_sample_size, stationary_distribution
from .mcmc import SAMPLERS, DiscreteLangevin, Gibbs, GibbsWithGradients, make_sampler
from .models import EnergyModel, Ising, from_index, to_index
from .rbm import RBM

__all__ = ["EnergyModel", "Ising", "RBM", "Gibbs", "GibbsWithGradients", "DiscreteLangevin", "make_sampler",
           "SAMPLERS", "effective_sample_size", "stationary_distribution", "to_index", "from_index"]
