"""`quasigrad bench binary-vae`: the Bernoulli VAE of DisARM / RODEO (ReinMax paper, Table 6).

200 binary latents, encoder and decoder with two hidden layers of 200 LeakyReLU units, learned
prior logits, dynamically binarised MNIST (a fresh binarisation of every batch). Each step
evaluates the decoder `K` times per image (`--samples`, 2 or 3 in the papers): the
pathwise estimators (ReinMax, ST, STGS, ZGR) average the `K` losses; the score-function
estimators (REINFORCE leave-one-out, DisARM, RELAX, Double CV, ARMS, RODEO, from
[`quasigrad.objective`][quasigrad.objective]) use them as their method prescribes. Reports the training −ELBO
(averaged over the last epoch), the test −ELBO (single sample, fixed binarisation) and the
time per epoch relative to ST.

Settings follow the ReinMax repository (mnist_vae/reinmax_2_200_rodeo.sh): RAdam, learning
rate 3e-4, τ = 1.1, batch 100, the first 50,000 training images. Short preset (default):
2 epochs on the first 10,000 images, K = 2, seeds 0 1. `--full`: 50,000 images and
1,000,000 updates (2,000 epochs; the repository's `--max-updates`), seeds 0–9.
`--preset 100k-steps`: 50,000 images and 100,000 updates (a tenth of the repository's), K = 2
and 3, seed 0. The paper's Table 6 (MNIST) is printed beside the training −ELBO.

At the paper's learning rate the first several hundred steps sit on the "mean image" plateau
(−ELBO ≈ 204) for every estimator, so the short preset checks the pipeline rather than ranks
the estimators; `--lr 1e-3 --optimizer adam --epochs 10` leaves the plateau in 1,000 steps.
"""

from __future__ import annotations

from typing import Any, Dict

from . import runner
from .vae import VAEBenchmark, plot_curves, print_table, summarise

DESCRIPTION = "binary (Bernoulli) MNIST VAE with 200 latents: pathwise vs score-function estimators"

PATHWISE = ["reinmax", "st", "stgs", "zgr"]
SCORE_FUNCTION = ["rloo", "disarm", "relax", "double_cv", "arms", "rodeo"]
DEFAULT_ESTIMATORS = PATHWISE + SCORE_FUNCTION
SHORT: Dict[str, Any] = dict(epochs=2, train_size=10000, seeds=[0, 1], samples=[2])
FULL: Dict[str, Any] = dict(epochs=2000, train_size=50000, seeds=list(range(10)), samples=[2, 3])
PRESETS: Dict[str, Dict[str, Any]] = {
    "100k-steps": dict(epochs=200, train_size=50000, seeds=[0], samples=[2, 3],
                       help="50,000 images, 100,000 updates (200 epochs; a tenth of the repository's "
                            "1,000,000), K = 2 3, seed 0"),
    "full": dict(FULL, help="the same as --full"),
}
SETTINGS: Dict[str, Any] = dict(lr=3e-4, tau=1.1, optimizer="radam", latents=200)


def _known(name: str) -> bool:
    """Whether `name` (or the older spelling it is) is registered in this checkout."""
    from .. import registry

    try:
        registry.get(name)
    except (KeyError, ValueError):
        return False
    return True


def make_estimator(spec):
    """The estimator object for a stateful estimator (its registry entry's `state` factory,
    e.g. RELAX with the control variate of Grathwohl et al.'s VAE experiments), seeded from the
    run's seed; `None` for the others (the registered name is used)."""
    import torch

    from .. import registry

    factory = registry.get(spec.estimator).state
    if factory is None:
        return None
    torch.manual_seed(spec.seed + 7919)
    return factory(spec.latents)


class BinaryVAEBenchmark(VAEBenchmark):
    name = "binary-vae"
    description = DESCRIPTION
    seeds, full_seeds = SHORT["seeds"], FULL["seeds"]
    full = "the repository's setting: 50,000 images, 1,000,000 updates, K = 2 3, seeds 0-9 (weeks on a CPU)"
    estimators = f"registered estimator names (default: {' '.join(DEFAULT_ESTIMATORS)})"
    presets = PRESETS

    @classmethod
    def add_arguments(cls, parser) -> None:
        parser.add_argument("--samples", type=int, nargs="+", default=None,
                            help="samples (evaluations of f) per gradient estimate, K (default: 2; with --full: 2 3)")
        super().add_arguments(parser)

    def make_estimator(self, spec):
        return make_estimator(spec)

    def plan(self, args, ctx) -> runner.Plan:
        from .. import registry
        from .vae_training import RunSpec, VAEError, objective_samples

        self.preset = self.choose_preset(args, ctx, FULL, SHORT)
        self.names = estimators = registry.resolve_names(
            args.estimators, default=[e for e in DEFAULT_ESTIMATORS if _known(e)])
        for e in estimators:
            if "bernoulli" not in registry.get(e).variables:
                raise runner.BenchmarkError(f"--estimators: {e!r} does not support Bernoulli variables")
        self.missing = [e for e in DEFAULT_ESTIMATORS if args.estimators is None and not _known(e)]
        self.samples = samples = args.samples if args.samples is not None else self.preset["samples"]
        if any(k < 1 for k in samples):
            raise runner.BenchmarkError(f"--samples must be >= 1, got {samples}")
        config = self.training_options(args)
        units, self.skipped = [], []
        for k in samples:
            for e in estimators:
                try:
                    objective_samples(e, k)
                except VAEError as exc:  # e.g. DisARM (pairs) at K = 3
                    self.skipped.append(f"K={k} {e}: {exc}")
                    continue
                for s in ctx.seeds:
                    spec = RunSpec(model="bernoulli", latents=SETTINGS["latents"], estimator=e,
                                   tau=args.tau or SETTINGS["tau"], lr=args.lr or SETTINGS["lr"],
                                   optimizer=args.optimizer or SETTINGS["optimizer"], epochs=self.epochs,
                                   batch_size=args.batch_size, train_size=self.train_size, test_size=args.test_size,
                                   num_samples=k, seed=s, binarize=True, dtype=args.dtype)
                    units.append(self.unit(f"K{k}/{e}/seed{s}", spec))
        return runner.Plan(config, units)

    def report(self, store, ctx):
        groups = [f"K{k}" for k in self.samples]
        from .paper import PAPER_TABLE6

        paper: Dict[str, Dict[str, Any]] = {}
        for k, table in PAPER_TABLE6.items():
            for e, value in table["mnist"].items():
                paper.setdefault(e, {})[f"K{k}"] = value
        rows = summarise(store, groups, self.names, ctx.seeds, paper=paper)
        text = print_table(rows, "K", paper_label="paper train (Table 6, MNIST)")
        for line in self.skipped:
            print(f"skipped {line}")
        if self.missing:
            print(f"not run (not registered in this checkout): {', '.join(self.missing)}")
        plot_curves(store, groups, self.names, ctx.seeds, ctx, "binary-vae.png", "binary VAE")
        return {"summary": rows, "table": text}


BENCHMARK = BinaryVAEBenchmark
