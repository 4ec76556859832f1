"""`quasigrad bench vae`: the categorical MNIST VAE of the ReinMax paper (Table 2).

For each configuration C×L (categories × latents), estimator and seed, trains
[`quasigrad.models.vae.CategoricalVAE`][quasigrad.models.vae.CategoricalVAE] with the paper's learning rate, temperature and optimiser
for that configuration (those searched for ReinMax; the same for every estimator unless
`--lr/--tau/--optimizer` say otherwise) and reports the training −ELBO (single sample,
averaged over the last epoch) and the test −ELBO (single sample, fixed seed), mean ± std over
seeds, the time per epoch relative to ST in the same run, and the paper's Table 2 values where
known, labelled as the paper's.

Short preset (default): 5 epochs on the first 10,000 training images, seeds 0 1, configurations
8x4 and 10x30. `--full`: 160 epochs on all 60,000 images, seeds 0–9, all six configurations.
`--preset 20-epochs`: all six configurations for 20 epochs (1/8 of the paper's training) on all
60,000 images, seed 0.

Every run checkpoints to `--out/checkpoints` and resumes after an interruption; finished runs
are kept in `--out/vae.json`. `--device cuda` trains on a GPU. Runs under ``torchrun
--nproc_per_node N -m quasigrad bench vae`` with DistributedDataParallel (gloo on CPU): each
process takes 1/N of every global batch.
"""

from __future__ import annotations

import argparse
from typing import Any, Dict, List, Optional, Sequence

from . import runner
from .paper import by_estimator, display_name

DESCRIPTION = "categorical MNIST VAE of the ReinMax paper (Table 2): train/test -ELBO per estimator"

DEFAULT_ESTIMATORS = ["st", "stgs", "gumbel_rao", "gst", "reinmax", "zgr"]
SHORT: Dict[str, Any] = dict(epochs=5, train_size=10000, seeds=[0, 1], configs=["8x4", "10x30"])
FULL: Dict[str, Any] = dict(epochs=160, train_size=None, seeds=list(range(10)), configs=None)
#: Named presets besides the short default and `--full` (which is the preset "full").
PRESETS: Dict[str, Dict[str, Any]] = {
    "20-epochs": dict(epochs=20, train_size=None, seeds=[0], configs=None,
                      help="all six configurations, 20 epochs (1/8 of the paper's 160) on all 60,000 images, seed 0"),
    "full": dict(FULL, help="the same as --full"),
}
RESULT_FIELDS = ("train_neg_elbo", "test_neg_elbo", "seconds_per_epoch", "history")


# ---------------------------------------------------------------------------------------------
# Shared by the two VAE benchmarks


class VAEBenchmark(runner.Benchmark):
    """What the categorical and the binary VAE benchmarks share: the training options, the data,
    one unit = one [`quasigrad.bench.vae_training.train`][quasigrad.bench.vae_training.train] run (checkpointed as
    `out/checkpoints/<key with / as _>.pt`), and distributed runs under `torchrun`."""

    estimators = "registered estimator names"
    device = threads = checkpoints = True
    result_fields = RESULT_FIELDS
    preset: Dict[str, Any] = SHORT

    presets: Dict[str, Dict[str, Any]] = {}

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        if cls.presets:
            parser.add_argument("--preset", choices=sorted(cls.presets), default=None,
                                help="a named setting: " + "; ".join(f"{k}: {v['help']}" for k, v in
                                                                     sorted(cls.presets.items())))
        parser.add_argument("--epochs", type=int, default=None, help="override the preset's number of epochs")
        parser.add_argument("--train-size", type=int, default=None, help="use the first N training images")
        parser.add_argument("--test-size", type=int, default=None, help="use the first N test images (default: all)")
        parser.add_argument("--batch-size", type=int, default=100, help="images per step (default 100, the papers')")
        parser.add_argument("--lr", type=float, default=None, help="learning rate for every run (default: the paper's)")
        parser.add_argument("--tau", type=float, default=None, help="temperature for every run (default: the paper's)")
        parser.add_argument("--optimizer", choices=["adam", "radam"], default=None,
                            help="optimiser for every run (default: the paper's)")
        parser.add_argument("--data", default=None,
                            help="MNIST directory (default: $QUASIGRAD_MNIST, the user cache, then ../shared/data/mnist)")
        parser.add_argument("--checkpoint-every", type=int, default=200, help="steps between checkpoints")
        parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")

    def choose_preset(self, args: argparse.Namespace, ctx: runner.Context, full: Dict[str, Any],
                      short: Dict[str, Any]) -> Dict[str, Any]:
        """The preset the arguments name (`--preset`, `--full`, else `short`); a named preset's
        seeds become the default seeds."""
        name = getattr(args, "preset", None)
        if name is None:
            return full if args.full else short
        if args.full and name != "full":
            raise runner.BenchmarkError(f"--full and --preset {name} name two different settings; give one")
        preset = self.presets[name]
        if args.seeds is None:
            ctx.seeds = list(preset["seeds"])
        return preset

    def training_options(self, args: argparse.Namespace) -> Dict[str, Any]:
        """Check the training options and load MNIST; returns the store's config (the preset's
        values where an option is not given; its fields are those of stores written before)."""
        preset = self.preset
        self.epochs = args.epochs if args.epochs is not None else preset["epochs"]
        self.train_size = args.train_size if args.train_size is not None else preset["train_size"]
        for flag, v in (("--epochs", self.epochs), ("--train-size", self.train_size), ("--test-size", args.test_size),
                        ("--batch-size", args.batch_size), ("--checkpoint-every", args.checkpoint_every)):
            if v is not None and v < 1:
                raise runner.BenchmarkError(f"{flag} must be >= 1, got {v}")
        runner.check_positive(lr=args.lr, tau=args.tau)
        self.train_images, self.test_images = load_data(args.data)
        n = self.train_images.shape[0]
        if self.train_size is not None and self.train_size > n:
            raise runner.BenchmarkError(f"--train-size {self.train_size} exceeds the {n} training images")
        if (self.train_size or n) < args.batch_size:
            raise runner.BenchmarkError(f"--batch-size {args.batch_size} exceeds the {self.train_size or n} "
                                        f"training images")
        return {"epochs": self.epochs, "train_size": self.train_size, "test_size": args.test_size, "lr": args.lr,
                "tau": args.tau, "optimizer": args.optimizer, "dtype": args.dtype, "batch_size": args.batch_size}

    def unit(self, key: str, spec: Any) -> runner.Unit:
        """The unit that trains `spec` (its steps are the progress bar's share)."""
        steps = spec.epochs * ((spec.train_size or self.train_images.shape[0]) // spec.batch_size)
        return runner.Unit(key, spec, steps=steps)

    def make_estimator(self, spec: Any) -> Any:
        """A stateful estimator object for `spec` (`None`: the registered name is used)."""
        return None

    def distributed(self):
        from .vae_training import distributed_context

        return distributed_context()

    def synchronize(self) -> None:
        # Every rank has read the store, so all skip the same finished runs; only rank 0 writes.
        if self.distributed()[1] > 1:
            import torch.distributed

            torch.distributed.barrier()

    def checkpoint_name(self, unit: runner.Unit, tag: str) -> str:
        # The checkpoint holds its run's spec and is refused by any other run: no tag needed.
        return unit.key.replace("/", "_") + ".pt"

    def run_unit(self, unit: runner.Unit, ctx: runner.Context) -> Dict[str, Any]:
        import os

        import torch

        from .vae_training import VAEError, train

        rank, world = self.distributed()
        spec = unit.data
        spec.shards = world
        device = ctx.device
        assert device is not None  # the benchmark takes --device
        if device.type == "cuda" and world > 1 and device.index is None:
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))

        def on_step(step: int, value: float) -> None:
            ctx.step(f"-ELBO {value:.2f}" if step % 10 == 0 else None)

        try:
            result = train(spec, self.train_images, self.test_images, checkpoint=ctx.checkpoint(unit),
                           checkpoint_every=ctx.args.checkpoint_every, device=device,
                           estimator_object=self.make_estimator(spec), on_step=on_step)
        except VAEError as exc:
            raise runner.BenchmarkError(f"{unit.key}: {exc}") from None
        return {"train_neg_elbo": result.train_neg_elbo, "test_neg_elbo": result.test_neg_elbo,
                "seconds_per_epoch": result.seconds_per_epoch, "history": result.history, "world_size": world}


def load_data(path: Optional[str]):
    """MNIST as flat `(N, 784)` grey levels; a clear BenchmarkError when missing."""
    mnist = runner.load_mnist_arg(path)
    return mnist.flat(True), mnist.flat(False)


def summarise(store: Any, groups: Sequence[str], estimators: Sequence[str], seeds: Sequence[int],
              paper: Optional[Dict[str, Dict[str, Any]]] = None) -> List[Dict[str, Any]]:
    """One row per (group, estimator): means and stds over seeds, time per epoch relative to ST
    (`st` of the same group; absent when ST was not run)."""
    rows = []
    for g in groups:
        st_times = [store[f"{g}/st/seed{s}"]["seconds_per_epoch"] for s in seeds if f"{g}/st/seed{s}" in store]
        st_time = runner.mean_std(st_times)[0] if st_times else None
        for e in estimators:
            res = [store[f"{g}/{e}/seed{s}"] for s in seeds if f"{g}/{e}/seed{s}" in store]
            if not res:
                continue
            tr = runner.mean_std([r["train_neg_elbo"] for r in res])
            te = runner.mean_std([r["test_neg_elbo"] for r in res])
            sec = runner.mean_std([r["seconds_per_epoch"] for r in res])[0]
            p = (by_estimator(paper or {}, e) or {}).get(g)
            rows.append({"group": g, "estimator": e, "seeds": len(res), "train": tr, "test": te,
                         "seconds_per_epoch": sec, "time_vs_st": sec / st_time if st_time else None,
                         "paper_train": p})
    return rows


def print_table(rows: List[Dict[str, Any]], group_label: str, *,
                paper_label: Optional[str] = "paper train (Table 2)") -> str:
    """Print (and return) the table of `summarise`'s rows."""
    def pm(ms, n):
        return f"{ms[0]:.2f} (n = 1)" if n == 1 else f"{ms[0]:.2f} ± {ms[1]:.2f}"

    table = [[r["group"], display_name(r["estimator"]), r["seeds"], pm(r["train"], r["seeds"]),
              pm(r["test"], r["seeds"]), f"{r['seconds_per_epoch']:.2f}",
              f"{r['time_vs_st']:.2f}" if r["time_vs_st"] is not None else "n/a",
              f"{r['paper_train'][0]:.2f} ± {r['paper_train'][1]:.2f}" if r["paper_train"] else "n/a"]
             for r in rows]
    headers = [group_label, "estimator", "seeds", "train -ELBO", "test -ELBO", "s/epoch", "time/ST"]
    if paper_label is None:
        table = [t[:-1] for t in table]
    else:
        headers.append(paper_label)
    text = runner.format_table(table, headers)
    print(text)
    return text


def plot_curves(store: Any, groups: Sequence[str], estimators: Sequence[str], seeds: Sequence[int],
                ctx: runner.Context, filename: str, title: str) -> None:
    """Train and test −ELBO per epoch, one panel per group, averaged over seeds."""
    plt = ctx.pyplot()
    if plt is None:
        return
    import matplotlib.ticker
    import numpy as np

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
                axes[i, j].plot(ep, ys.mean(0), marker="o", ms=3, label=display_name(e))
        axes[0, j].set_title(f"{title} {g}")
        axes[0, j].set_ylabel("train -ELBO")
        axes[1, j].set_ylabel("test -ELBO")
        axes[1, j].set_xlabel("epoch")
        for ax in axes[:, j]:
            ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))   # epochs: whole numbers
        axes[0, j].legend(fontsize=7)
    fig.tight_layout()
    ctx.figure(fig, filename)


# ---------------------------------------------------------------------------------------------


class CategoricalVAEBenchmark(VAEBenchmark):
    name = "vae"
    description = DESCRIPTION
    seeds, full_seeds = SHORT["seeds"], FULL["seeds"]
    full = "the paper's full setting: 160 epochs, all data, seeds 0-9, six configurations (days on a CPU)"
    presets = PRESETS
    estimators = f"registered estimator names (default: {' '.join(DEFAULT_ESTIMATORS)})"

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        from .paper import CATEGORICAL_CONFIGS

        parser.add_argument("--configs", nargs="+", default=None, metavar="CxL",
                            help=f"configurations among {', '.join(CATEGORICAL_CONFIGS)} "
                                 f"(default: {' '.join(SHORT['configs'])}; with --full: all)")
        super().add_arguments(parser)

    def plan(self, args, ctx) -> runner.Plan:
        from .. import registry
        from .paper import CATEGORICAL_CONFIGS
        from .vae_training import RunSpec

        self.preset = self.choose_preset(args, ctx, FULL, SHORT)
        self.configs = configs = args.configs or self.preset["configs"] or list(CATEGORICAL_CONFIGS)
        bad = [c for c in configs if c not in CATEGORICAL_CONFIGS]
        if bad:
            raise runner.BenchmarkError(f"--configs: unknown {bad}; known: {', '.join(CATEGORICAL_CONFIGS)}")
        # Names as typed: they are the result keys and the labels.
        self.names = estimators = registry.resolve_names(args.estimators, default=DEFAULT_ESTIMATORS)
        for e in estimators:
            if "categorical" not in registry.get(e).variables:
                raise runner.BenchmarkError(f"--estimators: {e!r} does not support categorical variables")
        config = self.training_options(args)
        units = []
        for c in configs:
            cfg = CATEGORICAL_CONFIGS[c]
            for e in estimators:
                for s in ctx.seeds:
                    spec = RunSpec(model="categorical", latents=cfg["latents"], categories=cfg["categories"],
                                   estimator=e, tau=args.tau or cfg["tau"], lr=args.lr or cfg["lr"],
                                   optimizer=args.optimizer or cfg["optimizer"], epochs=self.epochs,
                                   batch_size=args.batch_size, train_size=self.train_size, test_size=args.test_size,
                                   seed=s, dtype=args.dtype)
                    units.append(self.unit(f"{c}/{e}/seed{s}", spec))
        return runner.Plan(config, units)

    def report(self, store, ctx):
        from .paper import PAPER_TABLE2

        rows = summarise(store, self.configs, self.names, ctx.seeds, paper=PAPER_TABLE2)
        text = print_table(rows, "CxL")
        if not PAPER_TABLE2:
            print("paper column: the paper's Table 2 values are not bundled (see quasigrad.bench.paper.PAPER_TABLE2)")
        plot_curves(store, self.configs, self.names, ctx.seeds, ctx, "vae.png", "categorical VAE")
        return {"summary": rows, "table": text}


BENCHMARK = CategoricalVAEBenchmark
