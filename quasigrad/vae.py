r"""Discrete variational autoencoders on MNIST: the models, their losses, and a trainer that
checkpoints, resumes and runs under ``torchrun``.

Two models, the two experiments by which the field compares gradient estimators:

* :class:`CategoricalVAE`, the categorical MNIST VAE of Jang, Gu & Poole (2017) as used in
  Table 2 of the ReinMax paper (Liu et al. 2023): ``L`` latent variables with ``C`` categories
  each; encoder ``784-512-256-(L·C)`` and decoder ``(L·C)-256-512-784`` with ReLU; Bernoulli
  likelihood on the grey levels in [0, 1] (binary cross-entropy summed over the 784 pixels);
  analytic KL to the uniform prior.
* :class:`BernoulliVAE`, the binary VAE of DisARM (Dong, Mnih & Tucker 2020) and RODEO (Shi et
  al. 2022), Table 6 of the ReinMax paper: 200 Bernoulli latents, two hidden layers of 200
  units with LeakyReLU (slope 0.3) in encoder and decoder, learned prior logits, dynamically
  binarised MNIST (a fresh binarisation ``x ~ Bernoulli(grey level)`` for every batch).

The negative ELBO of one image ``x`` is

.. math::

    -\mathrm{ELBO}(x) = \mathbb{E}_{z \sim q(z|x)}\big[-\log p(x \mid z)\big]
                        + \mathrm{KL}\big(q(z|x) \,\|\, p(z)\big),

where the KL term is computed exactly (a sum over the factors of ``q``) and the expectation is
estimated with one sample (or ``K`` samples) of ``z``; the gradient of the expectation with
respect to the encoder's logits is the chosen estimator's. Pathwise estimators (ST, ReinMax,
STGS, …) pass the sample through the decoder and backpropagate; score-function estimators
(REINFORCE-leave-one-out, DisARM, RELAX, …) go through :func:`quasigrad.objective.expectation`.

Every random draw of a training step comes from a generator seeded from ``(seed, epoch, step,
shard)``, so a run interrupted and resumed from its checkpoint gives the same parameters as an
uninterrupted one, and ``S`` processes under DistributedDataParallel, each taking one shard of
the global batch, give the same parameters as one process that takes the ``S`` shards in turn
(``shards=S``) and averages their gradients.

References:
    Liu, Dong, Liu, Yu, Gao (2023), "Bridging Discrete and Backpropagation: Straight-Through
    and Beyond", NeurIPS (ReinMax); code conventions from github.com/LiyuanLucasLiu/ReinMax.
    Jang, Gu, Poole (2017), "Categorical Reparameterization with Gumbel-Softmax", ICLR.
    Dong, Mnih, Tucker (2020), "DisARM: An Antithetic Gradient Estimator for Binary Latent
    Variables", NeurIPS.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import registry
from ._sampling import sample_categorical

__all__ = ["CategoricalVAE", "BernoulliVAE", "RunSpec", "TrainResult", "train", "evaluate", "estimator_step",
           "objective_samples", "CATEGORICAL_CONFIGS", "PAPER_TABLE2", "DISPLAY_NAMES", "distributed_context", "VAEError"]


class VAEError(ValueError):
    """A VAE run was given a setting it cannot use (the message names the setting)."""


# The paper's per-configuration settings for ReinMax (ReinMax repository, mnist_vae/reinmax_C_L.sh):
# key "CxL" = categories × latents.
CATEGORICAL_CONFIGS: Dict[str, Dict[str, Any]] = {
    "8x4": dict(categories=8, latents=4, lr=5e-4, tau=1.3, optimizer="adam"),
    "4x24": dict(categories=4, latents=24, lr=5e-4, tau=1.5, optimizer="radam"),
    "8x16": dict(categories=8, latents=16, lr=7e-4, tau=1.5, optimizer="radam"),
    "16x12": dict(categories=16, latents=12, lr=7e-4, tau=1.5, optimizer="radam"),
    "64x8": dict(categories=64, latents=8, lr=5e-4, tau=1.5, optimizer="radam"),
    "10x30": dict(categories=10, latents=30, lr=5e-4, tau=1.3, optimizer="radam"),
}

# The paper's Table 2 (training −ELBO, 160 epochs, mean ± std over 10 seeds), by estimator and
# configuration. Left empty where the value could not be read from the paper in this session:
# the benchmark prints "n/a" rather than a number from memory. Fill in from the paper
# (Liu et al. 2023, Table 2) as {"reinmax": {"8x4": (mean, std), ...}, ...}.
PAPER_TABLE2: Dict[str, Dict[str, Tuple[float, float]]] = {}

DISPLAY_NAMES = {"st": "ST", "stgs": "STGS", "gumbel_rao": "GR-MCK", "gst": "GST-1.0", "reinmax": "ReinMax",
                 "zgr": "ZGR", "darn": "DARN", "rloo": "RLOO", "disarm": "DisARM", "relax": "RELAX",
                 "double_cv": "Double CV", "reinforce": "REINFORCE"}


# ---------------------------------------------------------------------------------------------
# Models


def _mlp(sizes: Sequence[int], activation: Callable[[], nn.Module]) -> nn.Sequential:
    layers: List[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)


class CategoricalVAE(nn.Module):
    r"""Categorical VAE: ``latents`` variables with ``categories`` categories each.

    Encoder ``784-512-256-(L·C)`` (ReLU, no activation on the logits), decoder
    ``(L·C)-256-512-784`` (ReLU) giving pixel logits; the likelihood is Bernoulli on the grey
    levels (binary cross-entropy with the sigmoid of those logits, summed over pixels), the
    prior uniform, so ``KL(q‖p) = Σ_l Σ_c q_lc log q_lc + L log C``.
    """

    variable = "categorical"

    def __init__(self, latents: int, categories: int, *, pixels: int = 784, hidden: Sequence[int] = (512, 256)):
        super().__init__()
        if latents < 1 or categories < 2:
            raise VAEError(f"need latents >= 1 and categories >= 2, got latents={latents}, categories={categories}")
        self.latents, self.categories = int(latents), int(categories)
        width = self.latents * self.categories
        self.encoder = _mlp([pixels, *hidden, width], nn.ReLU)
        self.decoder = _mlp([width, *reversed(hidden), pixels], nn.ReLU)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(..., L, C)`` of ``q(z|x)`` for images ``x`` of shape ``(..., 784)``."""
        return self.encoder(x).unflatten(-1, (self.latents, self.categories))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder's logits (what DistributedDataParallel calls; see :meth:`encode`)."""
        return self.encode(x)

    def reconstruction(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``−log p(x|z)`` per image: ``z`` one-hot ``(..., B, L, C)``, ``x`` ``(B, 784)`` → ``(..., B)``."""
        logits = self.decoder(z.flatten(-2))
        return F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(-1)

    def kl(self, logits: torch.Tensor) -> torch.Tensor:
        """Exact ``KL(q(z|x) ‖ uniform)`` per image, ``(B, L, C)`` → ``(B,)``."""
        logq = torch.log_softmax(logits, -1)
        return (logq.exp() * logq).sum((-2, -1)) + self.latents * math.log(self.categories)

    def sample(self, logits: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
        """A one-hot draw from ``q`` (no gradient)."""
        index = sample_categorical(logits, generator=generator)
        return F.one_hot(index, self.categories).to(logits.dtype)


class BernoulliVAE(nn.Module):
    r"""Binary VAE of DisARM/RODEO: ``latents`` Bernoulli variables, encoder
    ``784-200-200-latents`` and decoder ``latents-200-200-784`` with LeakyReLU (slope 0.3),
    learned prior logits ``c``. With ``q_i = σ(a_i)`` and ``p_i = σ(c_i)``:

    .. math:: \mathrm{KL}(q‖p) = \sum_i q_i \log\frac{q_i}{p_i} + (1-q_i)\log\frac{1-q_i}{1-p_i}.
    """

    variable = "bernoulli"

    def __init__(self, latents: int = 200, *, pixels: int = 784, hidden: Sequence[int] = (200, 200),
                 negative_slope: float = 0.3):
        super().__init__()
        if latents < 1:
            raise VAEError(f"need latents >= 1, got {latents}")
        self.latents = int(latents)
        act = lambda: nn.LeakyReLU(negative_slope)  # noqa: E731
        self.encoder = _mlp([pixels, *hidden, self.latents], act)
        self.decoder = _mlp([self.latents, *reversed(hidden), pixels], act)
        self.prior_logits = nn.Parameter(torch.zeros(self.latents))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Bernoulli logits ``(B, latents)`` of ``q(z|x)``."""
        return self.encoder(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder's logits (what DistributedDataParallel calls; see :meth:`encode`)."""
        return self.encode(x)

    def reconstruction(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``−log p(x|z)`` per image: ``z`` in {0,1} ``(..., B, latents)``, ``x`` ``(B, 784)`` → ``(..., B)``."""
        logits = self.decoder(z)
        return F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(-1)

    def kl(self, logits: torch.Tensor) -> torch.Tensor:
        """Exact ``KL(q(z|x) ‖ p(z))`` per image, ``(B, latents)`` → ``(B,)``."""
        c = self.prior_logits.to(logits.dtype)
        q = torch.sigmoid(logits)
        return (q * (F.logsigmoid(logits) - F.logsigmoid(c))
                + (1 - q) * (F.logsigmoid(-logits) - F.logsigmoid(-c))).sum(-1)

    def sample(self, logits: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
        """A {0,1} draw from ``q`` (no gradient)."""
        u = torch.rand(logits.shape, generator=generator, dtype=logits.dtype, device=logits.device)
        return (u < torch.sigmoid(logits.detach())).to(logits.dtype)


# ---------------------------------------------------------------------------------------------
# One estimator step


def estimator_step(model: nn.Module, x: torch.Tensor, estimator, *, tau: float = 1.0, num_samples: int = 1,
                   generator: Optional[torch.Generator] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    r"""The surrogate loss of one batch and its −ELBO per image.

    Args:
        model: a :class:`CategoricalVAE` or :class:`BernoulliVAE` (possibly wrapped in DDP).
        x: images ``(B, 784)`` (grey levels, or binarised for the binary VAE).
        estimator: a registered name, or an estimator object accepted by
            :func:`quasigrad.objective.expectation` (stateful ones such as RELAX).
        tau: temperature, for estimators that take one.
        num_samples: ``K`` evaluations of the decoder per image. Pathwise estimators average
            the ``K`` losses; score-function estimators use them as their method prescribes
            (leave-one-out baselines, antithetic pairs).
        generator: source of every random draw.

    Returns:
        ``(loss, neg_elbo)``: ``loss`` a scalar to call ``backward`` on (mean over the batch,
        gradient = the estimator's), ``neg_elbo`` ``(B,)`` the Monte Carlo −ELBO (detached).
    """
    inner = model.module if hasattr(model, "module") else model
    variable = inner.variable
    logits = model(x)  # through DDP when wrapped, so that its gradient hooks see the step
    kl = inner.kl(logits)
    info = registry.get(estimator) if isinstance(estimator, str) else None
    if info is not None and getattr(info, variable) is not None:  # a layer-1 (sample-level) estimator
        fn = info.function(variable)
        kw = dict(info.defaults)
        if info.has_tau:
            kw["tau"] = tau
        many = logits.unsqueeze(0).expand(num_samples, *logits.shape) if num_samples > 1 else logits
        z = fn(many, generator=generator, **kw)
        rec = inner.reconstruction(z, x)
        if num_samples > 1:
            rec = rec.mean(0)
        loss = rec + kl
        return loss.mean(), loss.detach()
    from . import objective  # the score-function family lives in the objective layer

    def f(z):
        return inner.reconstruction(z.to(logits.dtype), x)

    est = objective.expectation(f, logits, estimator=estimator, num_samples=objective_samples(estimator, num_samples),
                                variable=variable,
                                generator=generator, **({"tau": tau} if info is not None and info.has_tau else {}))
    loss = est + kl
    return loss.mean(), loss.detach()


def objective_samples(estimator, evaluations: int) -> int:
    """``num_samples`` for :func:`quasigrad.objective.expectation` that makes ``estimator`` evaluate
    ``f`` ``evaluations`` times per image: pairs for ARM/DisARM (so ``evaluations`` must be
    even), exactly two for Double CV, at least two for leave-one-out; raises :class:`VAEError`
    for a count the estimator cannot use."""
    name = estimator if isinstance(estimator, str) else type(estimator).__name__.lower()
    if name in ("arm", "disarm"):
        if evaluations % 2:
            raise VAEError(f"{name} evaluates f in antithetic pairs; it cannot use {evaluations} evaluations per step")
        return evaluations // 2
    if name == "double_cv" and evaluations != 2:
        raise VAEError(f"double_cv uses exactly 2 evaluations of f per step, got {evaluations}")
    if name == "rloo" and evaluations < 2:
        raise VAEError(f"rloo needs at least 2 evaluations of f per step (leave-one-out), got {evaluations}")
    return evaluations


@torch.no_grad()
def evaluate(model: nn.Module, images: torch.Tensor, *, batch_size: int = 1000, binarize: bool = False,
             seed: int = 12345) -> float:
    """Mean single-sample −ELBO on ``images`` (``(N, 784)`` grey levels), with a fixed seed so
    that every estimator is scored on the same draws; binarised with that seed when asked."""
    inner = model.module if hasattr(model, "module") else model
    param = next(inner.parameters())
    gen = torch.Generator(device=param.device).manual_seed(seed)
    total, n = 0.0, 0
    for start in range(0, images.shape[0], batch_size):
        x = images[start:start + batch_size].to(device=param.device, dtype=param.dtype)
        if binarize:
            x = (torch.rand(x.shape, generator=gen, device=x.device, dtype=x.dtype) < x).to(x.dtype)
        logits = inner.encode(x)
        z = inner.sample(logits, gen)
        total += float((inner.reconstruction(z, x) + inner.kl(logits)).sum())
        n += x.shape[0]
    return total / max(n, 1)


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
    """The model of ``spec``, initialised from ``spec.seed``."""
    torch.manual_seed(spec.seed)  # parameter initialisation only; training draws use their own generators
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
    """``(rank, world_size)``; initialises the process group (gloo on CPU, nccl on CUDA) when
    started by ``torchrun`` (``WORLD_SIZE`` > 1) and it is not yet initialised."""
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
        spec: the run (see :class:`RunSpec`).
        train_images, test_images: ``(N, 784)`` grey levels in [0, 1] (from
            :meth:`quasigrad.data.MNIST.flat`).
        checkpoint: file to save to every ``checkpoint_every`` steps and at the end of each
            epoch, and to resume from when it exists (it must hold the same ``spec``).
        device: where to train (default: CPU, or ``cuda`` when ``LOCAL_RANK`` is set and CUDA is up).
        estimator_object: a stateful estimator (e.g. RELAX) used instead of ``spec.estimator``;
            its ``state_dict`` (if any) is checkpointed too, and its parameters (if any) are
            trained by their own Adam optimiser at ``spec.lr``.
        on_step: called after every step with ``(step, running −ELBO of the epoch)``.
        stop_after_steps: stop (after saving the checkpoint) once this many steps are done in
            total — simulates an interruption.

    Under ``torchrun`` each of the ``world_size`` processes takes shard ``rank`` of every global
    batch; ``spec.shards`` must equal the world size. One process with ``spec.shards = S``
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

    state = {"epoch": 0, "batch": 0, "steps": 0, "sum": 0.0, "count": 0, "seconds": 0.0, "history": []}
    ckpt = Path(checkpoint) if checkpoint is not None else None
    spec_dict = dataclasses.asdict(spec)
    if ckpt is not None and ckpt.exists():
        saved = torch.load(ckpt, map_location=device, weights_only=False)
        if saved.get("spec") != spec_dict:
            raise VAEError(f"checkpoint {ckpt} was written for another run ({saved.get('spec')}); "
                           f"delete it or use another --out")
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        if est_optimizer is not None and saved.get("est_optimizer") is not None:
            est_optimizer.load_state_dict(saved["est_optimizer"])
        if saved.get("estimator") is not None and hasattr(est, "load_state_dict"):
            est.load_state_dict(saved["estimator"])
        state = saved["state"]

    def save():
        if ckpt is None or rank != 0:
            return
        from .bench.runner import atomic_torch_save

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


def _cpu_state(model: nn.Module) -> Dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
