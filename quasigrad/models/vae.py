r"""Discrete variational autoencoders on MNIST: the models and their losses.

The trainer that checkpoints, resumes and runs under `torchrun` is the benchmark's
(`quasigrad.bench.vae_training`); these models are the part a user reuses.

Two models, the two experiments by which the field compares gradient estimators:

- `CategoricalVAE`, the categorical MNIST VAE of Jang, Gu & Poole (2017) as used in
  Table 2 of the ReinMax paper (Liu et al. 2023): `L` latent variables with `C` categories
  each; encoder `784-512-256-(L·C)` and decoder `(L·C)-256-512-784` with ReLU; Bernoulli
  likelihood on the grey levels in [0, 1] (binary cross-entropy summed over the 784 pixels);
  analytic KL to the uniform prior.
- `BernoulliVAE`, the binary VAE of DisARM (Dong, Mnih & Tucker 2020) and RODEO (Shi et
  al. 2022), Table 6 of the ReinMax paper: 200 Bernoulli latents, two hidden layers of 200
  units with LeakyReLU (slope 0.3) in encoder and decoder, learned prior logits, dynamically
  binarised MNIST (a fresh binarisation `x ~ Bernoulli(grey level)` for every batch).

The negative ELBO of one image `x` is

$$
-\mathrm{ELBO}(x) = \mathbb{E}_{z \sim q(z|x)}\big[-\log p(x \mid z)\big]
                    + \mathrm{KL}\big(q(z|x) \,\|\, p(z)\big),
$$

where the KL term is computed exactly (a sum over the factors of `q`) and the expectation is
estimated with one sample (or `K` samples) of `z`; the gradient of the expectation with
respect to the encoder's logits is the chosen estimator's. Pathwise estimators (ST, ReinMax,
STGS, …) pass the sample through the decoder and backpropagate; score-function estimators
(REINFORCE-leave-one-out, DisARM, RELAX, …) go through [quasigrad.objective.expectation][].

References:
    Liu, Dong, Liu, Yu, Gao (2023), "Bridging Discrete and Backpropagation: Straight-Through
    and Beyond", NeurIPS (ReinMax); code conventions from github.com/LiyuanLucasLiu/ReinMax.

    Jang, Gu, Poole (2017), "Categorical Reparameterization with Gumbel-Softmax", ICLR.

    Dong, Mnih, Tucker (2020), "DisARM: An Antithetic Gradient Estimator for Binary Latent
    Variables", NeurIPS.
"""

from __future__ import annotations

import math
from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from .. import objective, registry
from ..estimators._sampling import sample_categorical

__all__ = ["CategoricalVAE", "BernoulliVAE", "evaluate", "estimator_step", "objective_samples", "VAEError"]


class VAEError(ValueError):
    """A VAE run was given a setting it cannot use (the message names the setting)."""


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
    r"""Categorical VAE: `latents` variables with `categories` categories each.

    Encoder `784-512-256-(L·C)` (ReLU, no activation on the logits), decoder
    `(L·C)-256-512-784` (ReLU) giving pixel logits; the likelihood is Bernoulli on the grey
    levels (binary cross-entropy with the sigmoid of those logits, summed over pixels), the
    prior uniform, so `KL(q‖p) = Σ_l Σ_c q_lc log q_lc + L log C`.

    Args:
        latents: `L`, the number of categorical latent variables.
        categories: `C`, categories per variable.
        pixels: the image size.
        hidden: the hidden widths of the encoder (the decoder's in reverse).

    Raises:
        VAEError: `latents < 1` or `categories < 2`.
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
        """The posterior's logits.

        Args:
            x: images `(..., 784)`.

        Returns:
            Logits `(..., L, C)` of `q(z|x)`.
        """
        return self.encoder(x).unflatten(-1, (self.latents, self.categories))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder's logits (what DistributedDataParallel calls; see `encode`)."""
        return self.encode(x)

    def reconstruction(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The reconstruction term `−log p(x|z)` per image.

        Args:
            z: one-hot latents `(..., B, L, C)`.
            x: images `(B, 784)`.

        Returns:
            `−log p(x|z)` shaped `(..., B)`.
        """
        logits = self.decoder(z.flatten(-2))
        return F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(-1)

    def kl(self, logits: torch.Tensor) -> torch.Tensor:
        """The exact KL divergence from the posterior to the uniform prior.

        Args:
            logits: the posterior's logits `(B, L, C)`.

        Returns:
            `KL(q(z|x) ‖ uniform)` per image, shaped `(B,)`.
        """
        logq = torch.log_softmax(logits, -1)
        return (logq.exp() * logq).sum((-2, -1)) + self.latents * math.log(self.categories)

    def sample(self, logits: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
        """A draw from the posterior, without gradient.

        Args:
            logits: the posterior's logits `(..., L, C)`.
            generator: for the draw.

        Returns:
            A one-hot sample shaped like `logits`.
        """
        index = sample_categorical(logits, generator=generator)
        return F.one_hot(index, self.categories).to(logits.dtype)


class BernoulliVAE(nn.Module):
    r"""Binary VAE of DisARM/RODEO: `latents` Bernoulli variables, encoder
    `784-200-200-latents` and decoder `latents-200-200-784` with LeakyReLU (slope 0.3),
    learned prior logits `c`. With `q_i = σ(a_i)` and `p_i = σ(c_i)`:

    $$
    \mathrm{KL}(q\|p) = \sum_i q_i \log\frac{q_i}{p_i} + (1-q_i)\log\frac{1-q_i}{1-p_i}.
    $$

    Args:
        latents: the number of Bernoulli latent variables.
        pixels: the image size.
        hidden: the hidden widths of the encoder (the decoder's in reverse).
        negative_slope: the LeakyReLU slope.

    Raises:
        VAEError: `latents < 1`.
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
        """The posterior's logits.

        Args:
            x: images `(B, 784)`.

        Returns:
            Bernoulli logits `(B, latents)` of `q(z|x)`.
        """
        return self.encoder(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder's logits (what DistributedDataParallel calls; see `encode`)."""
        return self.encode(x)

    def reconstruction(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The reconstruction term `−log p(x|z)` per image.

        Args:
            z: latents in {0, 1}, `(..., B, latents)`.
            x: images `(B, 784)`.

        Returns:
            `−log p(x|z)` shaped `(..., B)`.
        """
        logits = self.decoder(z)
        return F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(-1)

    def kl(self, logits: torch.Tensor) -> torch.Tensor:
        """The exact KL divergence from the posterior to the learned prior.

        Args:
            logits: the posterior's logits `(B, latents)`.

        Returns:
            `KL(q(z|x) ‖ p(z))` per image, shaped `(B,)`.
        """
        c = self.prior_logits.to(logits.dtype)
        q = torch.sigmoid(logits)
        return (q * (F.logsigmoid(logits) - F.logsigmoid(c))
                + (1 - q) * (F.logsigmoid(-logits) - F.logsigmoid(-c))).sum(-1)

    def sample(self, logits: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
        """A draw from the posterior, without gradient.

        Args:
            logits: the posterior's logits `(..., latents)`.
            generator: for the draw.

        Returns:
            A sample in {0, 1} shaped like `logits`.
        """
        u = torch.rand(logits.shape, generator=generator, dtype=logits.dtype, device=logits.device)
        return (u < torch.sigmoid(logits.detach())).to(logits.dtype)


# ---------------------------------------------------------------------------------------------
# One estimator step


def estimator_step(model: nn.Module, x: torch.Tensor, estimator: Union[str, Callable[..., torch.Tensor]], *,
                   tau: float = 1.0, num_samples: int = 1,
                   generator: Optional[torch.Generator] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    r"""The surrogate loss of one batch and its −ELBO per image.

    Args:
        model: a [CategoricalVAE][quasigrad.models.vae.CategoricalVAE] or
            [BernoulliVAE][quasigrad.models.vae.BernoulliVAE] (possibly wrapped in DDP).
        x: images `(B, 784)` (grey levels, or binarised for the binary VAE).
        estimator: a registered name, or an estimator object accepted by
            [quasigrad.objective.expectation][] (stateful ones such as RELAX).
        tau: temperature, for estimators that take one.
        num_samples: `K` evaluations of the decoder per image. Pathwise estimators average
            the `K` losses; score-function estimators use them as their method prescribes
            (leave-one-out baselines, antithetic pairs).
        generator: source of every random draw.

    Returns:
        `(loss, neg_elbo)`: `loss` a scalar to call `backward` on (mean over the batch,
        gradient = the estimator's), `neg_elbo` `(B,)` the Monte Carlo −ELBO (detached).

    Raises:
        VAEError: a sample count the estimator cannot use.
    """
    inner: Any = model.module if hasattr(model, "module") else model
    logits = model(x)  # through DDP when wrapped, so that its gradient hooks see the step
    kl = inner.kl(logits)

    def f(z):
        return inner.reconstruction(z.to(logits.dtype), x)

    est = objective.expectation(f, logits, estimator=estimator, num_samples=objective_samples(estimator, num_samples),
                                variable=inner.variable, generator=generator, tau=tau)
    loss = est + kl
    return loss.mean(), loss.detach()


def objective_samples(estimator: Union[str, Callable[..., torch.Tensor]], evaluations: int) -> int:
    """The sample count that makes an estimator evaluate the decoder a given number of times.

    Args:
        estimator: a registered name, or an estimator object (which takes `evaluations`
            samples).
        evaluations: evaluations of `f` per image.

    Returns:
        `num_samples` for [quasigrad.objective.expectation][]
        ([EstimatorInfo.num_samples_for][quasigrad.registry.EstimatorInfo.num_samples_for]:
        pairs for ARM/DisARM, at least two samples for Double CV and
        leave-one-out).

    Raises:
        VAEError: a count the estimator cannot use.
    """
    if not isinstance(estimator, str):
        return evaluations
    try:
        return registry.get(estimator).num_samples_for(evaluations)
    except ValueError as exc:
        raise VAEError(str(exc)) from None


@torch.no_grad()
def evaluate(model: nn.Module, images: torch.Tensor, *, batch_size: int = 1000, binarize: bool = False,
             seed: int = 12345) -> float:
    """The mean single-sample −ELBO on a set of images, with a fixed seed so that every
    estimator is scored on the same draws.

    Args:
        model: a `CategoricalVAE` or `BernoulliVAE` (possibly wrapped in DDP).
        images: `(N, 784)` grey levels in [0, 1].
        batch_size: images per forward pass.
        binarize: binarise the images with the same seed first (for the binary VAE).
        seed: the seed of the draws.

    Returns:
        The mean −ELBO in nats per image.
    """
    inner: Any = model.module if hasattr(model, "module") else model
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
