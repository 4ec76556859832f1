"""``quasigrad bench em``: a mixture of Bernoullis on binarised MNIST, fitted by EM and by
gradient descent through the discrete assignment (ELBO with an amortised linear posterior)
with ReinMax, straight-through and REINFORCE-leave-one-out: exact log-likelihood against
wall time.

Data: MNIST training images, binarised at grey level 0.5 (deterministic), a fixed random
subset of ``--train`` images for fitting, and ``--test`` test images. Both methods start
from the same initial parameters (:meth:`BernoulliMixture.init_from_data`). The y-axis is
the exact log-likelihood per image (nats; the assignment summed out), never the ELBO; the
x-axis is training time in CPU seconds of this process (``time.process_time``: equal to wall
time for one thread on an idle machine, and not inflated by other users of a shared one),
evaluation excluded. EM uses ``--pseudo-count`` (a Beta/Dirichlet
MAP prior, so that a test pixel never has probability 0); gradient training has no prior.

Preset: 10,000 training images, 2,000 test images, K = 20, 30 s of training per method.
``--full``: 60,000 / 10,000 images, K = 50, 300 s per method.
"""

from __future__ import annotations

import time

import torch

from .runner import (BenchmarkError, ResultStore, add_common_arguments, format_table, progress,
                     save_figure)
from .runner import load_mnist_arg

DESCRIPTION = "EM vs gradient training (ReinMax, ST, RLOO) of a Bernoulli mixture on binarised MNIST"

DEFAULT_METHODS = ["em", "reinmax", "st", "rloo"]


def _clock():
    # CPU time of this process: on a shared machine wall time measures the neighbours' load.
    # With --threads 1 it equals wall time on an idle machine.
    return time.process_time()


def add_arguments(parser):
    add_common_arguments(parser, default_out="results/em", seeds=[0])
    parser.add_argument("--data", default=None,
                        help="MNIST directory (default: $QUASIGRAD_MNIST, the user cache, then ../shared/data/mnist)")
    parser.add_argument("--train", type=int, default=None, help="training images (preset 10000, --full 60000)")
    parser.add_argument("--test", type=int, default=None, help="test images (preset 2000, --full 10000)")
    parser.add_argument("--components", type=int, default=None, help="K (preset 20, --full 50)")
    parser.add_argument("--seconds", type=float, default=None, help="training time per method (preset 30, --full 300)")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--rloo-samples", type=int, default=4)
    parser.add_argument("--pseudo-count", type=float, default=0.01)
    parser.add_argument("--eval-every", type=float, default=None,
                        help="seconds of training between evaluations (default: --seconds / 20)")
    parser.add_argument("--full", action="store_true", help="60000 images, K=50, 300 s per method")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")


def _config(args):
    from .. import registry

    methods = args.estimators or DEFAULT_METHODS
    registry.resolve_names([m for m in methods if m != "em"], default=[])
    for m in methods:
        if m != "em" and "categorical" not in registry.get(m).variables:
            raise BenchmarkError(f"estimator {m!r} does not support categorical variables")
    cfg = {
        "methods": methods,
        "train": args.train or (60000 if args.full else 10000),
        "test": args.test or (10000 if args.full else 2000),
        "components": args.components or (50 if args.full else 20),
        "seconds": args.seconds or (300.0 if args.full else 30.0),
        "batch_size": args.batch_size, "lr": args.lr, "rloo_samples": args.rloo_samples,
        "pseudo_count": args.pseudo_count,
    }
    cfg["eval_every"] = args.eval_every or cfg["seconds"] / 20
    if not 1 <= cfg["train"] <= 60000 or not 1 <= cfg["test"] <= 10000:
        raise BenchmarkError("--train must be in [1, 60000] and --test in [1, 10000]")
    if cfg["components"] < 1 or cfg["seconds"] <= 0 or cfg["batch_size"] < 1 or cfg["lr"] <= 0:
        raise BenchmarkError("--components, --seconds, --batch-size and --lr must be positive")
    if cfg["rloo_samples"] < 2:
        raise BenchmarkError(f"--rloo-samples must be at least 2, got {cfg['rloo_samples']}")
    if cfg["pseudo_count"] < 0:
        raise BenchmarkError(f"--pseudo-count must be >= 0, got {cfg['pseudo_count']}")
    return cfg


def _data(args, cfg):
    mnist = load_mnist_arg(args.data)
    g = torch.Generator().manual_seed(0)
    tr = mnist.flat(train=True)
    te = mnist.flat(train=False)
    tr = tr[torch.randperm(tr.shape[0], generator=g)[: cfg["train"]]]
    te = te[torch.randperm(te.shape[0], generator=g)[: cfg["test"]]]
    return (tr > 0.5).float(), (te > 0.5).float()


def _run_one(method, cfg, xtr, xte, seed):
    from .. import em

    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = em.BernoulliMixture(cfg["components"], xtr.shape[1]).init_from_data(
        xtr, generator=torch.Generator().manual_seed(seed))
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
    encoder = torch.nn.Linear(xtr.shape[1], cfg["components"])
    opt = torch.optim.Adam(list(model.parameters()) + list(encoder.parameters()), lr=cfg["lr"])
    ns = cfg["rloo_samples"] if method == "rloo" else None
    n = xtr.shape[0]
    while elapsed < cfg["seconds"]:
        t0 = _clock()
        xb = xtr[torch.randint(n, (cfg["batch_size"],), generator=g)]
        loss = -em.elbo(model, xb, encoder(xb), estimator=method, num_samples=ns, generator=g).mean()
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


def run(args) -> int:
    cfg = _config(args)
    if args.threads is not None:
        if args.threads < 1:
            raise BenchmarkError(f"--threads must be positive, got {args.threads}")
        torch.set_num_threads(args.threads)
    store = ResultStore(args.out, "em", cfg, fresh=args.fresh)
    jobs = [(m, s) for m in cfg["methods"] for s in args.seeds]
    data = None
    for m, s in progress(jobs, desc="em", disable=args.no_progress):
        key = f"{m}/{s}"
        if key in store:
            continue
        if data is None:
            data = _data(args, cfg)
        store.put(key, _run_one(m, cfg, *data, s))
    _report(store, cfg, args)
    return 0


def _report(store, cfg, args):
    from .runner import mean_std

    rows = []
    for m in cfg["methods"]:
        res = [store[f"{m}/{s}"]["curve"] for s in args.seeds if f"{m}/{s}" in store]
        if not res:
            continue
        rows.append((m, mean_std([c[-1]["train_ll"] for c in res])[0], mean_std([c[-1]["test_ll"] for c in res])[0],
                     mean_std([c[-1]["steps"] for c in res])[0], mean_std([c[-1]["seconds"] for c in res])[0]))
    print(f"\nBernoulli mixture, K={cfg['components']}, {cfg['train']} train / {cfg['test']} test images, "
          f"seeds {args.seeds}")
    print(format_table(rows, ["method", "train log p(x) (nats)", "test log p(x)", "steps", "train CPU s"]))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for m in cfg["methods"]:
        key = f"{m}/{args.seeds[0]}"
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
        lo = min(p["test_ll"] for k in store.results.values() for p in k["curve"][1:]) if store.results else None
        if lo is not None:
            ax.set_ylim(bottom=max(lo, -300))
        ax.legend()
    fig.tight_layout()
    save_figure(fig, store.path.with_suffix(".png"))
    plt.close(fig)
    print(f"results: {store.path}  plot: {store.path.with_suffix('.png')}")
