"""Benchmarks run by ``quasigrad bench NAME``.

Each benchmark is a module with ``DESCRIPTION`` (one line), ``add_arguments(parser)`` and
``run(args) -> int``; :data:`BENCHMARKS` maps its command-line name to the module, imported
only when that benchmark runs. The shared machinery (output directory checks, progress,
atomic and resumable results, tables, plots) is in :mod:`quasigrad.bench.runner`.
"""

BENCHMARKS = {
    "efficiency": "quasigrad.bench.efficiency",
    "polynomial": "quasigrad.bench.polynomial",
    "quality": "quasigrad.bench.quality",
}

__all__ = ["BENCHMARKS"]
