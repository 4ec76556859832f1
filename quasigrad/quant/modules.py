"""Quantizer modules and the quantized layers `QuantLinear` and `QuantConv2d`.

`print(model)` shows each layer's `weight_bits` and `act_bits` and each quantizer's settings.

A layer holds a *weight quantizer* and an *activation quantizer* (applied to its input), each
an `nn.Module` mapping a tensor to its fake-quantized value, or `None` for full precision:

```python
layer = QuantConv2d(1, 32, 3, weight_quantizer=UniformQuantizer(2, estimator="tanh", k=4),
                    act_quantizer=PACTQuantizer(4))
model = quantize_model(model, weight_quantizer=lambda m: UniformQuantizer(2))   # swap in place
```
"""

from __future__ import annotations

import copy
import math
from typing import Any, Callable, Optional, Sequence, Union

import torch
from torch import nn
from torch.nn import functional as TF

from . import functional as Q
from .estimators import get_estimator

__all__ = ["UniformQuantizer", "FakeQuantizer", "LSQQuantizer", "PACTQuantizer", "DoReFaQuantizer",
           "QuantLinear", "QuantConv2d", "quantize_model"]


class UniformQuantizer(nn.Module):
    """Fixed symmetric mid-rise grid on `[-clip, clip]` (`quasigrad.quant.uniform_quantize`).

    Args:
        bits: number of bits.
        clip: clipping range; `None`: set by the layer to the He-uniform bound `√(6/fan_in)`.
        estimator: gradient estimator name; further keywords are its parameters.
    """

    def __init__(self, bits: int, clip: Optional[float] = None, *, estimator: str = "ste", **params):
        super().__init__()
        self.bits = Q._check_bits(bits)
        self.clip = clip
        get_estimator(estimator).params(params)  # checks the parameter names
        self.estimator, self.params = get_estimator(estimator).name, dict(params)

    @property
    def step(self) -> float:
        """The grid step `Δ = 2·clip / 2**bits`; thresholds at `nΔ`."""
        if self.clip is None:
            raise RuntimeError("clip is not set (the layer sets it from fan_in on construction)")
        return 2.0 * float(self.clip) / 2 ** self.bits

    def forward(self, x):
        return Q.uniform_quantize(x, self.bits, self.clip, estimator=self.estimator, **self.params)

    def extra_repr(self):
        return f"bits={self.bits}, clip={self.clip}, estimator={self.estimator!r}" + \
            "".join(f", {k}={v}" for k, v in self.params.items())


class FakeQuantizer(nn.Module):
    """Fixed affine fake quantization (`quasigrad.quant.fake_quantize`)."""

    def __init__(self, scale: float, zero_point: int, quant_min: int, quant_max: int, *, estimator: str = "ste",
                 **params):
        super().__init__()
        self.scale, self.zero_point, self.quant_min, self.quant_max = scale, zero_point, quant_min, quant_max
        self.estimator, self.params = estimator, dict(params)
        Q.fake_quantize(torch.zeros(1), scale, zero_point, quant_min, quant_max, estimator=estimator, **params)

    @property
    def bits(self) -> int:
        """Bits needed for the integer range `[quant_min, quant_max]`.

        Returns:
            `ceil(log2(quant_max − quant_min + 1))`, at least 1.
        """
        return max(1, math.ceil(math.log2(self.quant_max - self.quant_min + 1)))

    def forward(self, x):
        return Q.fake_quantize(x, self.scale, self.zero_point, self.quant_min, self.quant_max,
                               estimator=self.estimator, **self.params)

    def extra_repr(self):
        return (f"bits={self.bits}, scale={self.scale}, zero_point={self.zero_point}, quant_min={self.quant_min}, "
                f"quant_max={self.quant_max}, estimator={self.estimator!r}"
                + "".join(f", {k}={v}" for k, v in self.params.items()))


class LSQQuantizer(nn.Module):
    """Learned step size quantization (`quasigrad.quant.lsq`), per tensor or per channel.

    The step is initialised to `2·mean|x| / √Q_P` (Esser et al. 2020; per channel, the mean over
    each channel) from the first batch the quantizer sees **in training mode**, or by
    `initialize`, or from `step=`. It is never set from data seen in evaluation mode: an
    evaluation-mode call before initialisation raises `RuntimeError` (the step would otherwise
    be fitted to validation or test data and then kept). It quantizes with `|step|` (see
    `effective_step`), so an optimiser that takes a step through zero does not break training.

    Args:
        bits: number of bits (>= 2 when `signed`).
        signed: signed range `[−2**(bits−1), 2**(bits−1) − 1]` (weights) or unsigned
            `[0, 2**bits − 1]` (activations after a ReLU).
        per_channel: one step per slice along `axis` instead of one for the tensor.
        channels: number of channels (per channel only). A `QuantLinear` or `QuantConv2d`
            sets it from its weight (`weight.shape[axis]`); elsewhere it is required.
        axis: the channel dimension of the quantized tensor (0: a weight's output channels).
        step: optional initial step (a positive number, or `channels` numbers); then no
            data-driven initialisation happens.
        estimator: gradient estimator through the rounding; further keywords are its parameters.
    """

    def __init__(self, bits: int, *, signed: bool = True, per_channel: bool = False,
                 channels: Optional[int] = None, axis: int = 0,
                 step: Optional[Union[float, Sequence[float], torch.Tensor]] = None, estimator: str = "ste",
                 **params: Any):
        super().__init__()
        self.bits, self.signed = Q._check_bits(bits), bool(signed)
        if self.signed and self.bits < 2:
            raise ValueError("signed LSQ needs bits >= 2 (with 1 bit the positive range is empty)")
        if not isinstance(per_channel, bool):
            raise TypeError(f"per_channel must be a bool, got {per_channel!r}")
        if isinstance(axis, bool) or not isinstance(axis, int):
            raise TypeError(f"axis must be an int, got {axis!r}")
        if channels is not None and not per_channel:
            raise ValueError("channels= is only for per_channel=True")
        self.per_channel, self.axis = per_channel, axis
        get_estimator(estimator).params(params)  # checks the parameter names
        self.estimator, self.params = get_estimator(estimator).name, dict(params)
        self.step = nn.Parameter(torch.ones(()))
        self.initialized: torch.Tensor
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))
        self.channels: Optional[int] = None
        if per_channel and channels is not None:
            self._set_channels(channels)
        if step is not None:
            self._set_step(step)

    @property
    def qn(self) -> int:
        """`Q_N`: the magnitude of the lowest level.

        Returns:
            `2**(bits − 1)` when signed, else 0.
        """
        return 2 ** (self.bits - 1) if self.signed else 0

    @property
    def qp(self) -> int:
        """`Q_P`: the highest level.

        Returns:
            `2**(bits − 1) − 1` when signed, else `2**bits − 1`.
        """
        return 2 ** (self.bits - 1) - 1 if self.signed else 2 ** self.bits - 1

    def _set_channels(self, channels) -> None:
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
            raise ValueError(f"channels must be a positive int, got {channels!r}")
        if self.channels == channels:
            return
        if bool(self.initialized) and self.channels is None:  # a step= number given before the size was known
            value = self.step.detach().reshape(()).expand(channels).clone()
            self.channels = channels
            self.step = nn.Parameter(value)
            return
        if bool(self.initialized):
            raise ValueError(f"this per-channel LSQQuantizer already has {self.channels} initialised steps; "
                             f"it cannot be resized to {channels} channels")
        self.channels = channels
        self.step = nn.Parameter(torch.ones(channels, dtype=self.step.dtype, device=self.step.device))

    def _set_step(self, step) -> None:
        value = torch.as_tensor(step, dtype=self.step.dtype, device=self.step.device).detach()
        if value.numel() == 1 and self.step.numel() != 1:
            value = value.reshape(()).expand(self.step.shape)
        if value.numel() != self.step.numel():
            raise ValueError(f"step must hold {self.step.numel()} value(s), got shape {tuple(value.shape)}")
        if not bool(torch.isfinite(value).all()) or not bool((value > 0).all()):
            raise ValueError(f"step must be positive and finite, got {value.tolist()}")
        with torch.no_grad():
            self.step.copy_(value.reshape(self.step.shape))
            self.initialized.fill_(True)

    def bind(self, tensor: torch.Tensor) -> None:
        """Size a per-channel step for `tensor` (`tensor.shape[axis]` channels); nothing for
        a per-tensor one. Quantized layers call it with their weight.

        Args:
            tensor: the tensor to be quantized (a layer's weight).

        Raises:
            ValueError: the per-channel steps are already initialised for another number of channels.
        """
        if self.per_channel:
            self._set_channels(int(tensor.shape[self.axis]))

    def _shaped_step(self, x: torch.Tensor) -> torch.Tensor:
        if not self.per_channel:
            return self.step
        if self.channels is None:
            raise RuntimeError("a per-channel LSQQuantizer needs channels= (a QuantLinear or QuantConv2d sets it "
                               "from its weight)")
        axis = self.axis % x.dim() if -x.dim() <= self.axis < x.dim() else None
        if axis is None or x.shape[axis] != self.channels:
            raise ValueError(f"per-channel LSQQuantizer has {self.channels} channels along axis {self.axis}, "
                             f"got a tensor of shape {tuple(x.shape)}")
        shape = [1] * x.dim()
        shape[axis] = self.channels
        return self.step.reshape(shape)

    def effective_step(self, x: torch.Tensor) -> torch.Tensor:
        """The step the quantizer uses for `x`: `|step|`, at least the smallest normal float,
        shaped to broadcast against `x`.

        An optimiser step that takes a learned step through zero (Adam does, for a channel whose weights all
        but vanish) leaves a valid quantizer.

        Args:
            x: the tensor to be quantized.

        Returns:
            The step, shaped to broadcast against `x`.

        Raises:
            RuntimeError: a per-channel quantizer whose number of channels is not yet known.
            ValueError: `x` does not have the quantizer's channels along `axis`.
        """
        s = self._shaped_step(x)
        return s.abs().clamp_min(torch.finfo(s.dtype).tiny)

    @torch.no_grad()
    def initialize(self, x: torch.Tensor) -> None:
        """Set the step from `x` to `2·mean|x| / √Q_P` (per channel: the mean over each
        channel); a zero mean gives 1.

        Args:
            x: the tensor to be quantized (a first batch of activations, or the weight).
        """
        Q._check(x)
        s = self._shaped_step(x)
        dims = [d for d in range(x.dim()) if s.dim() == 0 or s.shape[d] == 1]
        mean = x.detach().abs().mean(dim=dims, keepdim=True) if dims else x.detach().abs()
        value = (2 * mean / math.sqrt(max(self.qp, 1))).to(self.step.dtype)
        value = torch.where((value > 0) & torch.isfinite(value), value, torch.ones_like(value))
        self.step.copy_(value.reshape(self.step.shape))
        self.initialized.fill_(True)

    def forward(self, x):
        if not bool(self.initialized):
            if not self.training:
                raise RuntimeError(
                    "LSQQuantizer's step is not initialised. It is set from the first batch seen in training mode "
                    "(call model.train()), by quantizer.initialize(x), or by step= at construction; never from "
                    "data seen in evaluation mode")
            self.initialize(x)
        return Q.lsq(x, self.effective_step(x), self.bits, signed=self.signed, estimator=self.estimator,
                     **self.params)

    def extra_repr(self):
        kind = f"per_channel=True, channels={self.channels}, axis={self.axis}" if self.per_channel else "per_tensor"
        return f"bits={self.bits}, signed={self.signed}, {kind}, estimator={self.estimator!r}" + \
            "".join(f", {k}={v}" for k, v in self.params.items())


class PACTQuantizer(nn.Module):
    """PACT activation quantizer with a learned clipping level `α` (`quasigrad.quant.pact`)."""

    def __init__(self, bits: int, alpha: float = 6.0):
        super().__init__()
        self.bits = Q._check_bits(bits)
        self.alpha = nn.Parameter(torch.tensor(float(alpha)))

    def forward(self, x):
        return Q.pact(x, self.alpha, self.bits)

    def extra_repr(self):
        return f"bits={self.bits}, alpha={float(self.alpha.detach()):.4g}"


class DoReFaQuantizer(nn.Module):
    """DoReFa quantizer, `kind="weight"` or `"activation"`."""

    def __init__(self, bits: int, kind: str = "weight", *, estimator: str = "ste", **params):
        super().__init__()
        if kind not in ("weight", "activation"):
            raise ValueError(f"kind must be 'weight' or 'activation', got {kind!r}")
        self.bits, self.kind = Q._check_bits(bits), kind
        self.estimator, self.params = get_estimator(estimator).name, dict(params)

    def forward(self, x):
        fn = Q.dorefa_weight if self.kind == "weight" else Q.dorefa_activation
        return fn(x, self.bits, estimator=self.estimator, **self.params)

    def extra_repr(self):
        return f"bits={self.bits}, kind={self.kind!r}, estimator={self.estimator!r}" + \
            "".join(f", {k}={v}" for k, v in self.params.items())


def _check_quantizer(q, name):
    if q is not None and not callable(q):
        raise TypeError(f"{name} must be a module (or callable) or None, got {type(q).__name__}")
    return q


def _bind(q, weight):
    """Fit a weight quantizer to its layer: a `UniformQuantizer` without `clip` gets the
    He-uniform bound, a per-channel `LSQQuantizer` one step per output channel."""
    if isinstance(q, UniformQuantizer) and q.clip is None:
        fan_in = weight[0].numel()
        q.clip = math.sqrt(6.0 / fan_in)
    if isinstance(q, LSQQuantizer):
        q.bind(weight)


def _bits(q) -> str:
    if q is None:
        return "float"
    bits = getattr(q, "bits", None)
    return str(bits) if isinstance(bits, int) else type(q).__name__


class _QuantizedLayer:
    """What `QuantLinear` and `QuantConv2d` share: a weight quantizer and an input
    (activation) quantizer, either of which may be `None`."""

    def _set_quantizers(self, weight_quantizer, act_quantizer):
        self.weight_quantizer = _check_quantizer(weight_quantizer, "weight_quantizer")
        self.act_quantizer = _check_quantizer(act_quantizer, "act_quantizer")
        _bind(self.weight_quantizer, self.weight)

    def quantized_weight(self):
        return self.weight if self.weight_quantizer is None else self.weight_quantizer(self.weight)

    def _quantize_input(self, x):
        return x if self.act_quantizer is None else self.act_quantizer(x)

    def _bits_repr(self) -> str:
        return f"weight_bits={_bits(self.weight_quantizer)}, act_bits={_bits(self.act_quantizer)}"


class QuantLinear(_QuantizedLayer, nn.Linear):
    """`nn.Linear` whose weight passes through `weight_quantizer` and whose input passes
    through `act_quantizer` (either may be `None`). A `UniformQuantizer` without `clip`
    gets the He-uniform bound `√(6/in_features)`."""

    def __init__(self, in_features, out_features, bias=True, *, weight_quantizer=None, act_quantizer=None,
                 device=None, dtype=None):
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        self._set_quantizers(weight_quantizer, act_quantizer)

    def forward(self, x):
        return TF.linear(self._quantize_input(x), self.quantized_weight(), self.bias)

    def extra_repr(self):
        return f"{super().extra_repr()}, {self._bits_repr()}"


class QuantConv2d(_QuantizedLayer, nn.Conv2d):
    """`nn.Conv2d` with a weight quantizer and an input (activation) quantizer; see `QuantLinear`."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, padding_mode="zeros", *, weight_quantizer=None, act_quantizer=None, device=None,
                 dtype=None):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         padding_mode, device=device, dtype=dtype)
        self._set_quantizers(weight_quantizer, act_quantizer)

    def forward(self, x):
        return self._conv_forward(self._quantize_input(x), self.quantized_weight(), self.bias)

    def extra_repr(self):
        return f"{super().extra_repr()}, {self._bits_repr()}"


QuantizerSpec = Union[None, nn.Module, Callable[[nn.Module], Optional[nn.Module]]]


def _make(spec: QuantizerSpec, layer):
    if spec is None:
        return None
    if isinstance(spec, nn.Module):
        return copy.deepcopy(spec)
    if callable(spec):
        return spec(layer)
    raise TypeError(f"a quantizer spec must be None, a module (copied per layer) or a callable(layer), "
                    f"got {type(spec).__name__}")


def quantize_model(model: nn.Module, *, weight_quantizer: QuantizerSpec = None, act_quantizer: QuantizerSpec = None,
                   filter: Optional[Callable[[str, nn.Module], bool]] = None) -> nn.Module:
    """Replace every `nn.Linear` and `nn.Conv2d` in `model` (in place) by a `QuantLinear` or
    `QuantConv2d` holding the same parameters.

    Args:
        weight_quantizer: `None`, a quantizer module (deep-copied for each layer) or a
            callable `layer -> module or None`, for the weights.
        act_quantizer: the same, for the layers' inputs.
        filter: optional `(qualified_name, layer) -> bool`; only layers it accepts are swapped.

    Returns:
        `model` (also changed in place); the new layers share the old layers' parameter tensors.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    targets = []
    for name, mod in model.named_modules():
        if isinstance(mod, (QuantLinear, QuantConv2d)) or type(mod) not in (nn.Linear, nn.Conv2d):
            continue
        if filter is None or filter(name, mod):
            targets.append((name, mod))
    for name, mod in targets:
        wq, aq = _make(weight_quantizer, mod), _make(act_quantizer, mod)
        new: Union[QuantLinear, QuantConv2d]
        if isinstance(mod, nn.Linear):
            new = QuantLinear(mod.in_features, mod.out_features, mod.bias is not None, weight_quantizer=wq,
                              act_quantizer=aq, device=mod.weight.device, dtype=mod.weight.dtype)
        else:
            new = QuantConv2d(mod.in_channels, mod.out_channels, mod.kernel_size, mod.stride, mod.padding,
                              mod.dilation, mod.groups, mod.bias is not None, mod.padding_mode, weight_quantizer=wq,
                              act_quantizer=aq, device=mod.weight.device, dtype=mod.weight.dtype)
        new.weight = mod.weight
        if mod.bias is not None:
            new.bias = mod.bias
        if name == "":
            raise ValueError("model itself is a Linear/Conv2d layer; wrap it in a container or build a Quant layer")
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, new)
    return model
