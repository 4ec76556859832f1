"""Former module paths that still import: `quasigrad.categorical` is
[`quasigrad.estimators.categorical`][quasigrad.estimators.categorical], and so on. Each old name resolves to the module that
now holds its contents, loaded on first use."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
from types import ModuleType
from typing import Optional, Sequence

#: old module name → the module that holds its public names now
MOVED = {
    "quasigrad.categorical": "quasigrad.estimators.categorical",
    "quasigrad.bernoulli": "quasigrad.estimators.bernoulli",
    "quasigrad.check": "quasigrad.lab.check",
    "quasigrad.vae": "quasigrad.bench.vae_training",
}


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname: str, path: Optional[Sequence[str]] = None, target: Optional[ModuleType] = None):
        if fullname not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        return importlib.import_module(MOVED[spec.name])

    def exec_module(self, module: ModuleType) -> None:
        # the module was executed when it was first imported under its own name
        return None


def install() -> None:
    """Put the finder on `sys.meta_path` (once)."""
    if not any(isinstance(f, _Alias) for f in sys.meta_path):
        sys.meta_path.append(_Alias())
