"""``quasigrad bench listops``: unsupervised parsing on ListOps with a Gumbel tree-LSTM, the
experiment of the ReinMax paper's Table 1 (Liu et al. 2023, NeurIPS).

For each estimator and seed, trains :class:`quasigrad.models.tree_lstm.GumbelTreeClassifier`
(leaf LSTM, Tree-LSTM composition, one sampled merge per step whose gradient is the
estimator's, MLP classifier; argmax merges at evaluation) to predict the value of a ListOps
expression, and reports the validation and test accuracy of the final model, mean ± std over
seeds, beside the paper's Table 1 (labelled as the paper's).

The data are **generated** by :mod:`quasigrad.bench.listops_data` (the original generator's
grammar and limits; the ReinMax code's filter of fewer than 100 tokens), not read from the
original release, and cached on disk (``--data-dir``).

Short preset (default; minutes on a small CPU): 2,000 / 500 / 500 sentences of at most 20
tokens, 32-dimensional model, 4 epochs, τ = 1.1, seeds 0 1. Its accuracies are far below the
paper's. (At τ = 1 ReinMax's gradient equals ZGR's on every draw, so τ = 1.1, the paper's
value, also keeps the two apart.)

``--full``: the paper's setting as its code runs it (github.com/LiyuanLucasLiu/ReinMax,
``listops/README.md``): 300-dimensional words, states and classifier, dropout 0.5, batch 16,
20 epochs, RAdam with learning rate 7e-4 halved when the validation accuracy stalls, gradient
norm clipped at 5, τ = 1.1, sentences of fewer than 100 tokens; 90,000 / 10,000 / 10,000
generated sentences, seeds 0–4. Differences that remain: generated rather than released data,
no GloVe initialisation (the paper's command passes ``--pretrained glove.840B.300d``, which
covers no ListOps token but the brackets and digits), validation once per epoch rather than
twice, and the same learning rate and τ for every estimator.

Every unit (estimator, seed) checkpoints after each epoch to ``--out/checkpoints`` and resumes
there; finished units are kept in ``--out/listops.json``, a plot in ``--out/listops.png``.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch

from .runner import (
    BenchmarkError,
    ResultStore,
    add_common_arguments,
    atomic_torch_save,
    check_out_dir,
    format_table,
    mean_std,
    progress,
    save_figure,
)

DESCRIPTION = "ListOps parsing with a Gumbel tree-LSTM (ReinMax paper, Table 1): valid/test accuracy per estimator"

DEFAULT_ESTIMATORS = ["st", "gumbel_softmax", "gumbel_rao", "gapped_st", "reinmax", "zgr"]
DISPLAY = {"st": "ST", "gumbel_softmax": "STGS", "stgs": "STGS", "gumbel_rao": "GR-MCK", "gapped_st": "GST-1.0",
           "gst": "GST-1.0", "reinmax": "ReinMax", "zgr": "ZGR", "darn": "DARN"}

#: The ReinMax paper's Table 1 (accuracy in %, mean ± std over its seeds): the paper's numbers.
PAPER_TABLE1 = {
    "gumbel_softmax": {"valid": (66.95, 3.05), "test": (67.30, 2.50)},
    "gumbel_rao": {"valid": (66.53, 0.58), "test": (66.53, 0.86)},
    "gapped_st": {"valid": (66.28, 0.52), "test": (66.30, 0.62)},
    "st": {"valid": (66.51, 0.76), "test": (66.26, 0.48)},
    "reinmax": {"valid": (67.65, 1.25), "test": (68.07, 1.18)},
}
_ALIASES = {"stgs": "gumbel_softmax", "gst": "gapped_st"}

SHORT: Dict[str, Any] = dict(train=2000, valid=500, test=500, max_length=20, epochs=4, batch=32, word_dim=32,
                             hidden=32, clf_hidden=32, dropout=0.1, lr=3e-3, tau=1.1, seeds=[0, 1])
FULL: Dict[str, Any] = dict(train=90_000, valid=10_000, test=10_000, max_length=99, epochs=20, batch=16,
                            word_dim=300, hidden=300, clf_hidden=300, dropout=0.5, lr=7e-4, tau=1.1,
                            seeds=[0, 1, 2, 3, 4])
_OVERRIDES = ("train", "valid", "test", "max_length", "epochs", "batch", "hidden", "lr", "tau")


def add_arguments(parser) -> None:
    add_common_arguments(parser, default_out="results/listops", seeds=None)
    parser.add_argument("--seeds", type=int, nargs="+", default=None,
                        help=f"seeds (default: {SHORT['seeds']}; with --full: {FULL['seeds']})")
    parser.add_argument("--full", action="store_true", help="the paper's setting (long: days per unit on a CPU)")
    for name in _OVERRIDES:
        kind = float if name in ("lr", "tau") else int
        parser.add_argument("--" + name.replace("_", "-"), type=kind, default=None,
                            help=f"override the preset's {name} (short: {SHORT[name]}, full: {FULL[name]})")
    parser.add_argument("--data-seed", type=int, default=0, help="seed of the generated data set (default 0)")
    parser.add_argument("--data-dir", default=None,
                        help="cache of the generated data (default: $QUASIGRAD_DATA/listops or ~/.cache/quasigrad/listops)")
    parser.add_argument("--device", default="cpu", help="cpu (default), or cuda / cuda:N where present")
    parser.add_argument("--threads", type=int, default=1, help="torch threads on the CPU (default 1: a shared machine)")


def resolve_device(name: str) -> torch.device:
    """``--device`` as a torch device; a clear :class:`BenchmarkError` for an unknown one or a
    CUDA device on a machine without CUDA."""
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise BenchmarkError(f"--device {name!r} is not a device; use cpu or cuda") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise BenchmarkError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise BenchmarkError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif device.type != "cpu":
        raise BenchmarkError(f"--device {name}: only cpu and cuda are supported")
    return device


def settings(args) -> Dict[str, Any]:
    """The preset chosen by ``--full`` with the command line's overrides, checked."""
    spec = dict(FULL if args.full else SHORT)
    for name in _OVERRIDES:
        v = getattr(args, name)
        if v is not None:
            spec[name] = v
    for name in ("train", "valid", "test", "max_length", "epochs", "batch", "hidden"):
        if spec[name] < 1:
            raise BenchmarkError(f"--{name.replace('_', '-')} must be >= 1, got {spec[name]}")
    for name in ("lr", "tau"):
        if not (spec[name] > 0 and math.isfinite(spec[name])):
            raise BenchmarkError(f"--{name} must be a positive number, got {spec[name]}")
    if args.threads < 1:
        raise BenchmarkError(f"--threads must be >= 1, got {args.threads}")
    if args.hidden is not None:
        spec["word_dim"] = spec["clf_hidden"] = args.hidden
    spec["optimizer"] = "radam" if args.full else "adam"
    spec["seeds"] = list(args.seeds) if args.seeds is not None else spec["seeds"]
    return spec


def load_data(spec: Dict[str, Any], data_seed: int, data_dir) -> Dict[str, Any]:
    """The generated splits as tensors, with the cache path (a damaged cache: BenchmarkError)."""
    from .listops_data import ListOpsConfig, ListOpsDataError, encode, load_or_generate

    cfg = ListOpsConfig(train=spec["train"], valid=spec["valid"], test=spec["test"], seed=data_seed,
                        max_length=spec["max_length"])
    try:
        splits, path, generated = load_or_generate(cfg, data_dir)
    except ListOpsDataError as exc:
        raise BenchmarkError(str(exc)) from None
    except ValueError as exc:                         # too few distinct expressions for the sizes
        raise BenchmarkError(f"ListOps data: {exc}") from None
    data: Dict[str, Any] = {name: encode(rows) for name, rows in splits.items()}
    data["meta"] = {"config": cfg.as_dict(), "cache": str(path), "generated_now": generated}
    return data


def accuracy(model, split, batch: int, device: torch.device) -> float:
    """Accuracy (%) of ``model`` in evaluation mode (argmax merges) on ``(ids, lengths, labels)``."""
    from .listops_data import batches

    ids, lengths, labels = split
    was_training = model.training
    model.eval()
    correct = 0
    with torch.no_grad():
        for idx in batches(lengths, batch, shuffle=False):
            n = int(lengths[idx].max())
            logits, _ = model(ids[idx, :n].to(device), lengths[idx].to(device))
            correct += int((logits.argmax(-1).cpu() == labels[idx]).sum())
    model.train(was_training)
    return 100.0 * correct / max(1, labels.numel())


def train_unit(data: Dict[str, Any], estimator: str, seed: int, spec: Dict[str, Any], *, device: torch.device,
               checkpoint: Optional[Path] = None, log: Optional[Callable[[str], None]] = None) -> Dict[str, Any]:
    """Train one model (one estimator, one seed) and return its accuracies and history.

    Args:
        data: splits from :func:`load_data`.
        estimator: registered name of a sample-level estimator.
        seed: seed of the initialisation, the batches and the estimator's draws.
        spec: the settings (see :data:`SHORT`).
        device: where to train.
        checkpoint: file to save after each epoch and resume from (None: no checkpoints).
        log: called with a line after each epoch.

    Returns:
        ``valid_acc``, ``test_acc`` (%), ``history`` (per epoch: train loss and accuracy,
        validation accuracy, learning rate), ``seconds_per_epoch``, ``steps``.
    """
    from ..models.tree_lstm import GumbelTreeClassifier
    from .listops_data import VOCAB, batches

    torch.manual_seed(seed)
    model = GumbelTreeClassifier(len(VOCAB), 10, word_dim=spec["word_dim"], hidden_dim=spec["hidden"],
                                 clf_hidden_dim=spec["clf_hidden"], dropout=spec["dropout"], estimator=estimator,
                                 tau=spec["tau"]).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt_cls = torch.optim.RAdam if spec["optimizer"] == "radam" else torch.optim.Adam
    optimizer = opt_cls(params, lr=spec["lr"])
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.5, patience=2)
    gen = torch.Generator().manual_seed(seed)
    history: List[Dict[str, float]] = []
    start_epoch, steps, elapsed = 0, 0, 0.0
    if checkpoint is not None and checkpoint.exists():
        try:
            state = torch.load(checkpoint, map_location=device, weights_only=True)
            if state.get("spec") != json.dumps(spec, sort_keys=True):
                raise ValueError("it was written under other settings")
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            gen.set_state(state["generator"])
            torch.set_rng_state(state["torch_rng"])
            history, start_epoch = list(state["history"]), int(state["epoch"])
            steps, elapsed = int(state["steps"]), float(state["elapsed"])
        except Exception as exc:  # a damaged or foreign file: say which, never half-resume
            raise BenchmarkError(f"checkpoint {checkpoint} cannot be resumed ({type(exc).__name__}: {exc}); "
                                 f"delete it or pass --fresh") from None
    ids, lengths, labels = data["train"]
    for epoch in range(start_epoch, spec["epochs"]):
        t0 = time.perf_counter()
        model.train()
        loss_sum, correct, seen = 0.0, 0, 0
        for idx in batches(lengths, spec["batch"], generator=gen):
            n = int(lengths[idx].max())
            y = labels[idx].to(device)
            logits, _ = model(ids[idx, :n].to(device), lengths[idx].to(device))
            loss = torch.nn.functional.cross_entropy(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, max_norm=5.0)
            optimizer.step()
            steps += 1
            loss_sum += float(loss.detach()) * idx.numel()
            correct += int((logits.argmax(-1) == y).sum())
            seen += idx.numel()
            if not math.isfinite(float(loss.detach())):
                raise BenchmarkError(f"{estimator} seed {seed}: the training loss became {float(loss.detach())} "
                                     f"at step {steps}; lower --lr")
        valid = accuracy(model, data["valid"], 4 * spec["batch"], device)
        scheduler.step(valid)
        elapsed += time.perf_counter() - t0
        history.append({"epoch": epoch + 1, "train_loss": loss_sum / seen, "train_acc": 100.0 * correct / seen,
                        "valid_acc": valid, "lr": optimizer.param_groups[0]["lr"]})
        if log is not None:
            log(f"{estimator} seed {seed} epoch {epoch + 1}/{spec['epochs']}: train loss {loss_sum / seen:.3f} "
                f"valid acc {valid:.2f}%")
        if checkpoint is not None:
            atomic_torch_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                               "scheduler": scheduler.state_dict(), "generator": gen.get_state(),
                               "torch_rng": torch.get_rng_state(), "history": history, "epoch": epoch + 1,
                               "steps": steps, "elapsed": elapsed,
                               "spec": json.dumps(spec, sort_keys=True)}, checkpoint)
    valid = history[-1]["valid_acc"] if history else accuracy(model, data["valid"], 4 * spec["batch"], device)
    return {"valid_acc": valid, "test_acc": accuracy(model, data["test"], 4 * spec["batch"], device),
            "history": history, "seconds_per_epoch": elapsed / max(1, len(history)), "steps": steps}


def summarise(store: ResultStore, estimators: List[str], seeds: List[int]) -> List[Dict[str, Any]]:
    """One row per estimator: mean ± std over the seeds present, and the paper's values."""
    rows = []
    for e in estimators:
        res = [store[f"{e}/seed{s}"] for s in seeds if f"{e}/seed{s}" in store]
        if not res:
            continue
        paper = PAPER_TABLE1.get(_ALIASES.get(e, e))
        rows.append({"estimator": e, "seeds": len(res), "valid": mean_std([r["valid_acc"] for r in res]),
                     "test": mean_std([r["test_acc"] for r in res]),
                     "seconds_per_epoch": mean_std([r["seconds_per_epoch"] for r in res])[0],
                     "paper_valid": paper["valid"] if paper else None, "paper_test": paper["test"] if paper else None})
    return rows


def format_rows(rows: List[Dict[str, Any]]) -> str:
    def pm(v):
        return f"{v[0]:.2f} ± {v[1]:.2f}" if v else "n/a"

    table = [[DISPLAY.get(r["estimator"], r["estimator"]), r["seeds"], pm(r["valid"]), pm(r["test"]),
              pm(r["paper_valid"]), pm(r["paper_test"]), f"{r['seconds_per_epoch']:.1f}"] for r in rows]
    return format_table(table, ["estimator", "seeds", "valid acc %", "test acc %", "paper valid (Table 1)",
                                "paper test (Table 1)", "s/epoch"])


def plot(rows: List[Dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.3 * len(rows) + 3, 4))
    xs = list(range(len(rows)))
    for k, (field, label) in enumerate((("valid", "valid (ours)"), ("test", "test (ours)"))):
        ax.bar([x + (k - 0.5) * 0.35 for x in xs], [r[field][0] for r in rows], 0.35,
               yerr=[r[field][1] for r in rows], capsize=3, label=label)
    px = [x for x, r in zip(xs, rows) if r["paper_test"]]
    ax.errorbar(px, [r["paper_test"][0] for r in rows if r["paper_test"]],
                yerr=[r["paper_test"][1] for r in rows if r["paper_test"]], fmt="k_", ms=18, capsize=3,
                label="paper's test (Table 1, its setting)")
    ax.set_xticks(xs)
    ax.set_xticklabels([DISPLAY.get(r["estimator"], r["estimator"]) for r in rows])
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.axhline(10, color="grey", lw=0.8, ls=":")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
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
                                 f"the tree model needs one of {registry.names(variable='categorical', layer=1)}")
    device = resolve_device(args.device)
    torch.set_num_threads(args.threads)
    out = check_out_dir(args.out)
    data = load_data(spec, args.data_seed, args.data_dir)
    meta = data["meta"]
    print(f"data: generated ListOps (quasigrad.bench.listops_data, seed {args.data_seed}; not the original "
          f"release), {spec['train']}/{spec['valid']}/{spec['test']} sentences of at most {spec['max_length']} "
          f"tokens, {'generated now and cached' if meta['generated_now'] else 'read from the cache'} at {meta['cache']}")
    config = {k: v for k, v in spec.items() if k != "seeds"}
    config["data_seed"] = args.data_seed
    store = ResultStore(out, "listops", config=config, fresh=args.fresh)
    ckdir = check_out_dir(out / "checkpoints")
    log = None if args.no_progress else (lambda line: print(line, file=sys.stderr, flush=True))
    units = [(e, s) for e in estimators for s in spec["seeds"]]
    for e, s in progress(units, desc="listops", disable=args.no_progress):
        key = f"{e}/seed{s}"
        if key in store:
            continue
        ck = ckdir / f"listops_{e}_seed{s}.pt"
        if args.fresh and ck.exists():
            ck.unlink()
        store.put(key, train_unit(data, e, s, spec, device=device, checkpoint=ck, log=log))
        ck.unlink(missing_ok=True)
    rows = summarise(store, estimators, spec["seeds"])
    text = format_rows(rows)
    preset = "full (the paper's setting on generated data)" if args.full else "short preset (smoke scale)"
    print(f"\nListOps, {preset}: accuracy of the final model, mean ± std over seeds; the paper's columns are "
          f"the ReinMax paper's Table 1 in its own setting")
    print(text)
    store.save(summary=rows, table=text, data=meta, setting=preset)
    png = out / "listops.png"
    plot(rows, png, f"ListOps, {preset}, generated data")
    print(f"results: {store.path}  plot: {png}")
    return 0
