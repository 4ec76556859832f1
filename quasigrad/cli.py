"""The `quasigrad` command: `quasigrad check`, `quasigrad estimators`, `quasigrad report`, `quasigrad bench NAME`.

Every error a user can cause (a bad argument, a damaged or unreadable file) is printed as one
line, `quasigrad: error: ...`, with exit status 2; an interrupted benchmark exits with 130
after saying how to resume.
"""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from ._util.registry import UnknownNameError
from .bench.runner import BenchmarkError
from .bench.store import package_version

BENCH_USAGE = "usage: quasigrad bench NAME [options]   (quasigrad bench NAME --help: the benchmark's options)"


def _bench_list() -> str:
    from .bench.runner import describe

    rows = describe()
    width = max(len(name) for name, _ in rows)
    lines = [BENCH_USAGE, "", "Run a benchmark: results (JSON), a table and plots (PNG) in --out, resumable.", "",
             "benchmarks:"]
    lines += [f"  {name:{width}s}  {text}" for name, text in rows]
    return "\n".join(lines)


def _bench(argv: List[str]) -> int:
    from .bench import runner

    if not argv or argv[0] in ("-h", "--help"):
        print(_bench_list())
        return 0 if argv else 2
    return runner.main(argv[0], argv[1:])


def main(argv: Optional[List[str]] = None) -> int:
    """Run the `quasigrad` command with `argv` (default: `sys.argv[1:]`); returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="quasigrad", description="Gradients through discrete things.")
    parser.add_argument("--version", action="version", version=f"quasigrad {package_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p_check = sub.add_parser("check", help="exact bias of every registered estimator on small problems")
    from .lab import check as _check

    _check.add_arguments(p_check)
    p_est = sub.add_parser("estimators", help="list the registered estimators and their flags")
    p_est.add_argument("--markdown", action="store_true", help="the table as Markdown, as in the docs")
    p_report = sub.add_parser("report", help="write docs/reproduction.md from the committed result stores")
    from .bench import report as _report

    _report.add_arguments(p_report)
    # Parsed by the benchmark's own parser (see _bench); listed here for the help.
    sub.add_parser("bench", help="run a benchmark (quasigrad bench --help lists them)", add_help=False)

    try:
        if argv and argv[0] == "bench":
            return _bench(argv[1:])
        args = parser.parse_args(argv)
        if args.command == "check":
            return _check.run(args)
        if args.command == "report":
            return _report.run(args)
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
        parser.print_help()
        return 2
    except (BenchmarkError, UnknownNameError) as exc:
        print(f"quasigrad: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nquasigrad: interrupted; finished results are saved, run the same command again to resume",
              file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
