"""Build hook: compile the fused CPU kernels when the package is installed.

The metadata is in pyproject.toml. The kernels are an optional extension: where no C compiler
works (or on Windows) the build prints why and carries on, and the package runs on PyTorch
operators (or compiles the kernels on first use, if a compiler appears later). The library is a
plain shared library loaded with ctypes, not a Python module, so it is named ``_kernels.bin``
and written with its record ``_kernels.bin.json`` (size, SHA-256, sources) that the loader checks
before loading it.
"""

import importlib.util
import os
import shutil
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent
PACKAGE_DIR = HERE / "quasigrad" / "estimators"


def _build_module():
    # quasigrad/estimators/_build.py uses the standard library only; load it by path (importing the
    # package would import torch, which the build environment need not have).
    spec = importlib.util.spec_from_file_location("_quasigrad_build", PACKAGE_DIR / "_build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class BuildKernels(build_ext):
    """Build ``quasigrad.estimators._kernels`` with :func:`quasigrad.estimators._build.build`,
    never failing the installation."""

    def get_ext_filename(self, fullname):
        # called with the full dotted name and, by get_ext_fullpath, with its last part alone
        parts = fullname.split(".")
        if parts[-1] in ("_kernels", "_fastpath"):
            return os.path.join(*parts[:-1], parts[-1] + ".bin")
        return super().get_ext_filename(fullname)

    def build_extension(self, ext):
        if ext.name == "quasigrad.estimators._fastpath":
            return self._build_fastpath(Path(self.get_ext_fullpath(ext.name)))
        if ext.name != "quasigrad.estimators._kernels":
            return super().build_extension(ext)
        target = Path(self.get_ext_fullpath(ext.name))
        if sys.platform == "win32":
            print("quasigrad: the fused CPU kernels are not built on Windows; PyTorch operators will be used")
            return None
        try:
            meta = _build_module().build(target, sources=PACKAGE_DIR)
        except Exception as exc:  # noqa: BLE001 -- an optional extension: report and carry on
            print(f"quasigrad: the fused CPU kernels were not built ({exc}); they will be compiled on first use "
                  "if a C compiler is available then, else PyTorch operators are used")
            for path in (target, target.with_name(target.name + ".json")):
                if path.exists():
                    path.unlink()
            return None
        print(f"quasigrad: built the fused CPU kernels with {meta['compiler']} "
              f"({'with' if meta['openmp'] else 'without'} OpenMP) in {meta['seconds']} s")
        return None

    def _build_fastpath(self, target):
        """The straight-through family's compiled eager call, against the installed torch;
        without it (no C++ compiler, no torch yet, Windows) the Python route is used."""
        if sys.platform == "win32":
            return None
        try:
            meta = _build_module().build_fastpath(target, sources=PACKAGE_DIR)
        except Exception as exc:  # noqa: BLE001 -- an optional extension: report and carry on
            print(f"quasigrad: the compiled eager call was not built ({exc}); the Python route is used")
            for path in (target, target.with_name(target.name + ".json")):
                if path.exists():
                    path.unlink()
            return None
        print(f"quasigrad: built the compiled eager call against torch {meta['torch']} in {meta['seconds']} s")
        return None

    def copy_extensions_to_source(self):
        # editable installs: copy the library and its record beside the sources
        for ext in self.extensions:
            if ext.name not in ("quasigrad.estimators._kernels", "quasigrad.estimators._fastpath"):
                continue
            built = Path(self.build_lib) / self.get_ext_filename(self.get_ext_fullname(ext.name))
            if not built.exists():
                continue
            for path in (built, built.with_name(built.name + ".json")):
                dest = PACKAGE_DIR / path.name
                tmp = dest.with_name(dest.name + ".tmp")
                shutil.copyfile(path, tmp)
                shutil.copymode(path, tmp)
                os.replace(tmp, dest)

    def get_outputs(self):
        outputs = []
        for ext in self.extensions:
            path = self.get_ext_fullpath(ext.name)
            if os.path.exists(path):
                outputs += [path, path + ".json"]
        return outputs


setup(
    ext_modules=[Extension("quasigrad.estimators._kernels", sources=[], optional=True),
                 Extension("quasigrad.estimators._fastpath", sources=[], optional=True)],
    cmdclass={"build_ext": BuildKernels},
)
