"""The lab: measure gradient estimators against the exact gradient.

[quality][quasigrad.lab.quality] reports each estimator's bias, variance, mean squared error
and single-draw cosine on a problem small enough to enumerate (exactly where the estimator's
gradient is a function of the sample alone, by Monte Carlo with standard errors otherwise);
[quasigrad.lab.problems][] holds the built-in problems, and [quasigrad.lab.check][] the bias
table of `quasigrad check`. The benchmarks built on it are run with
`quasigrad bench polynomial|quality|efficiency`.

Examples:
    >>> from quasigrad import lab
    >>> rows = lab.quality(lab.problems.quadratic(), ["st", "zgr"], taus=[1.0])
    >>> print(lab.format_quality(rows))  # doctest: +SKIP
"""

from . import problems
from ._specs import Spec, parse_specs
from .problems import Problem
from .quality import estimator_gradients, format_quality, quality

__all__ = ["quality", "format_quality", "estimator_gradients", "problems", "Problem", "Spec", "parse_specs"]
