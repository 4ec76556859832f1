"""``quasigrad bench vae``: the categorical MNIST VAE of the ReinMax paper (Table 2).

For each configuration C×L (categories × latents), estimator and seed, trains
:class:`quasigrad.models.vae.CategoricalVAE` with the paper's learning rate, temperature and optimiser
for that configuration (those searched for ReinMax; the same for every estimator unless
``--lr/--tau/--optimizer`` say otherwise) and reports the training −ELBO (single sample,
averaged over the last epoch) and the test −ELBO (single sample, fixed seed), mean ± std over
seeds, the time per epoch relative to ST in the same run, and the paper's Table 2 values where
known, labelled as the paper's.

Short preset (default): 5 epochs on the first 10,000 training images, seeds 0 1, configurations
8x4 and 10x30. ``--full``: 160 epochs on all 60,000 images, seeds 0–9, all six configurations.

Every run checkpoints to ``--out/checkpoints`` and resumes after an interruption; finished runs
are kept in ``--out/vae.json``. Runs under ``torchrun --nproc_per_node N`` with
DistributedDataParallel (gloo on CPU): each process takes 1/N of every global batch.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from .runner import (BenchmarkError, ResultStore, add_common_arguments, check_out_dir, format_table, mean_std,
                     save_figure)
from .runner import load_mnist_arg

DESCRIPTION = "categorical MNIST VAE of the ReinMax paper (Table 2): train/test -ELBO per estimator"

DEFAULT_ESTIMATORS = ["st", "stgs", "gumbel_rao", "gst", "reinmax", "zgr"]
SHORT = dict(epochs=5, train_size=10000, seeds=[0, 1], configs=["8x4", "10x30"])
FULL = dict(epochs=160, train_size=None, seeds=list(range(10)), configs=None)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .vae_training import CATEGORICAL_CONFIGS

    add_common_arguments(parser, default_out="results/vae", seeds=None)
    parser.add_argument("--seeds", type=int, nargs="+", default=None,
                        help=f"seeds (default: {SHORT['seeds']}; with --full: 0..9)")
    parser.add_argument("--configs", nargs="+", default=None, metavar="CxL",
                        help=f"configurations among {', '.join(CATEGORICAL_CONFIGS)} "
                             f"(default: {' '.join(SHORT['configs'])}; with --full: all)")
    _add_training_arguments(parser)


def _add_training_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--full", action="store_true", help="the paper's full setting (long: hours to days on CPU)")
    parser.add_argument("--epochs", type=int, default=None, help="override the preset's number of epochs")
    parser.add_argument("--train-size", type=int, default=None, help="use the first N training images")
    parser.add_argument("--test-size", type=int, default=None, help="use the first N test images (default: all)")
    parser.add_argument("--lr", type=float, default=None, help="learning rate for every run (default: the paper's)")
    parser.add_argument("--tau", type=float, default=None, help="temperature for every run (default: the paper's)")
    parser.add_argument("--optimizer", choices=["adam", "radam"], default=None,
                        help="optimiser for every run (default: the paper's)")
    parser.add_argument("--data", default=None,
                        help="MNIST directory (default: $QUASIGRAD_MNIST, the user cache, then ../shared/data/mnist)")
    parser.add_argument("--checkpoint-every", type=int, default=200, help="steps between checkpoints")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")


# ---------------------------------------------------------------------------------------------
# Shared by the two VAE benchmarks


def check_training_options(args, preset):
    """The training options both VAE benchmarks take (``_add_training_arguments``), checked before
    any work: returns ``(epochs, train_size, train_images, test_images)``, the preset's values
    where an option is not given, with the output directory checked and MNIST loaded."""
    epochs = args.epochs if args.epochs is not None else preset["epochs"]
    train_size = args.train_size if args.train_size is not None else preset["train_size"]
    for flag, v in (("--epochs", epochs), ("--train-size", train_size), ("--test-size", args.test_size),
                    ("--checkpoint-every", args.checkpoint_every)):
        if v is not None and v < 1:
            raise BenchmarkError(f"{flag} must be >= 1, got {v}")
    if (args.lr is not None and args.lr <= 0) or (args.tau is not None and args.tau <= 0):
        raise BenchmarkError("--lr and --tau must be positive")
    check_out_dir(args.out)
    train_images, test_images = load_data(args.data)
    if train_size is not None and train_size > train_images.shape[0]:
        raise BenchmarkError(f"--train-size {train_size} exceeds the {train_images.shape[0]} training images")
    return epochs, train_size, train_images, test_images


def load_data(path: Optional[str]):
    """MNIST as flat ``(N, 784)`` grey levels; a clear BenchmarkError when missing."""
    mnist = load_mnist_arg(path)
    return mnist.flat(True), mnist.flat(False)


class _Progress:
    """One bar over all steps of all runs, showing the running −ELBO of the current run."""

    def __init__(self, total: int, disable: bool, desc: str):
        self.bar = None
        self.disable = disable
        if disable:
            return
        try:
            from tqdm.auto import tqdm
        except ImportError:  # pragma: no cover
            tqdm = None
        if tqdm is not None:
            self.bar = tqdm(total=total, desc=desc, file=sys.stderr, dynamic_ncols=True)
        self.total, self.done = total, 0

    def label(self, text: str) -> None:
        if self.bar is not None:
            self.bar.set_description(text)

    def step(self, value: float) -> None:
        if self.disable:
            return
        self.done += 1
        if self.bar is not None:
            self.bar.update(1)
            if self.done % 10 == 0:
                self.bar.set_postfix_str(f"-ELBO {value:.2f}")
        elif self.done % 100 == 0:
            sys.stderr.write(f"\r{self.done}/{self.total} -ELBO {value:.2f}")

    def skip(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run_grid(*, name: str, out, fresh: bool, runs: List[Dict[str, Any]], store_config: Dict[str, Any],
             train_images, test_images, no_progress: bool, checkpoint_every: int,
             make_estimator: Optional[Callable] = None) -> ResultStore:
    """Train every run in ``runs`` (dicts with ``key`` and ``spec``) not yet in the store."""
    import torch

    from .vae_training import VAEError, distributed_context, train

    rank, world = distributed_context()
    # Every rank reads the same file, so all skip the same finished runs; only rank 0 writes.
    store = ResultStore(out, name, config=store_config, fresh=fresh)
    if world > 1:
        torch.distributed.barrier()
    ckdir = check_out_dir(Path(out) / "checkpoints")
    steps_of = lambda spec: spec.epochs * ((spec.train_size or train_images.shape[0]) // spec.batch_size)  # noqa
    bar = _Progress(sum(steps_of(r["spec"]) for r in runs), no_progress or rank != 0, name)
    try:
        for run in runs:
            key, spec = run["key"], run["spec"]
            if key in store:
                bar.skip(steps_of(spec))
                continue
            spec.shards = world
            bar.label(f"{name} {key}")
            ck = ckdir / (key.replace("/", "_") + ".pt")
            est = make_estimator(spec) if make_estimator is not None else None
            try:
                result = train(spec, train_images, test_images, checkpoint=ck, checkpoint_every=checkpoint_every,
                               estimator_object=est, on_step=lambda s, v: bar.step(v))
            except VAEError as exc:
                raise BenchmarkError(f"{key}: {exc}") from None
            value = {"train_neg_elbo": result.train_neg_elbo, "test_neg_elbo": result.test_neg_elbo,
                     "seconds_per_epoch": result.seconds_per_epoch, "history": result.history,
                     "world_size": world}
            if rank == 0:
                store.put(key, value)
                if ck.exists():
                    ck.unlink()
            else:
                store.results[key] = value
    finally:
        bar.close()
    return store


def summarise(store: ResultStore, groups: Sequence[str], estimators: Sequence[str], seeds: Sequence[int],
              paper: Optional[Dict[str, Dict[str, Any]]] = None) -> List[Dict[str, Any]]:
    """One row per (group, estimator): means and stds over seeds, time per epoch relative to ST
    (``st`` of the same group; absent when ST was not run)."""
    rows = []
    for g in groups:
        st_times = [store[f"{g}/st/seed{s}"]["seconds_per_epoch"] for s in seeds if f"{g}/st/seed{s}" in store]
        st_time = mean_std(st_times)[0] if st_times else None
        for e in estimators:
            res = [store[f"{g}/{e}/seed{s}"] for s in seeds if f"{g}/{e}/seed{s}" in store]
            if not res:
                continue
            tr = mean_std([r["train_neg_elbo"] for r in res])
            te = mean_std([r["test_neg_elbo"] for r in res])
            sec = mean_std([r["seconds_per_epoch"] for r in res])[0]
            p = (paper or {}).get(e, {}).get(g)
            rows.append({"group": g, "estimator": e, "seeds": len(res), "train": tr, "test": te,
                         "seconds_per_epoch": sec, "time_vs_st": sec / st_time if st_time else None,
                         "paper_train": p})
    return rows


def print_table(rows: List[Dict[str, Any]], group_label: str, *,
                paper_label: Optional[str] = "paper train (Table 2)") -> str:
    from .vae_training import DISPLAY_NAMES

    def pm(ms):
        return f"{ms[0]:.2f} ± {ms[1]:.2f}"

    table = [[r["group"], DISPLAY_NAMES.get(r["estimator"], r["estimator"]), r["seeds"], pm(r["train"]),
              pm(r["test"]), f"{r['seconds_per_epoch']:.2f}",
              f"{r['time_vs_st']:.2f}" if r["time_vs_st"] is not None else "n/a",
              pm(r["paper_train"]) if r["paper_train"] else "n/a"] for r in rows]
    headers = [group_label, "estimator", "seeds", "train -ELBO", "test -ELBO", "s/epoch", "time/ST", paper_label]
    if paper_label is None:
        table, headers = [t[:-1] for t in table], headers[:-1]
    text = format_table(table, headers)
    print(text)
    return text


def plot_curves(store: ResultStore, groups: Sequence[str], estimators: Sequence[str], seeds: Sequence[int],
                path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from .vae_training import DISPLAY_NAMES

    fig, axes = plt.subplots(2, len(groups), figsize=(4.5 * len(groups), 6.5), squeeze=False)
    for j, g in enumerate(groups):
        for e in estimators:
            hs = [store[f"{g}/{e}/seed{s}"]["history"] for s in seeds if f"{g}/{e}/seed{s}" in store]
            if not hs:
                continue
            n = min(len(h) for h in hs)
            ep = [h["epoch"] for h in hs[0][:n]]
            for i, field in enumerate(("train_neg_elbo", "test_neg_elbo")):
                ys = np.array([[h[field] for h in run[:n]] for run in hs])
                axes[i, j].plot(ep, ys.mean(0), marker="o", ms=3, label=DISPLAY_NAMES.get(e, e))
        axes[0, j].set_title(f"{title} {g}")
        axes[0, j].set_ylabel("train -ELBO")
        axes[1, j].set_ylabel("test -ELBO")
        axes[1, j].set_xlabel("epoch")
        axes[0, j].legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------


def run(args) -> int:
    from .. import registry
    from .vae_training import CATEGORICAL_CONFIGS, PAPER_TABLE2, RunSpec, distributed_context

    preset = FULL if args.full else SHORT
    configs = args.configs or preset["configs"] or list(CATEGORICAL_CONFIGS)
    bad = [c for c in configs if c not in CATEGORICAL_CONFIGS]
    if bad:
        raise BenchmarkError(f"--configs: unknown {bad}; known: {', '.join(CATEGORICAL_CONFIGS)}")
    estimators = registry.resolve_names(args.estimators, default=DEFAULT_ESTIMATORS)
    for e in estimators:
        if "categorical" not in registry.get(e).variables:
            raise BenchmarkError(f"--estimators: {e!r} does not support categorical variables")
    seeds = args.seeds if args.seeds is not None else preset["seeds"]
    epochs, train_size, train_images, test_images = check_training_options(args, preset)

    runs = []
    for c in configs:
        cfg = CATEGORICAL_CONFIGS[c]
        for e in estimators:
            for s in seeds:
                spec = RunSpec(model="categorical", latents=cfg["latents"], categories=cfg["categories"],
                               estimator=e, tau=args.tau or cfg["tau"], lr=args.lr or cfg["lr"],
                               optimizer=args.optimizer or cfg["optimizer"], epochs=epochs,
                               train_size=train_size, test_size=args.test_size, seed=s, dtype=args.dtype)
                runs.append({"key": f"{c}/{e}/seed{s}", "spec": spec})
    store_config = {"epochs": epochs, "train_size": train_size, "test_size": args.test_size, "lr": args.lr,
                    "tau": args.tau, "optimizer": args.optimizer, "dtype": args.dtype, "batch_size": 100}
    store = run_grid(name="vae", out=args.out, fresh=args.fresh, runs=runs, store_config=store_config,
                     train_images=train_images, test_images=test_images, no_progress=args.no_progress,
                     checkpoint_every=args.checkpoint_every)
    rank, _ = distributed_context()
    if rank != 0:
        return 0
    rows = summarise(store, configs, estimators, seeds, paper=PAPER_TABLE2)
    text = print_table(rows, "CxL")
    if not PAPER_TABLE2:
        print("paper column: the paper's Table 2 values are not bundled (see quasigrad.bench.paper.PAPER_TABLE2)")
    store.save(summary=rows, table=text)
    plot_curves(store, configs, estimators, seeds, Path(args.out) / "vae.png", "categorical VAE")
    print(f"results: {store.path}  curves: {Path(args.out) / 'vae.png'}")
    return 0
