"""Benchmarks run by ``quasigrad bench NAME``.

Each benchmark is a module with ``DESCRIPTION`` (one line), ``add_arguments(parser)`` and
``run(args) -> int``; :data:`BENCHMARKS` maps its command-line name to the module, imported
only when that benchmark runs. The shared machinery (output directory checks, progress,
atomic and resumable results, tables, plots) is in :mod:`quasigrad.bench.runner`.
"""

BENCHMARKS = {
    "efficiency": "quasigrad.bench.efficiency",
    "qat-equivalence": "quasigrad.bench.qat_equivalence",
    "sort-speed": "quasigrad.bench.sort_speed",
    "mnist-sort": "quasigrad.bench.mnist_sort",
    "binary-mlp": "quasigrad.bench.binary_mlp",
    "samplers": "quasigrad.bench.samplers",
    "em": "quasigrad.bench.em",
    "vae": "quasigrad.bench.vae",
    "binary-vae": "quasigrad.bench.binary_vae",
    "polynomial": "quasigrad.bench.polynomial",
    "quality": "quasigrad.bench.quality",
    "listops": "quasigrad.bench.listops",
    "nas": "quasigrad.bench.nas",
}

__all__ = ["BENCHMARKS"]
