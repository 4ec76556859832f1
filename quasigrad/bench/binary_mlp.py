"""`quasigrad bench binary-mlp`: a binary-weight MLP on MNIST trained three ways.

* `ste-adam`: latent real weights, forward `sign` (straight-through backward), Adam,
  latent weights clipped to `[-1, 1]` after each step (BinaryConnect).
* `md-tanh`: [`quasigrad.optim.MDTanh`][quasigrad.optim.MDTanh] with Adam moments and `beta` growing on a
  schedule; evaluated with `sign` of the dual variable.
* `bayesbinn`: [`quasigrad.optim.BayesBiNN`][quasigrad.optim.BayesBiNN]; evaluated with `sign(mu)` (the mode)
  and with the average of `--test-samples` predictive distributions from `w ~ q`.

Every weight matrix is binary (no biases); batch normalisation without affine parameters
follows each layer, as in the BayesBiNN paper's MNIST model (Meng et al. 2020, after
Alizadeh et al. 2019). Reported: test accuracy, test negative log-likelihood and expected
calibration error (ECE, 15 equal-width confidence bins) for every optimiser; 10% of the
training set is held out for validation (accuracy on it is reported too, nothing is tuned
on the test set by this command).

The short preset (default) is sized for a 2-core machine (a few minutes for the three
optimisers). `--full` is the setting of the public BayesBiNN MNIST code: 3 hidden layers of
2048 units, dropout 0.2, batch 100, 500 epochs, cosine learning-rate decay, BayesBiNN with
`lr=1e-4`, `tau=1e-10`, `lambda_init=10`, one training sample. Runs are checkpointed
every epoch under `--out/checkpoints` and resumed; finished runs are kept in
`--out/binary-mlp.json`. `--device cuda` trains on a GPU (a resumed GPU run repeats the
dropout masks only on the CPU, whose generator the checkpoint holds).
"""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F

from . import runner

DESCRIPTION = "binary-weight MLP on MNIST: STE+Adam vs MD-tanh vs BayesBiNN (accuracy, ECE)"

OPTIMIZERS = ("ste-adam", "md-tanh", "bayesbinn")

SHORT = dict(hidden=256, layers=2, dropout=0.0, batch_size=100, epochs=3, train_size=0, test_samples=10,
             lr_ste=1e-3, lr_md=1e-3, beta0=1.0, beta_growth=1.05, beta_every=10,
             lr_bayes=1e-4, tau=1e-10, lambda_init=10.0, lr_end_ratio=0.0)
FULL = dict(hidden=2048, layers=3, dropout=0.2, batch_size=100, epochs=500, train_size=0, test_samples=10,
            lr_ste=1e-3, lr_md=1e-3, beta0=1.0, beta_growth=1.02, beta_every=200,
            lr_bayes=1e-4, tau=1e-10, lambda_init=10.0, lr_end_ratio=1e-12)

MEAN, STD = 0.1307, 0.3081  # MNIST pixel statistics used by the public code's normalisation


def _config(args) -> dict:
    base = dict(FULL if args.full else SHORT)
    for key in SHORT:
        value = getattr(args, key)
        if value is not None:
            base[key] = value
    return base


def _check(args, cfg) -> None:
    unknown = [o for o in args.optimizers if o not in OPTIMIZERS]
    if unknown:
        raise runner.BenchmarkError(f"--optimizers: unknown {unknown}; known: {', '.join(OPTIMIZERS)}")
    for key in ("hidden", "layers", "batch_size", "epochs"):
        if cfg[key] < 1:
            raise runner.BenchmarkError(f"--{key.replace('_', '-')} must be >= 1, got {cfg[key]}")
    for key in ("lr_ste", "lr_md", "beta0", "lr_bayes", "tau", "lambda_init"):
        if not cfg[key] > 0 or not math.isfinite(cfg[key]):
            raise runner.BenchmarkError(f"--{key.replace('_', '-')} must be a positive number, got {cfg[key]}")
    if cfg["beta_growth"] < 1:
        raise runner.BenchmarkError(f"--beta-growth must be >= 1, got {cfg['beta_growth']}")
    if not 0 <= cfg["dropout"] < 1:
        raise runner.BenchmarkError(f"--dropout must be in [0, 1), got {cfg['dropout']}")
    if cfg["train_size"] < 0 or cfg["test_samples"] < 1 or cfg["beta_every"] < 1:
        raise runner.BenchmarkError("--train-size must be >= 0, --test-samples and --beta-every >= 1")


# ----------------------------------------------------------------------------- model

def _ste_sign(w: torch.Tensor) -> torch.Tensor:
    # Forward sign(w) with sign(0) = +1; backward the identity (straight-through).
    hard = torch.where(w >= 0, torch.ones_like(w), -torch.ones_like(w))
    return w + (hard - w).detach()


class BinaryMLP(torch.nn.Module):
    """784 -> hidden x layers -> 10; binary weight matrices, BN without affine, ReLU, dropout.
    With `ste=True` the forward pass uses `sign` of the (latent) weights; otherwise it
    uses the weights as they are (the optimiser writes binary or relaxed values into them)."""

    def __init__(self, hidden: int, layers: int, dropout: float, ste: bool):
        super().__init__()
        sizes = [784] + [hidden] * layers + [10]
        self.linears = torch.nn.ModuleList(torch.nn.Linear(a, b, bias=False) for a, b in zip(sizes, sizes[1:]))
        self.norms = torch.nn.ModuleList(torch.nn.BatchNorm1d(b, eps=1e-4, momentum=0.15, affine=False)
                                         for b in sizes[1:])
        self.dropout = torch.nn.Dropout(dropout)
        self.ste = ste

    def forward(self, x):
        x = self.dropout(x)
        last = len(self.linears) - 1
        for i, (lin, bn) in enumerate(zip(self.linears, self.norms)):
            w = _ste_sign(lin.weight) if self.ste else lin.weight
            x = bn(F.linear(x, w))
            if i < last:
                x = self.dropout(F.relu(x))
        return x


# ----------------------------------------------------------------------------- metrics

def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor, bins: int = 15) -> float:
    """ECE: sum over equal-width confidence bins of (bin size / N) * |accuracy - confidence|."""
    conf, pred = probs.max(dim=1)
    correct = (pred == labels).double()
    edges = torch.linspace(0, 1, bins + 1, dtype=probs.dtype)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (conf > lo) & (conf <= hi)
        if inside.any():
            ece += float(inside.double().mean()) * abs(float(correct[inside].mean()) - float(conf[inside].double().mean()))
    return ece


@torch.no_grad()
def _probs(model, x, batch=1000):
    model.eval()
    out = torch.cat([F.softmax(model(x[i:i + batch]).double(), dim=1) for i in range(0, len(x), batch)])
    model.train()
    return out


def _metrics(probs, labels):
    nll = float(-torch.log(probs[torch.arange(len(labels)), labels].clamp_min(1e-300)).mean())
    return dict(acc=float((probs.argmax(1) == labels).double().mean()), nll=nll,
                ece=expected_calibration_error(probs, labels))


# ----------------------------------------------------------------------------- one run

def _build(name, cfg, n_train, generator, device="cpu"):
    from .. import optim as qo

    # on the device before the optimiser sees the parameters (BayesBiNN keeps state beside them)
    model = BinaryMLP(cfg["hidden"], cfg["layers"], cfg["dropout"], ste=(name == "ste-adam")).to(device)
    if name == "ste-adam":
        return model, torch.optim.Adam(model.parameters(), lr=cfg["lr_ste"]), cfg["lr_ste"]
    params = qo.mark_binary(*model.linears)
    if name == "md-tanh":
        opt = qo.MDTanh(params, lr=cfg["lr_md"], beta=cfg["beta0"], beta_growth=cfg["beta_growth"],
                        beta_every=cfg["beta_every"], adam=True)
        return model, opt, cfg["lr_md"]
    opt = qo.BayesBiNN(params, lr=cfg["lr_bayes"], train_set_size=n_train, tau=cfg["tau"],
                       lambda_init=cfg["lambda_init"], generator=generator)
    return model, opt, cfg["lr_bayes"]


def _evaluate(name, model, opt, x, y, cfg, seed):
    if name == "ste-adam":
        return _metrics(_probs(model, x), y)
    if name == "md-tanh":
        with opt.quantized():
            return _metrics(_probs(model, x), y)
    with opt.mean_weights():
        out = _metrics(_probs(model, x), y)
    gen = torch.Generator(device=x.device).manual_seed(10_000 + seed)
    avg = 0
    for _ in range(cfg["test_samples"]):
        with opt.sampled_weights(gen):
            avg = avg + _probs(model, x)
    mc = _metrics(avg / cfg["test_samples"], y)
    out.update({f"{k}_mc": v for k, v in mc.items()})
    return out


def _run_one(name, seed, cfg, data, ckpt_path, ctx=None, device="cpu"):
    device = torch.device(device)
    xtr, ytr, xva, yva, xte, yte = data
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model, opt, lr0 = _build(name, cfg, len(xtr), torch.Generator(device=device).manual_seed(1000 + seed), device)
    steps_per_epoch = len(xtr) // cfg["batch_size"]
    total = steps_per_epoch * cfg["epochs"]
    history, epoch0, seconds = [], 0, 0.0
    if ckpt_path.exists():
        ck = runner.load_checkpoint(ckpt_path, required=("model", "opt", "gen", "torch_rng", "history", "epoch",
                                                         "seconds"), map_location=device)
        with runner.restoring_checkpoint(ckpt_path):
            model.load_state_dict(ck["model"])
            opt.load_state_dict(ck["opt"])
            if name == "bayesbinn":
                opt.generator.set_state(ck["opt_gen"].cpu())
            gen.set_state(ck["gen"].cpu())
            torch.set_rng_state(ck["torch_rng"].cpu())
            history, epoch0, seconds = ck["history"], ck["epoch"], ck["seconds"]
        if ctx is not None:
            for _ in range(epoch0):
                ctx.step()
    lr_end = lr0 * cfg["lr_end_ratio"]
    for epoch in range(epoch0, cfg["epochs"]):
        start = time.time()
        order = torch.randperm(len(xtr), generator=gen)
        for i in range(steps_per_epoch):
            t = epoch * steps_per_epoch + i
            for group in opt.param_groups:   # cosine decay from lr0 to lr_end over the run
                group["lr"] = lr_end + 0.5 * (lr0 - lr_end) * (1 + math.cos(math.pi * t / total))
            idx = order[i * cfg["batch_size"]:(i + 1) * cfg["batch_size"]].to(device)
            opt.zero_grad()
            F.cross_entropy(model(xtr[idx]), ytr[idx]).backward()
            opt.step()
            if name == "ste-adam":
                with torch.no_grad():
                    for lin in model.linears:
                        lin.weight.clamp_(-1, 1)
        seconds += time.time() - start
        val = _evaluate(name, model, opt, xva, yva, cfg, seed) if len(xva) else {}
        history.append(dict(epoch=epoch + 1, val_acc=val.get("acc"), seconds=seconds,
                            beta=opt.param_groups[0].get("beta")))
        ck = dict(model=model.state_dict(), opt=opt.state_dict(), gen=gen.get_state(),
                  torch_rng=torch.get_rng_state(), history=history, epoch=epoch + 1, seconds=seconds)
        if name == "bayesbinn":
            ck["opt_gen"] = opt.generator.get_state()
        runner.save_checkpoint(ck, ckpt_path)
        if ctx is not None:
            ctx.step(f"val acc {val['acc']:.3f}" if val.get("acc") is not None else None)
    result = _evaluate(name, model, opt, xte, yte, cfg, seed)
    result["val_acc"] = history[-1]["val_acc"] if history else None
    result["train_seconds"] = seconds
    result["history"] = history
    return result


def _load(cfg, data_dir, device):
    mnist = runner.load_mnist_arg(data_dir)
    x = (mnist.flat(train=True) - MEAN) / STD
    y = mnist.train_labels.long()
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(12345))
    n_val = len(x) // 10
    val, train = perm[:n_val], perm[n_val:]
    if cfg["train_size"]:
        train = train[:cfg["train_size"]]
        val = val[:max(1, cfg["train_size"] // 9)]
    xte = (mnist.flat(train=False) - MEAN) / STD
    data = x[train], y[train], x[val], y[val], xte, mnist.test_labels.long()
    return tuple(t.to(device) for t in data)


class BinaryMLPBench(runner.Benchmark):
    name = "binary-mlp"
    description = DESCRIPTION
    seeds = [0]
    full = "the public BayesBiNN MNIST setting (3x2048 units, 500 epochs); days on a CPU"
    device = threads = checkpoints = True
    result_fields = ("acc", "nll", "ece", "train_seconds", "history")

    @classmethod
    def add_arguments(cls, parser) -> None:
        parser.add_argument("--optimizers", nargs="+", default=list(OPTIMIZERS),
                            help=f"which optimisers (default: all of {', '.join(OPTIMIZERS)})")
        parser.add_argument("--data", default=None,
                            help="MNIST directory (default: $QUASIGRAD_MNIST, the user cache, then ../shared/data/mnist)")
        for key, value in SHORT.items():
            flag = "--" + key.replace("_", "-")
            parser.add_argument(flag, type=type(value), default=None,
                                help=f"override (short preset: {value}, --full: {FULL[key]})")

    def plan(self, args, ctx):
        self.cfg = cfg = _config(args)
        _check(args, cfg)
        self.optimizers = args.optimizers
        units = [runner.Unit(f"{name}/seed{seed}", (name, seed), steps=cfg["epochs"])
                 for name in args.optimizers for seed in ctx.seeds]
        return runner.Plan(dict(cfg, full=bool(args.full)), units)

    def prepare(self, ctx):
        self.data = _load(self.cfg, ctx.args.data, ctx.device)

    def run_unit(self, unit, ctx):
        name, seed = unit.data
        return _run_one(name, seed, self.cfg, self.data, ctx.checkpoint(unit), ctx, ctx.device)

    def report(self, store, ctx):
        rows = []
        for name in self.optimizers:
            res = [store[f"{name}/seed{s}"] for s in ctx.seeds]

            def cell(k):
                vals = [r[k] for r in res if r.get(k) is not None]
                return runner.mean_pm(vals, ".4f") if vals else "-"
            rows.append([name, cell("acc"), cell("nll"), cell("ece"), cell("acc_mc"), cell("ece_mc"),
                         cell("val_acc"), f"{runner.mean_std([r['train_seconds'] for r in res])[0]:.0f}"])
        headers = ["optimiser", "test acc", "test NLL", "ECE", "acc (MC)", "ECE (MC)", "val acc", "train s"]
        table = runner.format_table(rows, headers)
        print(f"binary-mlp ({'full' if ctx.args.full else 'short'} preset, seeds {ctx.seeds}; MC: BayesBiNN "
              f"average over {self.cfg['test_samples']} samples of q)")
        print(table)
        _plot(store, self.optimizers, ctx)
        return {"table": table}


BENCHMARK = BinaryMLPBench


def _plot(store, optimizers, ctx):
    plt = ctx.pyplot()
    if plt is None:
        return
    import matplotlib.ticker

    fig, ax = plt.subplots(1, 1, figsize=(5.5, 3.8))
    for c, name in enumerate(optimizers):
        for j, s in enumerate(ctx.seeds):
            hist = store[f"{name}/seed{s}"]["history"]
            ax.plot([h["epoch"] for h in hist], [100 * (h["val_acc"] or float("nan")) for h in hist],
                    marker="o", color=f"C{c}", alpha=1.0 if j == 0 else 0.6, label=name if j == 0 else None)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))   # epochs: no fractional ticks
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title(f"binary-weight MLP on MNIST (seeds {', '.join(map(str, ctx.seeds))})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ctx.figure(fig, "binary-mlp.png")
