"""`quasigrad bench nas`: GDAS-style architecture search (Dong and Yang 2019) with each
estimator on the architecture logits, the experiment of the ReinMax paper's Table 4, on MNIST.

For each estimator and seed: search with `quasigrad.models.nas.SearchNetwork` (the
NAS-Bench-201 cell: 4 nodes, 6 edges, each edge one of none, skip, 3×3 conv, 1×1 conv, 3×3
average pooling; one operation drawn per edge and per forward pass, only it runs), alternating
a step on the network's weights (SGD on one half of the search images) and a step on the
architecture logits (Adam on the other half), τ decaying linearly from `--tau-max` to
`--tau-min` as in GDAS; derive the argmax architecture; train it from scratch
(`quasigrad.models.nas.FixedNetwork`; SGD with Nesterov momentum, learning rate 0.1 on a
cosine schedule, as NATS-Bench trains its networks) and report its validation accuracy (on images
from the last 5,000 training images, never searched or trained on) and test accuracy (the MNIST
test set), mean ± std over seeds.

**Data.** The paper searches on CIFAR-10 and reads the accuracies of the found architecture
from NATS-Bench (CIFAR-10, CIFAR-100, ImageNet-16-120). Neither CIFAR nor NATS-Bench is
reachable from here, so this benchmark searches and retrains on MNIST (the data this project
has); the paper's Table 4 is printed beside ours for orientation only (another data set).

Short preset (default; minutes on a small CPU): 8 channels, a stem of stride 2 (the cells see
14 × 14, 7 × 7 and 4 × 4 maps), one cell per stage and three stages, search on 2 × 2,000 images
for 3 epochs, retrain on 5,000 images for 2 epochs, validate and test on 2,000 each; seeds 0 1.
`--full`: 16 channels, two cells per stage, three stages, search on 2 × 25,000 images for 50
epochs, retrain on 55,000 images for 20 epochs, all 10,000 test images, seeds 0–4 (our choice
of sizes: MNIST needs far less than CIFAR's 250 search epochs).

One unit is one estimator and one seed, stored as `ESTIMATOR/seedN` in `--out/nas.json`; it
checkpoints after each search and retraining epoch to `--out/checkpoints` and resumes there
(the runner, `quasigrad.bench.runner`, owns the store, resuming, `--device`,
`--threads` and the progress bar). MNIST is read only when a unit is left to run. The plot
goes to `--out/nas.png`.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch

from . import runner
from .common import sample_level_names
from .paper import PAPER_TABLE4_NAS, by_estimator

DESCRIPTION = ("GDAS-style architecture search on MNIST (ReinMax paper, Table 4's method): retrained accuracy "
               "per estimator")

DEFAULT_ESTIMATORS = ["stgs", "reinmax"]

SHORT: Dict[str, Any] = dict(channels=8, cells=1, stages=3, stem_stride=2, search_size=4000, search_epochs=3,
                             retrain_size=5000, retrain_epochs=2, valid_size=2000, test_size=2000, batch=64, w_lr=0.05,
                             arch_lr=3e-3, tau_max=10.0, tau_min=0.1, seeds=[0, 1])
FULL: Dict[str, Any] = dict(channels=16, cells=2, stages=3, stem_stride=1, search_size=50_000, search_epochs=50,
                            retrain_size=55_000, retrain_epochs=20, valid_size=5000, test_size=10_000, batch=64,
                            w_lr=0.025, arch_lr=3e-4, tau_max=10.0, tau_min=0.1, seeds=[0, 1, 2, 3, 4])
_OVERRIDES = ("channels", "search_size", "search_epochs", "retrain_size", "retrain_epochs", "valid_size", "test_size",
              "batch", "arch_lr", "tau_max", "tau_min")
# The batch is spelled as in every benchmark; the other overrides' options are their names.
_FLAGS = {"batch": "--batch-size"}
VALID_SIZE = 5000       # the last training images: validation of the retrained network, never searched on
RESULT_FIELDS = ("genotype", "arch_probs", "search_history", "search_seconds", "valid_acc", "test_acc",
                 "retrain_history", "retrain_seconds")


def _flag(name: str) -> str:
    return _FLAGS.get(name, "--" + name.replace("_", "-"))


def settings(args: argparse.Namespace) -> Dict[str, Any]:
    """The preset chosen by `--full` with the command line's overrides, checked.

    Args:
        args: the parsed arguments of `quasigrad bench nas`.

    Returns:
        The settings (the keys of `SHORT` but `seeds`).

    Raises:
        BenchmarkError: a size that is not positive or exceeds what MNIST holds, or a rate or
            temperature that is not a positive number.
    """
    spec = dict(FULL if args.full else SHORT)
    del spec["seeds"]
    for name in _OVERRIDES:
        if getattr(args, name) is not None:
            spec[name] = getattr(args, name)
    for name in ("channels", "search_size", "search_epochs", "retrain_size", "retrain_epochs", "valid_size",
                 "test_size", "batch"):
        if spec[name] < 1:
            raise runner.BenchmarkError(f"{_flag(name)} must be >= 1, got {spec[name]}")
    if spec["search_size"] < 2 * spec["batch"]:
        raise runner.BenchmarkError(f"--search-size must hold two batches of --batch-size (>= {2 * spec['batch']}), "
                                    f"got {spec['search_size']}")
    if max(spec["search_size"], spec["retrain_size"]) > 60_000 - VALID_SIZE:
        raise runner.BenchmarkError(f"--search-size and --retrain-size must be <= {60_000 - VALID_SIZE} (the last "
                                    f"{VALID_SIZE} training images are the validation set)")
    if spec["valid_size"] > VALID_SIZE:
        raise runner.BenchmarkError(f"--valid-size must be <= {VALID_SIZE}, got {spec['valid_size']}")
    if spec["test_size"] > 10_000:
        raise runner.BenchmarkError(f"--test-size must be <= 10000, got {spec['test_size']}")
    for name in ("arch_lr", "tau_max", "tau_min"):
        if not (spec[name] > 0 and math.isfinite(spec[name])):
            raise runner.BenchmarkError(f"--{name.replace('_', '-')} must be a positive number, got {spec[name]}")
    return spec


def load_data(path: Optional[str]) -> Dict[str, torch.Tensor]:
    """MNIST images `uint8 (N, 28, 28)` and labels; `prep` makes a batch the networks' input.

    Args:
        path: the MNIST directory (`None`: the loader's search path).

    Returns:
        `train_x`, `train_y`, `test_x`, `test_y`.

    Raises:
        BenchmarkError: missing or damaged MNIST files.
    """
    mnist = runner.load_mnist_arg(path)
    return {"train_x": mnist.train_images, "train_y": mnist.train_labels,
            "test_x": mnist.test_images, "test_y": mnist.test_labels}


def prep(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A batch of `uint8` images as normalised `(B, 1, 28, 28)` floats on `device`."""
    return ((images.to(device).float() / 255.0 - 0.1307) / 0.3081).unsqueeze(1)


def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device, batch: int = 500,
             **kw: Any) -> float:
    """Accuracy (%) of `model` in evaluation mode on `uint8` images `x` with labels `y`
    (`kw` goes to the model's forward, e.g. `argmax=True` for the supernet)."""
    was = model.training
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, x.shape[0], batch):
            correct += int((model(prep(x[i:i + batch], device), **kw).argmax(-1).cpu() == y[i:i + batch]).sum())
    model.train(was)
    return 100.0 * correct / max(1, y.numel())


def unit_steps(spec: Dict[str, Any]) -> int:
    """Steps of one unit: the search's and the retraining's."""
    return (spec["search_epochs"] * ((spec["search_size"] // 2) // spec["batch"])
            + spec["retrain_epochs"] * math.ceil(spec["retrain_size"] / spec["batch"]))


class _Checkpoint:
    """The state of one unit after each epoch, in one file written atomically; a file written
    under other settings, or damaged, stops the run with one line (never a half-resume)."""

    def __init__(self, path: Optional[Path], key: str):
        self.path, self.key = path, key

    def load(self) -> Optional[Dict[str, Any]]:
        if self.path is None or not self.path.exists():
            return None
        state = runner.load_checkpoint(self.path, map_location="cpu", required=("key", "phase", "epoch"))
        if state["key"] != self.key:
            raise runner.BenchmarkError(f"checkpoint {self.path} was written under other settings; delete it, "
                                        f"or pass --fresh to start over")
        return state

    def save(self, **state: Any) -> None:
        if self.path is not None:
            runner.save_checkpoint({"key": self.key, **state}, self.path)


def _restoring(checkpoint: Optional[_Checkpoint]) -> Any:
    """Failures while restoring from `checkpoint` as one `BenchmarkError` naming the file."""
    path = checkpoint.path if checkpoint is not None and checkpoint.path is not None else Path("checkpoint")
    return runner.restoring_checkpoint(path)


def _states(gen: torch.Generator, **parts: Any) -> Dict[str, Any]:
    """What a checkpoint holds of a phase: each part's `state_dict()` under its name, the data
    order generator's state and the global RNG state."""
    return {**{k: v.state_dict() for k, v in parts.items()}, "gen": gen.get_state(), "rng": torch.get_rng_state()}


def _restore(state: Dict[str, Any], gen: torch.Generator, **parts: Any) -> None:
    """Load what [`_states`][quasigrad.bench.nas._states] saved back into `parts` and `gen`."""
    for k, v in parts.items():
        v.load_state_dict(state[k])
    gen.set_state(state["gen"])
    torch.set_rng_state(state["rng"])


def search(data: Dict[str, torch.Tensor], estimator: str, seed: int, spec: Dict[str, Any], *, device: torch.device,
           log: Optional[Callable[[str], None]] = None, checkpoint: Optional[_Checkpoint] = None,
           state: Optional[Dict[str, Any]] = None, on_step: Optional[Callable[[Optional[str]], None]] = None
           ) -> Dict[str, Any]:
    """GDAS search (resumed from `state`, a search-phase checkpoint, if given); returns the
    genotype, the final architecture probabilities, a history and the seconds it took."""
    from ..models.nas import SearchNetwork

    torch.manual_seed(seed)
    net = SearchNetwork(spec["channels"], spec["cells"], spec["stages"], stem_stride=spec["stem_stride"],
                        estimator=estimator, tau=spec["tau_max"]).to(device)
    w_opt = torch.optim.SGD(net.weight_parameters(), lr=spec["w_lr"], momentum=0.9, nesterov=True, weight_decay=5e-4)
    a_opt = torch.optim.Adam([net.arch_logits], lr=spec["arch_lr"], betas=(0.5, 0.999), weight_decay=1e-3)
    half = spec["search_size"] // 2
    wx, wy = data["train_x"][:half], data["train_y"][:half]
    ax, ay = data["train_x"][half:2 * half], data["train_y"][half:2 * half]
    steps_per_epoch = half // spec["batch"]
    total = spec["search_epochs"] * steps_per_epoch
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(w_opt, T_max=max(1, total), eta_min=1e-3)
    gen = torch.Generator().manual_seed(seed)
    history: List[Dict[str, Any]] = []
    start, step, elapsed = 0, 0, 0.0
    if state is not None:
        with _restoring(checkpoint):
            _restore(state, gen, net=net, w_opt=w_opt, a_opt=a_opt, sched=sched)
            history, start = list(state["history"]), int(state["epoch"])
            step, elapsed = int(state["step"]), float(state["elapsed"])
    for epoch in range(start, spec["search_epochs"]):
        t0 = time.perf_counter()
        pw, pa = torch.randperm(half, generator=gen), torch.randperm(half, generator=gen)
        for b in range(steps_per_epoch):
            # τ decays linearly from tau_max to tau_min over the search (GDAS)
            net.tau = spec["tau_max"] - (spec["tau_max"] - spec["tau_min"]) * step / max(1, total - 1)
            sl = slice(b * spec["batch"], (b + 1) * spec["batch"])
            for x, y, opt, params in ((wx[pw[sl]], wy[pw[sl]], w_opt, net.weight_parameters()),
                                      (ax[pa[sl]], ay[pa[sl]], a_opt, [net.arch_logits])):
                loss = torch.nn.functional.cross_entropy(net(prep(x, device)), y.to(device))
                w_opt.zero_grad(set_to_none=True)
                a_opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 5.0)
                opt.step()
            if not math.isfinite(float(loss.detach())):
                raise runner.BenchmarkError(f"{estimator} seed {seed}: the search loss became {float(loss.detach())} "
                                     f"at step {step}")
            sched.step()
            step += 1
            if on_step is not None:
                on_step(f"search τ {net.tau:.2f}" if step % 10 == 0 else None)
        acc = accuracy(net, ax, ay, device, argmax=True)
        elapsed += time.perf_counter() - t0
        history.append({"epoch": epoch + 1, "arch_loss": float(loss.detach()), "argmax_acc": acc, "tau": net.tau,
                        "genotype": list(net.genotype())})
        if log is not None:
            log(f"{estimator} seed {seed} search epoch {epoch + 1}/{spec['search_epochs']}: argmax-architecture "
                f"accuracy {acc:.2f}% on the architecture half, {'|'.join(net.genotype())}")
        if checkpoint is not None:
            checkpoint.save(phase="search", epoch=epoch + 1, step=step, elapsed=elapsed, history=history,
                            **_states(gen, net=net, w_opt=w_opt, a_opt=a_opt, sched=sched))
    return {"genotype": list(net.genotype()), "arch_probs": torch.softmax(net.arch_logits.detach(), -1).tolist(),
            "search_history": history, "search_seconds": elapsed}


def retrain(data: Dict[str, torch.Tensor], genotype, seed: int, spec: Dict[str, Any], *, device: torch.device,
            log: Optional[Callable[[str], None]] = None, checkpoint: Optional[_Checkpoint] = None,
            state: Optional[Dict[str, Any]] = None, found: Optional[Dict[str, Any]] = None,
            on_step: Optional[Callable[[Optional[str]], None]] = None) -> Dict[str, Any]:
    """Train the architecture `genotype` from scratch (resumed from `state`, a retrain-phase
    checkpoint, if given; `found`, the search's result, is kept in the checkpoints);
    validation and test accuracy (%), history and seconds."""
    from ..models.nas import FixedNetwork

    torch.manual_seed(seed + 10_000)
    net = FixedNetwork(genotype, spec["channels"], spec["cells"], spec["stages"],
                       stem_stride=spec["stem_stride"]).to(device)
    n = spec["retrain_size"]
    x, y = data["train_x"][:n], data["train_y"][:n]
    steps = spec["retrain_epochs"] * math.ceil(n / spec["batch"])
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    gen = torch.Generator().manual_seed(seed + 10_000)
    history: List[Dict[str, Any]] = []
    start, elapsed = 0, 0.0
    if state is not None:
        with _restoring(checkpoint):
            _restore(state, gen, net=net, opt=opt, sched=sched)
            history, start, elapsed = list(state["history"]), int(state["epoch"]), float(state["elapsed"])
    for epoch in range(start, spec["retrain_epochs"]):
        t0 = time.perf_counter()
        perm, loss_sum = torch.randperm(n, generator=gen), 0.0
        for i in range(0, n, spec["batch"]):
            idx = perm[i:i + spec["batch"]]
            loss = torch.nn.functional.cross_entropy(net(prep(x[idx], device)), y[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += float(loss.detach()) * idx.numel()
            if on_step is not None:
                on_step(None)
        elapsed += time.perf_counter() - t0
        history.append({"epoch": epoch + 1, "train_loss": loss_sum / n})
        if log is not None:
            log(f"  retrain epoch {epoch + 1}/{spec['retrain_epochs']}: train loss {loss_sum / n:.4f}")
        if checkpoint is not None:
            checkpoint.save(phase="retrain", found=found, epoch=epoch + 1, elapsed=elapsed, history=history,
                            **_states(gen, net=net, opt=opt, sched=sched))
    vx, vy = data["train_x"][-VALID_SIZE:][:spec["valid_size"]], data["train_y"][-VALID_SIZE:][:spec["valid_size"]]
    t = spec["test_size"]
    return {"valid_acc": accuracy(net, vx, vy, device), "test_acc": accuracy(net, data["test_x"][:t],
                                                                           data["test_y"][:t], device),
            "retrain_history": history, "retrain_seconds": elapsed}


def run_unit(data: Dict[str, torch.Tensor], estimator: str, seed: int, spec: Dict[str, Any], *,
             device: torch.device, log: Optional[Callable[[str], None]] = None,
             checkpoint: Optional[Path] = None, on_step: Optional[Callable[[Optional[str]], None]] = None
             ) -> Dict[str, Any]:
    """One unit of the benchmark: search with `estimator`, derive, retrain; all results.
    With `checkpoint`, the unit's state is saved after every epoch and resumed from there."""
    ck = _Checkpoint(checkpoint, json.dumps({"spec": spec, "estimator": estimator, "seed": seed}, sort_keys=True))
    state = ck.load()
    if state is not None and state["phase"] == "retrain":
        with _restoring(ck):
            found = dict(state["found"])
    else:
        found = search(data, estimator, seed, spec, device=device, log=log, checkpoint=ck, state=state,
                       on_step=on_step)
        state = None
    result = retrain(data, found["genotype"], seed, spec, device=device, log=log, checkpoint=ck, state=state,
                     found=found, on_step=on_step)
    return {**found, **result}


class NAS(runner.Benchmark):
    name = "nas"
    description = DESCRIPTION
    seeds, full_seeds = SHORT["seeds"], FULL["seeds"]
    full = "longer search and retraining (hours per unit on a CPU)"
    estimators = f"sample-level estimators on the architecture logits (default: {' '.join(DEFAULT_ESTIMATORS)})"
    device = threads = checkpoints = True
    default_threads = 1                       # a shared machine
    result_fields = RESULT_FIELDS

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        for name in _OVERRIDES:
            kind = float if name in ("arch_lr", "tau_max", "tau_min") else int
            parser.add_argument(_flag(name), dest=name, type=kind, default=None,
                                help=f"override the preset's {name} (short: {SHORT[name]}, full: {FULL[name]})")
        parser.add_argument("--data", default=None,
                            help="MNIST directory (default: $QUASIGRAD_MNIST, the user cache, then "
                                 "../shared/data/mnist)")

    def plan(self, args: argparse.Namespace, ctx: runner.Context) -> runner.Plan:
        self.spec = spec = settings(args)
        self.names = sample_level_names(args.estimators, default=DEFAULT_ESTIMATORS, model="the supernet")
        self.preset = "full" if args.full else (
            "short preset" + (" with overrides" if any(getattr(args, n) is not None for n in _OVERRIDES) else ""))
        print("data: MNIST (CIFAR-10/100, ImageNet-16-120 and NATS-Bench, on which the paper measures, are not "
              "reachable here); the paper's column is its CIFAR-10 figure, another data set")
        units = [runner.Unit(f"{e}/seed{s}", (e, s), steps=unit_steps(spec))
                 for e in self.names for s in ctx.seeds or []]
        return runner.Plan(spec, units)

    def prepare(self, ctx: runner.Context) -> None:
        self.data = load_data(ctx.args.data)           # only when a unit is left to run

    def run_unit(self, unit: runner.Unit, ctx: runner.Context) -> Dict[str, Any]:
        estimator, seed = unit.data
        assert ctx.device is not None                  # the benchmark takes --device
        return run_unit(self.data, estimator, seed, self.spec, device=ctx.device, checkpoint=ctx.checkpoint(unit),
                        on_step=ctx.step)

    def report(self, store: runner.ResultStore, ctx: runner.Context) -> Dict[str, Any]:
        rows = summarise(store, self.names, ctx.seeds or [])
        text = format_rows(rows)
        print(f"\nGDAS-style search on MNIST, {self.preset}: accuracy (%) of the derived architecture retrained "
              f"from scratch, mean ± std over seeds {' '.join(map(str, ctx.seeds or []))}; the paper's column is its "
              f"CIFAR-10 figure (NATS-Bench), another data set")
        print(text)
        for r in rows:
            print(f"{_display(r['estimator'])} architectures (edges 1<-0 2<-0 2<-1 3<-0 3<-1 3<-2): "
                  + "; ".join(r["genotypes"]))
        _plot(rows, ctx, f"GDAS-style search on MNIST, {self.preset}")
        return {"summary": rows, "table": text, "setting": self.preset}


BENCHMARK = NAS


def _display(name: str) -> str:
    from .paper import display_name

    return f"GDAS + {display_name(name)}"


def summarise(store: Any, estimators: List[str], seeds: List[int]) -> List[Dict[str, Any]]:
    """One row per estimator: mean ± std over the seeds present, the architectures found, and the
    paper's CIFAR-10 figures.

    Args:
        store: the result store (or any mapping with `in` and `[]` by key).
        estimators: names as the keys spell them.
        seeds: the seeds to average.

    Returns:
        Rows with `estimator`, `seeds`, `valid`, `test` (mean, std), `genotypes`,
        `seconds` (per unit) and `paper_valid`, `paper_test` (the paper's CIFAR-10, or None).
    """
    rows = []
    for e in estimators:
        res = [store[f"{e}/seed{s}"] for s in seeds if f"{e}/seed{s}" in store]
        if not res:
            continue
        paper = (by_estimator(PAPER_TABLE4_NAS, e) or {}).get("cifar10")
        rows.append({"estimator": e, "seeds": len(res), "valid": runner.mean_std([r["valid_acc"] for r in res]),
                     "test": runner.mean_std([r["test_acc"] for r in res]),
                     "genotypes": ["|".join(r["genotype"]) for r in res],
                     "seconds": runner.mean_std([r["search_seconds"] + r["retrain_seconds"] for r in res])[0],
                     "paper_valid": paper["valid"] if paper else None, "paper_test": paper["test"] if paper else None})
    return rows


def format_rows(rows: List[Dict[str, Any]]) -> str:
    """The table of `summarise`'s rows (the paper's column labelled as the paper's, on CIFAR-10)."""
    def pm(v, n=0):   # a single seed has no spread to show
        return "n/a" if not v else f"{v[0]:.2f} (n = 1)" if n == 1 else f"{v[0]:.2f} ± {v[1]:.2f}"

    table = [[_display(r["estimator"]), r["seeds"], pm(r["valid"], r["seeds"]), pm(r["test"], r["seeds"]),
              pm(r["paper_test"]),
              f"{r['seconds']:.0f}"] for r in rows]
    return runner.format_table(table, ["estimator", "seeds", "MNIST valid acc %", "MNIST test acc %",
                                       "paper's CIFAR-10 test (Table 4)", "s/unit"])


def _plot(rows: List[Dict[str, Any]], ctx: runner.Context, title: str) -> None:
    plt = ctx.pyplot()
    if plt is None or not rows:
        return
    fig, ax = plt.subplots(figsize=(1.5 * len(rows) + 3, 4))
    xs = list(range(len(rows)))
    for k, field in enumerate(("valid", "test")):
        ax.bar([x + (k - 0.5) * 0.35 for x in xs], [r[field][0] for r in rows], 0.35,
               yerr=[r[field][1] for r in rows], capsize=3, label=f"MNIST {field} (ours, retrained)")
    ax.set_xticks(xs)
    ax.set_xticklabels([_display(r["estimator"]) for r in rows])
    lo = min(r[f][0] - r[f][1] for r in rows for f in ("valid", "test"))
    ax.set_ylim(max(0.0, lo - 5.0), 100.0)
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    ctx.figure(fig, "nas.png")
