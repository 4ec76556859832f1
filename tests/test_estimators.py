"""Layer-1 estimators: forward values, exactness against enumeration, agreement with the papers'
algorithms, Bernoulli twins, shapes and dtypes, torch.compile, bad input."""

import pytest
import reference_estimators as ref
import torch
from scipy import stats

import quasigrad
from quasigrad import bernoulli, exact, registry

CAT = {  # registry name -> categorical function
    "st": quasigrad.st, "reinmax": quasigrad.reinmax, "zgr": quasigrad.zgr, "darn": quasigrad.darn,
    "gst": quasigrad.gapped_st, "stgs": quasigrad.gumbel_softmax, "gumbel_rao": quasigrad.gumbel_rao,
}
HARD = {"stgs": {"hard": True}}
SAMPLE_ONLY = ["st", "reinmax", "zgr", "darn", "gst"]


def call(name, logits, **kw):
    return CAT[name](logits, **{**HARD.get(name, {}), **kw})


def test_every_layer1_estimator_has_examples():
    # a newly registered sample-level estimator must be added to this suite
    assert set(registry.names(layer=1)) == {registry.canonical(n) for n in CAT}
    for name in CAT:
        info = registry.get(name)
        assert info.categorical is not None and info.bernoulli is not None


# -- forward value ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(CAT))
def test_forward_is_one_hot_and_categorical(name):
    # chi-square goodness of fit of 20,000 draws against softmax(θ); the seed is fixed, and for a
    # correct sampler this test would fail for 0.1% of seeds (p < 1e-3).
    theta = torch.tensor([1.0, -0.5, 0.0, 2.0, -3.0])
    n = 20000
    gen = torch.Generator().manual_seed(123)
    y = call(name, theta.expand(n, 5).clone().requires_grad_(True), generator=gen)
    assert torch.all((y == 0) | (y == 1)) and torch.all(y.sum(-1) == 1)
    counts = y.detach().sum(0).double().numpy()
    expected = (torch.softmax(theta.double(), -1) * n).numpy()
    assert stats.chisquare(counts, expected).pvalue > 1e-3


@pytest.mark.parametrize("name", list(CAT))
def test_bernoulli_forward_is_binary_and_distributed(name):
    # binomial test per logit on 20,000 draws; failure rate 0.1% per logit for a correct sampler
    a = torch.tensor([-2.0, 0.0, 0.7, 3.0])
    n = 20000
    fn = registry.get(name).bernoulli
    kw = HARD.get(name, {})
    b = fn(a.expand(n, 4).clone().requires_grad_(True), generator=torch.Generator().manual_seed(7), **kw)
    assert torch.all((b == 0) | (b == 1))
    for j in range(4):
        k = int(b[:, j].sum())
        assert stats.binomtest(k, n, float(torch.sigmoid(a[j]))).pvalue > 1e-3


# -- exactness in expectation (the exact gradient by enumeration is the oracle) ------------------

def _random_problem(seed, num_vars=3, num_cats=3):
    gen = torch.Generator().manual_seed(seed)
    n = num_vars * num_cats
    theta = torch.randn(num_vars, num_cats, generator=gen, dtype=torch.float64)
    w = torch.randn(n, generator=gen, dtype=torch.float64)
    a = torch.randn(n, n, generator=gen, dtype=torch.float64)
    return theta, w, a


def _expected_grad(name, f, theta, **kw):
    th = theta.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(exact.estimator_expectation(f, th, name, **kw).sum(), th)
    return g


@pytest.mark.parametrize("seed", range(5))
def test_st_exact_for_linear(seed):
    theta, w, _ = _random_problem(seed)
    f = lambda d: d.flatten(-2) @ w
    torch.testing.assert_close(_expected_grad("st", f, theta), exact.gradient(f, theta), rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", ["reinmax", "zgr"])
@pytest.mark.parametrize("seed", range(5))
def test_reinmax_and_zgr_exact_for_quadratic(name, seed):
    theta, w, a = _random_problem(seed, num_vars=3, num_cats=4)

    def f(d):
        x = d.flatten(-2)
        return ((x @ a) * x).sum(-1) + x @ w

    torch.testing.assert_close(_expected_grad(name, f, theta), exact.gradient(f, theta), rtol=0, atol=1e-12)


def test_st_is_biased_for_quadratic():
    theta, w, a = _random_problem(0, num_vars=3, num_cats=4)
    f = lambda d: ((d.flatten(-2) @ a) * d.flatten(-2)).sum(-1)
    diff = _expected_grad("st", f, theta) - exact.gradient(f, theta)
    assert diff.norm() > 1e-2 * exact.gradient(f, theta).norm()


@pytest.mark.parametrize("variable", ["bernoulli"])
def test_bernoulli_reinmax_zgr_exact_for_quadratic(variable):
    gen = torch.Generator().manual_seed(3)
    a_logits = torch.randn(6, generator=gen, dtype=torch.float64)
    A = torch.randn(6, 6, generator=gen, dtype=torch.float64)
    f = lambda b: ((b @ A) * b).sum(-1)
    true = exact.gradient(f, a_logits, variable="bernoulli")
    for name in ("reinmax", "zgr"):
        th = a_logits.clone().requires_grad_(True)
        s = exact.estimator_expectation(f, th, name, variable="bernoulli")
        (g,) = torch.autograd.grad(s, th)
        torch.testing.assert_close(g, true, rtol=0, atol=1e-12)


def test_zgr_is_average_of_st_and_darn_on_same_draw():
    theta = torch.randn(5, 7, dtype=torch.float64, requires_grad=True)
    idx = quasigrad.sample_categorical(theta)
    g = torch.randn(5, 7, dtype=torch.float64)
    grads = {}
    for name in ("st", "darn", "zgr", "reinmax"):
        (grads[name],) = torch.autograd.grad((call(name, theta, index=idx) * g).sum(), theta)
    torch.testing.assert_close(grads["zgr"], 0.5 * (grads["st"] + grads["darn"]), rtol=0, atol=1e-14)
    torch.testing.assert_close(grads["reinmax"], grads["zgr"], rtol=0, atol=1e-14)  # at τ = 1


def test_gumbel_rao_approaches_zgr_at_low_temperature():
    # ZGR is GR-MCK's zero-temperature limit; k = 100,000 draws (chunked, constant memory)
    theta = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    idx = quasigrad.sample_categorical(theta)
    g = torch.randn(3, 4, dtype=torch.float64)

    def grad(fn, **kw):
        (out,) = torch.autograd.grad((fn(theta, index=idx, **kw) * g).sum(), theta)
        return out

    z = grad(quasigrad.zgr)
    err = {tau: float((grad(quasigrad.gumbel_rao, tau=tau, k=100_000,
                            generator=torch.Generator().manual_seed(1)) - z).norm() / z.norm())
           for tau in (0.5, 0.05)}
    assert err[0.05] < 0.05 and err[0.05] < err[0.5] / 3, err


# -- agreement with the papers' algorithms on the same draw --------------------------------------

@pytest.mark.parametrize("tau", [1.0, 0.5, 2.0])
@pytest.mark.parametrize("name", SAMPLE_ONLY)
def test_matches_naive_algorithm(name, tau):
    theta = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    idx = quasigrad.sample_categorical(theta)
    d = torch.nn.functional.one_hot(idx, 5).double()
    g = torch.randn(6, 5, dtype=torch.float64)
    kw = {} if name in ("zgr", "darn") else {"tau": tau}
    naive = {"st": ref.st, "reinmax": ref.reinmax, "zgr": ref.zgr, "darn": ref.darn, "gst": ref.gapped_st}[name]
    y = call(name, theta, index=idx, **kw)
    assert torch.equal(y.detach(), d)
    (ours,) = torch.autograd.grad((y * g).sum(), theta)
    (theirs,) = torch.autograd.grad((naive(theta, d, **kw) * g).sum(), theta)
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)


def test_gumbel_rao_matches_naive_algorithm():
    theta = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    idx = quasigrad.sample_categorical(theta)
    d = torch.nn.functional.one_hot(idx, 6).double()
    g = torch.randn(4, 6, dtype=torch.float64)
    k, tau = 37, 0.7
    gen = torch.Generator().manual_seed(5)
    (ours,) = torch.autograd.grad((quasigrad.gumbel_rao(theta, tau=tau, k=k, index=idx, generator=gen) * g).sum(),
                                  theta)
    # the same conditional draws: both take one seed from the same generator state and draw from
    # its noise stream
    from quasigrad.estimators._sampling import conditional_gumbel

    z = conditional_gumbel(theta, idx, 1, num=k, generator=torch.Generator().manual_seed(5))
    assert torch.equal(z.argmax(-1), idx.expand(k, 4))  # conditioned on argmax = D
    (theirs,) = torch.autograd.grad((ref.gumbel_rao(theta, d, z, tau) * g).sum(), theta)
    torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-12)


def test_stgs_matches_naive_algorithm():
    theta = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    tau = 0.6
    y = quasigrad.gumbel_softmax(theta, tau=tau, hard=True, generator=torch.Generator().manual_seed(9))
    from quasigrad.estimators._sampling import conditional_gumbel

    # the same draws: the sample from the seed's row stream, then the noise conditioned on it
    idx = quasigrad.sample_categorical(theta, generator=torch.Generator().manual_seed(9))
    z = conditional_gumbel(theta, idx, 1, generator=torch.Generator().manual_seed(9))
    soft = torch.softmax((theta + (z - theta.detach())) / tau, -1)
    hard = torch.nn.functional.one_hot(z.argmax(-1), 6).double()
    naive = hard - soft.detach() + soft
    assert torch.equal(y.detach(), hard)
    g = torch.randn(4, 6, dtype=torch.float64)
    (ours,) = torch.autograd.grad((y * g).sum(), theta)
    (theirs,) = torch.autograd.grad((naive * g).sum(), theta)
    torch.testing.assert_close(ours, theirs)
    relaxed = quasigrad.gumbel_softmax(theta, tau=tau, generator=torch.Generator().manual_seed(9))
    torch.testing.assert_close(relaxed, soft)


def test_gumbel_softmax_with_index_is_conditioned():
    theta = torch.randn(2000, 4, dtype=torch.float64)
    idx = torch.randint(0, 4, (2000,))
    y = quasigrad.gumbel_softmax(theta, tau=0.5, hard=True, index=idx)
    assert torch.equal(y.argmax(-1), idx)


@pytest.mark.parametrize("name", list(CAT))
def test_bernoulli_equals_categorical_twin(name):
    a = torch.randn(10, dtype=torch.float64, requires_grad=True)
    b = bernoulli.sample(a)
    g = torch.randn(10, dtype=torch.float64)
    kw = {**HARD.get(name, {}), **({"tau": 0.8} if registry.get(name).has_tau else {})}
    fb = registry.get(name).bernoulli
    yb = fb(a, index=b, generator=torch.Generator().manual_seed(2), **kw)
    (gb,) = torch.autograd.grad((yb * g).sum(), a)
    twin = torch.stack([torch.zeros_like(a), a], -1)
    yc = call(name, twin, index=b.long(), generator=torch.Generator().manual_seed(2), **kw)
    (gc,) = torch.autograd.grad((yc[..., 1] * g).sum(), a)
    torch.testing.assert_close(yb, yc[..., 1])
    torch.testing.assert_close(gb, gc, rtol=1e-10, atol=1e-12)


# -- shapes, layouts, dtypes, compile ----------------------------------------------------------

@pytest.mark.parametrize("name", list(CAT))
def test_any_dim_and_non_contiguous(name):
    base = torch.randn(5, 3, 4, 2, dtype=torch.float64)
    g = torch.randn(5, 3, 4, 2, dtype=torch.float64)
    ref_theta = base.movedim(1, -1).contiguous().requires_grad_(True)   # (5, 4, 2, 3), categories last
    idx = quasigrad.sample_categorical(ref_theta)
    kw = {"generator": torch.Generator().manual_seed(0)}
    y_ref = call(name, ref_theta, index=idx, **kw)
    (g_ref,) = torch.autograd.grad((y_ref * g.movedim(1, -1)).sum(), ref_theta)
    theta = base.clone().requires_grad_(True)            # categories along dim=1
    kw = {"generator": torch.Generator().manual_seed(0)}
    y = call(name, theta, dim=1, index=idx, **kw)
    (g1,) = torch.autograd.grad((y * g).sum(), theta)
    torch.testing.assert_close(y.movedim(1, -1), y_ref)
    if name in SAMPLE_ONLY:  # the Gumbel ones draw their noise in the tensor's own layout
        torch.testing.assert_close(g1.movedim(1, -1), g_ref)
    nc = base.transpose(0, 2).requires_grad_(True)       # non-contiguous view, categories along dim=0
    assert not nc.is_contiguous()
    y = call(name, nc, dim=0)
    assert torch.all(y.sum(0) == 1)
    (gn,) = torch.autograd.grad((y * torch.randn_like(y)).sum(), nc)
    assert torch.isfinite(gn).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name", list(CAT))
def test_dtypes(name, dtype):
    theta64 = torch.randn(16, 6, dtype=torch.float64)
    theta = theta64.to(dtype).requires_grad_(True)
    idx = quasigrad.sample_categorical(theta)
    g = torch.randn(16, 6)
    y = call(name, theta, index=idx, generator=torch.Generator().manual_seed(0))
    assert y.dtype == dtype and torch.all(y.sum(-1) == 1)
    (gr,) = torch.autograd.grad((y * g.to(dtype)).sum(), theta)
    assert gr.dtype == dtype and torch.isfinite(gr).all()
    if name in SAMPLE_ONLY:  # deterministic given the draw: compare with the float64 computation
        t = theta.detach().double().requires_grad_(True)
        (g64,) = torch.autograd.grad((call(name, t, index=idx) * g.to(dtype).double()).sum(), t)
        tol = 1e-5 if dtype == torch.float32 else 3e-2
        torch.testing.assert_close(gr.double(), g64, rtol=tol, atol=tol)


@pytest.mark.parametrize("name", list(CAT))
def test_torch_compile_runs(name):
    theta = torch.randn(8, 5, requires_grad=True)
    idx = torch.randint(0, 5, (8,))
    weights = torch.arange(5.0)

    def loss(x, i):
        return (call(name, x, index=i, generator=torch.Generator().manual_seed(0)) * weights).sum()

    compiled = torch.compile(loss)
    out = compiled(theta, idx)
    (gc,) = torch.autograd.grad(out, theta)
    (ge,) = torch.autograd.grad(loss(theta, idx), theta)
    assert out.item() == float(weights[idx].sum())
    torch.testing.assert_close(gc, ge)


# -- bad input and masking ----------------------------------------------------------------------

@pytest.mark.parametrize("name", list(CAT))
def test_bad_input(name):
    x = torch.randn(3, 4)
    if registry.get(name).has_tau:
        for tau in (0.0, -1.0, float("nan"), float("inf")):
            with pytest.raises(ValueError, match="tau"):
                call(name, x, tau=tau)
    with pytest.raises(TypeError, match="logits.*floating"):
        call(name, torch.randint(0, 3, (3, 4)))
    with pytest.raises(IndexError, match="dim=2"):
        call(name, x, dim=2)
    bad = x.clone()
    bad[1, 2] = float("nan")
    with pytest.raises(ValueError, match="logits contains NaN"):
        call(name, bad)
    masked = x.clone()
    masked[2] = float("-inf")
    with pytest.raises(ValueError, match="all -inf"):
        call(name, masked)
    with pytest.raises(ValueError, match="index"):
        call(name, x, index=torch.tensor([0, 1, 4]))
    with pytest.raises(TypeError, match="generator"):
        call(name, x, generator=42)


@pytest.mark.parametrize("name", list(CAT))
def test_masked_categories_never_sampled_finite_grads(name):
    theta = torch.randn(4000, 5)
    theta[:, 1] = float("-inf")
    theta[:, 4] = float("-inf")
    theta.requires_grad_(True)
    y = call(name, theta)
    assert y[:, 1].sum() == 0 and y[:, 4].sum() == 0
    (gr,) = torch.autograd.grad((y * torch.randn(4000, 5)).sum(), theta)
    assert torch.isfinite(gr).all()
    assert torch.all(gr[:, 1] == 0) and torch.all(gr[:, 4] == 0)


@pytest.mark.parametrize("name", ["stgs"])
def test_gumbel_softmax_never_nan_on_extreme_logits(name):
    # PyTorch's own gumbel_softmax can give NaN/inf when an exponential draw is 0; ours cannot
    theta = torch.tensor([[80.0, -80.0, 0.0, 1e4, -1e4]]).expand(200000, 5).clone().requires_grad_(True)
    for hard in (False, True):
        y = quasigrad.gumbel_softmax(theta, tau=0.1, hard=hard)
        assert torch.isfinite(y).all()
        (gr,) = torch.autograd.grad(y[:, 0].sum(), theta)
        assert torch.isfinite(gr).all()


def test_bernoulli_bad_input_and_infinite_logits():
    with pytest.raises(ValueError, match="tau"):
        bernoulli.st(torch.randn(3), tau=0)
    with pytest.raises(TypeError, match="floating"):
        bernoulli.reinmax(torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="NaN"):
        bernoulli.zgr(torch.tensor([0.0, float("nan")]))
    with pytest.raises(ValueError, match="0s and 1s"):
        bernoulli.st(torch.randn(3), index=torch.tensor([0, 2, 1]))
    a = torch.tensor([float("-inf"), float("inf"), 0.0], requires_grad=True)
    for name in CAT:
        b = registry.get(name).bernoulli(a, **HARD.get(name, {}))
        assert b[0] == 0 and b[1] == 1
        (gr,) = torch.autograd.grad(b.sum(), a)
        assert torch.isfinite(gr).all()


def test_gumbel_rao_memory_does_not_grow_with_k():
    # the k draws are made in chunks and regenerated in backward: nothing saved grows with k
    theta = torch.randn(64, 1000, requires_grad=True)
    y = quasigrad.gumbel_rao(theta, k=1000)
    saved = [t for t in y.grad_fn.saved_tensors] if hasattr(y.grad_fn, "saved_tensors") else []
    assert sum(t.numel() for t in saved) <= 2 * theta.numel()
    (gr,) = torch.autograd.grad((y * torch.randn_like(y)).sum(), theta)
    assert torch.isfinite(gr).all()


def test_generator_reproducibility():
    theta = torch.randn(50, 7)
    for name in CAT:
        a = call(name, theta, generator=torch.Generator().manual_seed(11))
        b = call(name, theta, generator=torch.Generator().manual_seed(11))
        assert torch.equal(a, b)
