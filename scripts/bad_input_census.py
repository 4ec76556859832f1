"""Census of the bad inputs the test suite tries, per public entry point.

Runs pytest with a plugin that wraps every public function of the library's packages (layer-1
estimators, exact, objective, sort, data, quant, optim, samplers, em) and, for each, counts the
calls made by the tests (directly, through the registry or through another public function) and
the calls that ended in a ``ValueError``, ``TypeError`` or ``IndexError`` (``DataError`` included):
a bad input refused with a clear error. Only the outermost public call is counted, so a bad
``tau`` passed to ``bernoulli.gumbel_softmax`` counts once, not also for ``gumbel_softmax``.
Property-based tests count every example they run. Classes are not wrapped.

    PYTHONPATH=. python scripts/bad_input_census.py -q -p no:cacheprovider tests/
    PYTHONPATH=. python scripts/bad_input_census.py --json census.json -q tests/test_hardening.py

Arguments other than ``--json`` go to pytest. Prints a table sorted by package.
"""

from __future__ import annotations

import collections
import functools
import importlib
import inspect
import sys
import threading
import types

import pytest
import torch

from quasigrad._util.files import atomic_write_json
from quasigrad.data import DataError

PACKAGES = ("quasigrad", "quasigrad.bernoulli", "quasigrad.exact", "quasigrad.objective", "quasigrad.sort",
            "quasigrad.data", "quasigrad.quant", "quasigrad.optim", "quasigrad.samplers", "quasigrad.em")
CLEAR = (ValueError, TypeError, IndexError, DataError)


class Census:
    """The pytest plugin: wraps the public functions at configure time, counts while tests run."""

    def __init__(self):
        self.calls = collections.Counter()
        self.refused = collections.Counter()
        self.local = threading.local()
        self.wrappers = {}

    def _wrap(self, qualname, fn):
        census = self

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            if torch.compiler.is_compiling():
                return fn(*args, **kwargs)
            depth = getattr(census.local, "depth", 0)
            census.local.depth = depth + 1
            try:
                return fn(*args, **kwargs)
            except CLEAR:
                if depth == 0:
                    census.refused[qualname] += 1
                raise
            finally:
                census.local.depth = depth
                if depth == 0:
                    census.calls[qualname] += 1

        return wrapper

    def pytest_configure(self, config):
        targets = {}
        for package in PACKAGES:
            module = importlib.import_module(package)
            for name in getattr(module, "__all__", ()):
                obj = getattr(module, name, None)
                if isinstance(obj, types.FunctionType) and id(obj) not in targets:
                    targets[id(obj)] = (f"{package}.{name}", obj)
        for qualname, fn in targets.values():
            self.wrappers[id(fn)] = self._wrap(qualname, fn)
        # every module of the library that holds one of them gets the wrapper
        for mod_name, module in list(sys.modules.items()):
            if not mod_name.startswith("quasigrad") or not isinstance(module, types.ModuleType):
                continue
            for attr, value in list(vars(module).items()):
                if inspect.isfunction(value) and id(value) in self.wrappers:
                    setattr(module, attr, self.wrappers[id(value)])
        from quasigrad import registry
        for name, info in list(registry._REGISTRY.items()):
            changes = {k: self.wrappers[id(getattr(info, k))] for k in ("categorical", "bernoulli")
                       if getattr(info, k) is not None and id(getattr(info, k)) in self.wrappers}
            if changes:
                registry.update(name, **changes)

    def table(self):
        rows = sorted(self.calls, key=lambda q: (q.rsplit(".", 1)[0], q))
        width = max((len(q) for q in rows), default=10)
        lines = [f"{'entry point':{width}s}  {'bad inputs':>10s}  {'calls':>8s}"]
        lines += [f"{q:{width}s}  {self.refused[q]:>10d}  {self.calls[q]:>8d}" for q in rows]
        lines.append(f"{'all':{width}s}  {sum(self.refused.values()):>10d}  {sum(self.calls.values()):>8d}")
        return "\n".join(lines)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    out = None
    if "--json" in argv:
        i = argv.index("--json")
        if i + 1 >= len(argv):
            print("--json needs a file name", file=sys.stderr)
            return 2
        out = argv[i + 1]
        del argv[i:i + 2]
    census = Census()
    code = pytest.main(argv, plugins=[census])
    print(census.table())
    if out is not None:
        atomic_write_json(out, {"pytest_args": argv, "exit_code": int(code),
                                "entry_points": {q: {"bad_inputs": census.refused[q], "calls": census.calls[q]}
                                                 for q in census.calls}})
    return int(code)


if __name__ == "__main__":
    sys.exit(main())
