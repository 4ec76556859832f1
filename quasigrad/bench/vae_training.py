"""The trainer of the VAE benchmarks: one run of [`quasigrad.models.vae.CategoricalVAE`][quasigrad.models.vae.CategoricalVAE]
or [`BernoulliVAE`][quasigrad.models.vae.BernoulliVAE], checkpointed, resumable, and runnable under
`torchrun`.

Every random draw of a training step comes from a generator seeded from ``(seed, epoch, step,
shard)``, so a run interrupted and resumed from its checkpoint gives the same parameters as an
uninterrupted one, and `S` processes under DistributedDataParallel, each taking one shard of
the global batch, give the same parameters as one process that takes the `S` shards in turn
(`shards=S`) and averages their gradients.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import nn

from .._util.files import atomic_torch_save
from ..models.vae import BernoulliVAE, CategoricalVAE, VAEError, estimator_step, evaluate, objective_samples
from .paper import CATEGORICAL_CONFIGS, DISPLAY_NAMES, PAPER_TABLE2

__all__ = ["CategoricalVAE", "BernoulliVAE", "RunSpec", "TrainResult", "train", "evaluate", "estimator_step",
           "objective_samples", "CATEGORICAL_CONFIGS", "PAPER_TABLE2", "DISPLAY_NAMES", "distributed_context",
           "VAEError", "build_model"]


# ---------------------------------------------------------------------------------------------
# Training


@dataclasses.dataclass
class RunSpec:
    """Everything that defines one training run (one estimator, one configuration, one seed)."""

    model: str = "categorical"            # "categorical" or "bernoulli"
    latents: int = 4
    categories: int = 8                   # categorical only
    estimator: str = "reinmax"
    tau: float = 1.0
    lr: float = 5e-4
    optimizer: str = "adam"               # "adam" or "radam"
    epochs: int = 1
    batch_size: int = 100
    num_samples: int = 1
    seed: int = 0
    train_size: Optional[int] = None      # first N training images (None: all)
    test_size: Optional[int] = None       # first N test images (None: all)
    binarize: bool = False                # dynamic binarisation (binary VAE)
    shards: int = 1                       # gradient-accumulation shards = DDP world size
    dtype: str = "float32"

    def validate(self) -> None:
        if self.model not in ("categorical", "bernoulli"):
            raise VAEError(f"model must be 'categorical' or 'bernoulli', got {self.model!r}")
        if self.optimizer not in ("adam", "radam"):
            raise VAEError(f"optimizer must be 'adam' or 'radam', got {self.optimizer!r}")
        for name in ("latents", "epochs", "batch_size", "num_samples", "shards"):
            if int(getattr(self, name)) < 1:
                raise VAEError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.batch_size % self.shards:
            raise VAEError(f"batch_size {self.batch_size} must be divisible by shards (world size) {self.shards}")
        if not (self.lr > 0 and self.tau > 0):
            raise VAEError(f"lr and tau must be positive, got lr={self.lr}, tau={self.tau}")
        if self.dtype not in ("float32", "float64"):
            raise VAEError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")


@dataclasses.dataclass
class TrainResult:
    """What a run produced: per-epoch history and final numbers."""

    history: List[Dict[str, float]]       # one dict per epoch: train_neg_elbo, test_neg_elbo, seconds
    state_dict: Dict[str, torch.Tensor]
    steps: int
    finished: bool

    @property
    def train_neg_elbo(self) -> float:
        return self.history[-1]["train_neg_elbo"] if self.history else float("nan")

    @property
    def test_neg_elbo(self) -> float:
        return self.history[-1]["test_neg_elbo"] if self.history else float("nan")

    @property
    def seconds_per_epoch(self) -> float:
        return float(np.mean([h["seconds"] for h in self.history])) if self.history else float("nan")


def build_model(spec: RunSpec) -> nn.Module:
    """The model of `spec`, initialised from `spec.seed`."""
    torch.manual_seed(spec.seed)  # parameter initialisation only; training draws use their own generators
    model: nn.Module
    if spec.model == "categorical":
        model = CategoricalVAE(spec.latents, spec.categories)
    else:
        model = BernoulliVAE(spec.latents)
    return model.to(getattr(torch, spec.dtype))


def _derived_seed(*keys: int) -> int:
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1, dtype=np.uint64)[0] >> 1)


def _generator(device, *keys: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(_derived_seed(*keys))


def distributed_context() -> Tuple[int, int]:
    """`(rank, world_size)`; initialises the process group (gloo on CPU, nccl on CUDA) when
    started by `torchrun` (`WORLD_SIZE` > 1) and it is not yet initialised."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() and os.environ.get("QUASIGRAD_DDP_BACKEND") != "gloo" else "gloo"
        dist.init_process_group(backend)
    return dist.get_rank(), dist.get_world_size()


def train(spec: RunSpec, train_images: torch.Tensor, test_images: torch.Tensor, *,
          checkpoint: Optional[os.PathLike] = None, checkpoint_every: int = 200, device=None,
          estimator_object=None, on_step: Optional[Callable[[int, float], None]] = None,
          stop_after_steps: Optional[int] = None) -> TrainResult:
    """Train one VAE and return its history.

    Args:
        spec: the run (see `RunSpec`).
        train_images, test_images: `(N, 784)` grey levels in [0, 1] (from
            [`quasigrad.data.MNIST.flat`][quasigrad.data.MNIST.flat]).
        checkpoint: file to save to every `checkpoint_every` steps and at the end of each
            epoch, and to resume from when it exists (it must hold the same `spec`).
        device: where to train (default: CPU, or `cuda` when `LOCAL_RANK` is set and CUDA is up).
        estimator_object: a stateful estimator (e.g. RELAX) used instead of `spec.estimator`;
            its `state_dict` (if any) is checkpointed too, and its parameters (if any) are
            trained by their own Adam optimiser at `spec.lr`.
        on_step: called after every step with `(step, running −ELBO of the epoch)`.
        stop_after_steps: stop (after saving the checkpoint) once this many steps are done in
            total — simulates an interruption.

    Under `torchrun` each of the `world_size` processes takes shard `rank` of every global
    batch; `spec.shards` must equal the world size. One process with `spec.shards = S`
    computes the same thing serially.
    """
    spec.validate()
    rank, world = distributed_context()
    if world > 1 and spec.shards != world:
        raise VAEError(f"under torchrun with {world} processes, shards must be {world}, got {spec.shards}")
    if device is None:
        device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}") if torch.cuda.is_available() \
            else torch.device("cpu")
    dtype = getattr(torch, spec.dtype)
    model = build_model(spec).to(device)
    est = estimator_object if estimator_object is not None else spec.estimator
    est_params = list(est.parameters()) if hasattr(est, "parameters") and callable(est.parameters) else []
    if hasattr(est, "to") and callable(est.to) and isinstance(est, nn.Module):
        est.to(device=device, dtype=dtype)
    opt_cls = torch.optim.Adam if spec.optimizer == "adam" else torch.optim.RAdam
    optimizer = opt_cls(model.parameters(), lr=spec.lr)
    est_optimizer = torch.optim.Adam(est_params, lr=spec.lr) if est_params else None

    train_x = train_images[:spec.train_size] if spec.train_size else train_images
    test_x = test_images[:spec.test_size] if spec.test_size else test_images
    n_train = train_x.shape[0]
    steps_per_epoch = n_train // spec.batch_size
    if steps_per_epoch < 1:
        raise VAEError(f"train_size {n_train} is smaller than batch_size {spec.batch_size}")
    shard_size = spec.batch_size // spec.shards

    state: Dict[str, Any] = {"epoch": 0, "batch": 0, "steps": 0, "sum": 0.0, "count": 0, "seconds": 0.0,
                             "history": []}
    ckpt = Path(checkpoint) if checkpoint is not None else None
    spec_dict = dataclasses.asdict(spec)
    if ckpt is not None and ckpt.exists():
        saved = _load_checkpoint(ckpt, device)
        if saved.get("spec") != spec_dict:
            raise VAEError(f"checkpoint {ckpt} was written for another run ({saved.get('spec')}); "
                           f"delete it or use another --out")
        try:
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            if est_optimizer is not None and saved.get("est_optimizer") is not None:
                est_optimizer.load_state_dict(saved["est_optimizer"])
            if saved.get("estimator") is not None and hasattr(est, "load_state_dict"):
                est.load_state_dict(saved["estimator"])
        except (RuntimeError, ValueError, KeyError, TypeError) as exc:
            raise VAEError(_unloadable(ckpt, exc)) from None
        state = saved["state"]

    def save():
        if ckpt is None or rank != 0:
            return
        atomic_torch_save({"spec": spec_dict, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                           "est_optimizer": est_optimizer.state_dict() if est_optimizer is not None else None,
                           "estimator": est.state_dict() if hasattr(est, "state_dict") else None,
                           "state": state}, ckpt)

    runner = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        runner = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)

    shard_ids = [rank] if world > 1 else list(range(spec.shards))
    train_x_dev = train_x.to(device=device, dtype=dtype)
    while state["epoch"] < spec.epochs:
        epoch = state["epoch"]
        perm = torch.randperm(n_train, generator=_generator("cpu", spec.seed, epoch, 1 << 20)).to(device)
        model.train()
        while state["batch"] < steps_per_epoch:
            if stop_after_steps is not None and state["steps"] >= stop_after_steps:
                save()
                return TrainResult(state["history"], _cpu_state(model), state["steps"], finished=False)
            t0 = time.perf_counter()
            b = state["batch"]
            rows = perm[b * spec.batch_size:(b + 1) * spec.batch_size]
            optimizer.zero_grad(set_to_none=True)
            if est_optimizer is not None:
                est_optimizer.zero_grad(set_to_none=True)
            batch_sum = 0.0
            for s in shard_ids:
                gen = _generator(device, spec.seed, epoch, b, s)
                x = train_x_dev[rows[s * shard_size:(s + 1) * shard_size]]
                if spec.binarize:
                    x = (torch.rand(x.shape, generator=gen, device=device, dtype=dtype) < x).to(dtype)
                loss, neg_elbo = estimator_step(runner, x, est, tau=spec.tau, num_samples=spec.num_samples,
                                                generator=gen)
                if not torch.isfinite(loss):
                    raise VAEError(f"non-finite loss at epoch {epoch} step {b} with estimator {spec.estimator}")
                loss.backward()
                batch_sum += float(neg_elbo.sum())
            if len(shard_ids) > 1:  # serial twin of DDP's gradient averaging
                for p in list(model.parameters()) + est_params:
                    if p.grad is not None:
                        p.grad.div_(len(shard_ids))
            if world > 1:
                import torch.distributed as dist

                t = torch.tensor([batch_sum], dtype=torch.float64)
                dist.all_reduce(t)
                batch_sum = float(t)
                for p in est_params:  # a stateful estimator's own parameters, averaged like DDP's
                    if p.grad is not None:
                        dist.all_reduce(p.grad)
                        p.grad.div_(world)
            optimizer.step()
            if est_optimizer is not None:
                est_optimizer.step()
            state["sum"] += batch_sum
            state["count"] += spec.batch_size
            state["batch"] += 1
            state["steps"] += 1
            state["seconds"] += time.perf_counter() - t0
            if on_step is not None:
                on_step(state["steps"], state["sum"] / state["count"])
            if checkpoint_every and state["steps"] % checkpoint_every == 0:
                save()
        model.eval()
        test = evaluate(model, test_x, binarize=spec.binarize)
        state["history"].append({"epoch": epoch + 1, "train_neg_elbo": state["sum"] / state["count"],
                                 "test_neg_elbo": test, "seconds": state["seconds"], "steps": state["steps"]})
        state.update(epoch=epoch + 1, batch=0, sum=0.0, count=0, seconds=0.0)
        save()
    return TrainResult(state["history"], _cpu_state(model), state["steps"], finished=True)


#: What a checkpoint of :func:`train` holds (``est_optimizer`` and ``estimator`` may be ``None``).
CHECKPOINT_KEYS = ("spec", "model", "optimizer", "est_optimizer", "estimator", "state")
_STATE_KEYS = ("epoch", "batch", "steps", "sum", "count", "seconds", "history")


def _unloadable(path: Path, exc: BaseException) -> str:
    reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
    return (f"checkpoint {path} cannot be loaded ({type(exc).__name__}: {reason}); delete it, or pass --fresh "
            f"to start over")


def _load_checkpoint(path: Path, device) -> dict:
    """A checkpoint of `train`, loaded without unpickling anything but tensors and plain
    data (`weights_only=True`); a damaged or foreign file raises `VAEError` naming it."""
    try:
        saved = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a damaged file fails in many ways inside torch.load
        raise VAEError(_unloadable(path, exc)) from None
    problem = None
    if not isinstance(saved, dict):
        problem = f"it holds a {type(saved).__name__}, not a dict"
    elif any(k not in saved for k in CHECKPOINT_KEYS):
        problem = f"it misses {', '.join(repr(k) for k in CHECKPOINT_KEYS if k not in saved)}"
    elif not isinstance(saved["state"], dict) or any(k not in saved["state"] for k in _STATE_KEYS):
        problem = "its 'state' is not a training state"
    if problem:
        raise VAEError(f"checkpoint {path} is not a checkpoint of this trainer ({problem}); delete it, or pass "
                       f"--fresh to start over")
    return saved


def _cpu_state(model: nn.Module) -> Dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
