"""``quasigrad bench samplers``: Gibbs, Gibbs-with-Gradients, DULA and DMALA on a lattice
Ising model and an RBM (after Grathwohl et al. 2021, Fig. 3, and Zhang et al. 2022).

For each model and sampler, ``--chains`` chains start from uniform random states; at every
recorded step the estimate of ``E[x]`` is the mean over chains and over all steps so far, and
its RMSE against the exact marginals is reported (log10). The effective sample size of a fixed
random ±1 projection of the state (multi-chain ESS, :func:`quasigrad.samplers.effective_sample_size`)
is computed over the second half of the run and reported per step (effective samples gained
per step of all chains) and per CPU second of sampling (``time.process_time``: wall time for
one thread on an idle machine, not inflated by other users of a shared one).

Truth: the 10×10 periodic Ising model's marginals are exact by the transfer matrix; the RBM's
by enumerating its hidden layer (2^H states: 1.8 CPU s for H = 20, 53 CPU s for H = 25 on one
core here, so the preset uses H = 20 and ``--full`` H = 25; stored with the results, so a resumed
run does not recompute it).

Preset: 1,000 steps, 100 chains, Ising 10×10 (coupling 0.1, bias 0.2), RBM 100×20.
``--full``: the issue's setting, 5,000 steps and RBM 100×25.
"""

from __future__ import annotations

import math
import time

import torch

from .runner import (BenchmarkError, ResultStore, add_common_arguments, format_table, progress,
                     save_figure)

DESCRIPTION = "Gibbs / GWG / DULA / DMALA on a 10x10 Ising model and an RBM: log RMSE of marginals, ESS"

SAMPLER_NAMES = ("gibbs", "gwg", "dula", "dmala")


def _clock():
    # CPU time of this process: on a shared machine wall time measures the neighbours' load.
    # With --threads 1 it equals wall time on an idle machine.
    return time.process_time()
MODEL_NAMES = ("ising", "rbm")


def add_arguments(parser):
    add_common_arguments(parser, default_out="results/samplers", seeds=[0], estimators=False)
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
    parser.add_argument("--full", action="store_true", help="the issue's setting: 5000 steps, RBM 100x25")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")


def _config(args):
    steps = args.steps if args.steps is not None else (5000 if args.full else 1000)
    hidden = args.rbm_hidden if args.rbm_hidden is not None else (25 if args.full else 20)
    for name in args.samplers:
        if name not in ("gibbs", "gibbs-systematic", "gwg", "dula", "dmala"):
            raise BenchmarkError(f"unknown sampler {name!r}; known: gibbs, gibbs-systematic, gwg, dula, dmala")
    for name in args.models:
        if name not in MODEL_NAMES:
            raise BenchmarkError(f"unknown model {name!r}; known: {', '.join(MODEL_NAMES)}")
    if steps < 8:
        raise BenchmarkError(f"--steps must be at least 8, got {steps}")
    if args.chains < 1:
        raise BenchmarkError(f"--chains must be positive, got {args.chains}")
    if args.step_size <= 0:
        raise BenchmarkError(f"--step-size must be positive, got {args.step_size}")
    if not 3 <= args.lattice <= 12:
        raise BenchmarkError(f"--lattice must be in [3, 12] (exact marginals by transfer matrix), got {args.lattice}")
    if hidden > 26:
        raise BenchmarkError(f"--rbm-hidden must be at most 26 (exact marginals enumerate 2^H states), got {hidden}")
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


def _truth(name, model, store):
    key = f"truth/{name}"
    if key not in store:
        t0 = _clock()
        marg = model.exact_marginals(max_states=1 << 26)
        store.put(key, {"marginals": marg.tolist(), "seconds": _clock() - t0})
    return torch.tensor(store[key]["marginals"], dtype=torch.float64)


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


def run(args) -> int:
    cfg = _config(args)
    store = ResultStore(args.out, "samplers", cfg, fresh=args.fresh)
    if args.threads is not None:
        if args.threads < 1:
            raise BenchmarkError(f"--threads must be positive, got {args.threads}")
        torch.set_num_threads(args.threads)
    jobs = [(m, s, seed) for m in args.models for s in args.samplers for seed in args.seeds]
    models = {}
    for key in progress(jobs, desc="samplers", disable=args.no_progress):
        m, s, seed = key
        name = f"{m}/{s}/{seed}"
        if name in store:
            continue
        if m not in models:
            models[m] = _model(m, cfg)
        truth = _truth(m, models[m], store)
        store.put(name, _run_one(models[m], s, truth, cfg, seed))
    _report(store, args, cfg)
    return 0


def _report(store, args, cfg):
    from .runner import mean_std

    rows = []
    for m in args.models:
        for s in args.samplers:
            res = [store[f"{m}/{s}/{seed}"] for seed in args.seeds if f"{m}/{s}/{seed}" in store]
            if not res:
                continue
            rows.append((m, s, mean_std([r["log10_rmse"][-1] for r in res])[0],
                         mean_std([r["ess_per_step"] for r in res])[0], mean_std([r["ess_per_second"] for r in res])[0],
                         mean_std([r["accept_rate"] for r in res])[0], mean_std([r["seconds"] for r in res])[0]))
    print(f"\n{cfg['steps']} steps x {cfg['chains']} chains, seeds {args.seeds}")
    print(format_table(rows, ["model", "sampler", "log10 RMSE (end)", "ESS/step", "ESS/CPU s", "accept", "CPU s"]))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, axes = plt.subplots(1, len(args.models) + 1, figsize=(5 * (len(args.models) + 1), 4))
    for ax, m in zip(axes, args.models):
        for s in args.samplers:
            key = f"{m}/{s}/{args.seeds[0]}"
            if key in store:
                ax.plot(store[key]["record_steps"], store[key]["log10_rmse"], label=s)
        ax.set_xscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("log10 RMSE of E[x]")
        ax.set_title(m)
        ax.legend()
    ax = axes[-1]
    width = 0.8 / max(len(args.models), 1)
    for j, m in enumerate(args.models):
        vals = [r[4] for r in rows if r[0] == m]
        names = [r[1] for r in rows if r[0] == m]
        ax.bar([i + j * width for i in range(len(vals))], vals, width, label=m)
        ax.set_xticks([i + width * (len(args.models) - 1) / 2 for i in range(len(names))], names)
    ax.set_ylabel("ESS per CPU second")
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    save_figure(fig, store.path.with_suffix(".png"))
    plt.close(fig)
    print(f"results: {store.path}  plot: {store.path.with_suffix('.png')}")
