r"""From quantization-aware training to integer weights: `convert`.

A trained model's `QuantLinear` and `QuantConv2d` layers become `IntLinear` and
`IntConv2d`, which hold each weight as integer codes and a scale, packed two 4-bit codes
per byte for 4 bits and below:

```python
model = qq.quantize_model(model, weight_quantizer=lambda m: qq.LSQQuantizer(4, per_channel=True))
...  # train
model.eval()
small = qq.convert(model)          # a copy; IntLinear layers with packed 4-bit weights
```

The weight a converted layer computes with is `(q − z)·s` for codes `q`, zero point `z`
and scale `s` (a number or one per output channel), evaluated with the same floating-point
operations as the weight quantizer's forward pass, so the converted model's output equals the
fake-quantized model's bit for bit; `convert` checks this for every layer and refuses to
convert one where it would not hold. The input (activation) quantizer is kept as it is.

Convertible weight quantizers: `quasigrad.quant.LSQQuantizer` (per tensor or per
channel, `q = round(clamp(w/s, −Q_N, Q_P))`, `z = 0`),
`quasigrad.quant.UniformQuantizer` (mid-rise: `q = clamp(floor(w/Δ))`, `z = −½`,
`s = Δ`) and `quasigrad.quant.FakeQuantizer` (affine: `z` its zero point), or any
module with an `integer_weight(weight) -> IntegerWeight` method.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Optional, Tuple

import torch
from torch import nn
from torch.nn import functional as TF

from . import functional as Q
from .modules import FakeQuantizer, LSQQuantizer, QuantConv2d, QuantLinear, UniformQuantizer, _bits

__all__ = ["IntegerWeight", "IntLinear", "IntConv2d", "convert", "integer_weight", "pack", "unpack"]


@dataclasses.dataclass
class IntegerWeight:
    """A weight as integers: `value = ((codes − zero_point)·scale)` computed in `compute_dtype`.

    Attributes:
        codes: int64 tensor shaped like the weight, in `[qmin, qmin + 2**bits − 1]`.
        scale: floating tensor broadcastable to the weight (0-dim per tensor, `(C, 1, …)` per channel).
        zero_point: floating 0-dim tensor (`−0.5` for a mid-rise grid).
        qmin: the lowest code.
        bits: bits per code.
        compute_dtype: dtype in which the quantizer forms the value.
    """

    codes: torch.Tensor
    scale: torch.Tensor
    zero_point: torch.Tensor
    qmin: int
    bits: int
    compute_dtype: torch.dtype

    def dequantize(self, dtype: torch.dtype) -> torch.Tensor:
        """The weight the codes stand for, in `dtype`.

        Args:
            dtype: the floating dtype of the result.

        Returns:
            `(codes − zero_point)·scale`, computed in `compute_dtype`, then cast to `dtype`.
        """
        return _dequantize(self.codes, self.zero_point, self.scale, self.compute_dtype, dtype)


def _dequantize(codes, zero_point, scale, compute_dtype, dtype):
    return ((codes.to(compute_dtype) - zero_point) * scale).to(dtype)


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def integer_weight(quantizer: nn.Module, weight: torch.Tensor) -> IntegerWeight:
    """The integer form of `quantizer(weight)`.

    Args:
        quantizer: an `LSQQuantizer` (initialised), `UniformQuantizer` (with `clip`),
            `FakeQuantizer`, or a module with an `integer_weight(weight)` method.
        weight: the floating weight.

    Returns:
        `IntegerWeight` whose `IntegerWeight.dequantize` equals `quantizer(weight)`.
    """
    custom = getattr(quantizer, "integer_weight", None)
    if callable(custom):
        return custom(weight)
    w = weight.detach()
    with torch.no_grad():
        if isinstance(quantizer, LSQQuantizer):
            if not bool(quantizer.initialized):
                raise RuntimeError("cannot convert an LSQQuantizer whose step is not initialised (train first, or "
                                   "call quantizer.initialize(weight))")
            s = quantizer.effective_step(w).detach()
            codes = torch.round(torch.clamp(w / s, -quantizer.qn, quantizer.qp))
            return IntegerWeight(codes.long(), s.to(codes.dtype), torch.zeros((), dtype=codes.dtype),
                                 -quantizer.qn, quantizer.bits, codes.dtype)
        if isinstance(quantizer, UniformQuantizer):
            bits, step = quantizer.bits, quantizer.step
            cd = _compute_dtype(w.dtype)
            lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
            codes = torch.clamp(torch.floor(w.to(cd) / step), lo, hi)
            return IntegerWeight(codes.long(), torch.tensor(step, dtype=cd), torch.tensor(-0.5, dtype=cd),
                                 lo, bits, cd)
        if isinstance(quantizer, FakeQuantizer):
            # as quasigrad.quant.fake_quantize: inverse scale in float32, value formed in float32
            cd = torch.float64 if w.dtype == torch.float64 else torch.float32
            scale = torch.tensor(float(quantizer.scale), dtype=torch.float32)
            inv = (1.0 / scale).to(cd)
            codes = torch.clamp(torch.round(w.to(cd) * inv) + quantizer.zero_point, quantizer.quant_min,
                                quantizer.quant_max)
            return IntegerWeight(codes.long(), scale, torch.tensor(float(quantizer.zero_point)),
                                 quantizer.quant_min, quantizer.bits, torch.float32)
    raise TypeError(f"cannot convert a weight quantizer of type {type(quantizer).__name__}; convertible: "
                    f"LSQQuantizer, UniformQuantizer, FakeQuantizer, or a module with integer_weight(weight)")


# --------------------------------------------------------------------------------------------
# Packing


def pack(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Store non-negative integer codes below `2**bits` compactly, flattened in row-major order.

    Args:
        codes: integer tensor with values in `[0, 2**bits)`.
        bits: bits per code (1 to 32).

    Returns:
        `uint8` with two codes per byte (element `2i` in the low four bits, `2i + 1` in the
        high four) for `bits <= 4`; `uint8` one per byte for `bits <= 8`; `int32` otherwise.
    """
    bits = Q._check_bits(bits)
    if bits > 32:
        raise ValueError(f"bits must be at most 32, got {bits}")
    flat = codes.reshape(-1).long()
    if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= 2 ** bits):
        raise ValueError(f"codes must lie in [0, {2 ** bits - 1}] for {bits} bits, got "
                         f"[{int(flat.min())}, {int(flat.max())}]")
    if bits > 8:
        return flat.to(torch.int32)
    if bits > 4:
        return flat.to(torch.uint8)
    if flat.numel() % 2:
        flat = torch.cat([flat, flat.new_zeros(1)])
    pairs = flat.reshape(-1, 2)
    return (pairs[:, 0] | (pairs[:, 1] << 4)).to(torch.uint8)


def unpack(packed: torch.Tensor, bits: int, numel: int) -> torch.Tensor:
    """Inverse of `pack`: the first `numel` codes as int64 (flat).

    Args:
        packed: the packed codes (`pack`'s output).
        bits: the codes' bits.
        numel: how many codes to return.

    Returns:
        A flat int64 tensor of `numel` codes.
    """
    if bits > 4:
        return packed.reshape(-1)[:numel].long()
    p = packed.reshape(-1).long()
    return torch.stack([p & 0xF, p >> 4], dim=1).reshape(-1)[:numel]


# --------------------------------------------------------------------------------------------
# Converted layers


class _IntLayer(nn.Module):
    """Integer weight storage shared by `IntLinear` and `IntConv2d`."""

    bits: int
    qmin: int
    weight_packed: torch.Tensor
    weight_scale: torch.Tensor
    weight_zero_point: torch.Tensor
    weight_shape: Tuple[int, ...]
    weight_dtype: torch.dtype
    compute_dtype: torch.dtype

    def _store(self, iw: IntegerWeight, weight: torch.Tensor, bias: Optional[torch.Tensor],
               act_quantizer: Optional[nn.Module]) -> None:
        self.bits, self.qmin = iw.bits, iw.qmin
        self.weight_shape, self.weight_dtype, self.compute_dtype = tuple(weight.shape), weight.dtype, iw.compute_dtype
        device = weight.device
        self.register_buffer("weight_packed", pack(iw.codes - iw.qmin, iw.bits).to(device))
        self.register_buffer("weight_scale", iw.scale.detach().clone().to(device))
        self.register_buffer("weight_zero_point", iw.zero_point.detach().clone().to(device))
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone())
        self.act_quantizer = copy.deepcopy(act_quantizer)

    def codes(self) -> torch.Tensor:
        """The integer codes, int64, shaped like the weight."""
        numel = 1
        for d in self.weight_shape:
            numel *= d
        return (unpack(self.weight_packed, self.bits, numel) + self.qmin).reshape(self.weight_shape)

    def dequantized_weight(self) -> torch.Tensor:
        """`(codes − zero_point)·scale`: the fake-quantized weight, recomputed from the integers."""
        return _dequantize(self.codes(), self.weight_zero_point, self.weight_scale, self.compute_dtype,
                           self.weight_dtype)

    def _quantize_input(self, x):
        return x if self.act_quantizer is None else self.act_quantizer(x)

    def _int_repr(self) -> str:
        per = "per_channel" if self.weight_scale.numel() > 1 else "per_tensor"
        store = "2 per byte" if self.bits <= 4 else ("uint8" if self.bits <= 8 else "int32")
        return (f"weight_bits={self.bits} ({store}), act_bits={_bits(self.act_quantizer)}, scale={per}, "
                f"bias={self.bias is not None}")


class IntLinear(_IntLayer):
    """A linear layer with integer weights, made by `convert` from a `QuantLinear`.

    Buffers: `weight_packed` (codes minus `qmin`, see `pack`), `weight_scale`,
    `weight_zero_point`. Forward: `linear(act_quantizer(x), (q − z)·s, bias)`.
    """

    def __init__(self, layer: QuantLinear):
        super().__init__()
        if not isinstance(layer, QuantLinear) or layer.weight_quantizer is None:
            raise TypeError("IntLinear is made from a QuantLinear with a weight quantizer")
        self.in_features, self.out_features = layer.in_features, layer.out_features
        self._store(_checked_integer_weight(layer), layer.weight, layer.bias, layer.act_quantizer)

    def forward(self, x):
        return TF.linear(self._quantize_input(x), self.dequantized_weight(), self.bias)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, {self._int_repr()}"


class IntConv2d(_IntLayer):
    """A 2-D convolution with integer weights, made by `convert` from a `QuantConv2d`
    (same storage and forward rule as `IntLinear`)."""

    def __init__(self, layer: QuantConv2d):
        super().__init__()
        if not isinstance(layer, QuantConv2d) or layer.weight_quantizer is None:
            raise TypeError("IntConv2d is made from a QuantConv2d with a weight quantizer")
        self.in_channels, self.out_channels = layer.in_channels, layer.out_channels
        self.kernel_size, self.stride, self.padding = layer.kernel_size, layer.stride, layer.padding
        self.dilation, self.groups = layer.dilation, layer.groups
        self.padding_mode = layer.padding_mode
        self._reversed_padding_repeated_twice = list(layer._reversed_padding_repeated_twice)
        self._store(_checked_integer_weight(layer), layer.weight, layer.bias, layer.act_quantizer)

    def forward(self, x):
        x, w = self._quantize_input(x), self.dequantized_weight()
        if self.padding_mode != "zeros":
            x = TF.pad(x, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            return TF.conv2d(x, w, self.bias, self.stride, 0, self.dilation, self.groups)
        return TF.conv2d(x, w, self.bias, self.stride, self.padding, self.dilation, self.groups)

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, {self._int_repr()}")


def _checked_integer_weight(layer) -> IntegerWeight:
    """The layer's integer weight, after checking that it reproduces the fake-quantized weight exactly."""
    with torch.no_grad():
        iw = integer_weight(layer.weight_quantizer, layer.weight)
        expected = layer.weight_quantizer(layer.weight)
        got = iw.dequantize(layer.weight.dtype)
    if got.shape != expected.shape or not torch.equal(got, expected):
        diff = (got.double() - expected.double()).abs().max().item() if got.shape == expected.shape else "shape"
        raise RuntimeError(f"the integer form of this {type(layer.weight_quantizer).__name__} does not reproduce "
                           f"its fake-quantized weight (max difference {diff}); the layer is left unconverted")
    if int(iw.codes.min()) < iw.qmin or int(iw.codes.max()) > iw.qmin + 2 ** iw.bits - 1:
        raise RuntimeError(f"codes outside the {iw.bits}-bit range starting at {iw.qmin}")
    return iw


def convert(model: nn.Module, *, inplace: bool = False) -> nn.Module:
    """Replace every `QuantLinear` / `QuantConv2d` that has a weight quantizer by an
    `IntLinear` / `IntConv2d` holding integer weights and scales.

    Args:
        model: a module (or a single quantized layer). Put it in evaluation mode first if its
            input quantizers behave differently in training.
        inplace: change `model` itself; by default a deep copy is converted.

    Returns:
        The converted model, whose output equals the fake-quantized model's.

    Raises:
        TypeError: a weight quantizer has no integer form.
        RuntimeError: an LSQ step is not initialised, or a layer's integer form would not reproduce
            its weight exactly.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if not inplace:
        model = copy.deepcopy(model)
    if isinstance(model, (QuantLinear, QuantConv2d)):
        return _convert_layer(model) if model.weight_quantizer is not None else model
    targets = [(name, mod) for name, mod in model.named_modules()
               if isinstance(mod, (QuantLinear, QuantConv2d)) and mod.weight_quantizer is not None]
    for name, mod in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, _convert_layer(mod))
    return model


def _convert_layer(layer) -> nn.Module:
    new = IntLinear(layer) if isinstance(layer, QuantLinear) else IntConv2d(layer)
    new.train(layer.training)
    return new
