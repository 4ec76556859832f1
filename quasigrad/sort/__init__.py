r"""Relaxed sorting, ranking and top-k.

Three families, every function over any `dim` and batch shape, ascending or descending,
float32/float64 (float16/bfloat16 computed in float32 and returned in the input dtype), on
any device:

* **Fast soft sort and rank** (Blondel et al. 2020): `soft_sort`, `soft_rank`.
  One sort, then an isotonic regression solved by pool-adjacent-violators (PAV), with l2 or KL
  regularisation of strength ε. Pure PyTorch, vectorised across rows; the backward pass is the
  exact Jacobian of the isotonic solution (block averages), O(n) per row.
* **Relaxed permutation matrices**: `neural_sort` (Grover et al. 2019) and
  `soft_sort_permutation` (SoftSort, Prillo & Eisenschlos 2020); `hard=True` gives the
  exact permutation matrix with a straight-through gradient; `stochastic=True` perturbs the
  scores with Gumbel noise, so that the hard permutation is an exact Plackett–Luce sample and the
  soft one its relaxation.
* **Top-k**: `gumbel_topk` draws k items without replacement (Gumbel-top-k trick) and
  gives the Plackett–Luce log-probability of the ordered sample and, exactly, of the unordered
  set (`plackett_luce_log_prob`); `relaxed_topk` is the relaxed k-hot mask
  (successive softmax, Xie & Ermon 2019).

`relative=True` (every relaxation) measures the regularisation strength or temperature in
units of each row's spread (its standard deviation along `dim`, detached), so that one
setting works whatever the scale of the values.

References:
    M. Blondel, O. Teboul, Q. Berthet, J. Djolonga. Fast Differentiable Sorting and Ranking. ICML 2020.
    A. Grover, E. Wang, A. Zweig, S. Ermon. Stochastic Optimization of Sorting Networks via
    Continuous Relaxations. ICLR 2019.
    S. Prillo, J. Eisenschlos. SoftSort: A Continuous Relaxation for the argsort Operator. ICML 2020.
    W. Kool, H. van Hoof, M. Welling. Stochastic Beams and Where to Find Them. ICML 2019.
    W. Kool, H. van Hoof, M. Welling. Estimating Gradients for Discrete Random Variables by
    Sampling without Replacement. ICLR 2020.
    S. M. Xie, S. Ermon. Reparameterizable Subset Sampling via Continuous Relaxations. IJCAI 2019.
"""

from __future__ import annotations

from .isotonic import soft_rank, soft_sort
from .permutation import neural_sort, soft_sort_permutation
from .topk import MAX_SET_K, GumbelTopK, gumbel_topk, plackett_luce_log_prob, relaxed_topk

__all__ = ["soft_sort", "soft_rank", "neural_sort", "soft_sort_permutation", "gumbel_topk", "relaxed_topk",
           "plackett_luce_log_prob", "GumbelTopK", "MAX_SET_K"]
