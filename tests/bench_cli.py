"""Benchmarks run as ``quasigrad bench NAME ...`` runs them (the runner's own parser and loop)."""

from quasigrad.bench import runner


def bench_args(name, argv):
    """The parsed arguments of ``quasigrad bench NAME ARGV``."""
    return runner.parser(name).parse_args(list(argv))


def run_bench(name, argv):
    """Run ``quasigrad bench NAME ARGV`` in this process; errors are raised, not printed."""
    return runner.main(name, list(argv))
