"""`quasigrad bench em`: a mixture of Bernoullis on binarised MNIST, fitted by EM and by
gradient descent through the discrete assignment (ELBO with an amortised linear posterior)
with ReinMax, straight-through and REINFORCE-leave-one-out: exact log-likelihood against
wall time.

Data: MNIST training images, binarised at grey level 0.5 (deterministic), a fixed random
subset of `--train-size` images for fitting, and `--test-size` test images. Both methods start
from the same initial parameters (`BernoulliMixture.init_from_data`). The y-axis is
the exact log-likelihood per image (nats; the assignment summed out), never the ELBO; the
x-axis is training time in CPU seconds of this process (`time.process_time`: equal to wall
time for one thread on an idle machine, and not inflated by other users of a shared one),
evaluation excluded. EM uses `--pseudo-count` (a Beta/Dirichlet
MAP prior, so that a test pixel never has probability 0); gradient training has no prior.
RLOO takes `--samples` samples per gradient estimate.

Preset: 10,000 training images, 2,000 test images, K = 20, 30 s of training per method.
`--full`: 60,000 / 10,000 images, K = 50, 300 s per method.
"""

from __future__ import annotations

import time

import torch

from . import runner

DESCRIPTION = "EM vs gradient training (ReinMax, ST, RLOO) of a Bernoulli mixture on binarised MNIST"

DEFAULT_METHODS = ["em", "reinmax", "st", "rloo"]


def _clock():
    # CPU time of this process: on a shared machine wall time measures the neighbours' load.
    # With --threads 1 it equals wall time on an idle machine.
    return time.process_time()


def _config(args):
    from .. import registry

    methods = args.estimators or DEFAULT_METHODS
    registry.resolve_names([m for m in methods if m != "em"], default=[])
    for m in methods:
        if m != "em" and "categorical" not in registry.get(m).variables:
            raise runner.BenchmarkError(f"--estimators: {m!r} does not support categorical variables")
    dup = sorted({m for m in methods if methods.count(m) > 1})
    if dup:
        raise runner.BenchmarkError(f"--estimators: given twice: {', '.join(dup)}")
    # The stored names (train, test, rloo_samples) are those of the options before they were renamed.
    cfg = {
        "methods": methods,
        "train": args.train_size or (60000 if args.full else 10000),
        "test": args.test_size or (10000 if args.full else 2000),
        "components": args.components or (50 if args.full else 20),
        "seconds": args.seconds or (300.0 if args.full else 30.0),
        "batch_size": args.batch_size, "lr": args.lr, "rloo_samples": args.samples,
        "pseudo_count": args.pseudo_count,
    }
    cfg["eval_every"] = args.eval_every or cfg["seconds"] / 20
    if not 1 <= cfg["train"] <= 60000 or not 1 <= cfg["test"] <= 10000:
        raise runner.BenchmarkError("--train-size must be in [1, 60000] and --test-size in [1, 10000]")
    if cfg["components"] < 1 or cfg["batch_size"] < 1:
        raise runner.BenchmarkError("--components and --batch-size must be positive")
    runner.check_positive(seconds=cfg["seconds"], lr=cfg["lr"], eval_every=cfg["eval_every"])
    if cfg["rloo_samples"] < 2:
        raise runner.BenchmarkError(f"--samples must be at least 2, got {cfg['rloo_samples']}")
    if not cfg["pseudo_count"] >= 0:
        raise runner.BenchmarkError(f"--pseudo-count must be >= 0, got {cfg['pseudo_count']}")
    return cfg


def _data(args, cfg):
    mnist = runner.load_mnist_arg(args.data)
    g = torch.Generator().manual_seed(0)
    tr = mnist.flat(train=True)
    te = mnist.flat(train=False)
    tr = tr[torch.randperm(tr.shape[0], generator=g)[: cfg["train"]]]
    te = te[torch.randperm(te.shape[0], generator=g)[: cfg["test"]]]
    return (tr > 0.5).float(), (te > 0.5).float()


def _run_one(method, cfg, xtr, xte, seed, device="cpu"):
    from .. import em

    device = torch.device(device)
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    # On the CPU the draws share the batches' generator; elsewhere they need one on the device.
    g_draws = g if device.type == "cpu" else torch.Generator(device=device).manual_seed(seed)
    model = em.BernoulliMixture(cfg["components"], xtr.shape[1]).init_from_data(
        xtr, generator=torch.Generator().manual_seed(seed)).to(device)
    xtr, xte = xtr.to(device), xte.to(device)
    curve = []

    def evaluate(seconds, steps):
        with torch.no_grad():
            curve.append({"seconds": seconds, "steps": steps, "train_ll": float(model.log_likelihood(xtr).mean()),
                          "test_ll": float(model.log_likelihood(xte).mean())})

    evaluate(0.0, 0)
    elapsed, steps, next_eval = 0.0, 0, cfg["eval_every"]
    if method == "em":
        while elapsed < cfg["seconds"]:
            t0 = _clock()
            model.em_step(xtr, pseudo_count=cfg["pseudo_count"])
            elapsed += _clock() - t0
            steps += 1
            evaluate(elapsed, steps)              # EM iterations are few: evaluate each one
            if len(curve) > 2 and abs(curve[-1]["train_ll"] - curve[-2]["train_ll"]) < 1e-7:
                break                             # converged
        return {"curve": curve}
    encoder = torch.nn.Linear(xtr.shape[1], cfg["components"]).to(device)
    opt = torch.optim.Adam(list(model.parameters()) + list(encoder.parameters()), lr=cfg["lr"])
    ns = cfg["rloo_samples"] if method == "rloo" else None
    n = xtr.shape[0]
    while elapsed < cfg["seconds"]:
        t0 = _clock()
        xb = xtr[torch.randint(n, (cfg["batch_size"],), generator=g).to(device)]
        loss = -em.elbo(model, xb, encoder(xb), estimator=method, num_samples=ns, generator=g_draws).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        elapsed += _clock() - t0
        steps += 1
        if elapsed >= next_eval:
            evaluate(elapsed, steps)
            next_eval += cfg["eval_every"]
    evaluate(elapsed, steps)
    return {"curve": curve}


class EM(runner.Benchmark):
    name = "em"
    description = DESCRIPTION
    seeds = [0]
    full = "60000 images, K=50, 300 s per method"
    estimators = f"methods: em and estimator names (default: {' '.join(DEFAULT_METHODS)})"
    device = threads = True
    result_fields = ("curve",)

    @classmethod
    def add_arguments(cls, parser):
        parser.add_argument("--data", default=None,
                            help="MNIST directory (default: $QUASIGRAD_MNIST, the user cache, then ../shared/data/mnist)")
        parser.add_argument("--train-size", type=int, default=None, help="training images (preset 10000, --full 60000)")
        parser.add_argument("--test-size", type=int, default=None, help="test images (preset 2000, --full 10000)")
        parser.add_argument("--components", type=int, default=None, help="K (preset 20, --full 50)")
        parser.add_argument("--seconds", type=float, default=None,
                            help="training CPU time per method (preset 30, --full 300)")
        parser.add_argument("--batch-size", type=int, default=100, help="images per gradient step (default 100)")
        parser.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate (default 3e-3)")
        parser.add_argument("--samples", type=int, default=4,
                            help="samples per gradient estimate of the score-function estimator rloo (default 4)")
        parser.add_argument("--pseudo-count", type=float, default=0.01, help="EM's prior pseudo-count (default 0.01)")
        parser.add_argument("--eval-every", type=float, default=None,
                            help="seconds of training between evaluations (default: --seconds / 20)")

    def plan(self, args, ctx):
        self.cfg = cfg = _config(args)
        units = [runner.Unit(f"{m}/{s}", (m, s)) for m in cfg["methods"] for s in ctx.seeds]
        return runner.Plan(cfg, units)

    def check_result(self, key, value):
        problem = super().check_result(key, value)
        if problem is None and (not isinstance(value["curve"], list) or not value["curve"]):
            return "expected a non-empty 'curve'"
        return problem

    def prepare(self, ctx):
        self.data = _data(ctx.args, self.cfg)

    def run_unit(self, unit, ctx):
        m, s = unit.data
        return _run_one(m, self.cfg, *self.data, s, device=ctx.device)

    def report(self, store, ctx):
        _report(store, self.cfg, ctx)
        return None


BENCHMARK = EM


def _report(store, cfg, ctx):
    mean_std = runner.mean_std
    rows = []
    for m in cfg["methods"]:
        res = [store[f"{m}/{s}"]["curve"] for s in ctx.seeds if f"{m}/{s}" in store]
        if not res:
            continue
        rows.append((m, runner.mean_pm([c[-1]["train_ll"] for c in res], ".2f"),
                     runner.mean_pm([c[-1]["test_ll"] for c in res], ".2f"),
                     round(mean_std([c[-1]["steps"] for c in res])[0]), mean_std([c[-1]["seconds"] for c in res])[0]))
    print(f"\nBernoulli mixture, K={cfg['components']}, {cfg['train']} train / {cfg['test']} test images, "
          f"seeds {ctx.seeds}")
    print(runner.format_table(rows, ["method", "train log p(x) (nats)", "test log p(x)", "steps", "train CPU s"]))
    plt = ctx.pyplot()
    if plt is None:
        return
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for m in cfg["methods"]:
        key = f"{m}/{ctx.seeds[0]}"
        if key not in store:
            continue
        c = store[key]["curve"]
        t = [max(p["seconds"], 1e-3) for p in c]
        for ax, field in zip(axes, ("train_ll", "test_ll")):
            ax.plot(t, [p[field] for p in c], marker="." if m == "em" else None, label=m)
    for ax, title in zip(axes, ("train", "test")):
        ax.set_xscale("log")
        ax.set_xlabel("training CPU seconds (evaluation excluded)")
        ax.set_ylabel("log p(x) per image (nats)")
        ax.set_title(f"{title}, K={cfg['components']}")
        lo = min((p["test_ll"] for k in store.results.values() for p in k["curve"][1:]), default=None)
        if lo is not None:
            ax.set_ylim(bottom=max(lo, -300))
        ax.legend()
    fig.tight_layout()
    ctx.figure(fig, "em.png")
