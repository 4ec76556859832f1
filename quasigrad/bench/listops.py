"""`quasigrad bench listops`: unsupervised parsing on ListOps with a Gumbel tree-LSTM, the
experiment of the ReinMax paper's Table 1 (Liu et al. 2023, NeurIPS).

For each estimator and seed, trains `quasigrad.models.tree_lstm.GumbelTreeClassifier`
(leaf LSTM, Tree-LSTM composition, one sampled merge per step whose gradient is the
estimator's, MLP classifier; argmax merges at evaluation) to predict the value of a ListOps
expression, and reports the validation and test accuracy of the final model, mean ± std over
seeds, beside the paper's Table 1 (labelled as the paper's).

The data are **generated** by `quasigrad.bench.listops_data` (the original generator's
grammar and limits; the ReinMax code's filter of fewer than 100 tokens), not read from the
original release, and cached on disk (`--data-dir`).

Short preset (default; minutes on a small CPU): 2,000 / 500 / 500 sentences of at most 20
tokens, 32-dimensional model, 4 epochs, τ = 1.1, seeds 0 1. Its accuracies are far below the
paper's. (At τ = 1 ReinMax's gradient equals ZGR's on every draw, so τ = 1.1, the paper's
value, also keeps the two apart.)

`--full`: the paper's setting as its code runs it (github.com/LiyuanLucasLiu/ReinMax,
`listops/README.md`): 300-dimensional words, states and classifier, dropout 0.5, batch 16,
20 epochs, RAdam with learning rate 7e-4 halved when the validation accuracy stalls, gradient
norm clipped at 5, τ = 1.1, sentences of fewer than 100 tokens; 90,000 / 10,000 / 10,000
generated sentences, seeds 0–4. Differences that remain: generated rather than released data,
no GloVe initialisation (the paper's command passes `--pretrained glove.840B.300d`, which
covers no ListOps token but the brackets and digits), validation once per epoch rather than
twice, and the same learning rate and τ for every estimator.

One unit is one estimator and one seed, stored as `ESTIMATOR/seedN` in `--out/listops.json`;
it checkpoints after each epoch to `--out/checkpoints` and resumes there (the runner,
`quasigrad.bench.runner`, owns the store, resuming, `--device`, `--threads` and the
progress bar). The plot goes to `--out/listops.png`.
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
from .paper import PAPER_TABLE1_LISTOPS, by_estimator, display_name

DESCRIPTION = "ListOps parsing with a Gumbel tree-LSTM (ReinMax paper, Table 1): valid/test accuracy per estimator"

DEFAULT_ESTIMATORS = ["st", "stgs", "gumbel_rao", "gst", "reinmax", "zgr"]

SHORT: Dict[str, Any] = dict(train=2000, valid=500, test=500, max_length=20, epochs=4, batch=32, word_dim=32,
                             hidden=32, clf_hidden=32, dropout=0.1, lr=3e-3, tau=1.1, seeds=[0, 1])
FULL: Dict[str, Any] = dict(train=90_000, valid=10_000, test=10_000, max_length=99, epochs=20, batch=16,
                            word_dim=300, hidden=300, clf_hidden=300, dropout=0.5, lr=7e-4, tau=1.1,
                            seeds=[0, 1, 2, 3, 4])
_OVERRIDES = ("train", "valid", "test", "max_length", "epochs", "batch", "hidden", "lr", "tau")
# The override's option, where it is not the setting's name: the split sizes and the batch are
# spelled as in every benchmark (--train-size, --batch-size).
_FLAGS = {"train": "--train-size", "valid": "--valid-size", "test": "--test-size", "batch": "--batch-size"}


def _flag(name: str) -> str:
    return _FLAGS.get(name, "--" + name.replace("_", "-"))
RESULT_FIELDS = ("valid_acc", "test_acc", "history", "seconds_per_epoch", "steps")


def settings(args: argparse.Namespace) -> Dict[str, Any]:
    """The preset chosen by `--full` with the command line's overrides, checked.

    Args:
        args: the parsed arguments of `quasigrad bench listops`.

    Returns:
        The training settings (the keys of `SHORT` but `seeds`, and `optimizer`).

    Raises:
        BenchmarkError: an override that is not a positive number.
    """
    spec = dict(FULL if args.full else SHORT)
    del spec["seeds"]
    for name in _OVERRIDES:
        v = getattr(args, name)
        if v is not None:
            spec[name] = v
    for name in ("train", "valid", "test", "max_length", "epochs", "batch", "hidden"):
        if spec[name] < 1:
            raise runner.BenchmarkError(f"{_flag(name)} must be >= 1, got {spec[name]}")
    for name in ("lr", "tau"):
        if not (spec[name] > 0 and math.isfinite(spec[name])):
            raise runner.BenchmarkError(f"{_flag(name)} must be a positive number, got {spec[name]}")
    if args.hidden is not None:
        spec["word_dim"] = spec["clf_hidden"] = args.hidden
    spec["optimizer"] = "radam" if args.full else "adam"
    return spec


def load_data(spec: Dict[str, Any], data_seed: int, data_dir: Any) -> Dict[str, Any]:
    """The generated splits as tensors, with the cache path.

    Args:
        spec: the settings (`settings`): split sizes and `max_length`.
        data_seed: the generator's seed.
        data_dir: the cache directory (`None`: `quasigrad.bench.listops_data.default_cache_dir`).

    Returns:
        `train`, `valid`, `test` as `(ids, lengths, labels)` and `meta` (the data's
        configuration, the cache file, whether it was generated now).

    Raises:
        BenchmarkError: a damaged cache, or too few distinct expressions for the sizes.
    """
    from .listops_data import ListOpsConfig, ListOpsDataError, encode, load_or_generate

    try:
        cfg = ListOpsConfig(train=spec["train"], valid=spec["valid"], test=spec["test"], seed=data_seed,
                            max_length=spec["max_length"])
        splits, path, generated = load_or_generate(cfg, data_dir)
    except ListOpsDataError as exc:
        raise runner.BenchmarkError(str(exc)) from None
    except ValueError as exc:                         # too few distinct expressions for the sizes
        raise runner.BenchmarkError(f"ListOps data: {exc}") from None
    data: Dict[str, Any] = {name: encode(rows) for name, rows in splits.items()}
    data["meta"] = {"config": cfg.as_dict(), "cache": str(path), "generated_now": generated}
    return data


def accuracy(model: torch.nn.Module, split: Any, batch: int, device: torch.device) -> float:
    """Accuracy (%) of `model` in evaluation mode (argmax merges).

    Args:
        model: a `quasigrad.models.tree_lstm.GumbelTreeClassifier`.
        split: `(ids, lengths, labels)` from `load_data`.
        batch: sentences per forward pass.
        device: where the model is.

    Returns:
        The percentage of sentences whose predicted value is the label.
    """
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


def steps_per_epoch(spec: Dict[str, Any]) -> int:
    """Optimiser steps in one epoch (batches of `quasigrad.bench.listops_data.batches`)."""
    return math.ceil(spec["train"] / spec["batch"])


def train_unit(data: Dict[str, Any], estimator: str, seed: int, spec: Dict[str, Any], *, device: torch.device,
               checkpoint: Optional[Path] = None, log: Optional[Callable[[str], None]] = None,
               on_step: Optional[Callable[[Optional[str]], None]] = None) -> Dict[str, Any]:
    """Train one model (one estimator, one seed) and return its accuracies and history.

    Args:
        data: splits from `load_data`.
        estimator: registered name of a sample-level estimator.
        seed: seed of the initialisation, the batches and the estimator's draws.
        spec: the settings (`settings`).
        device: where to train.
        checkpoint: file to save after each epoch and resume from (None: no checkpoints).
        log: called with a line after each epoch.
        on_step: called after each optimiser step (with a running figure, or None).

    Returns:
        `valid_acc`, `test_acc` (%), `history` (per epoch: train loss and accuracy,
        validation accuracy, learning rate), `seconds_per_epoch`, `steps`.

    Raises:
        BenchmarkError: a checkpoint written under other settings or damaged, or a training
            loss that is not finite.
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
    tag = json.dumps({"spec": spec, "estimator": estimator, "seed": seed}, sort_keys=True)
    if checkpoint is not None and checkpoint.exists():
        state = runner.load_checkpoint(checkpoint, map_location=device,
                                       required=("spec", "model", "optimizer", "scheduler", "generator",
                                                 "torch_rng", "history", "epoch", "steps", "elapsed"))
        if state["spec"] != tag:
            raise runner.BenchmarkError(f"checkpoint {checkpoint} was written under other settings; delete it, "
                                        f"or pass --fresh to start over")
        with runner.restoring_checkpoint(checkpoint):
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            gen.set_state(state["generator"])
            torch.set_rng_state(state["torch_rng"])
            history, start_epoch = list(state["history"]), int(state["epoch"])
            steps, elapsed = int(state["steps"]), float(state["elapsed"])
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
            value = float(loss.detach())
            if not math.isfinite(value):
                raise runner.BenchmarkError(f"{estimator} seed {seed}: the training loss became {value} "
                                            f"at step {steps}; lower --lr")
            loss_sum += value * idx.numel()
            correct += int((logits.argmax(-1) == y).sum())
            seen += idx.numel()
            if on_step is not None:
                on_step(f"epoch {epoch + 1} loss {loss_sum / seen:.3f}" if steps % 10 == 0 else None)
        valid = accuracy(model, data["valid"], 4 * spec["batch"], device)
        scheduler.step(valid)
        elapsed += time.perf_counter() - t0
        history.append({"epoch": epoch + 1, "train_loss": loss_sum / seen, "train_acc": 100.0 * correct / seen,
                        "valid_acc": valid, "lr": optimizer.param_groups[0]["lr"]})
        if log is not None:
            log(f"{estimator} seed {seed} epoch {epoch + 1}/{spec['epochs']}: train loss {loss_sum / seen:.3f} "
                f"valid acc {valid:.2f}%")
        if checkpoint is not None:
            runner.save_checkpoint({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                    "scheduler": scheduler.state_dict(), "generator": gen.get_state(),
                                    "torch_rng": torch.get_rng_state(), "history": history, "epoch": epoch + 1,
                                    "steps": steps, "elapsed": elapsed, "spec": tag}, checkpoint)
    valid = history[-1]["valid_acc"] if history else accuracy(model, data["valid"], 4 * spec["batch"], device)
    return {"valid_acc": valid, "test_acc": accuracy(model, data["test"], 4 * spec["batch"], device),
            "history": history, "seconds_per_epoch": elapsed / max(1, len(history)), "steps": steps}


class ListOps(runner.Benchmark):
    name = "listops"
    description = DESCRIPTION
    seeds, full_seeds = SHORT["seeds"], FULL["seeds"]
    full = "the paper's setting on generated data (days per unit on a CPU)"
    estimators = f"sample-level estimators (default: {' '.join(DEFAULT_ESTIMATORS)})"
    device = threads = checkpoints = True
    default_threads = 1                       # a shared machine; more rarely helps this small model
    result_fields = RESULT_FIELDS

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        what = {"train": "training sentences", "valid": "validation sentences", "test": "test sentences",
                "max_length": "most tokens per sentence", "batch": "sentences per step",
                "hidden": "width of the word vectors, the node states and the classifier", "lr": "learning rate",
                "tau": "temperature of the estimators that take one"}
        for name in _OVERRIDES:
            kind = float if name in ("lr", "tau") else int
            parser.add_argument(_flag(name), dest=name, type=kind, default=None,
                                help=f"{what.get(name, name)} (short preset: {SHORT[name]}, full: {FULL[name]})")
        parser.add_argument("--data-seed", type=int, default=0, help="seed of the generated data set (default 0)")
        parser.add_argument("--data-dir", default=None,
                            help="cache of the generated data (default: $QUASIGRAD_DATA/listops or "
                                 "~/.cache/quasigrad/listops)")

    def plan(self, args: argparse.Namespace, ctx: runner.Context) -> runner.Plan:
        self.spec = spec = settings(args)
        self.names = sample_level_names(args.estimators, default=DEFAULT_ESTIMATORS, model="the tree model")
        # Read (or generate) the data now: a damaged cache stops the run before anything is written.
        self.data = load_data(spec, args.data_seed, args.data_dir)
        meta = self.data["meta"]
        print(f"data: generated ListOps (quasigrad.bench.listops_data, seed {args.data_seed}; not the original "
              f"release), {spec['train']}/{spec['valid']}/{spec['test']} sentences of at most {spec['max_length']} "
              f"tokens, {'generated now and cached' if meta['generated_now'] else 'read from the cache'} at "
              f"{meta['cache']}")
        self.preset = "full (the paper's setting on generated data)" if args.full else (
            "short preset" + (" with overrides" if any(getattr(args, n) is not None for n in _OVERRIDES) else ""))
        steps = spec["epochs"] * steps_per_epoch(spec)
        units = [runner.Unit(f"{e}/seed{s}", (e, s), steps=steps) for e in self.names for s in ctx.seeds or []]
        return runner.Plan({**spec, "data_seed": args.data_seed}, units)

    def run_unit(self, unit: runner.Unit, ctx: runner.Context) -> Dict[str, Any]:
        estimator, seed = unit.data
        assert ctx.device is not None                  # the benchmark takes --device
        return train_unit(self.data, estimator, seed, self.spec, device=ctx.device, checkpoint=ctx.checkpoint(unit),
                          on_step=ctx.step)

    def report(self, store: runner.ResultStore, ctx: runner.Context) -> Dict[str, Any]:
        rows = summarise(store, self.names, ctx.seeds or [])
        text = format_rows(rows)
        print(f"\nListOps, {self.preset}: accuracy (%) of the final model, mean ± std over seeds "
              f"{' '.join(map(str, ctx.seeds or []))}; the paper's columns are the ReinMax paper's Table 1 in its own "
              f"setting")
        print(text)
        _plot(rows, ctx, f"ListOps, {self.preset}, generated data")
        return {"summary": rows, "table": text, "data": self.data["meta"], "setting": self.preset}


BENCHMARK = ListOps


def summarise(store: Any, estimators: List[str], seeds: List[int]) -> List[Dict[str, Any]]:
    """One row per estimator: mean ± std over the seeds present, and the paper's values.

    Args:
        store: the result store (or any mapping with `in` and `[]` by key).
        estimators: names as the keys spell them.
        seeds: the seeds to average.

    Returns:
        Rows with `estimator`, `seeds`, `valid`, `test` (mean, std), `seconds_per_epoch`
        and the paper's `paper_valid`, `paper_test` (or None).
    """
    rows = []
    for e in estimators:
        res = [store[f"{e}/seed{s}"] for s in seeds if f"{e}/seed{s}" in store]
        if not res:
            continue
        paper = by_estimator(PAPER_TABLE1_LISTOPS, e)
        rows.append({"estimator": e, "seeds": len(res), "valid": runner.mean_std([r["valid_acc"] for r in res]),
                     "test": runner.mean_std([r["test_acc"] for r in res]),
                     "seconds_per_epoch": runner.mean_std([r["seconds_per_epoch"] for r in res])[0],
                     "paper_valid": paper["valid"] if paper else None, "paper_test": paper["test"] if paper else None})
    return rows


def format_rows(rows: List[Dict[str, Any]]) -> str:
    """The table of `summarise`'s rows (the paper's columns labelled as the paper's)."""
    def pm(v, n=0):   # a single seed has no spread to show
        return "n/a" if not v else f"{v[0]:.2f} (n = 1)" if n == 1 else f"{v[0]:.2f} ± {v[1]:.2f}"

    table = [[display_name(r["estimator"]), r["seeds"], pm(r["valid"], r["seeds"]), pm(r["test"], r["seeds"]),
              pm(r["paper_valid"]), pm(r["paper_test"]), f"{r['seconds_per_epoch']:.1f}"] for r in rows]
    return runner.format_table(table, ["estimator", "seeds", "valid acc %", "test acc %", "paper's valid (Table 1)",
                                       "paper's test (Table 1)", "s/epoch"])


def _plot(rows: List[Dict[str, Any]], ctx: runner.Context, title: str) -> None:
    plt = ctx.pyplot()
    if plt is None or not rows:
        return
    fig, ax = plt.subplots(figsize=(1.3 * len(rows) + 3, 4))
    xs = list(range(len(rows)))
    for k, (field, label) in enumerate((("valid", "valid (ours)"), ("test", "test (ours)"))):
        ax.bar([x + (k - 0.5) * 0.35 for x in xs], [r[field][0] for r in rows], 0.35,
               yerr=[r[field][1] for r in rows], capsize=3, label=label)
    px = [x for x, r in zip(xs, rows) if r["paper_test"]]
    if px:
        ax.errorbar(px, [r["paper_test"][0] for r in rows if r["paper_test"]],
                    yerr=[r["paper_test"][1] for r in rows if r["paper_test"]], fmt="k_", ms=18, capsize=3,
                    label="paper's test (Table 1, its setting)")
    ax.set_xticks(xs)
    ax.set_xticklabels([display_name(r["estimator"]) for r in rows])
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.axhline(10, color="grey", lw=0.8, ls=":")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    ctx.figure(fig, "listops.png")
