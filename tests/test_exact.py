"""quasigrad.exact against brute force, and the registry and `quasigrad check`."""

import itertools
import math

import pytest
import torch

import quasigrad
from quasigrad import exact, registry
from quasigrad.cli import main


def brute_force(f, theta):
    # every joint outcome of the rows of theta (one example), by itertools
    v, c = theta.shape
    p = torch.softmax(theta, -1)
    total = 0.0
    for outcome in itertools.product(range(c), repeat=v):
        d = torch.nn.functional.one_hot(torch.tensor(outcome), c).to(theta.dtype)
        total = total + math.prod(float(p[i, o]) for i, o in enumerate(outcome)) * float(f(d))
    return total


def test_expectation_matches_brute_force_and_gradient_is_exact():
    theta = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(12, dtype=torch.float64)
    f = lambda d: torch.sin(d.flatten(-2) @ w) * (d[..., 0, 1] + 2)
    value = exact.expectation(f, theta)
    assert abs(float(value) - brute_force(f, theta.detach())) < 1e-12
    # gradient: central finite differences of the brute-force expectation
    (grad,) = torch.autograd.grad(value, theta)
    eps = 1e-6
    for i, j in [(0, 0), (1, 2), (2, 3)]:
        tp, tm = theta.detach().clone(), theta.detach().clone()
        tp[i, j] += eps
        tm[i, j] -= eps
        fd = (brute_force(f, tp) - brute_force(f, tm)) / (2 * eps)
        assert abs(float(grad[i, j]) - fd) < 1e-7


def test_per_example_and_dim():
    # two examples (leading dim) of two variables each, categories along dim 1
    theta = torch.randn(2, 3, 2, dtype=torch.float64)           # (example, category, variable)
    f = lambda d: (d[:, 0, :] * torch.tensor([1.0, 2.0], dtype=torch.float64)).sum(-1)
    value = exact.expectation(f, theta, dim=1)
    assert value.shape == (2,)
    p = torch.softmax(theta, 1)
    torch.testing.assert_close(value, p[:, 0, 0] + 2 * p[:, 0, 1])


def test_bernoulli_expectation():
    a = torch.randn(4, dtype=torch.float64)
    f = lambda b: b.prod(-1) + b.sum(-1)
    p = torch.sigmoid(a)
    torch.testing.assert_close(exact.expectation(f, a, variable="bernoulli"), p.prod() + p.sum())


def test_non_vmappable_f_falls_back_to_a_loop():
    theta = torch.randn(2, 3, dtype=torch.float64)

    def f(d):
        return torch.tensor(float(int(d.argmax(-1).sum().item()) % 2), dtype=torch.float64)  # .item(): not vmappable

    assert abs(float(exact.expectation(f, theta)) - brute_force(f, theta)) < 1e-12


def test_masked_categories():
    theta = torch.tensor([[0.0, float("-inf"), 1.0], [2.0, 0.0, float("-inf")]], dtype=torch.float64,
                         requires_grad=True)
    w = torch.arange(6, dtype=torch.float64)
    v = exact.expectation(lambda d: d.flatten(-2) @ w, theta)
    (g,) = torch.autograd.grad(v, theta)
    assert torch.isfinite(g).all() and g[0, 1] == 0 and g[1, 2] == 0
    p = torch.softmax(theta.detach(), -1)
    torch.testing.assert_close(v, (p.flatten() * w).sum())


def test_too_many_outcomes_error_says_how_many():
    theta = torch.randn(20, 4)
    with pytest.raises(exact.TooManyOutcomesError, match=r"1099511627776 outcomes"):
        exact.expectation(lambda d: d.sum(), theta)


def test_bad_f_shape():
    with pytest.raises(ValueError, match="one loss per example"):
        exact.expectation(lambda d: d.sum(0), torch.randn(3, 4))


def test_estimator_expectation_refuses_noisy_estimators():
    with pytest.raises(ValueError, match="noise beyond the sample"):
        exact.estimator_expectation(lambda d: d.sum(), torch.randn(2, 3), "stgs")


def test_registry_lookup_and_errors():
    info = registry.get("reinmax")
    assert info.categorical is quasigrad.reinmax and info.has_tau and info.grad_depends_on_sample_only
    with pytest.raises(registry.UnknownEstimatorError, match="unknown estimator 'nope'.*reinmax"):
        registry.get("nope")
    with pytest.raises(ValueError, match="already registered"):
        registry.register("st", family="straight-through", unbiased=False, needs_grad_f=True,
                          grad_depends_on_sample_only=True, variables=["categorical"])
    assert "reinmax" in registry.table()


def test_check_command(capsys):
    assert main(["check", "--estimators", "st", "reinmax", "stgs", "--draws", "200"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines() if line.split() and line.split()[0] in
             ("st", "reinmax", "stgs")}
    linear, quadratic, cubic = (float(x) for x in lines["reinmax"].split()[1:4])
    assert linear < 1e-12 and quadratic < 1e-12 and cubic > 1e-3
    assert float(lines["st"].split()[1]) < 1e-12 and float(lines["st"].split()[2]) > 1e-2
    assert "±" in lines["stgs"]


def test_cli_unknown_names(capsys):
    assert main(["check", "--estimators", "nope"]) == 2
    assert "unknown estimator(s) 'nope'" in capsys.readouterr().err
    assert main(["bench", "no-such-bench"]) == 2
    assert "unknown benchmark 'no-such-bench'" in capsys.readouterr().err


def test_doctests():
    import doctest

    import quasigrad.categorical
    import quasigrad.exact
    import quasigrad.registry

    for mod in (quasigrad.categorical, quasigrad.exact, quasigrad.registry):
        result = doctest.testmod(mod, extraglobs={"torch": torch, "quasigrad": quasigrad})
        assert result.failed == 0, mod.__name__
