"""Hostile inputs: half precision at extreme temperatures, logits near the float range, masked
and empty category dimensions, NaN that must not slip through, and the signatures shared with
``torch.nn.functional.gumbel_softmax`` and ``torchsort``. The property-based tests at the end run
every layer-1 estimator (categorical and Bernoulli) over shapes, dims, dtypes, temperatures and
logits: each call gives a finite forward value and gradient or a clear ValueError/TypeError."""

import functools
import math
import warnings

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import quasigrad
from quasigrad import exact, objective, registry
from quasigrad.sort import (
    gumbel_topk,
    neural_sort,
    plackett_luce_log_prob,
    relaxed_topk,
    soft_rank,
    soft_sort,
    soft_sort_permutation,
)

INF = float("inf")
CAT = {name: registry.get(name).categorical for name in registry.names(layer=1)}
BERN = {name: registry.get(name).bernoulli for name in registry.names(layer=1)}
TAU = [name for name in CAT if registry.get(name).has_tau]
HALF = (torch.float16, torch.bfloat16)


def _call(fn, x, **kw):
    if fn in (CAT["gumbel_softmax"], BERN["gumbel_softmax"]):
        kw.setdefault("hard", True)
    return fn(x, **kw)


def _value_and_grad(fn, x, *, seed=0, **kw):
    """Forward value and gradient of a fixed linear loss, with a seeded generator."""
    x = x.detach().clone().requires_grad_(True)
    y = _call(fn, x, generator=torch.Generator().manual_seed(seed), **kw)
    weights = torch.arange(1, y.numel() + 1, dtype=torch.float64).reshape(y.shape).to(y.dtype)
    (grad,) = torch.autograd.grad((y * weights).sum(), x)
    return y.detach(), grad


def _finite(*tensors):
    return all(bool(torch.isfinite(t).all()) for t in tensors)


# -- half precision and |θ|/τ beyond the float range ---------------------------------------------

@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("name", TAU)
def test_half_precision_logits_at_small_tau_match_float32(name, dtype):
    # 600/0.001 overflows float16 if divided before upcasting; the two leading logits tie, so the
    # gradient is not zero and is compared with the same computation on float32 logits.
    theta = torch.tensor([[600.0, 600.0, 0.0], [700.0, 0.0, -5.0]])
    index = torch.tensor([0, 0])
    _, g_half = _value_and_grad(CAT[name], theta.to(dtype), tau=0.001, index=index)
    _, g_ref = _value_and_grad(CAT[name], theta.to(dtype).float(), tau=0.001, index=index)
    assert _finite(g_half)
    torch.testing.assert_close(g_half.float(), g_ref.to(dtype).float(), rtol=1e-2, atol=1e-3)


WITH_TAU = [(n, {}) for n in TAU if n != "gumbel_softmax"] + [("gumbel_softmax", {"hard": True}), ("gumbel_softmax", {"hard": False})]


@pytest.mark.parametrize("name,kw", WITH_TAU)
@pytest.mark.parametrize("theta,tau", [([[3e38, 0.0]], 0.5), ([[1e9, 0.0, -1e9]], 1e-30),
                                       ([[3e38, -3e38, 1.0, 2.0]], 0.25), ([[3e38, 3e38, -3e38]], 2.0)])
def test_logits_over_tau_beyond_float_range_stay_finite(name, kw, theta, tau):
    theta = torch.tensor(theta)
    y, g = _value_and_grad(CAT[name], theta, tau=tau, **kw)
    assert _finite(y, g)
    if name != "gumbel_softmax" and name != "gumbel_rao":
        # the same draw in float64, where θ/τ does not overflow, gives the same gradient
        index = y.argmax(-1)
        _, g64 = _value_and_grad(CAT[name], theta.double(), tau=tau, index=index)
        torch.testing.assert_close(g, g64.float())


def test_gumbel_softmax_accepts_large_finite_logits():
    # a finiteness check that summed per-row logsumexp values overflowed on these
    y = quasigrad.gumbel_softmax(torch.full((2, 3), 2e38), generator=torch.Generator().manual_seed(0))
    assert _finite(y)
    torch.testing.assert_close(y.sum(-1), torch.ones(2))


@pytest.mark.parametrize("variable", ["categorical", "bernoulli"])
@pytest.mark.parametrize("dtype", [torch.float32, *HALF])
def test_tau_too_small_for_the_compute_dtype_is_an_error(variable, dtype):
    fn = CAT["st"] if variable == "categorical" else BERN["st"]
    with pytest.raises(ValueError, match=r"tau=1e-40 is too small"):
        fn(torch.zeros(2, 3, dtype=dtype), tau=1e-40)


# -- index, empty category dimension ------------------------------------------------------------

@pytest.mark.parametrize("hard", [True, False])
def test_gumbel_softmax_rejects_an_index_at_a_masked_category(hard):
    theta = torch.tensor([[0.0, -INF, 1.0], [0.0, 1.0, 2.0]])
    with pytest.raises(ValueError, match="index selects a category whose probability is 0"):
        quasigrad.gumbel_softmax(theta, hard=hard, index=torch.tensor([1, 0]))


def test_index_at_a_category_of_underflowing_probability_is_accepted():
    # logit -200 is finite: its probability underflows in float32 but the category is possible
    theta = torch.tensor([[0.0, -200.0]])
    for name, fn in CAT.items():
        y, g = _value_and_grad(fn, theta, index=torch.tensor([1]))
        assert y[0, 1] == 1 and _finite(g), name


@pytest.mark.parametrize("name", list(CAT) + ["sample_categorical"])
def test_empty_category_dimension_is_a_clear_error(name):
    fn = quasigrad.sample_categorical if name == "sample_categorical" else CAT[name]
    for shape, dim in (((5, 0), -1), ((0, 3, 0), 2), ((2, 0, 3), 1)):
        with pytest.raises(ValueError, match=rf"logits has size 0 along dim {dim % len(shape)}"):
            fn(torch.empty(shape), dim=dim)


@pytest.mark.parametrize("name", list(CAT))
def test_empty_batch_is_fine(name):
    theta = torch.empty(0, 4, requires_grad=True)
    y = _call(CAT[name], theta)
    assert y.shape == (0, 4)
    y.sum().backward()
    assert theta.grad.shape == (0, 4)
    b = _call(BERN[name], torch.empty(0, 3))
    assert b.shape == (0, 3)


def test_empty_category_dimension_in_exact_and_objective():
    f = lambda d: d.sum()
    with pytest.raises(ValueError, match="logits has size 0 along dim 1"):
        exact.expectation(f, torch.empty(2, 0))
    with pytest.raises(ValueError, match="logits has size 0 along dim 1"):
        exact.num_outcomes(torch.empty(2, 0))
    for name in ("rloo", "st", "disarm", "rebar", "exact"):
        with pytest.raises(ValueError, match="logits has size 0 along dim 1"):
            objective.expectation(f, torch.empty(2, 0), estimator=name)


# -- NaN that slipped through -------------------------------------------------------------------

BAD_CATEGORICAL = {"nan": [[float("nan"), 0.0]], "+inf": [[INF, 0.0]], "all -inf": [[-INF, -INF], [0.0, 1.0]]}


@pytest.mark.parametrize("bad", list(BAD_CATEGORICAL))
def test_exact_rejects_invalid_logits(bad):
    theta = torch.tensor(BAD_CATEGORICAL[bad])
    f = lambda d: d[..., 0]
    for call in (lambda: exact.expectation(f, theta), lambda: exact.gradient(f, theta),
                 lambda: exact.estimator_expectation(f, theta, "st")):
        with pytest.raises(ValueError, match="logits"):
            call()


def test_exact_rejects_nan_bernoulli_logits_and_accepts_infinite_ones():
    f = lambda b: b.sum()
    with pytest.raises(ValueError, match="logits contains NaN"):
        exact.expectation(f, torch.tensor([float("nan"), 0.0]), variable="bernoulli")
    out = exact.expectation(f, torch.tensor([INF, -INF, 0.0]), variable="bernoulli")
    assert float(out) == 1.5


@pytest.mark.parametrize("variable", ["categorical", "bernoulli"])
def test_objective_rejects_nan_logits_for_every_estimator(variable):
    theta = torch.tensor([[float("nan"), 0.0, 1.0]])
    f = lambda d: d.sum()
    for name in registry.names(variable=variable):
        if name == "relax":
            continue
        with pytest.raises(ValueError, match="logits contains NaN"):
            objective.expectation(f, theta, estimator=name, variable=variable)


def test_objective_rejects_invalid_categorical_logits():
    f = lambda d: d.sum()
    for name in ("disarm", "rloo", "rebar", "double_cv", "reinforce", "rao_blackwell"):
        with pytest.raises(ValueError, match=r"\+inf"):
            objective.expectation(f, torch.tensor([[INF, 0.0]]), estimator=name)
        with pytest.raises(ValueError, match="all -inf"):
            objective.expectation(f, torch.tensor([[-INF, -INF]]), estimator=name)


def test_plackett_luce_rejects_nan_and_inf_logits():
    idx = torch.tensor([[1, 2]])
    with pytest.raises(ValueError, match="logits contains NaN"):
        plackett_luce_log_prob(torch.tensor([[float("nan"), 0.0, 1.0]]), idx)
    with pytest.raises(ValueError, match=r"logits contains \+inf"):
        plackett_luce_log_prob(torch.tensor([[INF, 0.0, 1.0]]), idx)
    with pytest.raises(ValueError, match="logits contains NaN"):
        gumbel_topk(torch.tensor([[float("nan"), 0.0, 1.0]]), 2)
    with pytest.raises(ValueError, match="indices has size 0 along dim 1"):
        plackett_luce_log_prob(torch.zeros(1, 3), torch.zeros(1, 0, dtype=torch.long))


HUGE = torch.tensor([[3e38, -3e38, 1.0], [3e38, 3e38, 0.0], [-3e38, 1.0, 2.0]])


@pytest.mark.parametrize("relative", [False, True])
@pytest.mark.parametrize("tau", [1.0, 0.25, 1e-30])
@pytest.mark.parametrize("fn", [neural_sort, soft_sort_permutation])
def test_permutation_relaxations_are_finite_near_the_float_range(fn, tau, relative):
    x = HUGE.clone().requires_grad_(True)
    p = fn(x, tau=tau, relative=relative)
    (g,) = torch.autograd.grad((p * torch.randn(p.shape)).sum(), x)
    assert _finite(p, g)
    torch.testing.assert_close(p.sum(-1), torch.ones(3, 3))
    # the hard permutation: row i puts its weight on the i-th smallest value
    order = HUGE.argsort(dim=-1, stable=True)
    assert torch.equal(fn(HUGE, tau=1e-3, hard=True).argmax(-1)[0], order[0])


@pytest.mark.parametrize("stochastic", [False, True])
@pytest.mark.parametrize("relative", [False, True])
def test_topk_is_finite_near_the_float_range(relative, stochastic):
    x = HUGE.clone().requires_grad_(True)
    mask = relaxed_topk(x, 2, tau=0.25, relative=relative, stochastic=stochastic)
    result = gumbel_topk(x, 2, set_log_prob=True)
    (g,) = torch.autograd.grad(mask.sum() + result.log_prob.sum() + result.set_log_prob.sum(), x)
    assert _finite(mask, result.log_prob, result.set_log_prob, g)


@pytest.mark.parametrize("regularization", ["l2", "kl"])
def test_relative_soft_rank_is_finite_near_the_float_range(regularization):
    # the row's centre and spread are computed without summing or squaring values near the float range
    x = HUGE.clone().requires_grad_(True)
    r = soft_rank(x, regularization, 1.0, relative=True)
    (g,) = torch.autograd.grad((r * torch.randn(r.shape)).sum(), x)
    assert _finite(r, g)
    torch.testing.assert_close(r[0], torch.tensor([3.0, 1.0, 2.0]))
    y = soft_sort(x, "l2", 1.0, relative=True)
    assert _finite(y) and bool((y.diff(dim=-1) >= 0).all())


def _linear(d):
    return (d * torch.arange(d.shape[-1], dtype=d.dtype)).sum()


@pytest.mark.parametrize("theta", [[[0.0, -INF, 1.0, 2.0], [1.0, 2.0, -INF, -INF]],
                                   [[3e38, -3e38, 1.0, 2.0], [3e38, 3e38, -3e38, 0.0]]],
                         ids=["masked", "huge"])
def test_every_objective_estimator_is_finite_on_masked_and_huge_logits(theta):
    theta = torch.tensor(theta)
    for name in registry.names(variable="categorical"):
        if name == "relax":
            continue
        x = theta.clone().requires_grad_(True)
        out = objective.expectation(_linear, x, estimator=name, num_samples=4,
                                    generator=torch.Generator().manual_seed(0))
        out.backward()
        assert _finite(out, x.grad), name
        masked = torch.isneginf(theta)
        assert torch.all(x.grad[masked] == 0), name


@pytest.mark.parametrize("cls", ["REBAR", "RELAX"])
def test_trained_control_variates_are_finite_on_masked_and_huge_logits(cls):
    for theta in ([[0.0, -INF, 1.0, 2.0]], [[3e38, -3e38, 1.0, 2.0]]):
        if cls == "REBAR":
            est = objective.REBAR()
        else:
            est = objective.RELAX(objective.control_variate_mlp(4, hidden=8), use_f=True)
        x = torch.tensor(theta, requires_grad=True)
        out = objective.expectation(_linear, x, estimator=est, num_samples=2,
                                    generator=torch.Generator().manual_seed(0))
        out.backward()
        assert _finite(out, x.grad, *[p.grad for p in est.parameters() if p.grad is not None])
        assert bool(torch.isfinite(est.last_variance))


def test_bernoulli_objective_is_finite_on_huge_and_infinite_logits():
    theta = torch.tensor([[3e38, -3e38, INF, -INF, 0.5]])
    f = lambda b: (b * torch.arange(5.0)).sum()
    for name in registry.names(variable="bernoulli"):
        if name == "relax":
            continue
        x = theta.clone().requires_grad_(True)
        out = objective.expectation(f, x, estimator=name, variable="bernoulli", num_samples=2,
                                    generator=torch.Generator().manual_seed(0))
        out.backward()
        assert _finite(out, x.grad), name


# -- signatures shared with torch and torchsort -------------------------------------------------

def _torch_gumbel_softmax_with_noise(monkeypatch, logits, noise, **kw):
    """``torch.nn.functional.gumbel_softmax`` with its exponential draw replaced so that its
    Gumbel noise ``-log E`` is ``noise``."""
    def exponential_(self, *args, **kwargs):
        return self.copy_(torch.exp(-noise))
    with monkeypatch.context() as m:
        m.setattr(torch.Tensor, "exponential_", exponential_)
        return torch.nn.functional.gumbel_softmax(logits, **kw)


@pytest.mark.parametrize("hard", [False, True])
@pytest.mark.parametrize("tau,dim", [(1.0, -1), (0.3, 0), (2.5, 1)])
def test_gumbel_softmax_equals_torch_on_the_same_noise(monkeypatch, hard, tau, dim):
    theta = torch.randn(4, 5, dtype=torch.float64)
    seed = 7
    # the noise quasigrad draws, up to a constant per row (which softmax ignores): tau log y_soft - theta
    soft = quasigrad.gumbel_softmax(theta, tau, False, 1e-10, dim, generator=torch.Generator().manual_seed(seed))
    noise = tau * soft.log() - theta
    weights = torch.randn(4, 5, dtype=torch.float64)
    x1 = theta.clone().requires_grad_(True)
    ours = quasigrad.gumbel_softmax(x1, tau, hard, 1e-10, dim, generator=torch.Generator().manual_seed(seed))
    (g1,) = torch.autograd.grad((ours * weights).sum(), x1)
    x2 = theta.clone().requires_grad_(True)
    ref = _torch_gumbel_softmax_with_noise(monkeypatch, x2, noise, tau=tau, hard=hard, dim=dim)
    (g2,) = torch.autograd.grad((ref * weights).sum(), x2)
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(g1, g2)


def test_gumbel_softmax_takes_torch_arguments_by_position_and_keyword():
    theta = torch.randn(3, 4)
    a = quasigrad.gumbel_softmax(theta, 0.5, True, 1e-10, 0, generator=torch.Generator().manual_seed(1))
    b = quasigrad.gumbel_softmax(logits=theta, tau=0.5, hard=True, eps=1e-10, dim=0,
                                 generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and torch.equal(a.sum(0), torch.ones(4))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        quasigrad.gumbel_softmax(theta, 1.0, False, 1e-10)       # the default eps: no warning
    with pytest.warns(DeprecationWarning, match="eps"):
        quasigrad.gumbel_softmax(theta, 1.0, False, 1e-3)
    with pytest.raises(TypeError):
        quasigrad.gumbel_softmax(theta, 1.0, False, 1e-10, -1, None)   # index stays keyword-only


def test_soft_sort_and_rank_take_torchsort_arguments_by_position():
    x = torch.tensor([[5.0, 1.0, 2.0], [2.0, 1.0, 5.0]])
    torch.testing.assert_close(soft_rank(x, "l2", 2.0), soft_rank(x, regularization_strength=2.0))
    torch.testing.assert_close(soft_rank(x, "l2", 2.0)[0], torch.tensor([3.0, 1.25, 1.75]))
    torch.testing.assert_close(soft_sort(x, "kl", 0.5), soft_sort(x, regularization="kl", regularization_strength=0.5))
    torch.testing.assert_close(soft_sort(x, "l2", 1.0)[0], torch.tensor([1.6667, 2.6667, 3.6667]), atol=1e-4, rtol=0)
    with pytest.raises(TypeError):
        soft_rank(x, "l2", 1.0, False)            # descending, dim and relative stay keyword-only


# -- property-based: every layer-1 estimator, both variable types ---------------------------------

DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
FUNCTIONS = [(n, "categorical") for n in CAT] + [(n, "bernoulli") for n in BERN]


@st.composite
def _problems(draw, variable):
    ndim = draw(st.integers(1, 3))
    shape = draw(st.lists(st.integers(1, 4), min_size=ndim, max_size=ndim))
    dim = draw(st.integers(-ndim, ndim - 1))
    dtype = draw(st.sampled_from(DTYPES))
    scale = draw(st.sampled_from([1e4, 1.0, 100.0]))
    special = [1e4, -1e4, 0.0, -INF] if variable == "categorical" else [1e4, -1e4, 0.0, -INF, INF]
    numel = math.prod(shape)
    values = draw(st.lists(st.one_of(st.floats(-1, 1).map(lambda v: v * scale), st.sampled_from(special)),
                           min_size=numel, max_size=numel))
    tau = draw(st.one_of(st.sampled_from([1e-3, 0.01, 0.1, 1.0, 10.0, 1e3]), st.floats(-3, 3).map(lambda e: 10.0 ** e)))
    seed = draw(st.integers(0, 2 ** 31 - 1))
    return torch.tensor(values, dtype=torch.float64).reshape(shape).to(dtype), dim, tau, seed


def _check_property(name, variable, problem):
    logits, dim, tau, seed = problem
    fn = CAT[name] if variable == "categorical" else BERN[name]
    kw = {"generator": torch.Generator().manual_seed(seed)}
    if variable == "categorical":
        kw["dim"] = dim
    if registry.get(name).has_tau:
        kw["tau"] = tau
    if name == "gumbel_softmax":
        kw["hard"] = bool(seed % 2)
    x = logits.clone().requires_grad_(True)
    try:
        y = _call(fn, x, **kw)
    except (ValueError, TypeError) as exc:
        # the only invalid input generated: a categorical row whose every logit is -inf
        assert variable == "categorical" and "all -inf" in str(exc), str(exc)
        assert bool(torch.isneginf(logits).all(dim).any())
        return
    assert y.dtype == logits.dtype and _finite(y), (y, logits)
    weights = torch.linspace(-1, 1, y.numel(), dtype=torch.float64).reshape(y.shape).to(y.dtype)
    (g,) = torch.autograd.grad((y * weights).sum(), x)
    assert g.dtype == logits.dtype and _finite(g), (g, logits)
    if variable == "categorical":
        assert torch.all(g[torch.isneginf(logits)] == 0)


@pytest.mark.parametrize("name,variable", FUNCTIONS)
def test_property_finite_forward_and_gradient_or_clear_error(name, variable):
    @settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
    @given(problem=_problems(variable))
    def check(problem):
        _check_property(name, variable, problem)

    check()


@settings(max_examples=60, deadline=None, derandomize=True)
@given(value=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-3, 3), st.booleans(),
                       st.text(max_size=2), st.none()))
def test_property_tau_is_checked(value):
    """Any temperature is either used (a positive finite real) or refused with a ValueError/TypeError."""
    theta = torch.randn(2, 3)
    for fn in [CAT[n] for n in TAU] + [BERN[n] for n in TAU]:
        try:
            y = _call(fn, theta, tau=value)
        except (ValueError, TypeError) as exc:
            assert "tau" in str(exc)
        else:
            assert _finite(y) and isinstance(value, (int, float)) and not isinstance(value, bool)
            assert math.isfinite(value) and value > 0


# -- a fixed table of bad arguments for every public entry point of these layers -----------------

NAN = float("nan")
NOT_TENSORS = [[[0.0, 1.0]], 3.0, None, "logits"]
WRONG_DTYPES = [torch.tensor([[0, 1]]), torch.tensor([[True, False]]), torch.zeros(1, 2, dtype=torch.complex64)]
ZERO_DIM = torch.tensor(1.0)
BAD_POSITIVE = [0.0, -1.0, NAN, INF, -INF, None, "1", True, torch.ones(2), 1 + 2j]
BAD_DIMS = [2.5, "x", None, True, 2, -3]


def _f(d):
    return d.sum()


def _spec():
    """entry point → (call taking (x, **overrides), a valid x, the names of its positive scalars,
    whether its values are categorical logits (NaN, +inf and all-masked rows refused), whether it
    takes dim, the name its errors give the tensor)."""
    good = torch.tensor([[0.0, 1.0, 2.0], [1.0, -1.0, 0.5]])
    table = {}
    for name, fn in CAT.items():
        scal = ["tau"] if registry.get(name).has_tau else []
        scal += ["gap"] if name == "gst" else []
        scal += ["k"] if name == "gumbel_rao" else []
        table[f"categorical.{name}"] = (functools.partial(_call, fn), good, scal, "categorical", True, "logits")
    for name, fn in BERN.items():
        scal = ["tau"] if registry.get(name).has_tau else []
        scal += ["gap"] if name == "gst" else []
        table[f"bernoulli.{name}"] = (functools.partial(_call, fn), good, scal, "bernoulli", False, "logits")
    table["sample_categorical"] = (quasigrad.sample_categorical, good, [], "categorical", True, "logits")
    table["bernoulli.sample"] = (quasigrad.bernoulli.sample, good, [], "bernoulli", False, "logits")
    table["exact.expectation"] = (lambda x, **kw: exact.expectation(_f, x, **kw), good, ["max_outcomes"],
                                  "categorical", True, "logits")
    table["exact.gradient"] = (lambda x, **kw: exact.gradient(_f, x, **kw), good, ["max_outcomes"],
                               "categorical", True, "logits")
    table["exact.estimator_expectation"] = (lambda x, **kw: exact.estimator_expectation(_f, x, "st", **kw), good,
                                            ["max_outcomes", "tau"], "categorical", True, "logits")
    table["exact.num_outcomes"] = (lambda x, **kw: exact.num_outcomes(x, **kw), good, [], None, True, "logits")
    for est in ("rloo", "reinforce", "disarm", "double_cv", "rebar", "st", "rao_blackwell", "exact"):
        scal = ["num_samples"] if est != "exact" else []
        scal += ["temperature"] if est == "rebar" else []
        table[f"objective.expectation[{est}]"] = (
            lambda x, est=est, **kw: objective.expectation(_f, x, estimator=est, **kw), good, scal, "categorical",
            True, "logits")
    for fn in (soft_sort, soft_rank):
        table[f"sort.{fn.__name__}"] = (fn, good, ["regularization_strength"], "values", True, "values")
    for fn in (neural_sort, soft_sort_permutation):
        table[f"sort.{fn.__name__}"] = (fn, good, ["tau"], "values", True, "scores")
    table["sort.relaxed_topk"] = (lambda x, **kw: relaxed_topk(x, 2, **kw), good, ["tau"], "values", True, "logits")
    table["sort.gumbel_topk"] = (lambda x, **kw: gumbel_topk(x, 2, **kw), good, [], "categorical", True, "logits")
    table["sort.plackett_luce_log_prob"] = (
        lambda x, **kw: plackett_luce_log_prob(x, torch.tensor([[0, 1], [2, 1]]), **kw), good, [], "categorical",
        True, "logits")
    return table


SPEC = _spec()


def _cases(entry):
    _, good, scalars, values, has_dim, tname = SPEC[entry]
    cases = [(f"not a tensor {v!r}"[:30], (v,), {}, tname) for v in NOT_TENSORS]
    cases += [(f"dtype {t.dtype}", (t,), {}, tname) for t in WRONG_DTYPES]
    cases.append(("0-dim", (ZERO_DIM,), {}, tname))
    if values == "categorical":
        cases += [("NaN", (torch.tensor([[NAN, 0.0, 1.0], [0.0, 1.0, 2.0]]),), {}, tname),
                  ("+inf", (torch.tensor([[INF, 0.0, 1.0], [0.0, 1.0, 2.0]]),), {}, tname),
                  ("all -inf", (torch.tensor([[-INF, -INF, -INF], [0.0, 1.0, 2.0]]),), {}, tname)]
    elif values in ("bernoulli", "values"):
        cases.append(("NaN", (torch.tensor([[NAN, 0.0, 1.0], [0.0, 1.0, 2.0]]),), {}, tname))
    if values == "values":
        cases.append(("inf", (torch.tensor([[INF, 0.0, 1.0], [0.0, 1.0, 2.0]]),), {}, tname))
    if has_dim:
        cases += [(f"dim={d!r}", (good,), {"dim": d}, "dim") for d in BAD_DIMS]
        cases.append(("empty dim", (torch.empty(2, 0),), {}, tname))
    for s in scalars:
        for v in BAD_POSITIVE:
            if s == "num_samples" and v is None:
                continue                                  # None: the estimator's default
            cases.append((f"{s}={v!r}"[:30], (good,), {s: v}, s))
    if entry not in ("exact.num_outcomes", "exact.expectation", "exact.gradient", "exact.estimator_expectation",
                     "sort.soft_sort", "sort.soft_rank", "sort.plackett_luce_log_prob"):
        cases += [("generator=42", (good,), {"generator": 42}, "generator"),
                  ("generator=str", (good,), {"generator": "seed"}, "generator")]
    return cases


ALL_CASES = [(entry, *case) for entry in SPEC for case in _cases(entry)]


@pytest.mark.parametrize("entry,label,args,kwargs,names", ALL_CASES,
                         ids=[f"{c[0]}-{c[1]}" for c in ALL_CASES])
def test_bad_argument_gets_a_clear_error(entry, label, args, kwargs, names):
    """Every bad argument is refused with a ValueError, TypeError or IndexError whose message names
    the argument (and nothing is silently coerced)."""
    call = SPEC[entry][0]
    with pytest.raises((ValueError, TypeError, IndexError)) as err:
        call(*args, **kwargs)
    assert names in str(err.value), str(err.value)
