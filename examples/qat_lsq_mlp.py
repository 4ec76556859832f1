"""4-bit quantization-aware training of an MLP on MNIST with learned step sizes (LSQ), converted
to integer weights at the end.

    python examples/qat_lsq_mlp.py                    # 784-256-256-10, 4-bit weights and activations, 3 epochs
    python examples/qat_lsq_mlp.py --bits 2 --epochs 5
    python examples/qat_lsq_mlp.py --tiny             # a few seconds (QUASIGRAD_EXAMPLE_TINY=1 too)

Every ``nn.Linear`` gets a per-channel ``LSQQuantizer`` on its weight (``--bits``) and an
unsigned one on its input (8 bits for the pixels, ``--bits`` after each ReLU); each step size is
initialised from the first training batch and then learned. After training,
``quasigrad.quant.convert`` replaces the layers by ``IntLinear`` layers holding integer codes
(two 4-bit codes per byte) and per-channel scales. Printed: the model with its bit widths, the
test accuracy of the fake-quantized model and of the converted one (the same, as the converted
model's output equals the fake-quantized model's bit for bit), and the size of the weights.

MNIST is read by ``quasigrad.data.load_mnist()`` (see examples/categorical_vae.py).
"""

import argparse
import os
import time

import torch
import torch.nn.functional as F
from torch import nn

import quasigrad
import quasigrad.quant as qq


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bits", type=int, default=4, help="bits of the weights and hidden activations")
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--train-images", type=int, default=60000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="intra-op threads (default: PyTorch's; --tiny: 1)")
    p.add_argument("--tiny", action="store_true", default=os.environ.get("QUASIGRAD_EXAMPLE_TINY") == "1",
                   help="a run of a few seconds (2000 images, 64 hidden units, one epoch)")
    args = p.parse_args()
    if args.tiny:
        args.hidden, args.epochs, args.train_images = 64, 1, 2000
        args.threads = args.threads or 1
    return args


def build(hidden, bits):
    model = nn.Sequential(nn.Linear(784, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                          nn.Linear(hidden, 10))

    def input_quantizer(layer):
        # pixels in [0, 1] get 8 bits; the ReLU outputs feeding the other layers get `bits`
        return qq.LSQQuantizer(8 if layer.in_features == 784 else bits, signed=False)

    return qq.quantize_model(model, weight_quantizer=lambda layer: qq.LSQQuantizer(bits, per_channel=True),
                             act_quantizer=input_quantizer)


@torch.no_grad()
def accuracy(model, images, labels):
    model.eval()
    return (model(images).argmax(-1) == labels).float().mean().item()


def weight_bytes(model):
    float_bytes = sum(m.weight.numel() * m.weight.element_size() for m in model.modules()
                      if isinstance(m, qq.QuantLinear))
    int_bytes = sum(m.weight_packed.numel() * m.weight_packed.element_size()
                    + m.weight_scale.numel() * m.weight_scale.element_size()
                    for m in model.modules() if isinstance(m, qq.IntLinear))
    return float_bytes, int_bytes


def main():
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    mnist = quasigrad.data.load_mnist()
    x_train = mnist.train_images[:args.train_images].flatten(1).float() / 255
    y_train = mnist.train_labels[:args.train_images]
    x_test, y_test = mnist.test_images.flatten(1).float() / 255, mnist.test_labels
    if args.tiny:
        x_test, y_test = x_test[:1000], y_test[:1000]
    model = build(args.hidden, args.bits)
    print(model)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    for epoch in range(1, args.epochs + 1):
        model.train()
        start = time.perf_counter()
        order = torch.randperm(len(x_train))
        for i in range(0, len(x_train), args.batch_size):
            idx = order[i:i + args.batch_size]
            loss = F.cross_entropy(model(x_train[idx]), y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        print(f"epoch {epoch}: test accuracy {accuracy(model, x_test, y_test):.4f} with {args.bits}-bit weights "
              f"and activations ({time.perf_counter() - start:.1f} s)")

    model.eval()
    small = qq.convert(model)
    same = torch.equal(small(x_test), model(x_test))
    float_bytes, int_bytes = weight_bytes(model)[0], weight_bytes(small)[1]
    print(small)
    print(f"fake-quantized test accuracy {accuracy(model, x_test, y_test):.4f}, converted "
          f"{accuracy(small, x_test, y_test):.4f}; outputs identical: {same}")
    print(f"weights: {float_bytes / 1024:.1f} KiB as float32, {int_bytes / 1024:.1f} KiB as {args.bits}-bit codes "
          f"and per-channel scales")


if __name__ == "__main__":
    main()
