"""A categorical VAE on MNIST, its latent code sampled with a straight-through-family estimator.

    python examples/categorical_vae.py                        # 30 latents x 10 categories, 10 epochs
    python examples/categorical_vae.py --estimator st --tau 1.0 --epochs 5
    python examples/categorical_vae.py --tiny                 # a few seconds (QUASIGRAD_EXAMPLE_TINY=1 too)

The encoder gives logits for ``L`` categorical variables with ``C`` categories each;
``quasigrad.distributions.OneHotCategorical`` draws the one-hot code with the estimator's gradient
(``--estimator``: st, reinmax, gst, zgr, darn, stgs, gumbel_rao); the decoder gives Bernoulli
logits for the 784 grey levels; the KL to the uniform prior is PyTorch's registered one. Printed:
the negative ELBO in nats per image (lower is better) on the training and test images.

MNIST is read by ``quasigrad.data.load_mnist()`` (``$QUASIGRAD_MNIST``, the user's cache, or
``../shared/data/mnist`` beside a checkout); ``load_mnist(download=True)`` fetches it.
"""

import argparse
import os
import time

import torch
import torch.nn.functional as F
from torch import nn

import quasigrad
from quasigrad.distributions import OneHotCategorical


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--estimator", default="reinmax", help="a sample-level estimator name (default reinmax)")
    p.add_argument("--tau", type=float, default=1.0, help="the estimator's temperature")
    p.add_argument("--latents", type=int, default=30)
    p.add_argument("--categories", type=int, default=10)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--train-images", type=int, default=60000, help="use the first N training images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="intra-op threads (default: PyTorch's; --tiny: 1)")
    p.add_argument("--tiny", action="store_true", default=os.environ.get("QUASIGRAD_EXAMPLE_TINY") == "1",
                   help="a run of a few seconds (512 images, small networks)")
    args = p.parse_args()
    if args.tiny:
        args.latents, args.categories, args.epochs, args.train_images, args.batch_size = 4, 4, 2, 512, 64
        args.threads = args.threads or 1
    return args


class CategoricalVAE(nn.Module):
    def __init__(self, latents, categories, hidden, estimator, tau):
        super().__init__()
        self.latents, self.categories, self.estimator, self.tau = latents, categories, estimator, tau
        h1, h2 = hidden
        self.encoder = nn.Sequential(nn.Linear(784, h1), nn.ReLU(), nn.Linear(h1, h2), nn.ReLU(),
                                     nn.Linear(h2, latents * categories))
        self.decoder = nn.Sequential(nn.Linear(latents * categories, h2), nn.ReLU(), nn.Linear(h2, h1), nn.ReLU(),
                                     nn.Linear(h1, 784))

    def forward(self, x):
        """Negative ELBO of each image (one sample of the code)."""
        logits = self.encoder(x).view(-1, self.latents, self.categories)
        q = OneHotCategorical(logits=logits, estimator=self.estimator, tau=self.tau)
        z = q.rsample()                                                   # one-hot, the estimator's gradient
        recon = F.binary_cross_entropy_with_logits(self.decoder(z.flatten(1)), x, reduction="none").sum(-1)
        prior = torch.distributions.OneHotCategorical(logits=torch.zeros_like(logits))
        kl = torch.distributions.kl_divergence(q, prior).sum(-1)
        return recon + kl


@torch.no_grad()
def evaluate(model, images, batch_size):
    return sum(model(images[i:i + batch_size]).sum().item() for i in range(0, len(images), batch_size)) / len(images)


def main():
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    mnist = quasigrad.data.load_mnist()
    train = mnist.train_images[:args.train_images].flatten(1).float() / 255     # grey levels in [0, 1]
    test = mnist.test_images[:256 if args.tiny else None].flatten(1).float() / 255
    hidden = (64, 32) if args.tiny else (512, 256)
    model = CategoricalVAE(args.latents, args.categories, hidden, args.estimator, args.tau)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    print(f"categorical VAE: {args.latents} latents x {args.categories} categories, estimator {args.estimator} "
          f"(tau {args.tau}), {len(train)} training images from {mnist.root}")
    for epoch in range(1, args.epochs + 1):
        start, total = time.perf_counter(), 0.0
        order = torch.randperm(len(train))
        for i in range(0, len(train), args.batch_size):
            x = train[order[i:i + args.batch_size]]
            loss = model(x).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(x)
        print(f"epoch {epoch}: train -ELBO {total / len(train):.2f}, test -ELBO {evaluate(model, test, 500):.2f} "
              f"nats/image ({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
