"""A mixture-of-experts layer with hard top-1 and top-k routing, its router trained through the
discrete choice with straight-through and ReinMax gradients.

    python examples/mixture_of_experts.py                 # 4 experts, top-1 and top-2, st and reinmax
    python examples/mixture_of_experts.py --experts 8 --k 1 2 3 --steps 3000
    python examples/mixture_of_experts.py --tiny          # a few seconds (QUASIGRAD_EXAMPLE_TINY=1 too)

Routing: the router's logits go through ``quasigrad.nn.CategoricalSample``, which in training
draws one expert per pick with the estimator's gradient and in evaluation takes the argmax with a
straight-through gradient. Top-k routing picks k distinct experts one after the other, masking
the ones already taken with ``-inf`` (masked categories are never drawn and get no gradient);
the layer's output is the mean of the chosen experts' outputs. (Every expert is evaluated here
for clarity; a large model would gather only the rows routed to each expert.)

The task is synthetic and says so: inputs ``x ~ N(0, I)`` in 8 dimensions; a hidden teacher
assigns each input to one of ``--experts`` regions (the argmax of ``x·R``) and the target is that
region's own linear function of ``x``; the experts are linear (``--hidden`` gives them a hidden
layer), so one expert alone cannot fit it and the routing has to be learned. Printed: the test
mean squared error in evaluation mode (hard routing) for each estimator and k, how the test
inputs spread over the experts, and, as references, one expert for everything and routing by the
teacher's regions.
"""

import argparse
import os
import time

import torch
from torch import nn

import quasigrad


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--experts", type=int, default=4)
    p.add_argument("--k", type=int, nargs="+", default=[1, 2], help="experts chosen per input (default 1 2)")
    p.add_argument("--estimators", nargs="+", default=["st", "reinmax"])
    p.add_argument("--tau", type=float, default=1.0, help="the estimators' temperature")
    p.add_argument("--hidden", type=int, default=0, help="hidden units per expert (0: linear experts)")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="intra-op threads (small layers run best on one)")
    p.add_argument("--tiny", action="store_true", default=os.environ.get("QUASIGRAD_EXAMPLE_TINY") == "1",
                   help="a run of a few seconds")
    args = p.parse_args()
    if args.tiny:
        args.steps, args.batch_size = 60, 64
    return args


class HardRoutedMoE(nn.Module):
    """``y = mean over the k chosen experts e of expert_e(x)``, the choice made by a router."""

    def __init__(self, dim, experts, k, estimator, tau, hidden=0):
        super().__init__()
        if not 1 <= k <= experts:
            raise ValueError(f"k must be between 1 and the number of experts ({experts}), got {k}")
        self.k = k
        self.router = nn.Linear(dim, experts)
        self.pick = quasigrad.nn.CategoricalSample(estimator, tau=tau)
        self.experts = nn.ModuleList(
            nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, 1)) if hidden else nn.Linear(dim, 1)
            for _ in range(experts))

    def route(self, x):
        """A k-hot gate: k picks without replacement, each a one-hot with the estimator's gradient."""
        logits = self.router(x)
        gate = torch.zeros_like(logits)
        for _ in range(self.k):
            choice = self.pick(logits)
            gate = gate + choice
            logits = logits.masked_fill(choice.detach().bool(), float("-inf"))
        return gate

    def forward(self, x):
        gate = self.route(x)                                                  # (B, E)
        outputs = torch.cat([expert(x) for expert in self.experts], dim=-1)  # (B, E)
        return (gate * outputs).sum(-1) / self.k


class Teacher:
    """The synthetic task: region = argmax(x·R), target = a_region · x + noise."""

    def __init__(self, dim, regions, generator):
        self.R = torch.randn(dim, regions, generator=generator)
        self.A = torch.randn(regions, dim, generator=generator)

    def sample(self, n, generator):
        x = torch.randn(n, self.R.shape[0], generator=generator)
        region = (x @ self.R).argmax(-1)
        y = (self.A[region] * x).sum(-1) + 0.05 * torch.randn(n, generator=generator)
        return x, y, region


def train(model, teacher, args, generator):
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    model.train()
    for _ in range(args.steps):
        x, y, _ = teacher.sample(args.batch_size, generator)
        loss = (model(x) - y).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


@torch.no_grad()
def evaluate(model, x, y):
    model.eval()
    mse = (model(x) - y).pow(2).mean().item()
    load = model.route(x).mean(0)
    return mse, load


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    teacher = Teacher(8, args.experts, gen)
    x_test, y_test, region = teacher.sample(4000, torch.Generator().manual_seed(args.seed + 1))
    print(f"{args.experts} experts, {args.steps} steps of {args.batch_size}; "
          f"test MSE in evaluation mode (hard routing)")
    print(f"  reference: predicting the mean  MSE {y_test.var().item():.4f}")
    for estimator in args.estimators:
        for k in args.k:
            start = time.perf_counter()
            model = train(HardRoutedMoE(8, args.experts, k, estimator, args.tau, args.hidden), teacher, args,
                          torch.Generator().manual_seed(args.seed + 2))
            mse, load = evaluate(model, x_test, y_test)
            shares = " ".join(f"{v:.2f}" for v in load.tolist())
            print(f"  {estimator:>8}  top-{k}: MSE {mse:.4f}   expert load {shares}   "
                  f"({time.perf_counter() - start:.1f} s)")
    single = train(HardRoutedMoE(8, 1, 1, "st", 1.0, args.hidden), teacher, args,
                   torch.Generator().manual_seed(args.seed + 2))
    print(f"  reference: one expert for every input  MSE {evaluate(single, x_test, y_test)[0]:.4f}")
    oracle = (teacher.A[region] * x_test).sum(-1)
    print(f"  reference: the teacher's own regions   MSE {(oracle - y_test).pow(2).mean().item():.4f} (noise floor)")


if __name__ == "__main__":
    main()
