"""`quasigrad bench objective-poly`: bias, variance and time per step of every objective-layer estimator on the polynomial problem
of the ReinMax paper (Liu et al. 2023, Section 6.1), at initialisation.

Problem: θ ∈ R^{128×2}, 128 binary categorical variables, D_i = 1 when variable i takes
category 0 (as in the paper's code), loss f(D) = Σ_i |D_i − c|^p / 128 with c = 0.45, θ drawn
from U(−0.01, 0.01). Because D_i ∈ {0, 1}, E[f] = Σ_i (π_i0 |1 − c|^p + π_i1 |c|^p) / 128 and the
exact gradient is computed in closed form (checked against quasigrad.exact on 8 variables).

For every estimator, `--draws` independent gradient estimates at the same θ are made in one
call (a batch of examples that share θ); we report the squared norm of the exact gradient, the
total variance tr Cov(ĝ), the bias ||E ĝ − ∇|| and its Monte Carlo noise floor √(tr Cov / draws).
`arm` and `disarm` run on the Bernoulli twin a_i = θ_i0 − θ_i1 (the same distribution).
Wall time per step: forward + backward of one call on `--batch-size` examples (the paper's
batch of 64 draws), the minimum over `--timing-repeats` interleaved repeats (medians are stored
too), divided by ST's in the same run, with `--threads` intra-op threads (default 1: the
machine this was measured on is shared, and multi-threaded small ops spin).

    quasigrad bench objective-poly --out results/objective-poly --p 2

Writes `objective-poly.json` and `objective-poly-p<P>.png` in `--out`; resumable (one unit
of work is one estimator at one `p`, or the timing of all of them at one `p`).
"""

from __future__ import annotations

import math
import statistics
import time

import torch

from .. import exact
from .. import objective as O
from . import runner

DESCRIPTION = "bias, variance and time per step of every objective-layer estimator on the polynomial problem"

C_TARGET = 0.45
N_VARS = 128

# (label, estimator name or factory, variable, keyword arguments)
ESTIMATORS = [
    ("reinforce", "reinforce", "categorical", {"num_samples": 1}),
    ("rloo (K=2)", "rloo", "categorical", {"num_samples": 2}),
    ("rao_blackwell (k=4)", "rao_blackwell", "categorical", {"k": 4}),
    ("double_cv (Taylor at mean)", "double_cv", "categorical", {}),
    ("double_cv (Taylor at other)", "double_cv", "categorical", {"expansion": "other"}),
    ("rebar (fixed)", "rebar", "categorical", {}),
    ("relax (untrained)", "relax", "categorical", {}),
    ("relax (CV trained at θ0)", "relax_trained", "categorical", {}),
    ("arm", "arm", "bernoulli", {}),
    ("disarm", "disarm", "bernoulli", {}),
    ("st", "st", "categorical", {}),
    ("stgs", "stgs", "categorical", {}),
    ("gumbel_rao (k=10)", "gumbel_rao", "categorical", {}),
    ("gst", "gst", "categorical", {}),
    ("reinmax", "reinmax", "categorical", {}),
    ("zgr", "zgr", "categorical", {}),
    ("darn", "darn", "categorical", {}),
]
EVALS = {"reinforce": 1, "rloo": 2, "rao_blackwell": 5, "double_cv": 3, "rebar": 3, "relax": 1, "arm": 2,
         "disarm": 2, "relax_trained": 1}


def loss(p):
    def f(d):  # d: (..., 128, 2) one-hot; D_i = d[..., i, 0]
        return (d[..., 0] - C_TARGET).abs().pow(p).sum(-1) / N_VARS

    def f_bern(b):  # b: (..., 128) in {0, 1}, b = D_i
        return (b - C_TARGET).abs().pow(p).sum(-1) / N_VARS

    return f, f_bern


def exact_grad(theta, p):
    th = theta.detach().clone().requires_grad_(True)
    pi = torch.softmax(th, -1)
    value = (pi[:, 0] * abs(1 - C_TARGET) ** p + pi[:, 1] * abs(C_TARGET) ** p).sum() / N_VARS
    (g,) = torch.autograd.grad(value, th)
    return g


def self_check(p):
    """The closed form equals enumeration (quasigrad.exact) on 8 variables."""
    th = torch.empty(8, 2, dtype=torch.float64).uniform_(-1, 1, generator=torch.Generator().manual_seed(8))
    f8 = lambda d: (d[..., 0] - C_TARGET).abs().pow(p).sum(-1) / N_VARS  # noqa: E731
    g_enum = exact.gradient(f8, th)
    th2 = th.clone().requires_grad_(True)
    pi = torch.softmax(th2, -1)
    v = (pi[:, 0] * abs(1 - C_TARGET) ** p + pi[:, 1] * abs(C_TARGET) ** p).sum() / N_VARS
    (g_cf,) = torch.autograd.grad(v, th2)
    if not torch.allclose(g_enum, g_cf, atol=1e-12):
        raise RuntimeError("closed-form gradient disagrees with enumeration")


RELAX_STEPS = 300


def make_estimator(name, seed, theta=None, p=None):
    """Estimator objects: RELAX with a fresh MLP control variate, or one whose control variate
    (and temperature) was trained for RELAX_STEPS Adam steps (lr 1e-2, 64 draws a step) to
    minimise the variance at the fixed θ0 (θ itself is not moved)."""
    if name in ("relax", "relax_trained"):
        torch.manual_seed(seed)
        relax = O.RELAX(O.control_variate_mlp(N_VARS * 2, 32)).double()
        if name == "relax_trained":
            opt = torch.optim.Adam(relax.parameters(), lr=1e-2)
            gen = torch.Generator().manual_seed(seed + 100)
            th = theta.unsqueeze(0).expand((64,) + tuple(theta.shape)).clone().requires_grad_(True)
            f, _ = loss(p)
            for _ in range(RELAX_STEPS):
                est = O.expectation(f, th, estimator=relax, generator=gen)
                opt.zero_grad()
                est.mean().backward()
                opt.step()
        return relax
    return name


def one_call(name, variable, kw, theta_rep, p, generator, relax_obj=None):
    """One call on a batch of examples sharing θ; returns (estimate, gradient w.r.t. theta_rep)."""
    f, f_bern = loss(p)
    est = relax_obj if relax_obj is not None else name
    if isinstance(est, str) and est.startswith("relax"):
        raise ValueError("relax needs an object")
    if variable == "bernoulli":
        a = theta_rep[..., 0] - theta_rep[..., 1]
        out = O.expectation(f_bern, a, estimator=est, variable="bernoulli", generator=generator, **kw)
    else:
        out = O.expectation(f, theta_rep, estimator=est, generator=generator, **kw)
    (g,) = torch.autograd.grad(out.sum(), theta_rep)
    return out, g


def measure(name, variable, kw, theta, p, draws, seed):
    theta_rep = theta.unsqueeze(0).expand((draws,) + tuple(theta.shape)).clone().requires_grad_(True)
    gen = torch.Generator().manual_seed(seed)
    relax_obj = make_estimator(name, seed, theta, p) if name.startswith("relax") else None
    _, g = one_call(name, variable, kw, theta_rep, p, gen, relax_obj)
    ex = exact_grad(theta, p)
    mean = g.mean(0)
    tr_var = float(g.var(0).sum())
    return {"exact_sq_norm": float(ex.pow(2).sum()), "total_variance": tr_var,
            "bias": float((mean - ex).norm()), "noise_floor": math.sqrt(tr_var / draws),
            "cosine_mean": float(torch.nn.functional.cosine_similarity(mean.flatten(), ex.flatten(), dim=0))}


def timing(theta, p, batch, repeats, seed):
    gen = torch.Generator().manual_seed(seed)
    objs = {label: make_estimator(name, seed, theta, p) for label, name, _, _ in ESTIMATORS}
    times = {label: [] for label, *_ in ESTIMATORS}
    theta_rep = theta.unsqueeze(0).expand((batch,) + tuple(theta.shape)).clone().requires_grad_(True)
    for r in range(repeats + 1):
        for label, name, variable, kw in ESTIMATORS:
            obj = objs[label] if name.startswith("relax") else None
            t0 = time.perf_counter()
            one_call(name, variable, kw, theta_rep, p, gen, obj)
            dt = time.perf_counter() - t0
            if r > 0:  # the first round warms up
                times[label].append(dt)
    # On a shared machine a step is often pre-empted; the minimum over repeats is the cost of
    # the computation itself, the median shows the noise.
    best = {label: min(v) for label, v in times.items()}
    med = {label: statistics.median(v) for label, v in times.items()}
    return {label: {"min_s": best[label], "median_s": med[label], "relative_to_st": best[label] / best["st"],
                    "median_relative_to_st": med[label] / med["st"]} for label in best}


def plot(results, p, ctx):
    plt = ctx.pyplot()
    if plt is None:
        return

    labels = [label for label, *_ in ESTIMATORS if f"p={p}/{label}" in results]
    rows = [results[f"p={p}/{label}"] for label in labels]
    tim = results.get(f"p={p}/timing", {})
    fig, axes = plt.subplots(1, 3, figsize=(15, 5.5), sharey=True)
    y = range(len(labels))
    axes[0].barh(y, [r["total_variance"] for r in rows], color="tab:blue")
    axes[0].axvline(rows[0]["exact_sq_norm"], color="k", ls="--", lw=1, label="||exact grad||²")
    axes[0].set_xscale("log")
    axes[0].set_xlabel("total variance tr Cov(ĝ) (one call per draw)")
    axes[0].legend(loc="lower right", fontsize=8)
    axes[1].barh(y, [r["bias"] for r in rows], color="tab:red", label="||E ĝ − ∇||")
    axes[1].scatter([r["noise_floor"] for r in rows], list(y), marker="|", s=200, color="k",
                    label="MC noise floor")
    axes[1].set_xscale("log")
    axes[1].set_xlabel("bias norm (measured)")
    axes[1].legend(loc="lower right", fontsize=8)
    if tim:
        axes[2].barh(y, [tim[label]["relative_to_st"] for label in labels], color="tab:gray")
        axes[2].axvline(1.0, color="k", lw=1)
        axes[2].set_xscale("log")
    axes[2].set_xlabel("wall time per step / ST (same run, min over repeats)")
    axes[0].set_yticks(list(y))
    axes[0].set_yticklabels(labels)
    axes[0].invert_yaxis()
    fig.suptitle(f"ReinMax polynomial problem at initialisation, θ∈R^(128×2), p={p}, c={C_TARGET}")
    ctx.figure(fig, f"objective-poly-p{p:g}.png")



class ObjectivePoly(runner.Benchmark):
    name = "objective-poly"
    description = DESCRIPTION
    threads = True
    default_threads = 1
    result_fields = ("exact_sq_norm", "total_variance", "bias", "noise_floor", "cosine_mean")

    @classmethod
    def add_arguments(cls, parser):
        parser.add_argument("--p", type=float, nargs="+", default=[2.0], help="p of the loss |D − c|^p (default 2)")
        parser.add_argument("--draws", type=int, default=2000, help="gradient estimates per estimator (default 2000)")
        parser.add_argument("--batch-size", type=int, default=64, help="examples per timed step (default 64)")
        parser.add_argument("--timing-repeats", type=int, default=30, help="timed repeats (default 30)")
        parser.add_argument("--seed", type=int, default=0)

    def plan(self, args, ctx):
        if args.draws < 2 or args.batch_size < 1 or args.timing_repeats < 1:
            raise runner.BenchmarkError("--draws must be >= 2, --batch-size and --timing-repeats >= 1")
        if not all(p > 0 and math.isfinite(p) for p in args.p):
            raise runner.BenchmarkError(f"--p must be positive, got {args.p}")
        # "timing_batch" is the stored name of --batch-size (stores written before keep resuming)
        config = {"p": args.p, "draws": args.draws, "timing_batch": args.batch_size,
                  "timing_repeats": args.timing_repeats, "seed": args.seed, "threads": args.threads, "c": C_TARGET,
                  "n": N_VARS}
        self.theta = torch.empty(N_VARS, 2, dtype=torch.float64).uniform_(
            -0.01, 0.01, generator=torch.Generator().manual_seed(args.seed))
        units = []
        for p in args.p:
            units += [runner.Unit(f"p={p}/{label}", (p, label, name, variable, kw))
                      for label, name, variable, kw in ESTIMATORS]
            units.append(runner.Unit(f"p={p}/timing", (p, "timing", None, None, None)))
        return runner.Plan(config, units)

    def check_result(self, key, value):
        if key.endswith("/timing"):
            labels = [label for label, *_ in ESTIMATORS]
            if not isinstance(value, dict) or any(not isinstance(value.get(lb), dict) or "relative_to_st" not in value[lb]
                                                  for lb in labels):
                return "expected the timing of every estimator"
            return None
        return super().check_result(key, value)

    def prepare(self, ctx):
        for p in ctx.args.p:
            self_check(p)

    def run_unit(self, unit, ctx):
        p, label, name, variable, kw = unit.data
        args = ctx.args
        if label == "timing":
            return timing(self.theta, p, args.batch_size, args.timing_repeats, args.seed + 2)
        return measure(name, variable, kw, self.theta, p, args.draws, args.seed + 1)

    def report(self, store, ctx):
        args = ctx.args
        for p in args.p:
            tim = store[f"p={p}/timing"]
            rows = []
            for label, name, _, _ in ESTIMATORS:
                r = store[f"p={p}/{label}"]
                rows.append((label, EVALS.get(name, 1), r["total_variance"], r["bias"], r["noise_floor"],
                             r["cosine_mean"], tim[label]["relative_to_st"]))
            print(f"\np = {p}: ||exact grad||² = {store[f'p={p}/st']['exact_sq_norm']:.4g}, draws = {args.draws}")
            print(runner.format_table(rows, ["estimator", "f evals", "tr Var", "bias", "noise floor", "cos(Eĝ,∇)",
                                             "time/ST"]))
            plot(store.results, p, ctx)
        print()
        return None


BENCHMARK = ObjectivePoly
