"""`quasigrad bench qat-equivalence`: custom quantizer gradients vs their STE twins on MNIST.

The experiment of Schoenbauer, Moro, Lew, Howard (2024), "Custom gradient estimators are
straight-through estimators in disguise": a small CNN (Conv 32 3×3 → avg pool → Conv 64 3×3 →
avg pool → Dense 256 → Dense 10, ReLU) whose two convolution kernels are quantized to 2 bits on
the clipping range ±√(6/fan_in) (He-uniform init on the same range), batch 600, SGD
(momentum 0.9, lr 1e-3) or Adam (lr 1e-4, β₂ = 0.95), 2 % linear warm-up then cosine decay.
For each custom estimator (DSQ-style and tanh by default) the run with the estimator is paired
with its STE twin on the same mini-batch sequence (SGD: remapped init `M(w₀)` and learning
rate `α·lr` on the quantized kernels; Adam: the plain STE run from `w₀`); the
learning-rate-jitter baseline is the STE run against itself with lr ×1.01. Reported:
quantized weight agreement, weight alignment error and test accuracy of each run. `--device cuda`
trains on a GPU.
"""

from __future__ import annotations

import copy
import math
import time

import torch
from torch import nn

from . import runner

DESCRIPTION = "custom quantizer gradient estimators vs their STE twins (2-bit MNIST CNN, SGD and Adam)"

DEFAULT_ESTIMATORS = ["dsq", "tanh"]
SHORT = {"steps": 60, "test_examples": 2000, "batch_size": 100}
FULL = {"steps": 2000, "test_examples": 10000, "batch_size": 600}  # 20 epochs: our choice, not the paper's


class Net(nn.Module):
    """The paper's MNIST CNN with 2-bit convolution kernels."""

    def __init__(self, estimator: str, params: dict, bits: int = 2):
        super().__init__()
        from ..quant import QuantConv2d, UniformQuantizer

        self.conv1 = QuantConv2d(1, 32, 3, weight_quantizer=UniformQuantizer(bits, estimator=estimator, **params))
        self.conv2 = QuantConv2d(32, 64, 3, weight_quantizer=UniformQuantizer(bits, estimator=estimator, **params))
        self.fc1 = nn.Linear(64 * 5 * 5, 256)
        self.fc2 = nn.Linear(256, 10)
        for m in (self.conv1, self.conv2, self.fc1, self.fc2):
            bound = math.sqrt(6.0 / m.weight[0].numel())  # He-uniform
            nn.init.uniform_(m.weight, -bound, bound)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward(self, x):
        x = nn.functional.avg_pool2d(torch.relu(self.conv1(x)), 2)
        x = nn.functional.avg_pool2d(torch.relu(self.conv2(x)), 2)
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


def _schedule(steps):
    warm = max(1, int(round(0.02 * steps)))

    def factor(i):
        if i < warm:
            return (i + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * (i - warm) / max(1, steps - warm)))
    return factor


def _optimizer(kind, model, lr, conv_factor=1.0):
    conv = [p for n, p in model.named_parameters() if n.startswith("conv") and n.endswith("weight")]
    rest = [p for n, p in model.named_parameters() if not (n.startswith("conv") and n.endswith("weight"))]
    groups = [{"params": conv, "lr": lr * conv_factor}, {"params": rest, "lr": lr}]
    if kind == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=0.9)
    return torch.optim.Adam(groups, lr=lr, betas=(0.9, 0.95))


def _conv_weights(model):
    return [model.conv1.weight.detach().clone(), model.conv2.weight.detach().clone()]


def _accuracy(model, x, y):
    with torch.no_grad():
        correct = 0
        for i in range(0, len(x), 1000):
            correct += int((model(x[i:i + 1000]).argmax(1) == y[i:i + 1000]).sum())
    return correct / len(x)


def run_unit(opt, seed, estimators, k, steps, batch_size, data, ckpt_path, checkpoint_every, ctx=None, lr_scale=1.0,
             device="cpu"):
    """All runs of one optimizer and seed, stepped in lockstep on one mini-batch sequence."""
    from .. import quant

    xtr, ytr, xte, yte = data
    lr = (1e-3 if opt == "sgd" else 1e-4) * lr_scale
    torch.manual_seed(seed)
    base = Net("ste", {})
    models, factors = {"ste": base}, {"ste": 1.0}

    models["ste-jitter"] = copy.deepcopy(base)
    factors["ste-jitter"] = 1.0
    lrs = {"ste": lr, "ste-jitter": lr * 1.01}
    for est in estimators:
        params = {"k": k} if "k" in quant.get_estimator(est).defaults else {}
        m = copy.deepcopy(base)
        for layer in (m.conv1, m.conv2):
            layer.weight_quantizer.estimator, layer.weight_quantizer.params = est, dict(params)
        models[est] = m
        lrs[est], factors[est] = lr, 1.0
        if opt == "sgd":
            twin, a, _ = quant.ste_twin(m, "sgd")
            models[f"{est}/twin"], lrs[f"{est}/twin"], factors[f"{est}/twin"] = twin, lr, a
    for m in models.values():
        m.to(device)
    init = {name: _conv_weights(m) for name, m in models.items()}
    optims = {n: _optimizer(opt, m, lrs[n], factors[n]) for n, m in models.items()}
    sched = _schedule(steps)
    scheds = {n: torch.optim.lr_scheduler.LambdaLR(o, sched) for n, o in optims.items()}
    gen = torch.Generator().manual_seed(10_000 + seed)
    order = torch.cat([torch.randperm(len(xtr), generator=gen) for _ in range(steps * batch_size // len(xtr) + 1)])
    start = 0
    if ckpt_path.exists():
        state = runner.load_checkpoint(ckpt_path, required=("step", "models", "optims", "scheds"), map_location=device)
        with runner.restoring_checkpoint(ckpt_path):
            for n in models:
                models[n].load_state_dict(state["models"][n])
                optims[n].load_state_dict(state["optims"][n])
                scheds[n].load_state_dict(state["scheds"][n])
            start = state["step"]
        if ctx is not None:
            for _ in range(start):
                ctx.step()
    t0 = time.time()
    for i in range(start, steps):
        idx = order[i * batch_size:(i + 1) * batch_size].to(device)
        xb, yb = xtr[idx], ytr[idx]
        for n, m in models.items():
            optims[n].zero_grad(set_to_none=True)
            nn.functional.cross_entropy(m(xb), yb).backward()
            optims[n].step()
            scheds[n].step()
        if checkpoint_every and (i + 1) % checkpoint_every == 0 and i + 1 < steps:
            runner.save_checkpoint({"step": i + 1, "models": {n: m.state_dict() for n, m in models.items()},
                                    "optims": {n: o.state_dict() for n, o in optims.items()},
                                    "scheds": {n: s.state_dict() for n, s in scheds.items()}}, ckpt_path)
        if ctx is not None:
            ctx.step()
    out = {"seconds": time.time() - t0, "accuracy": {n: _accuracy(m, xte, yte) for n, m in models.items()}}
    qw = {n: quant.quantized_weights(m) for n, m in models.items()}
    w = {n: _conv_weights(m) for n, m in models.items()}
    rows = {"jitter": {"agreement": quant.quantized_agreement(qw["ste"], qw["ste-jitter"]),
                       "alignment": quant.alignment_error(w["ste-jitter"], w["ste"], init["ste"])}}
    for est in estimators:
        m = models[est]
        params = m.conv1.weight_quantizer.params
        twin = f"{est}/twin" if opt == "sgd" else "ste"
        if opt == "sgd":
            mapped = [quant.remap(wi, est, step=layer.weight_quantizer.step, **params)
                      for wi, layer in zip(w[est], (m.conv1, m.conv2))]
        else:
            mapped = w[est]
        rows[est] = {"agreement": quant.quantized_agreement(qw[est], qw[twin]),
                     "alignment": quant.alignment_error(mapped, w[twin], init[twin]),
                     "alpha": quant.alpha(est, **params),
                     "agreement_plain_ste": quant.quantized_agreement(qw[est], qw["ste"])}
    out["pairs"] = rows
    return out


class QatEquivalence(runner.Benchmark):
    name = "qat-equivalence"
    description = DESCRIPTION
    seeds = [0]
    full = f"longer setting: {FULL['steps']} steps (20 epochs), full test set"
    estimators = f"custom quantizer estimators to pair with their STE twins (default: {' '.join(DEFAULT_ESTIMATORS)})"
    device = threads = checkpoints = True
    result_fields = ("accuracy", "pairs")

    @classmethod
    def add_arguments(cls, parser):
        parser.add_argument("--steps", type=int, default=None, help=f"training steps (short preset {SHORT['steps']})")
        parser.add_argument("--optimizers", nargs="+", default=["sgd", "adam"], help="sgd and/or adam")
        parser.add_argument("--lr-scale", type=float, default=1.0,
                            help="multiply both learning rates (to see the η-dependence at fixed lr·steps)")
        parser.add_argument("--k", type=float, default=4.0, help="sharpness k of the tanh and DSQ estimators")
        parser.add_argument("--batch-size", type=int, default=None,
                            help="mini-batch size (short preset 100, --full 600 as in the paper)")
        parser.add_argument("--data", default=None,
                            help="MNIST directory (default: $QUASIGRAD_MNIST, the user cache, then ../shared/data/mnist)")
        parser.add_argument("--checkpoint-every", type=int, default=100, help="steps between checkpoints")

    def plan(self, args, ctx):
        from .. import quant

        preset = FULL if args.full else SHORT
        self.steps = steps = args.steps if args.steps is not None else preset["steps"]
        self.n_test = preset["test_examples"]
        self.batch_size = args.batch_size if args.batch_size is not None else preset["batch_size"]
        runner.check_positive(lr_scale=args.lr_scale)
        if steps < 1:
            raise runner.BenchmarkError(f"--steps must be >= 1, got {steps}")
        if self.batch_size < 1:
            raise runner.BenchmarkError(f"--batch-size must be >= 1, got {self.batch_size}")
        if args.checkpoint_every < 0:
            raise runner.BenchmarkError(f"--checkpoint-every must be >= 0, got {args.checkpoint_every}")
        bad = [o for o in args.optimizers if o not in ("sgd", "adam")]
        if bad:
            raise runner.BenchmarkError(f"--optimizers must be sgd and/or adam, got {bad}")
        self.estimators = estimators = args.estimators or DEFAULT_ESTIMATORS
        for est in estimators:
            try:
                params = {"k": args.k} if "k" in quant.get_estimator(est).defaults else {}
                quant.check_in_class(est, params)
            except (ValueError, TypeError) as exc:
                raise runner.BenchmarkError(f"--estimators: {exc}") from None
            if est == "ste":
                raise runner.BenchmarkError("--estimators: 'ste' is the reference itself; name custom estimators")
        self.optimizers = args.optimizers
        config = {"steps": steps, "test_examples": self.n_test, "estimators": estimators, "k": args.k,
                  "batch_size": self.batch_size, "lr": {"sgd": 1e-3 * args.lr_scale, "adam": 1e-4 * args.lr_scale}}
        units = [runner.Unit(f"{o}/seed{s}", (o, s), steps=steps) for o in args.optimizers for s in ctx.seeds]
        return runner.Plan(config, units)

    def prepare(self, ctx):
        mnist = runner.load_mnist_arg(ctx.args.data)
        n_test, device = self.n_test, ctx.device
        xtr = torch.as_tensor(mnist.train_images, dtype=torch.float32).div_(255).unsqueeze(1)
        ytr = torch.as_tensor(mnist.train_labels, dtype=torch.long)
        xte = torch.as_tensor(mnist.test_images[:n_test], dtype=torch.float32).div_(255).unsqueeze(1)
        yte = torch.as_tensor(mnist.test_labels[:n_test], dtype=torch.long)
        self.data = tuple(t.to(device) for t in (xtr, ytr, xte, yte))

    def run_unit(self, unit, ctx):
        opt, seed = unit.data
        args = ctx.args
        return run_unit(opt, seed, self.estimators, args.k, self.steps, self.batch_size, self.data,
                        ctx.checkpoint(unit), args.checkpoint_every, ctx, args.lr_scale, ctx.device)

    def report(self, store, ctx):
        rows = []
        for opt in self.optimizers:
            res = [store[f"{opt}/seed{s}"] for s in ctx.seeds]
            for pair in ["jitter", *self.estimators]:
                ag = runner.mean_pm([r["pairs"][pair]["agreement"] for r in res], ".5f")
                al = runner.mean_pm([r["pairs"][pair]["alignment"] for r in res], ".4f")
                if pair == "jitter":
                    acc = runner.mean_std([r["accuracy"]["ste"] for r in res])
                    acc2 = runner.mean_std([r["accuracy"]["ste-jitter"] for r in res])
                    name, plain, alpha = "STE vs STE lr×1.01", "", ""
                else:
                    twin = f"{pair}/twin" if opt == "sgd" else "ste"
                    acc = runner.mean_std([r["accuracy"][pair] for r in res])
                    acc2 = runner.mean_std([r["accuracy"][twin] for r in res])
                    plain = f"{runner.mean_std([r['pairs'][pair]['agreement_plain_ste'] for r in res])[0]:.4f}"
                    alpha = f"{res[0]['pairs'][pair]['alpha']:.4f}"
                    name = f"{pair} vs STE twin"
                rows.append([opt, name, alpha, ag, al, plain, f"{acc[0]:.4f}", f"{acc2[0]:.4f}"])
        headers = ["optimizer", "pair", "α", "agreement", "alignment err", "agree w/ plain STE", "acc (1st)",
                   "acc (2nd)"]
        print(runner.format_table(rows, headers))
        _plot(rows, ctx)
        return {"table": {"headers": headers, "rows": rows}}


BENCHMARK = QatEquivalence


def _plot(rows, ctx):
    plt = ctx.pyplot()
    if plt is None:
        return
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8), gridspec_kw={"wspace": 0.6})
    labels = [f"{r[0]}: {r[1]}" for r in rows]
    colors = ["tab:gray" if "lr×1.01" in r[1] else ("tab:blue" if r[0] == "sgd" else "tab:orange") for r in rows]
    panels = ((axes[0], [1.0 - _mean_of(r[3]) for r in rows], "quantized weight disagreement (1 − agreement)"),
              (axes[1], [_mean_of(r[4]) for r in rows], "weight alignment error"))
    for ax, vals, title in panels:
        bars = ax.barh(range(len(rows)), vals, color=colors)
        ax.bar_label(bars, fmt="%.3g", fontsize=7, padding=2)   # a value of 0 shows as "0", not as a gap
        ax.margins(x=0.15)
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels(labels, fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.invert_yaxis()
    fig.suptitle("qat-equivalence: estimator vs STE twin (grey: lr-jitter baseline; lower is closer)")
    ctx.figure(fig, "qat-equivalence.png")


def _mean_of(cell: str) -> float:
    """The mean of a table cell written by `runner.mean_pm` ("m ± s" or "m (n = 1)")."""
    return float(cell.split()[0])
