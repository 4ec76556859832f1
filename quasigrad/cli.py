"""The ``quasigrad`` command: ``quasigrad check``, ``quasigrad estimators``, ``quasigrad bench NAME``."""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import List, Optional

from .bench import BENCHMARKS
from .bench.runner import BenchmarkError
from .registry import UnknownEstimatorError


def _bench_parser(name: str) -> argparse.ArgumentParser:
    module = importlib.import_module(BENCHMARKS[name])
    parser = argparse.ArgumentParser(prog=f"quasigrad bench {name}", description=module.DESCRIPTION)
    module.add_arguments(parser)
    parser.set_defaults(_run=module.run)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="quasigrad", description="Gradients through discrete things.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p_check = sub.add_parser("check", help="exact bias of every registered estimator on small problems")
    from .lab import check as _check

    _check.add_arguments(p_check)
    p_est = sub.add_parser("estimators", help="list the registered estimators and their flags")
    p_est.add_argument("--markdown", action="store_true", help="the table as Markdown, as in the docs")
    p_bench = sub.add_parser("bench", help="run a benchmark: " + ", ".join(sorted(BENCHMARKS)),
                             add_help=False)
    p_bench.add_argument("name", nargs="?", help="benchmark name")
    p_bench.add_argument("rest", nargs=argparse.REMAINDER)

    args = parser.parse_args(argv)
    try:
        if args.command == "check":
            return _check.run(args)
        if args.command == "estimators":
            from . import registry

            if args.markdown:
                print(registry.markdown_table())
                return 0
            print(registry.table())
            from . import quant

            print("\nquantizer estimators (quasigrad.quant, for rounding, sign and fake quantization):\n")
            print(quant.estimator_table())
            return 0
        if args.command == "bench":
            if args.name in (None, "-h", "--help"):
                print("usage: quasigrad bench NAME [options]\n\nbenchmarks:")
                for name in sorted(BENCHMARKS):
                    print(f"  {name:18s} {importlib.import_module(BENCHMARKS[name]).DESCRIPTION}")
                return 0 if args.name else 2
            if args.name not in BENCHMARKS:
                raise BenchmarkError(f"unknown benchmark {args.name!r}; known benchmarks: "
                                     f"{', '.join(sorted(BENCHMARKS))}")
            bench_args = _bench_parser(args.name).parse_args(args.rest)
            return int(bench_args._run(bench_args) or 0)
        parser.print_help()
        return 2
    except (BenchmarkError, UnknownEstimatorError) as exc:
        print(f"quasigrad: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nquasigrad: interrupted; finished results are saved, run the same command again to resume",
              file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
