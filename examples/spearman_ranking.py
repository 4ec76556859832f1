"""Learning to rank with a differentiable Spearman correlation built on ``soft_rank``.

    python examples/spearman_ranking.py                  # 20 items per list, 2000 steps
    python examples/spearman_ranking.py --strength 0.1 --items 50
    python examples/spearman_ranking.py --tiny           # a few seconds (QUASIGRAD_EXAMPLE_TINY=1 too)

Spearman's ρ is the Pearson correlation of the ranks; with the predicted scores' ranks replaced
by ``quasigrad.sort.soft_rank`` (Blondel et al. 2020) it is differentiable, and ``1 − ρ`` is the
loss. The target ranks are hard (they are data). A small network scores each item of a list
from its features.

The task is synthetic and says so: each list holds ``--items`` items with 10 features; an
item's relevance is a fixed non-linear function of its features plus noise, reported on each
list's own scale (the exponential of the relevance times a random factor per list), so what
carries over from list to list is the order, not the values. Printed: the mean Spearman ρ
(with hard ranks) of held-out lists before and after training, for the soft-rank loss and, as a
reference, for training by mean squared error on the relevance values.
"""

import argparse
import os
import time

import torch
from torch import nn

from quasigrad.sort import soft_rank


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--items", type=int, default=20, help="items per list")
    p.add_argument("--lists", type=int, default=32, help="lists per batch")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--strength", type=float, default=1.0, help="soft_rank's regularization_strength")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="intra-op threads (small networks run best on one)")
    p.add_argument("--tiny", action="store_true", default=os.environ.get("QUASIGRAD_EXAMPLE_TINY") == "1",
                   help="a run of a few seconds")
    args = p.parse_args()
    if args.tiny:
        args.steps = 60
    return args


def ranks(x):
    """Hard ranks 1..n along the last dimension (ascending, as soft_rank's default)."""
    return x.argsort(-1).argsort(-1).to(x.dtype) + 1


def pearson(a, b):
    a = a - a.mean(-1, keepdim=True)
    b = b - b.mean(-1, keepdim=True)
    return (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1)).clamp_min(1e-12)


def spearman(pred, target, strength=None):
    """Spearman's ρ per list; with ``strength`` the predicted ranks are soft (differentiable)."""
    pred_ranks = ranks(pred) if strength is None else soft_rank(pred, regularization_strength=strength)
    return pearson(pred_ranks, ranks(target))


class Task:
    """Relevance = sin(x·u) + (x·v)² / 4 + noise for 10 features per item, reported as
    c·exp(2·relevance) with c = exp(N(0, 1)) drawn per list (the same order, another scale)."""

    def __init__(self, generator):
        self.u, self.v = torch.randn(2, 10, generator=generator) / 10 ** 0.5

    def lists(self, count, items, generator):
        x = torch.randn(count, items, 10, generator=generator)
        relevance = torch.sin(x @ self.u) + (x @ self.v) ** 2 / 4 + 0.1 * torch.randn(count, items, generator=generator)
        scale = torch.exp(torch.randn(count, 1, generator=generator))
        return x, scale * torch.exp(2 * relevance)


def scorer():
    return nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 1), nn.Flatten(-2))


def train(model, task, args, loss_name, generator):
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    for _ in range(args.steps):
        x, relevance = task.lists(args.lists, args.items, generator)
        scores = model(x)
        if loss_name == "soft-spearman":
            loss = 1 - spearman(scores, relevance, args.strength).mean()
        else:
            loss = (scores - relevance).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    task = Task(torch.Generator().manual_seed(args.seed))
    x_test, rel_test = task.lists(500, args.items, torch.Generator().manual_seed(args.seed + 1))
    print(f"{args.items} items per list, {args.steps} steps of {args.lists} lists; Spearman rho on 500 held-out lists")
    untrained = scorer()
    with torch.no_grad():
        print(f"  untrained scorer           rho {spearman(untrained(x_test), rel_test).mean().item():+.3f}")
    for loss_name in ("soft-spearman", "mse"):
        start = time.perf_counter()
        model = train(scorer(), task, args, loss_name, torch.Generator().manual_seed(args.seed + 2))
        with torch.no_grad():
            rho = spearman(model(x_test), rel_test).mean().item()
        label = f"1 - soft Spearman (eps {args.strength})" if loss_name == "soft-spearman" else "mean squared error"
        print(f"  trained on {label:<30} rho {rho:+.3f}   ({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
