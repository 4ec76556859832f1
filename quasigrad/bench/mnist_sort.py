"""`quasigrad bench mnist-sort`: the large-MNIST sorting task of Grover et al. (2019).

A sequence holds n four-digit numbers, each an image of four MNIST digits side by side
(28 × 112 pixels, value 0..9999). A CNN scores each image; the relaxed permutation matrix P̂ of
the n scores ([`quasigrad.sort.neural_sort`][quasigrad.sort.neural_sort] or [`quasigrad.sort.soft_sort_permutation`][quasigrad.sort.soft_sort_permutation],
descending) is compared with the true permutation matrix P of the numbers by the row-wise
cross-entropy `−Σ_ij P_ij log P̂_ij`. Reported on sequences built from the MNIST *test* images:

* exact-permutation accuracy: the argsort of the scores equals the true order;
* element-wise accuracy: the fraction of positions that hold the right number.

Short preset (default, minutes on a small CPU): n ∈ {3, 5}, a small CNN (8/16 channels),
`--steps 300`, `--batch-size 20`, Adam 1e-3, 1 seed, 1000 test sequences. It is a smoke-scale run: its
accuracies are far below the paper's, which trains a larger CNN much longer.

`--full`: the paper's protocol as described in its appendix, n ∈ {3, 5, 7, 9, 15}, CNN with
32/64 channels and a 64-unit layer, batch 20, Adam 1e-4, 100 000 iterations, 10 000 test
sequences; long runs checkpoint every `--checkpoint-every` steps and resume. `--device cuda`
trains on a GPU.

NeuralSort's accuracies reported in the paper (deterministic NeuralSort, exact permutation:
n = 3: 0.930, n = 5: 0.837) are printed beside ours and labelled as the paper's.
"""

from __future__ import annotations

import time

import torch

from . import runner

DESCRIPTION = "large-MNIST sorting (Grover et al. 2019): NeuralSort / SoftSort, exact and element-wise accuracy"

METHODS = ["neural_sort", "soft_sort_permutation"]
#: Exact-permutation accuracy reported by Grover et al. (2019), deterministic NeuralSort (the paper's numbers).
PAPER_NEURALSORT = {3: 0.930, 5: 0.837}

SHORT = {"sizes": [3, 5], "steps": 300, "batch": 20, "lr": 1e-3, "channels": [8, 16], "hidden": 32,
         "test_sequences": 1000}
FULL = {"sizes": [3, 5, 7, 9, 15], "steps": 100_000, "batch": 20, "lr": 1e-4, "channels": [32, 64], "hidden": 64,
        "test_sequences": 10_000}


class Scorer(torch.nn.Module):
    """CNN from one 28×112 four-digit image to one score (two 5×5 conv + max-pool, two dense)."""

    def __init__(self, channels=(32, 64), hidden=64):
        super().__init__()
        c1, c2 = channels
        self.conv1 = torch.nn.Conv2d(1, c1, 5, padding=2)
        self.conv2 = torch.nn.Conv2d(c1, c2, 5, padding=2)
        self.fc1 = torch.nn.Linear(c2 * 7 * 28, hidden)
        self.fc2 = torch.nn.Linear(hidden, 1)

    def forward(self, x):                                       # x: (M, 28, 112)
        h = torch.nn.functional.max_pool2d(torch.relu(self.conv1(x.unsqueeze(1))), 2)
        h = torch.nn.functional.max_pool2d(torch.relu(self.conv2(h)), 2)
        return self.fc2(torch.relu(self.fc1(h.flatten(1)))).squeeze(-1)


def make_sequences(images, labels, count, n, generator):
    """`count` sequences of `n` four-digit numbers: images (count, n, 28, 112) in [0, 1] and
    values (count, n) in 0..9999, digits drawn uniformly from `images`."""
    idx = torch.randint(0, len(labels), (count, n, 4), generator=generator)
    digits = images[idx].float().div_(255)                       # (count, n, 4, 28, 28)
    pictures = digits.permute(0, 1, 3, 2, 4).reshape(count, n, 28, 112)
    values = (labels[idx].long() * torch.tensor([1000, 100, 10, 1])).sum(-1)
    return pictures, values


def _relaxation(method):
    from .. import sort as qs

    return {"neural_sort": qs.neural_sort, "soft_sort_permutation": qs.soft_sort_permutation}[method]


def accuracies(scores, values):
    """(exact-permutation accuracy, element-wise accuracy) of `scores` against `values` (count, n)."""
    pred = scores.argsort(dim=-1, descending=True, stable=True)
    true = values.argsort(dim=-1, descending=True, stable=True)
    same = pred == true
    return float(same.all(-1).float().mean()), float(same.float().mean())


def _evaluate(model, pictures, values, chunk=200):
    model.eval()
    device = next(model.parameters()).device
    with torch.no_grad():
        scores = torch.cat([model(p.to(device).reshape(-1, 28, 112)).reshape(p.shape[:2]).cpu()
                            for p in pictures.split(chunk)])
    model.train()
    return accuracies(scores, values)


def history_ok(value) -> bool:
    """Whether `value` is an accuracy history as `train_one` writes it, in a checkpoint or a
    result store: a list of `[step, exact, elementwise]` rows, the step an integer and both
    accuracies floats in [0, 1]."""
    return isinstance(value, list) and all(
        isinstance(row, list) and len(row) == 3 and isinstance(row[0], int) and not isinstance(row[0], bool)
        and all(isinstance(a, float) and 0.0 <= a <= 1.0 for a in row[1:]) for row in value)


def _history(value, where) -> list:
    """A checkpoint's accuracy history, checked (`history_ok`)."""
    if not history_ok(value):
        raise runner.BenchmarkError(f"{where}: 'history' must be a list of [step, exact, elementwise] rows")
    return [list(row) for row in value]


def train_one(method, n, seed, cfg, mnist, test, ckpt_path, checkpoint_every, ctx=None, device="cpu"):
    """Train one scorer with `method` on sequences of `n` and return its test accuracies, with
    their history (`[step, exact, elementwise]` at every `checkpoint_every` steps and at the
    end, so that a run shows whether its accuracy has stopped rising); checkpoints to
    `ckpt_path` every `checkpoint_every` steps and resumes from it."""
    torch.manual_seed(seed)
    model = Scorer(cfg["channels"], cfg["hidden"]).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"])
    gen = torch.Generator().manual_seed(1000 + seed)
    step, elapsed, history = 0, 0.0, []
    if ckpt_path.exists():
        state = runner.load_checkpoint(ckpt_path, required=("model", "opt", "gen", "step", "elapsed"),
                                       map_location="cpu")
        with runner.restoring_checkpoint(ckpt_path):
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["opt"])
            gen.set_state(state["gen"])
            step, elapsed = state["step"], state["elapsed"]
            history = _history(state.get("history", []), ckpt_path)
    relax = _relaxation(method)
    tiny = torch.finfo(torch.float32).tiny
    start = time.time()
    for step in range(step, cfg["steps"]):
        pictures, values = make_sequences(mnist.train_images, mnist.train_labels, cfg["batch"], n, gen)
        pictures, values = pictures.to(device), values.to(device)
        scores = model(pictures.reshape(-1, 28, 112)).reshape(cfg["batch"], n)
        p_hat = relax(scores, tau=cfg["tau"], descending=True)
        p_true = torch.nn.functional.one_hot(values.argsort(dim=-1, descending=True, stable=True), n).float()
        loss = -(p_true * torch.log(p_hat.clamp_min(tiny))).sum(-1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if (step + 1) % checkpoint_every == 0 and step + 1 < cfg["steps"]:
            history.append([step + 1, *_evaluate(model, *test)])   # no random numbers: training is unchanged
            runner.save_checkpoint({"model": model.state_dict(), "opt": opt.state_dict(), "gen": gen.get_state(),
                                    "step": step + 1, "elapsed": elapsed + time.time() - start,
                                    "history": history}, ckpt_path)
        if ctx is not None:
            ctx.step()
    exact, elementwise = _evaluate(model, *test)
    return {"exact": exact, "elementwise": elementwise, "final_loss": float(loss.detach()),
            "train_seconds": elapsed + time.time() - start, "history": history + [[cfg["steps"], exact, elementwise]]}


class MnistSort(runner.Benchmark):
    name = "mnist-sort"
    description = DESCRIPTION
    seeds = [0]
    full = "the paper's protocol (n = 3..15, 100k steps; long)"
    device = threads = checkpoints = True
    default_threads = 1
    result_fields = ("exact", "elementwise")

    @classmethod
    def add_arguments(cls, parser):
        parser.add_argument("--methods", nargs="+", default=METHODS, help=f"subset of {METHODS}")
        parser.add_argument("--sizes", type=int, nargs="+", default=None, help="sequence lengths n")
        parser.add_argument("--steps", type=int, default=None, help="training steps")
        parser.add_argument("--batch-size", type=int, default=None, help="sequences per step")
        parser.add_argument("--lr", type=float, default=None, help="Adam learning rate")
        parser.add_argument("--tau", type=float, default=1.0, help="temperature of the relaxation")
        parser.add_argument("--test-sequences", type=int, default=None, help="test sequences for the accuracies")
        parser.add_argument("--checkpoint-every", type=int, default=1000, help="steps between checkpoints")
        parser.add_argument("--data", default=None,
                            help="MNIST directory (default: $QUASIGRAD_MNIST, the user cache, then ../shared/data/mnist)")

    def plan(self, args, ctx):
        cfg = dict(FULL if args.full else SHORT)
        for key, arg in (("sizes", "sizes"), ("steps", "steps"), ("batch", "batch_size"), ("lr", "lr"),
                         ("test_sequences", "test_sequences")):
            if getattr(args, arg) is not None:
                cfg[key] = getattr(args, arg)
        cfg["tau"] = args.tau
        bad = [m for m in args.methods if m not in METHODS]
        if bad:
            raise runner.BenchmarkError(f"unknown --methods {bad}; choose from {METHODS}")
        if min(cfg["sizes"]) < 2 or cfg["steps"] < 1 or cfg["batch"] < 1 or cfg["test_sequences"] < 1:
            raise runner.BenchmarkError("--sizes need n >= 2; --steps, --batch-size and --test-sequences need "
                                        "positive integers")
        runner.check_positive(lr=cfg["lr"], tau=cfg["tau"], checkpoint_every=args.checkpoint_every)
        self.cfg, self.methods = cfg, args.methods
        self.mnist = runner.load_mnist_arg(args.data)
        config = {k: cfg[k] for k in ("sizes", "steps", "batch", "lr", "channels", "hidden", "test_sequences", "tau")}
        units = [runner.Unit(f"{method}/n={n}/seed={seed}", (method, n, seed), steps=cfg["steps"])
                 for n in cfg["sizes"] for method in args.methods for seed in ctx.seeds]
        self.tests = {}
        return runner.Plan(config, units)

    def run_unit(self, unit, ctx):
        method, n, seed = unit.data
        if n not in self.tests:
            self.tests[n] = make_sequences(self.mnist.test_images, self.mnist.test_labels, self.cfg["test_sequences"],
                                           n, torch.Generator().manual_seed(12345 + n))
        return train_one(method, n, seed, self.cfg, self.mnist, self.tests[n], ctx.checkpoint(unit),
                         ctx.args.checkpoint_every, ctx, ctx.device)

    def report(self, store, ctx):
        cfg = self.cfg
        rows, summary = [], {}
        for n in cfg["sizes"]:
            for method in self.methods:
                runs = [store[f"{method}/n={n}/seed={s}"] for s in ctx.seeds if f"{method}/n={n}/seed={s}" in store]
                if not runs:
                    continue
                ex = [r["exact"] for r in runs]
                el = [r["elementwise"] for r in runs]
                summary[f"{method}/n={n}"] = {"exact": runner.mean_std(ex), "elementwise": runner.mean_std(el)}
                paper = PAPER_NEURALSORT.get(n) if method == "neural_sort" else None
                rows.append([method, n, len(runs), runner.mean_pm(ex, ".3f"), runner.mean_pm(el, ".3f"),
                             f"{paper:.3f} (paper)" if paper is not None else "-"])
        print(runner.format_table(rows, ["method", "n", "seeds", "exact acc (ours)", "element acc (ours)",
                                         "NeuralSort exact acc, Grover et al. 2019"]))
        print(f"ours: {cfg['steps']} steps, batch {cfg['batch']}, CNN channels {cfg['channels']}, "
              f"{cfg['test_sequences']} test sequences; paper: its full protocol")
        keys = [f"{m}/n={n}/seed={s}" for n in cfg["sizes"] for m in self.methods for s in ctx.seeds]
        for key in [k for k in keys if k in store and len(store[k].get("history", [])) > 1]:
            print(f"{key}: exact accuracy by step: "
                  + ", ".join(f"{step}: {exact:.3f}" for step, exact, _ in store[key]["history"]))
        _plot(summary, cfg["sizes"], self.methods, ctx,
              title=f"ours: {cfg['steps']} steps, CNN {cfg['channels']}; paper: its full protocol")
        return {"summary": summary, "paper_neuralsort_exact": PAPER_NEURALSORT}


BENCHMARK = MnistSort


def _plot(summary, sizes, methods, ctx, title=""):
    plt = ctx.pyplot()
    if plt is None:
        return
    import matplotlib.ticker

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for method in methods:
        pts = [(n, summary[f"{method}/n={n}"]["exact"]) for n in sizes if f"{method}/n={n}" in summary]
        if pts:
            ax.errorbar([p[0] for p in pts], [p[1][0] for p in pts], yerr=[p[1][1] for p in pts], marker="o",
                        label=f"{method} (ours)")
    paper = [(n, a) for n, a in PAPER_NEURALSORT.items()]
    ax.plot([p[0] for p in paper], [p[1] for p in paper], "k--", marker="x", label="NeuralSort (paper's)")
    ax.set_xlabel("n (numbers per sequence)")
    ax.set_ylabel("exact-permutation accuracy")
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(True, alpha=0.3)
    # n counts numbers: ticks at the sizes themselves (a handful), else at integers only
    ticks = sorted(set(sizes) | set(PAPER_NEURALSORT))
    ax.xaxis.set_major_locator(matplotlib.ticker.FixedLocator(ticks) if len(ticks) <= 10
                               else matplotlib.ticker.MaxNLocator(integer=True))
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.xaxis.set_major_formatter(matplotlib.ticker.StrMethodFormatter("{x:.0f}"))
    ctx.figure(fig, "mnist-sort.png")
