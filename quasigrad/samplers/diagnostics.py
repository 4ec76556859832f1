"""Diagnostics for Markov chains: the stationary distribution of a transition matrix and the
effective sample size."""

from __future__ import annotations

import math

import torch


def stationary_distribution(P: torch.Tensor) -> torch.Tensor:
    """The stationary distribution of an irreducible transition matrix.

    Args:
        P: a transition matrix `(S, S)` whose rows sum to 1 (for instance a sampler's
            `transition_matrix()`).

    Returns:
        π shaped `(S,)` in float64: the solution of `π (P − I) = 0`, `Σ π = 1`, by least
        squares.
    """
    P = P.double()
    S = P.shape[0]
    A = torch.cat([(P - torch.eye(S, dtype=P.dtype, device=P.device)).T, torch.ones(1, S, dtype=P.dtype,
                                                                                      device=P.device)])
    rhs = torch.zeros(S + 1, dtype=P.dtype, device=P.device)
    rhs[-1] = 1
    return torch.linalg.lstsq(A, rhs.unsqueeze(-1)).solution.squeeze(-1)


# --------------------------------------------------------------------------------------------
# Effective sample size


def effective_sample_size(samples: torch.Tensor) -> torch.Tensor:
    r"""Multi-chain effective sample size of each scalar statistic.

    With `W` the mean within-chain variance, `B/n` the variance of the chain means,
    `var⁺ = (n − 1)/n W + B/n`, and `ρ_t = 1 − (W − γ̄_t)/var⁺` (`γ̄_t` the chains' mean
    autocovariance at lag `t`, by FFT), `ESS = m n / τ` with `τ = −1 + 2 Σ_k P_k`,
    `P_k = ρ_{2k} + ρ_{2k+1}` summed while positive and made monotone (Geyer's initial
    monotone sequence). A statistic constant over every draw has ESS `m n`. (Stan reference
    manual; Vehtari et al. 2021 without rank normalisation.)

    Args:
        samples: `(num_steps, num_chains, ...)`: `num_steps ≥ 4` draws of every chain.

    Returns:
        ESS shaped `samples.shape[2:]` (float64). It can exceed `num_steps · num_chains`
        for anticorrelated chains (as in Stan), up to `n m log10(n m)`.

    Raises:
        TypeError: `samples` is not a tensor.
        ValueError: fewer than 2 dimensions or 4 steps, or non-finite values.
    """
    if not isinstance(samples, torch.Tensor):
        raise TypeError(f"samples must be a torch.Tensor, got {type(samples).__name__}")
    if samples.dim() < 2:
        raise ValueError(f"samples must be shaped (num_steps, num_chains, ...), got shape {tuple(samples.shape)}")
    n, m = samples.shape[0], samples.shape[1]
    if n < 4:
        raise ValueError(f"samples needs at least 4 steps along dim 0, got {n}")
    x = samples.double()
    if not bool(torch.isfinite(x).all()):
        raise ValueError("samples contains NaN or inf")
    chain_mean = x.mean(0)
    xc = x - chain_mean
    # autocovariance by FFT, zero-padded to avoid wrap-around (biased estimator, / n)
    size = 1 << (2 * n - 1).bit_length()
    spec = torch.fft.rfft(xc, n=size, dim=0)
    acov = torch.fft.irfft(spec * spec.conj(), n=size, dim=0)[:n] / n          # (n, m, ...)
    w = (acov[0] * n / (n - 1)).mean(0)                                          # mean within-chain var
    b_over_n = chain_mean.var(0, unbiased=True) if m > 1 else torch.zeros_like(w)
    var_plus = (n - 1) / n * w + b_over_n
    constant = var_plus <= 1e-300 * torch.ones_like(var_plus)
    safe = torch.where(constant, torch.ones_like(var_plus), var_plus)
    rho = 1 - (w - acov.mean(1)) / safe                                          # (n, ...)
    k = n // 2
    pairs = rho[0:2 * k:2] + rho[1:2 * k:2]                                      # (k, ...)
    positive = torch.cumprod((pairs > 0).to(x.dtype), 0)                          # initial positive sequence
    mono = torch.cummin(torch.where(positive > 0, pairs, torch.full_like(pairs, float("inf"))), 0).values
    mono = torch.where(positive > 0, mono, torch.zeros_like(mono))
    tau = (-1 + 2 * mono.sum(0)).clamp(min=1.0 / math.log10(max(n * m, 10)))
    ess = n * m / tau
    return torch.where(constant, torch.full_like(ess, float(n * m)), ess)
