"""``quasigrad bench mnist-sort``: the large-MNIST sorting task of Grover et al. (2019).

A sequence holds n four-digit numbers, each an image of four MNIST digits side by side
(28 × 112 pixels, value 0..9999). A CNN scores each image; the relaxed permutation matrix P̂ of
the n scores (:func:`quasigrad.sort.neural_sort` or :func:`quasigrad.sort.soft_sort_permutation`,
descending) is compared with the true permutation matrix P of the numbers by the row-wise
cross-entropy ``−Σ_ij P_ij log P̂_ij``. Reported on sequences built from the MNIST *test* images:

* exact-permutation accuracy: the argsort of the scores equals the true order;
* element-wise accuracy: the fraction of positions that hold the right number.

Short preset (default, minutes on a small CPU): n ∈ {3, 5}, a small CNN (8/16 channels),
``--steps 300``, batch 20, Adam 1e-3, 1 seed, 1000 test sequences. It is a smoke-scale run: its
accuracies are far below the paper's, which trains a larger CNN much longer.

``--full``: the paper's protocol as described in its appendix, n ∈ {3, 5, 7, 9, 15}, CNN with
32/64 channels and a 64-unit layer, batch 20, Adam 1e-4, 100 000 iterations, 10 000 test
sequences; long runs checkpoint every ``--checkpoint-every`` steps and resume.

NeuralSort's accuracies reported in the paper (deterministic NeuralSort, exact permutation:
n = 3: 0.930, n = 5: 0.837) are printed beside ours and labelled as the paper's.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from .runner import (BenchmarkError, ResultStore, add_common_arguments, atomic_torch_save, format_table, progress,
                     save_figure)
from .runner import load_mnist_arg

DESCRIPTION = "large-MNIST sorting (Grover et al. 2019): NeuralSort / SoftSort, exact and element-wise accuracy"

METHODS = ["neural_sort", "soft_sort_permutation"]
#: Exact-permutation accuracy reported by Grover et al. (2019), deterministic NeuralSort (the paper's numbers).
PAPER_NEURALSORT = {3: 0.930, 5: 0.837}

SHORT = {"sizes": [3, 5], "steps": 300, "batch": 20, "lr": 1e-3, "channels": [8, 16], "hidden": 32,
         "test_sequences": 1000}
FULL = {"sizes": [3, 5, 7, 9, 15], "steps": 100_000, "batch": 20, "lr": 1e-4, "channels": [32, 64], "hidden": 64,
        "test_sequences": 10_000}


def add_arguments(parser):
    add_common_arguments(parser, default_out="results/mnist-sort", seeds=[0], estimators=False)
    parser.add_argument("--full", action="store_true", help="the paper's protocol (n = 3..15, 100k steps; long)")
    parser.add_argument("--methods", nargs="+", default=METHODS, help=f"subset of {METHODS}")
    parser.add_argument("--sizes", type=int, nargs="+", default=None, help="sequence lengths n")
    parser.add_argument("--steps", type=int, default=None, help="training steps")
    parser.add_argument("--batch", type=int, default=None, help="sequences per step")
    parser.add_argument("--lr", type=float, default=None, help="Adam learning rate")
    parser.add_argument("--tau", type=float, default=1.0, help="temperature of the relaxation")
    parser.add_argument("--test-sequences", type=int, default=None, help="test sequences for the accuracies")
    parser.add_argument("--checkpoint-every", type=int, default=1000, help="steps between checkpoints")
    parser.add_argument("--data", default=None,
                        help="MNIST directory (default: $QUASIGRAD_MNIST, the user cache, then ../shared/data/mnist)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: a shared machine)")
    parser.add_argument("--device", default="cpu", help="torch device for training (e.g. cuda for --full)")


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
    """``count`` sequences of ``n`` four-digit numbers: images (count, n, 28, 112) in [0, 1] and
    values (count, n) in 0..9999, digits drawn uniformly from ``images``."""
    idx = torch.randint(0, len(labels), (count, n, 4), generator=generator)
    digits = images[idx].float().div_(255)                       # (count, n, 4, 28, 28)
    pictures = digits.permute(0, 1, 3, 2, 4).reshape(count, n, 28, 112)
    values = (labels[idx].long() * torch.tensor([1000, 100, 10, 1])).sum(-1)
    return pictures, values


def _relaxation(method):
    from .. import sort as qs

    return {"neural_sort": qs.neural_sort, "soft_sort_permutation": qs.soft_sort_permutation}[method]


def accuracies(scores, values):
    """(exact-permutation accuracy, element-wise accuracy) of ``scores`` against ``values`` (count, n)."""
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


def train_one(method, n, seed, cfg, mnist, test, ckpt_path, checkpoint_every, show_progress, device="cpu"):
    torch.manual_seed(seed)
    model = Scorer(cfg["channels"], cfg["hidden"]).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"])
    gen = torch.Generator().manual_seed(1000 + seed)
    step, elapsed = 0, 0.0
    if ckpt_path.exists():
        state = torch.load(ckpt_path, weights_only=False, map_location="cpu")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        gen.set_state(state["gen"])
        step, elapsed = state["step"], state["elapsed"]
    relax = _relaxation(method)
    tiny = torch.finfo(torch.float32).tiny
    start = time.time()
    bar = progress(range(step, cfg["steps"]), total=cfg["steps"] - step, desc=f"{method} n={n} seed={seed}",
                   disable=not show_progress)
    for step in bar:
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
            atomic_torch_save({"model": model.state_dict(), "opt": opt.state_dict(), "gen": gen.get_state(),
                               "step": step + 1, "elapsed": elapsed + time.time() - start}, ckpt_path)
    exact, elementwise = _evaluate(model, *test)
    if ckpt_path.exists():
        ckpt_path.unlink()
    return {"exact": exact, "elementwise": elementwise, "final_loss": float(loss.detach()),
            "train_seconds": elapsed + time.time() - start}


def run(args) -> int:
    cfg = dict(FULL if args.full else SHORT)
    for key in ("sizes", "steps", "batch", "lr", "test_sequences"):
        if getattr(args, key) is not None:
            cfg[key] = getattr(args, key)
    cfg["tau"] = args.tau
    bad = [m for m in args.methods if m not in METHODS]
    if bad:
        raise BenchmarkError(f"unknown --methods {bad}; choose from {METHODS}")
    if min(cfg["sizes"]) < 2 or cfg["steps"] < 1 or cfg["batch"] < 1 or cfg["test_sequences"] < 1:
        raise BenchmarkError("--sizes need n >= 2; --steps, --batch and --test-sequences need positive integers")
    if cfg["lr"] <= 0 or cfg["tau"] <= 0 or args.checkpoint_every < 1 or args.threads < 1:
        raise BenchmarkError("--lr, --tau, --checkpoint-every and --threads need positive values")
    mnist = load_mnist_arg(args.data)
    torch.set_num_threads(args.threads)
    try:
        device = torch.device(args.device)
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as exc:
        raise BenchmarkError(f"--device {args.device!r} is not usable here: {exc}") from None

    config = {k: cfg[k] for k in ("sizes", "steps", "batch", "lr", "channels", "hidden", "test_sequences", "tau")}
    store = ResultStore(args.out, "mnist-sort", config, fresh=args.fresh)
    ckpt_dir = Path(args.out) / "checkpoints"
    ckpt_dir.mkdir(exist_ok=True)
    if args.fresh:
        for old in ckpt_dir.glob("*.pt"):
            old.unlink()
    for n in cfg["sizes"]:
        test = make_sequences(mnist.test_images, mnist.test_labels, cfg["test_sequences"], n,
                              torch.Generator().manual_seed(12345 + n))
        for method in args.methods:
            for seed in args.seeds:
                key = f"{method}/n={n}/seed={seed}"
                if key in store:
                    continue
                ckpt = ckpt_dir / f"{method}-n{n}-seed{seed}.pt"
                store.put(key, train_one(method, n, seed, cfg, mnist, test, ckpt, args.checkpoint_every,
                                         not args.no_progress, device))

    from .runner import mean_std

    rows, summary = [], {}
    for n in cfg["sizes"]:
        for method in args.methods:
            runs = [store[f"{method}/n={n}/seed={s}"] for s in args.seeds if f"{method}/n={n}/seed={s}" in store]
            if not runs:
                continue
            ex = mean_std([r["exact"] for r in runs])
            el = mean_std([r["elementwise"] for r in runs])
            summary[f"{method}/n={n}"] = {"exact": ex, "elementwise": el}
            paper = PAPER_NEURALSORT.get(n) if method == "neural_sort" else None
            rows.append([method, n, len(runs), f"{ex[0]:.3f} ± {ex[1]:.3f}", f"{el[0]:.3f} ± {el[1]:.3f}",
                         f"{paper:.3f} (paper)" if paper is not None else "-"])
    print(format_table(rows, ["method", "n", "seeds", "exact acc (ours)", "element acc (ours)",
                              "NeuralSort exact acc, Grover et al. 2019"]))
    print(f"ours: {cfg['steps']} steps, batch {cfg['batch']}, CNN channels {cfg['channels']}, "
          f"{cfg['test_sequences']} test sequences; paper: its full protocol")
    store.save(summary=summary, paper_neuralsort_exact=PAPER_NEURALSORT)
    _plot(summary, cfg["sizes"], args.methods, args.out,
          title=f"ours: {cfg['steps']} steps, CNN {cfg['channels']}; paper: its full protocol")
    print(f"results: {store.path}")
    return 0


def _plot(summary, sizes, methods, out, title=""):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot")
        return
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
    save_figure(fig, Path(out) / "mnist-sort.png")
    plt.close(fig)
