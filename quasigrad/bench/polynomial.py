r"""Polynomial programming, after Liu et al. 2023 ("Bridging Discrete and Backpropagation:
Straight-Through and Beyond", the ReinMax paper, section 6.1).

θ ∈ R^{128×2} starts at U(−0.01, 0.01); each of the 128 variables is a two-way categorical
`D ~ Categorical(softmax θ_i)` and `x_i = D_{i,0}` (the first-category indicator). The loss

$$ L(x) = \frac{1}{128} \sum_i |x_i - c|^p, \qquad c = 0.45, $$

is minimised over θ with Adam (lr 1e-3), a batch of 64 draws per step, τ = 1. Its minimum in
expectation is `c^p` (every `x_i = 0`), and the exact expected loss at θ factorises over
the variables: `(1/128) Σ_i [π_{i0} (1−c_i)^p + (1 − π_{i0}) c_i^p]`.

`--target spread`: the paper's second target, a different `c_i = (i − 0.5)/L` for each of the
`L` variables; its minimum is `(1/L) Σ_i min(c_i, 1 − c_i)^p` (each `x_i` on the nearer side).

Reported per estimator and `p`: the final training loss (the batch loss averaged over the
last `min(100, steps)` steps; mean ± std over seeds) and the exact expected loss at the
final θ (mean ± std over seeds), and curves of the exact expected loss.

Default: a short preset for a 2-core machine (400 steps, seeds 0–2). `--full`: the paper's
setting (8,000 steps, seeds 0–9). One unit of work is one estimator and one seed; the values
of `p` are run side by side in one tensor (Adam is elementwise, so this equals separate
runs with the same draws). A unit checkpoints every `--checkpoint-every` steps, and a
finished unit is stored at once: an interrupted run started again skips finished units and
continues an unfinished one from its checkpoint, giving the same numbers.
"""

from __future__ import annotations

import math
from typing import Any, Dict

import torch

from . import runner

DESCRIPTION = "ReinMax paper's polynomial programming: Σ|D−c|^p/128 over 128 binary categoricals"

# The paper's straight-through family and relaxations, and one score-function estimator (RLOO,
# the best of reinforce / rloo / rebar / rao_blackwell in a 300-step trial on this problem;
# double_cv, a control variate, was as good).
DEFAULT_ESTIMATORS = ["st", "stgs", "gumbel_rao", "gst", "reinmax", "zgr", "rloo"]
FULL: Dict[str, Any] = {"steps": 8000, "seeds": list(range(10))}
QUICK: Dict[str, Any] = {"steps": 400, "seeds": [0, 1, 2]}


def config_of(args) -> dict:
    steps = args.steps if args.steps is not None else (FULL if args.full else QUICK)["steps"]
    target = getattr(args, "target", "constant")
    if target == "spread" and args.c is not None:
        raise runner.BenchmarkError("--c sets one target for every variable; --target spread sets c_i = (i - 0.5)/L")
    config = {"steps": steps, "p": [float(p) for p in args.p], "c": 0.45 if args.c is None else args.c,
              "num_vars": args.num_vars, "batch": args.batch_size, "lr": args.lr, "tau": args.tau,
              "init": "U(-0.01, 0.01)", "optimizer": "Adam"}
    if target == "spread":                  # only then: stores of the constant target keep their config
        config.update(c="(i - 0.5)/L", target="spread")
    return config


def target_of(config: dict) -> torch.Tensor:
    """The targets `c_i` of a run's configuration, shape `(num_vars,)`, float64: `c` for every
    variable, or `(i − 0.5)/L` for `i = 1..L` with `target: spread`."""
    n = config["num_vars"]
    if config.get("target") == "spread":
        return (torch.arange(1, n + 1, dtype=torch.float64) - 0.5) / n
    return torch.full((n,), float(config["c"]), dtype=torch.float64)


def optimum(config: dict, p: float) -> float:
    """The minimum of the expected loss over θ for exponent `p`: `(1/L) Σ_i min(c_i, 1 − c_i)^p`."""
    c = target_of(config)
    return float(torch.minimum(c, 1 - c).pow(p).mean())


def _check(args, config):
    for key, value in (("steps", config["steps"]), ("num_vars", config["num_vars"]), ("batch_size", config["batch"]),
                       ("checkpoint_every", args.checkpoint_every)):
        if not isinstance(value, int) or value < 1:
            raise runner.BenchmarkError(f"--{key.replace('_', '-')} must be a positive integer, got {value!r}")
    if not all(p > 0 and math.isfinite(p) for p in config["p"]):
        raise runner.BenchmarkError(f"--p must be positive, got {config['p']}")
    runner.check_positive(lr=args.lr, tau=args.tau)


def exact_loss(theta: torch.Tensor, p: torch.Tensor, c) -> torch.Tensor:
    """Exact expected loss per row of `theta` (shape `(P, V, 2)`, one row per exponent); `c` a
    number or one target per variable, shape `(V,)`."""
    pi0 = torch.softmax(theta, -1)[..., 0]
    p = p.view(-1, 1)
    return (pi0 * (1 - c) ** p + (1 - pi0) * c ** p).mean(-1)


def run_unit(spec, seed: int, config: dict, *, checkpoint=None, checkpoint_every: int = 1000, ctx=None,
             device="cpu") -> dict:
    """Train one estimator with one seed for every `p` at once; returns the unit's results.

    `checkpoint` is a path (or `None`): the state is saved there every
    `checkpoint_every` steps and loaded from there if present. `ctx` (the runner's context)
    is told of every step.
    """
    device = torch.device(device)
    ps = torch.tensor(config["p"], dtype=torch.float64)
    n_p, n_var, batch, steps = len(config["p"]), config["num_vars"], config["batch"], config["steps"]
    c = target_of(config).to(device) if config.get("target") == "spread" else config["c"]
    gen = torch.Generator().manual_seed(seed)
    theta = torch.empty(n_var, 2).uniform_(-0.01, 0.01, generator=gen)
    theta = theta.unsqueeze(0).repeat(n_p, 1, 1).to(device).requires_grad_(True)
    # On the CPU the draws continue the initialisation's generator; elsewhere they need one on the device.
    draws = gen if device.type == "cpu" else torch.Generator(device=device).manual_seed(seed)
    opt = torch.optim.Adam([theta], lr=config["lr"])
    losses = torch.zeros(steps, n_p, dtype=torch.float64)
    log_every = max(1, steps // 100)
    curve_steps, curve = [0], [exact_loss(theta.detach().double(), ps.to(device), c).tolist()]
    start = 0
    if checkpoint is not None and checkpoint.exists():
        state = runner.load_checkpoint(checkpoint, required=("theta", "opt", "gen", "losses", "curve_steps", "curve",
                                                             "step"))
        with runner.restoring_checkpoint(checkpoint):
            with torch.no_grad():
                theta.copy_(state["theta"])
            opt.load_state_dict(state["opt"])
            draws.set_state(state["gen"])
            losses, curve_steps, curve, start = state["losses"], state["curve_steps"], state["curve"], state["step"]
    p_col = ps.to(device=device, dtype=theta.dtype).view(n_p, 1, 1)
    c_f = c.to(theta.dtype) if isinstance(c, torch.Tensor) else c
    tau = None if "tau" in spec.kwargs else config["tau"]

    def f(d):  # d: (P, B, V, 2) → (P, B)
        return (d[..., 0] - c_f).abs().pow(p_col).sum(-1) / n_var

    for step in range(start, steps):
        logits = theta.unsqueeze(1).expand(n_p, batch, n_var, 2)
        per_example = spec.surrogate(f, logits, tau=tau, dim=-1, generator=draws)   # (P, B)
        loss_p = per_example.mean(1)
        opt.zero_grad(set_to_none=True)
        loss_p.sum().backward()
        opt.step()
        losses[step] = loss_p.detach().double().cpu()
        if (step + 1) % log_every == 0 or step + 1 == steps:
            curve_steps.append(step + 1)
            curve.append(exact_loss(theta.detach().double(), ps.to(device), c).tolist())
        if checkpoint is not None and (step + 1) % checkpoint_every == 0 and step + 1 < steps:
            runner.save_checkpoint({"theta": theta.detach().cpu().clone(), "opt": opt.state_dict(),
                                    "gen": draws.get_state(), "losses": losses, "curve_steps": curve_steps,
                                    "curve": curve, "step": step + 1}, checkpoint)
        if ctx is not None:
            ctx.step()
    tail = losses[-min(100, steps):]
    final = exact_loss(theta.detach().double(), ps.to(device), c)
    return {"final_train_loss": tail.mean(0).tolist(), "exact_loss": final.tolist(),
            "curve_steps": curve_steps, "curve": [list(r) for r in curve]}


class Polynomial(runner.Benchmark):
    name = "polynomial"
    description = DESCRIPTION
    seeds, full_seeds = QUICK["seeds"], FULL["seeds"]
    full = "the paper's setting: 8,000 steps, seeds 0-9"
    estimators = f"estimators, NAME or NAME:KEY=VALUE,... (default: {' '.join(DEFAULT_ESTIMATORS)})"
    device = threads = checkpoints = True
    result_fields = ("final_train_loss", "exact_loss", "curve_steps", "curve")

    @classmethod
    def add_arguments(cls, parser) -> None:
        parser.add_argument("--steps", type=int, default=None, help="Adam steps (default 400; --full 8000)")
        parser.add_argument("--p", type=float, nargs="+", default=[1.5, 2.0, 3.0],
                            help="exponents p (default 1.5 2 3)")
        parser.add_argument("--c", type=float, default=None, help="target c for every variable (default 0.45)")
        parser.add_argument("--target", choices=["constant", "spread"], default="constant",
                            help="constant: c for every variable (default); spread: c_i = (i - 0.5)/L")
        parser.add_argument("--num-vars", type=int, default=128, help="number of variables (default 128)")
        parser.add_argument("--batch-size", type=int, default=64, help="draws per step (default 64)")
        parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
        parser.add_argument("--tau", type=float, default=1.0,
                            help="temperature for estimators that have one (default 1)")
        parser.add_argument("--checkpoint-every", type=int, default=1000,
                            help="steps between checkpoints (default 1000)")

    def plan(self, args, ctx) -> runner.Plan:
        self.config = config = config_of(args)
        _check(args, config)
        self.specs = runner.estimator_specs(args.estimators, default=DEFAULT_ESTIMATORS)
        units = [runner.Unit(f"{s.label}/seed={seed}", (s, seed), steps=config["steps"])
                 for s in self.specs for seed in ctx.seeds]
        return runner.Plan(config, units)

    def run_unit(self, unit, ctx) -> dict:
        spec, seed = unit.data
        return run_unit(spec, seed, self.config, checkpoint=ctx.checkpoint(unit),
                        checkpoint_every=ctx.args.checkpoint_every, ctx=ctx, device=ctx.device)

    def report(self, store, ctx) -> dict:
        config, seeds = self.config, ctx.seeds
        rows, summary = [], {}
        for i, p in enumerate(config["p"]):
            for spec in self.specs:
                res = [store[f"{spec.label}/seed={seed}"] for seed in seeds]
                tr = [r["final_train_loss"][i] for r in res]
                ex = [r["exact_loss"][i] for r in res]
                summary[f"p={p:g}/{spec.label}"] = {"final_train_loss": runner.mean_std(tr),
                                                    "exact_loss": runner.mean_std(ex), "seeds": seeds}
                rows.append((f"{p:g}", spec.label, runner.mean_pm(tr), runner.mean_pm(ex), f"{optimum(config, p):.4f}"))
        table = runner.format_table(rows, ["p", "estimator", "final train loss", "exact E[loss] at final θ",
                                           "optimum"])
        print(f"polynomial programming, target c = {config['c']}: {config['steps']} steps, batch {config['batch']}, Adam lr {config['lr']}, "
              f"tau {config['tau']}, seeds {seeds} (mean ± std over seeds)")
        print(table)
        _plot(store, self.specs, seeds, config, ctx)
        return {"summary": summary, "table": table}


BENCHMARK = Polynomial


def _plot(store, specs, seeds, config, ctx) -> None:
    plt = ctx.pyplot()
    if plt is None:
        return
    import numpy as np

    n_p = len(config["p"])
    fig, axes = plt.subplots(1, n_p, figsize=(4.2 * n_p, 3.4), squeeze=False)
    for i, p in enumerate(config["p"]):
        ax = axes[0, i]
        styles = ["-", "--", ":", "-."]
        for j, spec in enumerate(specs):
            res = [store[f"{spec.label}/seed={seed}"] for seed in seeds]
            x = np.array(res[0]["curve_steps"])
            # Distance to the optimum c^p on a log scale: estimators that stall stay flat.
            y = np.array([[row[i] for row in r["curve"]] for r in res]) - optimum(config, p)
            m, s = y.mean(0), y.std(0)
            ax.plot(x, m, label=spec.label, lw=1.5, ls=styles[j % len(styles)])
            ax.fill_between(x, np.maximum(m - s, 1e-12), m + s, alpha=0.15)
        ax.set_yscale("log")
        ax.set_title(f"p = {p:g}  (optimum {optimum(config, p):.4f})")
        ax.set_xlabel("step")
        if i == 0:
            ax.set_ylabel("exact expected loss − optimum")
    axes[0, -1].legend(fontsize=8)
    fig.suptitle(f"Polynomial programming (128 vars, batch {config['batch']}, Adam {config['lr']}, "
                 f"seeds {', '.join(map(str, seeds))}, mean ± std)", fontsize=10, y=1.05)
    ctx.figure(fig, "polynomial.png")
