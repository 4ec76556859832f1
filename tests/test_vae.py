"""The discrete VAEs: short runs on real MNIST lower the held-out −ELBO for every estimator
family, the encoder's share of that comes from the estimator's gradient, a resumed run equals
an uninterrupted one, and two processes under DistributedDataParallel equal one process that
takes the same global batches shard by shard."""

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from quasigrad import vae
from quasigrad.bench.binary_vae import make_estimator

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT / ".." / "shared" / "data" / "mnist"
pytestmark = pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data/mnist not present")


@pytest.fixture(scope="module")
def mnist():
    from quasigrad.data import load_mnist

    m = load_mnist(SHARED, verify=False)
    return m.flat(True)[:3000], m.flat(False)[:500]


# Family → (model, estimator): every family the objective layer and layer 1 offer for VAEs.
FAMILIES = [
    ("straight-through", "categorical", "reinmax"),
    ("straight-through", "bernoulli", "zgr"),
    ("relaxation", "categorical", "stgs"),
    ("score-function", "bernoulli", "rloo"),
    ("pair", "bernoulli", "disarm"),
    ("control-variate", "bernoulli", "double_cv"),
    ("control-variate", "bernoulli", "relax"),
]


@pytest.mark.parametrize("family,model,estimator", FAMILIES, ids=[f"{f}-{e}" for f, _, e in FAMILIES])
def test_short_run_lowers_held_out_neg_elbo(mnist, family, model, estimator):
    from quasigrad import registry

    assert registry.get(estimator).family == family
    train_x, test_x = mnist
    spec = vae.RunSpec(model=model, latents=8 if model == "categorical" else 200, categories=4, estimator=estimator,
                       tau=1.0, lr=1e-3, optimizer="adam", epochs=1, batch_size=100, num_samples=2,
                       train_size=2000, binarize=model == "bernoulli", seed=0)
    init = vae.build_model(spec)
    before = vae.evaluate(init, test_x, binarize=spec.binarize)
    result = vae.train(spec, train_x, test_x, estimator_object=make_estimator(spec))
    after = result.test_neg_elbo
    # Deterministic (fixed seeds): 20 Adam steps take the held-out −ELBO from ~545 to ~210.
    # Most of that is the decoder; test_encoder_gradient_* checks the encoder's gradient.
    assert after < before - 100, (before, after)
    assert all(math.isfinite(h["train_neg_elbo"]) for h in result.history)


def _exact_encoder_gradient(model, x):
    from quasigrad import exact

    model.zero_grad()
    logits = model.encode(x)
    f = lambda z: model.reconstruction(z, x)  # noqa: E731
    (exact.expectation(f, logits, variable=model.variable) + model.kl(logits)).mean().backward()
    return model.encoder[-1].weight.grad.clone()


@pytest.mark.parametrize("estimator,tolerance", [("rloo", 0.15), ("disarm", 0.15), ("double_cv", 0.15),
                                                 ("relax", 0.15), ("reinmax", 0.2), ("st", 0.2)])
def test_encoder_gradient_matches_the_exact_elbo_gradient(estimator, tolerance):
    # A binary VAE with 3 latents (8 outcomes) on 20 binarised images: the mean over 100 steps'
    # encoder gradients against the exact gradient of the mean −ELBO by enumeration. Checks
    # the wiring (K evaluations, analytic KL added once, samples in the decoder's layout).
    # Measured relative errors ~0.02-0.04 (unbiased ones) and ~0.04 (ReinMax, ST: biased but
    # close here); deterministic seeds, so the margin is against code changes, not chance.
    torch.manual_seed(0)
    x = (torch.rand(20, 784) < 0.3).float()
    model = vae.BernoulliVAE(3)
    exact_g = _exact_encoder_gradient(model, x)
    est = make_estimator(vae.RunSpec(model="bernoulli", latents=3, estimator=estimator)) or estimator
    gen = torch.Generator().manual_seed(1)
    total = torch.zeros_like(exact_g)
    n = 100
    for _ in range(n):
        model.zero_grad()
        loss, neg_elbo = vae.estimator_step(model, x, est, tau=1.0, num_samples=2, generator=gen)
        loss.backward()
        total += model.encoder[-1].weight.grad
    rel = float((total / n - exact_g).norm() / exact_g.norm())
    assert rel < tolerance, rel


def test_models_and_loss_conventions():
    torch.manual_seed(0)
    m = vae.CategoricalVAE(4, 8)
    x = torch.rand(5, 784)
    logits = m.encode(x)
    assert logits.shape == (5, 4, 8)
    # KL to the uniform prior is zero for uniform q and L log C for a point mass.
    assert torch.allclose(m.kl(torch.zeros(2, 4, 8)), torch.zeros(2), atol=1e-6)
    point = torch.full((1, 4, 8), -1e4)
    point[..., 0] = 0.0
    assert torch.allclose(m.kl(point), torch.full((1,), 4 * math.log(8)), atol=1e-4)
    z = m.sample(logits, torch.Generator().manual_seed(0))
    assert torch.equal(z.sum(-1), torch.ones(5, 4))
    # Reconstruction = binary cross-entropy of the sigmoid, summed over pixels.
    ref = torch.nn.functional.binary_cross_entropy(torch.sigmoid(m.decoder(z.flatten(-2))), x, reduction="none")
    assert torch.allclose(m.reconstruction(z, x), ref.sum(-1), rtol=1e-4)
    b = vae.BernoulliVAE(200)
    a = torch.randn(3, 200)
    q, p = torch.sigmoid(a), torch.sigmoid(b.prior_logits)
    kl = (q * (q / p).log() + (1 - q) * ((1 - q) / (1 - p)).log()).sum(-1)
    assert torch.allclose(b.kl(a), kl, atol=1e-4)
    assert b.prior_logits.requires_grad


def test_bad_settings_are_refused_with_the_setting_named():
    with pytest.raises(vae.VAEError, match="divisible by shards"):
        vae.RunSpec(batch_size=100, shards=3).validate()
    with pytest.raises(vae.VAEError, match="optimizer"):
        vae.RunSpec(optimizer="sgd").validate()
    with pytest.raises(vae.VAEError, match="antithetic pair"):
        vae.objective_samples("disarm", 3)
    with pytest.raises(vae.VAEError, match="at least 2"):
        vae.objective_samples("double_cv", 1)
    assert vae.objective_samples("disarm", 2) == 1 and vae.objective_samples("rloo", 3) == 3
    assert vae.objective_samples("double_cv", 3) == 3


@pytest.mark.parametrize("model,estimator", [("categorical", "stgs"), ("bernoulli", "relax")])
def test_resume_from_checkpoint_equals_uninterrupted_run(mnist, tmp_path, model, estimator):
    train_x, test_x = mnist
    spec = vae.RunSpec(model=model, latents=4 if model == "categorical" else 200, categories=8, estimator=estimator,
                       tau=1.3, lr=1e-3, epochs=2, train_size=600, test_size=200, num_samples=1,
                       binarize=model == "bernoulli", seed=3)
    whole = vae.train(spec, train_x, test_x, estimator_object=make_estimator(spec))
    ck = tmp_path / "run.pt"
    part = vae.train(spec, train_x, test_x, checkpoint=ck, checkpoint_every=4, stop_after_steps=9,
                     estimator_object=make_estimator(spec))
    assert not part.finished and part.steps == 9 and ck.exists()
    # A fresh process would build a fresh estimator object; its state comes from the checkpoint.
    resumed = vae.train(spec, train_x, test_x, checkpoint=ck, estimator_object=make_estimator(spec))
    assert resumed.finished and resumed.steps == whole.steps == 12
    for k, v in whole.state_dict.items():
        assert torch.equal(v, resumed.state_dict[k]), k
    assert [h["train_neg_elbo"] for h in whole.history] == [h["train_neg_elbo"] for h in resumed.history]
    # A checkpoint of another run is refused rather than silently mixed in.
    other = vae.RunSpec(**{**spec.__dict__, "seed": 4})
    with pytest.raises(vae.VAEError, match="another run"):
        vae.train(other, train_x, test_x, checkpoint=ck)


WORKER = r"""
import sys, torch
from quasigrad import vae
torch.set_num_threads(1)
data = torch.load(sys.argv[1])
spec = vae.RunSpec(model="categorical", latents=4, categories=8, estimator=sys.argv[3], tau=1.3, lr=1e-3,
                   epochs=2, batch_size=100, train_size=400, test_size=200, shards=2, seed=5, dtype="float64")
result = vae.train(spec, data["train"], data["test"])
rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
if rank == 0:
    torch.save({"state": result.state_dict, "history": result.history}, sys.argv[2])
"""


def test_two_process_ddp_equals_one_process_over_the_same_global_batches(mnist, tmp_path):
    # STGS: its Gumbel noise is drawn per shard from the step's generator, the hardest case.
    estimator = "stgs"
    train_x, test_x = mnist
    torch.save({"train": train_x[:400].clone(), "test": test_x[:200].clone()}, tmp_path / "data.pt")
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "QUASIGRAD_DDP_BACKEND": "gloo"}
    env.pop("WORLD_SIZE", None)
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          str(script), str(tmp_path / "data.pt"), str(tmp_path / "ddp.pt"), estimator],
                         env=env, capture_output=True, text=True, timeout=300)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    # One process, here (one thread, as the workers), taking the two shards of each global batch in turn.
    assert "WORLD_SIZE" not in os.environ
    spec = vae.RunSpec(model="categorical", latents=4, categories=8, estimator=estimator, tau=1.3, lr=1e-3,
                       epochs=2, batch_size=100, train_size=400, test_size=200, shards=2, seed=5, dtype="float64")
    one = vae.train(spec, train_x[:400].clone(), test_x[:200].clone())
    a, b = torch.load(tmp_path / "ddp.pt"), {"state": one.state_dict, "history": one.history}
    init = vae.build_model(vae.RunSpec(model="categorical", latents=4, categories=8, seed=5, dtype="float64"))
    moved = 0.0
    for k, v in a["state"].items():
        # float64; DDP averages (g0 + g1)/2 where one process sums then halves: equal to rounding.
        assert torch.allclose(v, b["state"][k], rtol=0, atol=1e-10), (k, (v - b["state"][k]).abs().max())
        moved = max(moved, float((v - init.state_dict()[k]).abs().max()))
    assert moved > 1e-3  # the parameters did train (8 steps of Adam at lr 1e-3)
    assert [h["train_neg_elbo"] for h in a["history"]] == pytest.approx([h["train_neg_elbo"] for h in b["history"]],
                                                                        abs=1e-8)
