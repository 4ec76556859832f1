"""`quasigrad bench samplers`: Gibbs, Gibbs-with-Gradients, DULA and DMALA on a lattice
Ising model and an RBM (after Grathwohl et al. 2021, Fig. 3, and Zhang et al. 2022).

For each model and sampler, `--chains` chains start from uniform random states; at every
recorded step the estimate of `E[x]` is the mean over chains and over all steps so far, and
its RMSE against the exact marginals is reported (log10). The effective sample size of a fixed
random ±1 projection of the state (multi-chain ESS, [`quasigrad.samplers.effective_sample_size`][quasigrad.samplers.effective_sample_size])
is computed over the second half of the run and reported per step (effective samples gained
per step of all chains) and per CPU second of sampling (`time.process_time`: wall time for
one thread on an idle machine, not inflated by other users of a shared one).

Truth: the 10×10 periodic Ising model's marginals are exact by the transfer matrix; the RBM's
by enumerating its hidden layer (2^H states: 1.8 CPU s for H = 20, 53 CPU s for H = 25 on one
core here, so the preset uses H = 20 and `--full` H = 25; stored with the results, so a resumed
run does not recompute it).

Preset: 1,000 steps, 100 chains, Ising 10×10 (coupling 0.1, bias 0.2), RBM 100×20.
`--full`: 5,000 steps and RBM 100×25.
"""

from __future__ import annotations

import math
import time

import torch

from . import runner

DESCRIPTION = "Gibbs / GWG / DULA / DMALA on a 10x10 Ising model and an RBM: log RMSE of marginals, ESS"

SAMPLER_NAMES = ("gibbs", "gwg", "dula", "dmala")
MODEL_NAMES = ("ising", "rbm")
RESULT_FIELDS = ("record_steps", "log10_rmse", "ess", "ess_per_step", "ess_per_second", "seconds", "accept_rate")


def _clock():
    # CPU time of this process: on a shared machine wall time measures the neighbours' load.
    # With --threads 1 it equals wall time on an idle machine.
    return time.process_time()


def _config(args):
    steps = args.steps if args.steps is not None else (5000 if args.full else 1000)
    hidden = args.rbm_hidden if args.rbm_hidden is not None else (25 if args.full else 20)
    for name in args.samplers:
        if name not in ("gibbs", "gibbs-systematic", "gwg", "dula", "dmala"):
            raise runner.BenchmarkError(f"unknown sampler {name!r}; known: gibbs, gibbs-systematic, gwg, dula, dmala")
    for name in args.models:
        if name not in MODEL_NAMES:
            raise runner.BenchmarkError(f"unknown model {name!r}; known: {', '.join(MODEL_NAMES)}")
    if steps < 8:
        raise runner.BenchmarkError(f"--steps must be at least 8, got {steps}")
    if args.chains < 1:
        raise runner.BenchmarkError(f"--chains must be positive, got {args.chains}")
    if args.step_size <= 0:
        raise runner.BenchmarkError(f"--step-size must be positive, got {args.step_size}")
    if not 3 <= args.lattice <= 12:
        raise runner.BenchmarkError(f"--lattice must be in [3, 12] (exact marginals by transfer matrix), got {args.lattice}")
    if hidden > 26:
        raise runner.BenchmarkError(f"--rbm-hidden must be at most 26 (exact marginals enumerate 2^H states), got {hidden}")
    return {"steps": steps, "chains": args.chains, "lattice": args.lattice, "coupling": args.coupling,
            "bias": args.bias, "rbm_visible": args.rbm_visible, "rbm_hidden": hidden,
            "rbm_weight_std": args.rbm_weight_std, "rbm_bias_std": args.rbm_bias_std, "step_size": args.step_size}


def _model(name, cfg):
    from .. import samplers as S

    if name == "ising":
        return S.Ising.lattice(cfg["lattice"], coupling=cfg["coupling"], bias=cfg["bias"])
    g = torch.Generator().manual_seed(1234)
    return S.RBM.random(cfg["rbm_visible"], cfg["rbm_hidden"], weight_std=cfg["rbm_weight_std"],
                        bias_std=cfg["rbm_bias_std"], generator=g)


def _truth(model) -> dict:
    t0 = _clock()
    marg = model.exact_marginals(max_states=1 << 26)
    return {"marginals": marg.tolist(), "seconds": _clock() - t0}


def _run_one(model, sampler_name, truth, cfg, seed):
    from .. import samplers as S

    g = torch.Generator().manual_seed(seed)
    kw = {"step_size": cfg["step_size"]} if sampler_name in ("dula", "dmala") else {}
    sampler = S.make_sampler(sampler_name, model, **kw)
    proj = (torch.randint(2, (model.num_vars,), generator=torch.Generator().manual_seed(99)) * 2 - 1).to(model.dtype)
    x = model.random_state(cfg["chains"], generator=g)
    steps = cfg["steps"]
    record = sorted(set(int(round(v)) for v in torch.logspace(0, math.log10(steps), 60).tolist()) | {steps})
    total = torch.zeros(model.num_vars, dtype=torch.float64)
    half = steps // 2
    stats = torch.empty(steps - half, cfg["chains"], dtype=torch.float64)
    rmse, seconds = [], 0.0
    second_half_seconds = 0.0
    for t in range(1, steps + 1):
        t0 = _clock()
        x = sampler.step(x, generator=g)
        dt = _clock() - t0
        seconds += dt
        if t > half:
            second_half_seconds += dt
            stats[t - half - 1] = (x @ proj).double()
        total += x.double().mean(0)
        if t in record:
            rmse.append(math.log10(float(((total / t - truth) ** 2).mean().sqrt())))
    ess = float(S.effective_sample_size(stats))
    return {"record_steps": record, "log10_rmse": rmse, "ess": ess, "ess_per_step": ess / (steps - half),
            "ess_per_second": ess / second_half_seconds, "seconds": seconds, "accept_rate": sampler.accept_rate}


class Samplers(runner.Benchmark):
    name = "samplers"
    description = DESCRIPTION
    seeds = [0]
    full = "5000 steps, RBM 100x25"
    threads = True

    @classmethod
    def add_arguments(cls, parser):
        parser.add_argument("--samplers", nargs="+", default=list(SAMPLER_NAMES),
                            help=f"samplers (default: {' '.join(SAMPLER_NAMES)}; also gibbs-systematic)")
        parser.add_argument("--models", nargs="+", default=list(MODEL_NAMES), help="ising and/or rbm")
        parser.add_argument("--steps", type=int, default=None, help="steps per chain (preset 1000, --full 5000)")
        parser.add_argument("--chains", type=int, default=100)
        parser.add_argument("--lattice", type=int, default=10, help="Ising lattice side (periodic)")
        parser.add_argument("--coupling", type=float, default=0.1)
        parser.add_argument("--bias", type=float, default=0.2)
        parser.add_argument("--rbm-visible", type=int, default=100)
        parser.add_argument("--rbm-hidden", type=int, default=None, help="preset 20, --full 25")
        parser.add_argument("--rbm-weight-std", type=float, default=0.3)
        parser.add_argument("--rbm-bias-std", type=float, default=0.5)
        parser.add_argument("--step-size", type=float, default=0.2, help="α of DULA and DMALA")

    def plan(self, args, ctx):
        self.cfg = cfg = _config(args)
        self.model_names, self.sampler_names = args.models, args.samplers
        self.models = {}
        # The exact marginals of each model are a unit of their own (stored, never recomputed),
        # placed before the model's first sampler run.
        units = []
        for m in args.models:
            units.append(runner.Unit(f"truth/{m}", (m, "truth", None)))
            units += [runner.Unit(f"{m}/{s}/{seed}", (m, s, seed)) for s in args.samplers for seed in ctx.seeds]
        return runner.Plan(cfg, units)

    def check_result(self, key, value):
        fields = ("marginals",) if key.startswith("truth/") else RESULT_FIELDS
        if not isinstance(value, dict) or any(f not in value for f in fields):
            return f"expected an object with {', '.join(fields)}"
        return None

    def _model(self, name):
        if name not in self.models:
            self.models[name] = _model(name, self.cfg)
        return self.models[name]

    def run_unit(self, unit, ctx):
        m, s, seed = unit.data
        if s == "truth":
            return _truth(self._model(m))
        truth = torch.tensor(ctx.store[f"truth/{m}"]["marginals"], dtype=torch.float64)
        return _run_one(self._model(m), s, truth, self.cfg, seed)

    def report(self, store, ctx):
        _report(store, self.model_names, self.sampler_names, ctx.seeds, self.cfg, ctx)
        return None


BENCHMARK = Samplers


def _report(store, models, samplers, seeds, cfg, ctx):
    rows = []
    for m in models:
        for s in samplers:
            res = [store[f"{m}/{s}/{seed}"] for seed in seeds if f"{m}/{s}/{seed}" in store]
            if not res:
                continue
            rows.append((m, s, runner.mean_std([r["log10_rmse"][-1] for r in res])[0],
                         runner.mean_std([r["ess_per_step"] for r in res])[0],
                         runner.mean_std([r["ess_per_second"] for r in res])[0],
                         runner.mean_std([r["accept_rate"] for r in res])[0],
                         runner.mean_std([r["seconds"] for r in res])[0]))
    print(f"\n{cfg['steps']} steps x {cfg['chains']} chains, seeds {seeds}")
    print(runner.format_table(rows, ["model", "sampler", "log10 RMSE (end)", "ESS/step", "ESS/CPU s", "accept",
                                     "CPU s"]))
    plt = ctx.pyplot()
    if plt is None:
        return
    fig, axes = plt.subplots(1, len(models) + 1, figsize=(5 * (len(models) + 1), 4))
    for ax, m in zip(axes, models):
        for s in samplers:
            key = f"{m}/{s}/{seeds[0]}"
            if key in store:
                ax.plot(store[key]["record_steps"], store[key]["log10_rmse"], label=s)
        ax.set_xscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("log10 RMSE of E[x]")
        ax.set_title(m)
        ax.legend()
    ax = axes[-1]
    width = 0.8 / max(len(models), 1)
    for j, m in enumerate(models):
        vals = [r[4] for r in rows if r[0] == m]
        names = [r[1] for r in rows if r[0] == m]
        ax.bar([i + j * width for i in range(len(vals))], vals, width, label=m)
        ax.set_xticks([i + width * (len(models) - 1) / 2 for i in range(len(names))], names)
    ax.set_ylabel("ESS per CPU second")
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    ctx.figure(fig, "samplers.png")
