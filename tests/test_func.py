"""torch.func (grad, jacrev, vmap) on every layer-1 estimator, categorical and Bernoulli: with
``index=`` given they agree with autograd and with a loop over the batch; with a fresh draw,
vmap's ``randomness`` argument is honoured, and its default gives PyTorch's error saying what to
pass."""

import pytest
import torch
from torch.func import grad, jacrev, vmap

from quasigrad import registry

D = torch.float64
# per-estimator settings that exercise the non-trivial paths (τ ≠ 1 where there is a τ)
KW = {"st": {"tau": 0.7}, "reinmax": {"tau": 0.7}, "gapped_st": {"gap": 0.5}, "gumbel_softmax": {"tau": 0.5, "hard": True},
      "gumbel_rao": {"tau": 0.5, "k": 5}}
CASES = [(name, variable) for name in registry.names(layer=1) for variable in ("categorical", "bernoulli")]


def test_every_layer1_estimator_is_covered():
    assert {n for n, _ in CASES} == set(registry.names(layer=1)) and len(CASES) >= 14


def _problem(variable, seed=0, batch=()):
    gen = torch.Generator().manual_seed(seed)
    if variable == "categorical":
        x = torch.randn(*batch, 3, 5, generator=gen, dtype=D)
        x[..., 0, 1] = float("-inf")                      # a masked category
        index = torch.randint(2, 5, (*batch, 3), generator=gen)
    else:
        x = torch.randn(*batch, 6, generator=gen, dtype=D)
        index = torch.randint(0, 2, (*batch, 6), generator=gen).to(D)
    return x, index, torch.randn(x.shape, generator=gen, dtype=D)


def _fn(name, variable):
    f = registry.get(name).function(variable)
    kw = KW.get(name, {})
    return lambda x, **more: f(x, **kw, **more)


def _gen():
    return torch.Generator().manual_seed(11)


@pytest.mark.parametrize("name,variable", CASES)
def test_grad_and_jacrev_agree_with_autograd(name, variable):
    f = _fn(name, variable)
    x, index, w = _problem(variable)

    def loss(v):
        return (f(v, index=index, generator=_gen()) * w).sum()

    xx = x.clone().requires_grad_(True)
    loss(xx).backward()
    torch.testing.assert_close(grad(loss)(x), xx.grad)
    jac = jacrev(lambda v: f(v, index=index, generator=_gen()))(x)
    ref = torch.autograd.functional.jacobian(lambda v: f(v, index=index, generator=_gen()), x)
    torch.testing.assert_close(jac, ref)
    assert torch.isfinite(jac).all()


@pytest.mark.parametrize("name,variable", CASES)
def test_vmap_with_index_agrees_with_a_loop(name, variable):
    f = _fn(name, variable)
    x, index, w = _problem(variable, seed=1, batch=(4,))
    # "same": the noise that stgs and gumbel_rao draw given the sample is the same for every batch
    # element, as each unbatched call with the same generator state draws it
    out = vmap(lambda v, i: f(v, index=i, generator=_gen()), randomness="same")(x, index)
    ref = torch.stack([f(x[b], index=index[b], generator=_gen()) for b in range(4)])
    torch.testing.assert_close(out, ref)
    # per-example gradients: vmap of grad
    per = vmap(grad(lambda v, i, ww: (f(v, index=i, generator=_gen()) * ww).sum()), randomness="same")(x, index, w)
    for b in range(4):
        xb = x[b].clone().requires_grad_(True)
        (f(xb, index=index[b], generator=_gen()) * w[b]).sum().backward()
        torch.testing.assert_close(per[b], xb.grad)


@pytest.mark.parametrize("name,variable", CASES)
def test_vmap_fresh_draw_honours_randomness(name, variable):
    f = _fn(name, variable)
    x, _, _ = _problem(variable, seed=2)
    xs = x.expand(6, *x.shape)
    with pytest.raises(RuntimeError, match="randomness"):
        vmap(lambda v: f(v, generator=_gen()))(xs)   # the default, "error", says what to pass
    same = vmap(lambda v: f(v, generator=_gen()), randomness="same")(xs)
    torch.testing.assert_close(same, f(x, generator=_gen()).expand_as(same))
    different = vmap(lambda v: f(v, generator=_gen()), randomness="different")(xs)
    assert not all(torch.equal(different[0], different[b]) for b in range(1, 6))
    assert torch.isfinite(different).all()
