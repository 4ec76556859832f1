"""One runner for every benchmark: a benchmark declares its units of work, how to run one and
how to report; the runner owns everything else.

A benchmark is a subclass of `Benchmark`:

```python
class Polynomial(Benchmark):
    name, description = "polynomial", "ReinMax paper's polynomial programming"
    seeds, estimators, device, checkpoints = [0, 1, 2], "estimators to train", True, True
    result_fields = ("final_train_loss", "exact_loss")

    def plan(self, args, ctx):          # check the arguments; nothing is written yet
        return Plan(config={...}, units=[Unit(f"{e}/seed={s}", (e, s)) for e in ... for s in ctx.seeds])

    def run_unit(self, unit, ctx):      # one unit; ctx.step() per step, ctx.checkpoint(unit)
        return {...}

    def report(self, store, ctx):       # tables on stdout, figures through ctx.figure
        return {"table": text}          # kept in the store beside the results
```

The runner (`main`) parses the command line (`--out`, `--fresh`, `--no-progress`
always; `--seeds`, `--estimators`, `--device`, `--threads` and `--full` where the
benchmark declares them), checks the arguments before anything is written, opens and validates
the result store ([`quasigrad.bench.store`][quasigrad.bench.store]) before any work, skips the units already stored,
runs the others under one progress bar, stores each as soon as it finishes (atomically), deletes
its checkpoint, and finally reports and prints where every file went. An interrupted run started
again with the same command resumes.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Dict, List, Optional, Sequence, Tuple, Type

from .._util.tables import format_table, mean_std
from .common import check_positive, estimator_specs, load_mnist_arg, mean_pm, resolve_device, save_figure
from .store import (
    BenchmarkError,
    ResultStore,
    check_out_dir,
    invocation_record,
    load_checkpoint,
    restoring_checkpoint,
    save_checkpoint,
)

# The runner's own names, then the helpers the benchmarks take from it (defined in .common and .store).
__all__ = ["Benchmark", "Plan", "Unit", "Context", "main", "execute", "parser", "benchmark_class", "describe",
           "BenchmarkError", "ResultStore", "check_out_dir", "load_checkpoint", "save_checkpoint",
           "restoring_checkpoint", "estimator_specs", "resolve_device", "load_mnist_arg", "check_positive",
           "save_figure", "format_table", "mean_std", "mean_pm"]


@dataclass
class Unit:
    """One unit of work: stored under `key` when it finishes.

    Attributes:
        key: the result's key in the store (and the name of its checkpoint).
        data: whatever the benchmark needs to run it.
        steps: steps the unit reports through `Context.step` (the progress bar's share of
            the unit); 0 counts the unit as one step.
    """

    key: str
    data: Any = None
    steps: int = 0


@dataclass
class Plan:
    """A benchmark's checked settings: `config` (the settings the results depend on; a store
    written under another config is refused) and its `units`, in order."""

    config: Dict[str, Any]
    units: List[Unit]


class Benchmark:
    """A benchmark: the declarations the runner reads, and four methods.

    Class attributes:
        name: the command's name (`quasigrad bench NAME`) and the store's file name.
        description: one line, listed by `quasigrad bench --help`.
        seeds: default `--seeds` (`None`: the benchmark takes no seeds).
        full_seeds: default `--seeds` under `--full`.
        full: help of `--full` (`None`: no `--full`).
        estimators: help of `--estimators` (`None`: no `--estimators`).
        device: whether it takes `--device` (default `cpu`).
        threads: whether it takes `--threads`; `default_threads` its default (`None`: torch's).
        checkpoints: whether units checkpoint (`--fresh` then clears `out/checkpoints`).
        result_fields: fields every stored result must have (checked when the store opens).
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    seeds: ClassVar[Optional[List[int]]] = None
    full_seeds: ClassVar[Optional[List[int]]] = None
    full: ClassVar[Optional[str]] = None
    estimators: ClassVar[Optional[str]] = None
    device: ClassVar[bool] = False
    threads: ClassVar[bool] = False
    default_threads: ClassVar[Optional[int]] = None
    checkpoints: ClassVar[bool] = False
    result_fields: ClassVar[Tuple[str, ...]] = ()

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Add the benchmark's own options (the runner adds the common ones)."""

    def plan(self, args: argparse.Namespace, ctx: "Context") -> Plan:
        """Check the arguments (raise `BenchmarkError`; write nothing) and return the plan."""
        raise NotImplementedError

    def prepare(self, ctx: "Context") -> None:
        """Heavy set-up needed by `run_unit` (called once, before the first unit that runs)."""

    def run_unit(self, unit: Unit, ctx: "Context") -> Any:
        """Run one unit and return its result (JSON-able: dicts, lists, numbers, strings)."""
        raise NotImplementedError

    def report(self, store: ResultStore, ctx: "Context") -> Optional[Dict[str, Any]]:
        """Print the tables and draw the figures; return top-level fields to keep in the store."""
        return None

    def check_result(self, key: str, value: Any) -> Optional[str]:
        """What is wrong with a stored result (`None`: nothing); by default it must be an
        object with every field of `result_fields`."""
        if not isinstance(value, dict):
            return f"expected an object, found {type(value).__name__ if value is not None else 'null'}"
        missing = [f for f in self.result_fields if f not in value]
        return f"missing {', '.join(map(repr, missing))}" if missing else None

    def distributed(self) -> Tuple[int, int]:
        """`(rank, world size)`: only rank 0 writes files and reports."""
        return 0, 1

    def synchronize(self) -> None:
        """Wait for every process of a distributed run (after the store is read)."""

    def checkpoint_name(self, unit: Unit, tag: str) -> str:
        """The checkpoint's file name in `out/checkpoints` (`tag`: a hash of the config)."""
        return f"{safe_name(unit.key)}-{tag}.pt"


def safe_name(key: str) -> str:
    """`key` with every character but letters, digits and `-_.=` replaced by `_`."""
    return "".join(ch if ch.isalnum() or ch in "-_.=" else "_" for ch in key)


class _Bar:
    """A progress bar on stderr: tqdm where installed, else a counter with elapsed time."""

    def __init__(self, total: int, desc: str, disable: bool):
        self.total, self.done, self.disable, self.desc = total, 0, disable, desc
        self.start = self._shown = time.time()
        self.tqdm = None
        if disable:
            return
        try:
            from tqdm.auto import tqdm
        except ImportError:  # pragma: no cover - tqdm is in the bench extra
            return
        self.tqdm = tqdm(total=total, desc=desc, file=sys.stderr, dynamic_ncols=True)

    def update(self, n: int = 1, postfix: Optional[str] = None) -> None:
        self.done += n
        if self.disable:
            return
        if self.tqdm is not None:
            self.tqdm.update(n)
            if postfix:
                self.tqdm.set_postfix_str(postfix, refresh=False)
        elif time.time() - self._shown >= 0.5 or self.done >= self.total:   # a plain counter, twice a second
            self._shown = time.time()
            sys.stderr.write(f"\r{self.desc} {self.done}/{self.total} [{self._shown - self.start:.0f}s]"
                             + (f" {postfix}" if postfix else ""))
            sys.stderr.flush()

    def label(self, text: str) -> None:
        if self.tqdm is not None:
            self.tqdm.set_description(text, refresh=False)
        self.desc = text

    def close(self) -> None:
        if self.tqdm is not None:
            self.tqdm.close()
        elif not self.disable:
            sys.stderr.write(f"\r{self.desc} done [{time.time() - self.start:.0f}s]\n")


class Context:
    """What a benchmark's methods get from the runner: the parsed `args`, the output directory,
    the resolved `seeds` and `device`, the open `store` (results of earlier units),
    checkpoints, progress and figures."""

    def __init__(self, bench: Benchmark, args: argparse.Namespace):
        self.bench, self.args = bench, args
        self.out = Path(args.out)
        self.seeds: Optional[List[int]] = None
        if bench.seeds is not None:
            self.seeds = list(args.seeds) if args.seeds is not None else list(
                bench.full_seeds if getattr(args, "full", False) and bench.full_seeds is not None else bench.seeds)
            if not self.seeds:
                raise BenchmarkError("--seeds needs at least one seed")
            dup = sorted({s for s in self.seeds if self.seeds.count(s) > 1})
            if dup:
                raise BenchmarkError(f"--seeds: seed(s) given twice: {dup}")
        self.device = resolve_device(args.device) if bench.device else None
        self.threads = getattr(args, "threads", None)
        if self.threads is not None and self.threads < 1:
            raise BenchmarkError(f"--threads must be >= 1, got {self.threads}")
        self.files: List[Tuple[str, Path]] = []
        self.tag = ""
        self.store: Optional[ResultStore] = None   # set once the store is open
        self._bar: Optional[_Bar] = None
        self._hook: Any = None

    # -- checkpoints
    def checkpoint(self, unit: Unit) -> Path:
        """The path of `unit`'s checkpoint (its directory is created; the runner deletes the file
        once the unit is stored)."""
        directory = check_out_dir(self.out / "checkpoints", option="--out")
        return directory / self.bench.checkpoint_name(unit, self.tag)

    # -- progress
    def step(self, postfix: Optional[str] = None) -> None:
        """One step of the running unit done (advances the bar; `postfix`: a running figure)."""
        if self._bar is not None:
            self._bar.update(1, postfix)
        if self._hook is not None:
            self._hook.tick("steps")

    # -- figures
    def pyplot(self) -> Any:
        """`matplotlib.pyplot` on the Agg backend, or `None` (with a note) without matplotlib."""
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            print("matplotlib is not installed: no plot (pip install matplotlib)")
            return None
        return plt

    def figure(self, fig: Any, filename: str) -> Path:
        """Save `fig` as PNG in the output directory (atomically), close it, and list it."""
        path = self.out / filename
        save_figure(fig, path)
        import matplotlib.pyplot as plt

        plt.close(fig)
        self.files.append(("plot", path))
        return path


# --------------------------------------------------------------------------- the command line


def benchmark_class(name: str) -> Type[Benchmark]:
    """The `Benchmark` subclass registered as `name`.

    Raises:
        UnknownBenchmarkError: an unknown name (listing the known ones).
    """
    from . import BENCHMARKS

    module = importlib.import_module(BENCHMARKS[name])
    return module.BENCHMARK


def describe() -> List[Tuple[str, str]]:
    """`(name, one-line description)` of every registered benchmark, sorted by name."""
    from . import BENCHMARKS

    return [(name, benchmark_class(name).description) for name in BENCHMARKS.names()]


def parser(name: str) -> argparse.ArgumentParser:
    """The argument parser of `quasigrad bench NAME`."""
    cls = benchmark_class(name)
    p = argparse.ArgumentParser(prog=f"quasigrad bench {cls.name}", description=cls.description)
    default_out = f"results/{cls.name}"
    p.add_argument("--out", default=default_out, help=f"output directory (default: {default_out})")
    p.add_argument("--fresh", action="store_true",
                   help="discard the results (and checkpoints) already in --out and start over")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    if cls.full is not None:
        p.add_argument("--full", action="store_true", help=cls.full)
    if cls.seeds is not None:
        full = f"; with --full: {_seeds_text(cls.full_seeds)}" if cls.full_seeds is not None else ""
        p.add_argument("--seeds", type=int, nargs="+", default=None,
                       help=f"seeds (default: {_seeds_text(cls.seeds)}{full})")
    if cls.estimators is not None:
        p.add_argument("--estimators", nargs="+", default=None, metavar="NAME", help=cls.estimators)
    if cls.device:
        p.add_argument("--device", default="cpu", help="torch device: cpu (default), cuda, cuda:1, ...")
    if cls.threads:
        default = cls.default_threads
        p.add_argument("--threads", type=int, default=default,
                       help=f"torch intra-op threads (default: {default if default is not None else 'torch’s choice'})")
    cls.add_arguments(p)
    return p


def _seeds_text(seeds: Optional[Sequence[int]]) -> str:
    seeds = list(seeds or [])
    if len(seeds) > 2 and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"{seeds[0]}..{seeds[-1]}"
    return " ".join(map(str, seeds))


def main(name: str, argv: Sequence[str]) -> int:
    """Run `quasigrad bench NAME ARGV`; returns the exit status (errors are raised: the
    command line turns them into one line and status 2)."""
    args = parser(name).parse_args(list(argv))
    return execute(benchmark_class(name)(), args, ["quasigrad", "bench", name, *argv])


def execute(bench: Benchmark, args: argparse.Namespace, command: Optional[Sequence[str]] = None) -> int:
    """Run a benchmark: check, open the store, run the missing units, report.

    Args:
        bench: a new instance of the benchmark.
        args: its parsed arguments (`parser`).
        command: the command line to record (default: `quasigrad bench NAME`).

    Returns:
        0.

    Raises:
        BenchmarkError: bad arguments or files (before any work where they can be found then).
        KeyboardInterrupt: interrupted; every finished unit is stored, so the same command resumes.
    """
    import torch

    from ..lab._specs import StopHook

    ctx = Context(bench, args)
    threads_before = torch.get_num_threads()
    try:
        plan = bench.plan(args, ctx)
        if ctx.threads is not None:
            torch.set_num_threads(ctx.threads)
        return _execute(bench, args, ctx, plan, command or ["quasigrad", "bench", bench.name], StopHook())
    finally:
        torch.set_num_threads(threads_before)


def _execute(bench: Benchmark, args: argparse.Namespace, ctx: Context, plan: Plan, command: Sequence[str],
             hook: Any) -> int:
    import torch

    rank, world = bench.distributed()
    keys = [u.key for u in plan.units]
    dup = sorted({k for k in keys if keys.count(k) > 1})
    if dup:  # a benchmark bug, or the same thing asked twice
        raise BenchmarkError(f"the same unit was asked for twice: {', '.join(dup)}")
    record = invocation_record(command, device=str(ctx.device) if ctx.device is not None else None,
                               threads=torch.get_num_threads(), world_size=world)
    store = ResultStore(ctx.out, bench.name, plan.config, fresh=args.fresh, check=bench.check_result,
                        invocation=record, write=rank == 0)
    ctx.tag = hashlib.sha1(json.dumps(store.config, sort_keys=True).encode()).hexdigest()[:10]
    bench.synchronize()
    if args.fresh and bench.checkpoints and rank == 0 and (ctx.out / "checkpoints").is_dir():
        for old in (ctx.out / "checkpoints").glob("*.pt"):
            old.unlink()
    todo = [u for u in plan.units if u.key not in store]
    if rank == 0 and len(todo) < len(plan.units):
        print(f"resuming: {len(plan.units) - len(todo)} of {len(plan.units)} units already in {store.path}")
    ctx._hook, ctx.store = hook, store
    ran = False
    try:
        if todo:
            bench.prepare(ctx)
        bar = _Bar(sum(max(u.steps, 1) for u in plan.units), bench.name, args.no_progress or rank != 0)
        ctx._bar = bar
        try:
            for unit in plan.units:
                if unit.key in store:
                    bar.update(max(unit.steps, 1))
                    continue
                bar.label(f"{bench.name} {unit.key}")
                before = bar.done
                value = bench.run_unit(unit, ctx)
                store.put(unit.key, value)
                ran = True
                if bench.checkpoints and rank == 0:
                    path = ctx.checkpoint(unit)
                    if path.exists():
                        path.unlink()
                bar.update(max(0, max(unit.steps, 1) - (bar.done - before)))
                hook.tick("units")
        finally:
            bar.close()
            ctx._bar = None
    except KeyboardInterrupt:
        if ran or (store.path.exists() and not args.fresh):
            store.save()  # record this invocation's time
        raise
    if rank != 0:
        return 0
    extra = bench.report(store, ctx) or {}
    store.save(**extra)
    for kind, path in [("results", store.path)] + ctx.files:
        print(f"{kind}: {path}")
    return 0
