"""Benchmarks run by `quasigrad bench NAME`: every experiment of the lab, on one runner.

Each benchmark is a module holding `BENCHMARK`, a subclass of
[`quasigrad.bench.runner.Benchmark`][quasigrad.bench.runner.Benchmark] that declares its options, units of work, how to run
one and how to report. `BENCHMARKS` (a [`quasigrad._util.registry.Registry`][quasigrad._util.registry.Registry]) maps
its command-line name to the module, imported only when that benchmark runs or is listed. The
runner ([`quasigrad.bench.runner`][quasigrad.bench.runner]) owns the rest: the command line, the result store and
its validation ([`quasigrad.bench.store`][quasigrad.bench.store]), resuming, progress, checkpoints and figures.
The VAE trainer ([`quasigrad.bench.vae_training`][quasigrad.bench.vae_training]) and the papers' constants
([`quasigrad.bench.paper`][quasigrad.bench.paper]) sit beside the benchmarks that use them.

This package may import everything below it (the estimators, the objective layer, the
families, the models and the lab); nothing in the library imports it but the command line.
"""

from .._util.registry import Registry, UnknownNameError


class UnknownBenchmarkError(UnknownNameError):
    """A benchmark name that is not registered (the message lists the known ones)."""


#: Benchmark name → the module that holds it (``module.BENCHMARK``).
BENCHMARKS: "Registry[str]" = Registry("benchmark", error=UnknownBenchmarkError)

for _name, _module in [
    ("efficiency", "efficiency"),
    ("qat-equivalence", "qat_equivalence"),
    ("sort-speed", "sort_speed"),
    ("mnist-sort", "mnist_sort"),
    ("binary-mlp", "binary_mlp"),
    ("samplers", "samplers"),
    ("em", "em"),
    ("vae", "vae"),
    ("binary-vae", "binary_vae"),
    ("polynomial", "polynomial"),
    ("quality", "quality"),
    ("objective-poly", "objective_poly"),
    ("listops", "listops"),
    ("nas", "nas"),
]:
    BENCHMARKS.register(_name, f"{__name__}.{_module}")
del _name, _module

__all__ = ["BENCHMARKS", "UnknownBenchmarkError"]
