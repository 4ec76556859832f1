"""Benchmark arguments parsed as ``quasigrad bench NAME ...`` parses them (the CLI's own parser)."""

from quasigrad.cli import _bench_parser


def bench_args(name, argv):
    return _bench_parser(name).parse_args(list(argv))
