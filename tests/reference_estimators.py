"""The papers' algorithms written naively with autograd, as references for the tests.

Each takes logits θ (last dim = categories) and the drawn one-hot sample D, and returns a
tensor whose forward value is D and whose autograd gradient is the estimator's.
"""

import torch


def st(theta, d, tau=1.0):
    # ReinMax paper, Algorithm 1: D + softmax_τ(θ) − sg(softmax_τ(θ))
    p = torch.softmax(theta / tau, -1)
    return d + p - p.detach()


def reinmax(theta, d, tau=1.0):
    # ReinMax paper, Algorithm 2
    pi0 = torch.softmax(theta, -1)
    pi1 = (d + torch.softmax(theta / tau, -1)) / 2
    pi1 = torch.softmax((torch.log(pi1) - theta).detach() + theta, -1)
    pi2 = 2 * pi1 - 0.5 * pi0
    return pi2 - pi2.detach() + d


def darn(theta, d):
    # ⟨g, D − π⟩ (D − π) as the gradient of sg(D − π)·log p(D)
    logp = torch.log_softmax(theta, -1)
    logp_d = (logp * d).sum(-1, keepdim=True)
    resid = (d - logp.exp()).detach()
    return d + resid * (logp_d - logp_d.detach())


def zgr(theta, d):
    # ½ (ST at τ = 1 + DARN)
    p = torch.softmax(theta, -1)
    logp = torch.log_softmax(theta, -1)
    logp_d = (logp * d).sum(-1, keepdim=True)
    resid = (d - p).detach()
    return d + 0.5 * (p - p.detach()) + 0.5 * resid * (logp_d - logp_d.detach())


def gapped_st(theta, d, gap=1.0, tau=1.0):
    # GST (Fan et al. 2022): move the sampled logit up to the max, push the others below max − gap
    t = theta.detach()
    top = t.max(-1, keepdim=True).values
    move_up = (top - t) * d
    move_down = torch.clamp(t - top + gap, min=0.0) * (1 - d)
    p = torch.softmax((theta + move_up - move_down) / tau, -1)
    return d + p - p.detach()


def gumbel_rao(theta, d, perturbed, tau=1.0):
    # GR-MCK: perturbed is (k, ..., C), conditional draws θ + G given argmax = D
    y = torch.softmax((theta.unsqueeze(0) + (perturbed - theta.detach().unsqueeze(0))) / tau, -1).mean(0)
    return d + y - y.detach()
