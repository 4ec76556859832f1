"""``quasigrad bench nas``: GDAS-style architecture search (Dong and Yang 2019) with each
estimator on the architecture logits, the experiment of the ReinMax paper's Table 4, on MNIST.

For each estimator and seed: search with :class:`quasigrad.models.nas.SearchNetwork` (the
NAS-Bench-201 cell: 4 nodes, 6 edges, each edge one of none, skip, 3×3 conv, 1×1 conv, 3×3
average pooling; one operation drawn per edge and per forward pass, only it runs), alternating
a step on the network's weights (SGD on one half of the search images) and a step on the
architecture logits (Adam on the other half), τ decaying linearly from ``--tau-max`` to
``--tau-min`` as in GDAS; derive the argmax architecture; train it from scratch
(:class:`quasigrad.models.nas.FixedNetwork`; SGD with Nesterov momentum, learning rate 0.1 on a
cosine schedule, as NATS-Bench trains its networks) and report its validation accuracy (on images
from the last 5,000 training images, never searched or trained on) and test accuracy (the MNIST
test set), mean ± std over seeds.

**Data.** The paper searches on CIFAR-10 and reads the accuracies of the found architecture
from NATS-Bench (CIFAR-10, CIFAR-100, ImageNet-16-120). Neither CIFAR nor NATS-Bench is
reachable from here, so this benchmark searches and retrains on MNIST (the data this project
has); the paper's Table 4 is printed beside ours for orientation only (another data set).

Short preset (default; minutes on a small CPU): 8 channels, a stem of stride 2 (the cells see
14 × 14, 7 × 7 and 4 × 4 maps), one cell per stage and three stages, search on 2 × 2,000 images
for 3 epochs, retrain on 5,000 images for 2 epochs, validate and test on 2,000 each; seeds 0 1. ``--full``: 16 channels, two cells per stage, three stages, search on 2 × 25,000
images for 50 epochs, retrain on 55,000 images for 20 epochs, all 10,000 test images, seeds 0–4
(our choice of sizes: MNIST needs far less than CIFAR's 250 search epochs).

Every unit (estimator, seed) checkpoints after each search and retraining epoch to
``--out/checkpoints`` and resumes there; finished units are kept in ``--out/nas.json``, a plot
in ``--out/nas.png``.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch

from .listops import resolve_device
from .runner import (
    BenchmarkError,
    ResultStore,
    add_common_arguments,
    atomic_torch_save,
    check_out_dir,
    format_table,
    load_mnist_arg,
    mean_std,
    progress,
    save_figure,
)

DESCRIPTION = "GDAS-style architecture search on MNIST (ReinMax paper, Table 4's method): retrained accuracy per estimator"

DEFAULT_ESTIMATORS = ["gumbel_softmax", "reinmax"]
DISPLAY = {"gumbel_softmax": "GDAS + STGS", "stgs": "GDAS + STGS", "reinmax": "GDAS + ReinMax"}

#: The ReinMax paper's Table 4 (NATS-Bench, accuracy %, mean ± std): the paper's numbers, on CIFAR-10.
PAPER_TABLE4_CIFAR10 = {"gumbel_softmax": {"valid": (89.68, 0.72), "test": (93.23, 0.58)},
                        "reinmax": {"valid": (90.01, 0.12), "test": (93.44, 0.23)}}
_ALIASES = {"stgs": "gumbel_softmax"}

SHORT: Dict[str, Any] = dict(channels=8, cells=1, stages=3, stem_stride=2, search_size=4000, search_epochs=3,
                             retrain_size=5000, retrain_epochs=2, valid_size=2000, test_size=2000, batch=64, w_lr=0.05, arch_lr=3e-3,
                             tau_max=10.0, tau_min=0.1, seeds=[0, 1])
FULL: Dict[str, Any] = dict(channels=16, cells=2, stages=3, stem_stride=1, search_size=50_000, search_epochs=50,
                            retrain_size=55_000, retrain_epochs=20, valid_size=5000, test_size=10_000, batch=64, w_lr=0.025,
                            arch_lr=3e-4, tau_max=10.0, tau_min=0.1, seeds=[0, 1, 2, 3, 4])
_OVERRIDES = ("channels", "search_size", "search_epochs", "retrain_size", "retrain_epochs", "valid_size", "test_size",
              "batch",
              "arch_lr", "tau_max", "tau_min")
VALID_SIZE = 5000       # the last training images: validation of the retrained network, never searched on


def add_arguments(parser) -> None:
    add_common_arguments(parser, default_out="results/nas", seeds=None)
    parser.add_argument("--seeds", type=int, nargs="+", default=None,
                        help=f"seeds (default: {SHORT['seeds']}; with --full: {FULL['seeds']})")
    parser.add_argument("--full", action="store_true", help="longer search and retraining (hours per unit on a CPU)")
    for name in _OVERRIDES:
        kind = float if name in ("arch_lr", "tau_max", "tau_min") else int
        parser.add_argument("--" + name.replace("_", "-"), type=kind, default=None,
                            help=f"override the preset's {name} (short: {SHORT[name]}, full: {FULL[name]})")
    parser.add_argument("--data", default=None,
                        help="MNIST directory (default: $QUASIGRAD_MNIST, the user cache, then ../shared/data/mnist)")
    parser.add_argument("--device", default="cpu", help="cpu (default), or cuda / cuda:N where present")
    parser.add_argument("--threads", type=int, default=1, help="torch threads on the CPU (default 1: a shared machine)")


def settings(args) -> Dict[str, Any]:
    """The preset chosen by ``--full`` with the command line's overrides, checked."""
    spec = dict(FULL if args.full else SHORT)
    for name in _OVERRIDES:
        if getattr(args, name) is not None:
            spec[name] = getattr(args, name)
    for name in ("channels", "search_size", "search_epochs", "retrain_size", "retrain_epochs", "valid_size", "test_size",
                 "batch"):
        if spec[name] < 1:
            raise BenchmarkError(f"--{name.replace('_', '-')} must be >= 1, got {spec[name]}")
    if spec["search_size"] < 2 * spec["batch"]:
        raise BenchmarkError(f"--search-size must hold two batches (>= {2 * spec['batch']}), got {spec['search_size']}")
    if max(spec["search_size"], spec["retrain_size"]) > 60_000 - VALID_SIZE:
        raise BenchmarkError(f"--search-size and --retrain-size must be <= {60_000 - VALID_SIZE} (the last "
                             f"{VALID_SIZE} training images are the validation set)")
    if spec["valid_size"] > VALID_SIZE:
        raise BenchmarkError(f"--valid-size must be <= {VALID_SIZE}, got {spec['valid_size']}")
    if spec["test_size"] > 10_000:
        raise BenchmarkError(f"--test-size must be <= 10000, got {spec['test_size']}")
    for name in ("arch_lr", "tau_max", "tau_min"):
        if not (spec[name] > 0 and math.isfinite(spec[name])):
            raise BenchmarkError(f"--{name.replace('_', '-')} must be a positive number, got {spec[name]}")
    if args.threads < 1:
        raise BenchmarkError(f"--threads must be >= 1, got {args.threads}")
    spec["seeds"] = list(args.seeds) if args.seeds is not None else spec["seeds"]
    return spec


def load_data(path: Optional[str]) -> Dict[str, torch.Tensor]:
    """MNIST images ``uint8 (N, 28, 28)`` and labels (BenchmarkError if missing); :func:`prep`
    makes a batch the networks' input."""
    mnist = load_mnist_arg(path)
    return {"train_x": mnist.train_images, "train_y": mnist.train_labels,
            "test_x": mnist.test_images, "test_y": mnist.test_labels}


def prep(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A batch of ``uint8`` images as normalised ``(B, 1, 28, 28)`` floats on ``device``."""
    return ((images.to(device).float() / 255.0 - 0.1307) / 0.3081).unsqueeze(1)


def accuracy(model, x: torch.Tensor, y: torch.Tensor, device: torch.device, batch: int = 500, **kw) -> float:
    """Accuracy (%) of ``model`` in evaluation mode on ``uint8`` images ``x``."""
    was = model.training
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, x.shape[0], batch):
            correct += int((model(prep(x[i:i + batch], device), **kw).argmax(-1).cpu() == y[i:i + batch]).sum())
    model.train(was)
    return 100.0 * correct / max(1, y.numel())


class _Checkpoint:
    """The state of one unit after each epoch, in one file written atomically; a file written
    under other settings, or damaged, stops the run with one line (never a half-resume)."""

    def __init__(self, path: Optional[Path], key: str):
        self.path, self.key = path, key

    def load(self) -> Optional[Dict[str, Any]]:
        if self.path is None or not self.path.exists():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
            if not isinstance(state, dict) or state.get("key") != self.key:
                raise ValueError("it was written under other settings")
            return state
        except Exception as exc:
            raise BenchmarkError(f"checkpoint {self.path} cannot be resumed ({type(exc).__name__}: {exc}); "
                                 f"delete it or pass --fresh") from None

    def save(self, **state: Any) -> None:
        if self.path is not None:
            atomic_torch_save({"key": self.key, **state}, self.path)


def search(data: Dict[str, torch.Tensor], estimator: str, seed: int, spec: Dict[str, Any], *, device: torch.device,
           log: Optional[Callable[[str], None]] = None, checkpoint: Optional[_Checkpoint] = None,
           state: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """GDAS search (resumed from ``state``, a search-phase checkpoint, if given); returns the
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
        net.load_state_dict(state["net"])
        w_opt.load_state_dict(state["w_opt"])
        a_opt.load_state_dict(state["a_opt"])
        sched.load_state_dict(state["sched"])
        gen.set_state(state["gen"])
        torch.set_rng_state(state["rng"])
        history, start, step, elapsed = list(state["history"]), state["epoch"], state["step"], state["elapsed"]
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
                raise BenchmarkError(f"{estimator} seed {seed}: the search loss became {float(loss.detach())} "
                                     f"at step {step}")
            sched.step()
            step += 1
        acc = accuracy(net, ax, ay, device, argmax=True)
        elapsed += time.perf_counter() - t0
        history.append({"epoch": epoch + 1, "arch_loss": float(loss.detach()), "argmax_acc": acc, "tau": net.tau,
                        "genotype": list(net.genotype())})
        if log is not None:
            log(f"{estimator} seed {seed} search epoch {epoch + 1}/{spec['search_epochs']}: argmax-architecture "
                f"accuracy {acc:.2f}% on the architecture half, {'|'.join(net.genotype())}")
        if checkpoint is not None:
            checkpoint.save(phase="search", epoch=epoch + 1, step=step, elapsed=elapsed, history=history,
                            net=net.state_dict(), w_opt=w_opt.state_dict(), a_opt=a_opt.state_dict(),
                            sched=sched.state_dict(), gen=gen.get_state(), rng=torch.get_rng_state())
    return {"genotype": list(net.genotype()), "arch_probs": torch.softmax(net.arch_logits.detach(), -1).tolist(),
            "search_history": history, "search_seconds": elapsed}


def retrain(data: Dict[str, torch.Tensor], genotype, seed: int, spec: Dict[str, Any], *, device: torch.device,
            log: Optional[Callable[[str], None]] = None, checkpoint: Optional[_Checkpoint] = None,
            state: Optional[Dict[str, Any]] = None, found: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Train the architecture ``genotype`` from scratch (resumed from ``state``, a retrain-phase
    checkpoint, if given; ``found``, the search's result, is kept in the checkpoints);
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
        net.load_state_dict(state["net"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        gen.set_state(state["gen"])
        torch.set_rng_state(state["rng"])
        history, start, elapsed = list(state["history"]), state["epoch"], state["elapsed"]
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
        elapsed += time.perf_counter() - t0
        history.append({"epoch": epoch + 1, "train_loss": loss_sum / n})
        if log is not None:
            log(f"  retrain epoch {epoch + 1}/{spec['retrain_epochs']}: train loss {loss_sum / n:.4f}")
        if checkpoint is not None:
            checkpoint.save(phase="retrain", found=found, epoch=epoch + 1, elapsed=elapsed, history=history,
                            net=net.state_dict(), opt=opt.state_dict(), sched=sched.state_dict(),
                            gen=gen.get_state(), rng=torch.get_rng_state())
    vx, vy = data["train_x"][-VALID_SIZE:][:spec["valid_size"]], data["train_y"][-VALID_SIZE:][:spec["valid_size"]]
    t = spec["test_size"]
    return {"valid_acc": accuracy(net, vx, vy, device), "test_acc": accuracy(net, data["test_x"][:t],
                                                                           data["test_y"][:t], device),
            "retrain_history": history, "retrain_seconds": elapsed}


def run_unit(data: Dict[str, torch.Tensor], estimator: str, seed: int, spec: Dict[str, Any], *,
             device: torch.device, log: Optional[Callable[[str], None]] = None,
             checkpoint: Optional[Path] = None) -> Dict[str, Any]:
    """One unit of the benchmark: search with ``estimator``, derive, retrain; all results.
    With ``checkpoint``, the unit's state is saved after every epoch and resumed from there."""
    ck = _Checkpoint(checkpoint, json.dumps({"spec": spec, "estimator": estimator, "seed": seed}, sort_keys=True))
    state = ck.load()
    if state is not None and state["phase"] == "retrain":
        found = dict(state["found"])
    else:
        found = search(data, estimator, seed, spec, device=device, log=log, checkpoint=ck, state=state)
        state = None
    result = retrain(data, found["genotype"], seed, spec, device=device, log=log, checkpoint=ck, state=state,
                     found=found)
    return {**found, **result}


def summarise(store: ResultStore, estimators: List[str], seeds: List[int]) -> List[Dict[str, Any]]:
    rows = []
    for e in estimators:
        res = [store[f"{e}/seed{s}"] for s in seeds if f"{e}/seed{s}" in store]
        if not res:
            continue
        paper = PAPER_TABLE4_CIFAR10.get(_ALIASES.get(e, e))
        rows.append({"estimator": e, "seeds": len(res), "valid": mean_std([r["valid_acc"] for r in res]),
                     "test": mean_std([r["test_acc"] for r in res]),
                     "genotypes": ["|".join(r["genotype"]) for r in res],
                     "seconds": mean_std([r["search_seconds"] + r["retrain_seconds"] for r in res])[0],
                     "paper_test": paper["test"] if paper else None})
    return rows


def format_rows(rows: List[Dict[str, Any]]) -> str:
    def pm(v):
        return f"{v[0]:.2f} ± {v[1]:.2f}" if v else "n/a"

    table = [[DISPLAY.get(r["estimator"], r["estimator"]), r["seeds"], pm(r["valid"]), pm(r["test"]),
              pm(r["paper_test"]), f"{r['seconds']:.0f}"] for r in rows]
    return format_table(table, ["estimator", "seeds", "MNIST valid acc %", "MNIST test acc %",
                                "paper CIFAR-10 test (Table 4)", "s/unit"])


def plot(rows: List[Dict[str, Any]], path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.5 * len(rows) + 3, 4))
    xs = list(range(len(rows)))
    for k, field in enumerate(("valid", "test")):
        ax.bar([x + (k - 0.5) * 0.35 for x in xs], [r[field][0] for r in rows], 0.35,
               yerr=[r[field][1] for r in rows], capsize=3, label=f"MNIST {field} (ours, retrained)")
    ax.set_xticks(xs)
    ax.set_xticklabels([DISPLAY.get(r["estimator"], r["estimator"]) for r in rows])
    lo = min(r[f][0] - r[f][1] for r in rows for f in ("valid", "test"))
    ax.set_ylim(max(0.0, lo - 5.0), 100.0)
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def run(args) -> int:
    from .. import registry

    spec = settings(args)
    estimators = registry.resolve_names(args.estimators, default=DEFAULT_ESTIMATORS)
    for e in estimators:
        if registry.get(e).categorical is None:
            raise BenchmarkError(f"--estimators: {e!r} has no sample-level function for categorical variables; "
                                 f"the supernet needs one of {registry.names(variable='categorical', layer=1)}")
    device = resolve_device(args.device)
    torch.set_num_threads(args.threads)
    out = check_out_dir(args.out)
    print("data: MNIST (CIFAR-10/100, ImageNet-16-120 and NATS-Bench, on which the paper measures, are not "
          "reachable here); the paper's column is its CIFAR-10 figure, another data set")
    config = {k: v for k, v in spec.items() if k != "seeds"}
    store = ResultStore(out, "nas", config=config, fresh=args.fresh)
    log = None if args.no_progress else (lambda line: print(line, file=sys.stderr, flush=True))
    units = [(e, s) for e in estimators for s in spec["seeds"]]
    ckdir = check_out_dir(out / "checkpoints")
    data: Optional[Dict[str, torch.Tensor]] = None            # read only when a unit is left to run
    for e, s in progress(units, desc="nas", disable=args.no_progress):
        if f"{e}/seed{s}" in store:
            continue
        ck = ckdir / f"nas_{e}_seed{s}.pt"
        if args.fresh and ck.exists():
            ck.unlink()
        data = data if data is not None else load_data(args.data)
        store.put(f"{e}/seed{s}", run_unit(data, e, s, spec, device=device, log=log, checkpoint=ck))
        ck.unlink(missing_ok=True)
    rows = summarise(store, estimators, spec["seeds"])
    text = format_rows(rows)
    preset = "full" if args.full else "short preset (smoke scale)"
    print(f"\nGDAS-style search on MNIST, {preset}: accuracy of the derived architecture retrained from scratch, "
          f"mean ± std over seeds")
    print(text)
    for r in rows:
        print(f"{DISPLAY.get(r['estimator'], r['estimator'])} architectures (edges 1<-0 2<-0 2<-1 3<-0 3<-1 3<-2): "
              + "; ".join(r["genotypes"]))
    store.save(summary=rows, table=text, setting=preset)
    png = out / "nas.png"
    plot(rows, png, f"GDAS-style search on MNIST, {preset}")
    print(f"results: {store.path}  plot: {png}")
    return 0
