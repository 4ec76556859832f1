"""quasigrad.nn: the sampling modules switch between the estimator's draw (train) and the
straight-through mode (eval); st_argmax and st_threshold have the straight-through gradient."""

import copy

import pytest
import torch

import quasigrad
from quasigrad import nn as qnn
from quasigrad import registry


def _st_grad(theta, g, tau, dim=-1):
    """(1/τ) J(softmax(θ/τ)) g, written out."""
    q = torch.softmax(theta / tau, dim)
    return q * (g - (q * g).sum(dim, keepdim=True)) / tau


@pytest.mark.parametrize("dim", [-1, 0, 1])
@pytest.mark.parametrize("tau", [1.0, 0.4])
def test_st_argmax_value_and_gradient(tau, dim):
    gen = torch.Generator().manual_seed(0)
    theta = torch.randn(3, 4, 5, dtype=torch.float64, generator=gen, requires_grad=True)
    g = torch.randn(3, 4, 5, dtype=torch.float64, generator=gen)
    y = qnn.st_argmax(theta, tau=tau, dim=dim)
    expect = torch.nn.functional.one_hot(theta.argmax(dim), theta.shape[dim]).movedim(-1, dim).double()
    assert torch.equal(y, expect)
    (y * g).sum().backward()
    torch.testing.assert_close(theta.grad, _st_grad(theta.detach(), g, tau, dim))


def test_st_argmax_ties_dtypes_and_errors():
    assert qnn.st_argmax(torch.tensor([1.0, 3.0, 3.0])).tolist() == [0.0, 1.0, 0.0]   # first maximum
    half = qnn.st_argmax(torch.tensor([[0.0, 2.0]], dtype=torch.bfloat16))
    assert half.dtype == torch.bfloat16 and half.tolist() == [[0.0, 1.0]]
    with pytest.raises(ValueError, match="NaN"):
        qnn.st_argmax(torch.tensor([0.0, float("nan")]))
    with pytest.raises(TypeError):
        qnn.st_argmax(torch.tensor([1, 2]))


def test_st_threshold_value_and_gradient():
    a = torch.tensor([-2.0, -0.1, 0.0, 0.3, 4.0], dtype=torch.float64, requires_grad=True)
    b = qnn.st_threshold(a, tau=0.5)
    assert b.tolist() == [0.0, 0.0, 0.0, 1.0, 1.0]
    b.sum().backward()
    s = torch.sigmoid(a.detach() / 0.5)
    torch.testing.assert_close(a.grad, s * (1 - s) / 0.5)


@pytest.mark.parametrize("name", ["st", "reinmax", "gst", "stgs", "gumbel_rao", "zgr"])
def test_categorical_sample_trains_with_the_estimator_and_evaluates_the_mode(name):
    gen = torch.Generator().manual_seed(4)
    theta = torch.randn(6, 4, dtype=torch.float64, generator=gen, requires_grad=True)
    g = torch.randn(6, 4, dtype=torch.float64, generator=gen)
    info = registry.get(name)
    tau = 1.3 if info.has_tau else 1.0
    layer = qnn.CategoricalSample(name, tau=tau, generator=torch.Generator().manual_seed(1))
    assert layer.training
    y = layer(theta)
    (y * g).sum().backward()
    ref_theta = theta.detach().clone().requires_grad_()
    kwargs = dict(info.defaults, **({"tau": tau} if info.has_tau else {}))
    ref = info.categorical(ref_theta, dim=-1, generator=torch.Generator().manual_seed(1), **kwargs)
    (ref * g).sum().backward()
    assert torch.equal(y, ref)
    torch.testing.assert_close(theta.grad, ref_theta.grad)

    layer.eval()
    theta.grad = None
    z = layer(theta)
    assert torch.equal(z, torch.nn.functional.one_hot(theta.argmax(-1), 4).double())
    assert torch.equal(layer(theta), z)                                  # deterministic in evaluation
    (z * g).sum().backward()
    torch.testing.assert_close(theta.grad, _st_grad(theta.detach(), g, tau))
    layer.train()
    draws = torch.stack([layer(theta) for _ in range(30)])
    assert not torch.equal(draws.amax(0), draws.amin(0))                 # training draws vary


def test_eval_mode_sample_keeps_drawing_and_dim_is_honoured():
    theta = torch.zeros(4, 3, 50)
    layer = qnn.CategoricalSample("reinmax", dim=1, eval_mode="sample").eval()
    y = layer(theta)
    assert torch.equal(y.sum(1), torch.ones(4, 50))
    assert len({tuple(col.tolist()) for col in y.argmax(1)}) > 1
    assert torch.equal(qnn.CategoricalSample(dim=1).eval()(theta).argmax(1), torch.zeros(4, 50, dtype=torch.long))


def test_bernoulli_sample_train_and_eval():
    gen = torch.Generator().manual_seed(2)
    a = torch.randn(200, dtype=torch.float64, generator=gen, requires_grad=True)
    layer = qnn.BernoulliSample("reinmax", tau=1.5, generator=torch.Generator().manual_seed(7))
    b = layer(a)
    b.sum().backward()
    ref_a = a.detach().clone().requires_grad_()
    ref = quasigrad.bernoulli.reinmax(ref_a, tau=1.5, generator=torch.Generator().manual_seed(7))
    ref.sum().backward()
    assert torch.equal(b, ref) and torch.allclose(a.grad, ref_a.grad)
    layer.eval()
    a.grad = None
    m = layer(a)
    assert torch.equal(m, (a.detach() > 0).double())
    m.sum().backward()
    s = torch.sigmoid(a.detach() / 1.5)
    torch.testing.assert_close(a.grad, s * (1 - s) / 1.5)


def test_settings_show_in_repr_and_can_change():
    layer = qnn.CategoricalSample("gst", tau=0.7, gap=0.5)
    assert repr(layer) == "CategoricalSample(estimator='gapped_st', tau=0.7, gap=0.5, dim=-1, eval_mode='mode')"
    assert repr(qnn.BernoulliSample()) == "BernoulliSample(estimator='st', tau=1.0, eval_mode='mode')"
    layer.tau = 2.0
    assert layer._kwargs["tau"] == 2.0 and "tau=2.0" in repr(layer)
    plain = qnn.CategoricalSample()
    plain.estimator = "reinmax"
    assert plain._fn is quasigrad.reinmax and "estimator='reinmax'" in repr(plain)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), qnn.CategoricalSample("st"))
    assert "CategoricalSample(estimator='st'" in repr(model) and list(model[1].state_dict()) == []
    twin = copy.deepcopy(model)
    assert twin(torch.randn(2, 3)).shape == (2, 4)
    assert quasigrad.nn is qnn


def test_bad_settings_are_refused():
    with pytest.raises(KeyError, match="unknown estimator"):
        qnn.CategoricalSample("nope")
    with pytest.raises(ValueError, match="no temperature"):
        qnn.BernoulliSample("darn", tau=0.5)
    with pytest.raises(ValueError, match="eval_mode must be one of"):
        qnn.CategoricalSample(eval_mode="argmax")
    with pytest.raises(TypeError, match="dim must be an int"):
        qnn.CategoricalSample(dim=1.0)
    with pytest.raises(TypeError, match="generator"):
        qnn.BernoulliSample(generator=0)
    layer = qnn.CategoricalSample()
    with pytest.raises(ValueError, match="tau"):
        layer.tau = -1.0
    assert layer.tau == 1.0
