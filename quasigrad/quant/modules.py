"""Quantizer modules and the quantized layers ``QuantLinear`` and ``QuantConv2d``.

A layer holds a *weight quantizer* and an *activation quantizer* (applied to its input), each
an ``nn.Module`` mapping a tensor to its fake-quantized value, or ``None`` for full precision::

    layer = QuantConv2d(1, 32, 3, weight_quantizer=UniformQuantizer(2, estimator="tanh", k=4),
                        act_quantizer=PACTQuantizer(4))
    model = quantize_model(model, weight_quantizer=lambda m: UniformQuantizer(2))   # swap in place
"""

from __future__ import annotations

import copy
import math
from typing import Callable, Optional, Union

import torch
from torch import nn
from torch.nn import functional as TF

from . import functional as Q
from .estimators import get_estimator

__all__ = ["UniformQuantizer", "FakeQuantizer", "LSQQuantizer", "PACTQuantizer", "DoReFaQuantizer",
           "QuantLinear", "QuantConv2d", "quantize_model"]


class UniformQuantizer(nn.Module):
    """Fixed symmetric mid-rise grid on ``[-clip, clip]`` (:func:`quasigrad.quant.uniform_quantize`).

    Args:
        bits: number of bits.
        clip: clipping range; ``None``: set by the layer to the He-uniform bound ``√(6/fan_in)``.
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
        """The grid step ``Δ = 2·clip / 2**bits``; thresholds at ``nΔ``."""
        if self.clip is None:
            raise RuntimeError("clip is not set (the layer sets it from fan_in on construction)")
        return 2.0 * float(self.clip) / 2 ** self.bits

    def forward(self, x):
        return Q.uniform_quantize(x, self.bits, self.clip, estimator=self.estimator, **self.params)

    def extra_repr(self):
        return f"bits={self.bits}, clip={self.clip}, estimator={self.estimator!r}" + \
            "".join(f", {k}={v}" for k, v in self.params.items())


class FakeQuantizer(nn.Module):
    """Fixed affine fake quantization (:func:`quasigrad.quant.fake_quantize`)."""

    def __init__(self, scale: float, zero_point: int, quant_min: int, quant_max: int, *, estimator: str = "ste",
                 **params):
        super().__init__()
        self.scale, self.zero_point, self.quant_min, self.quant_max = scale, zero_point, quant_min, quant_max
        self.estimator, self.params = estimator, dict(params)
        Q.fake_quantize(torch.zeros(1), scale, zero_point, quant_min, quant_max, estimator=estimator, **params)

    def forward(self, x):
        return Q.fake_quantize(x, self.scale, self.zero_point, self.quant_min, self.quant_max,
                               estimator=self.estimator, **self.params)


class LSQQuantizer(nn.Module):
    """Learned step size (:func:`quasigrad.quant.lsq`); the step is initialised on the first batch
    to ``2·mean|x| / √Q_P`` as in Esser et al. (2020)."""

    def __init__(self, bits: int, *, signed: bool = True, estimator: str = "ste", **params):
        super().__init__()
        self.bits, self.signed = Q._check_bits(bits), bool(signed)
        self.estimator, self.params = get_estimator(estimator).name, dict(params)
        self.step = nn.Parameter(torch.ones(()))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))

    def forward(self, x):
        if not bool(self.initialized):
            qp = 2 ** (self.bits - 1) - 1 if self.signed else 2 ** self.bits - 1
            with torch.no_grad():
                self.step.fill_(float(2 * x.detach().abs().mean() / math.sqrt(max(qp, 1))) or 1.0)
                self.initialized.fill_(True)
        return Q.lsq(x, self.step, self.bits, signed=self.signed, estimator=self.estimator, **self.params)


class PACTQuantizer(nn.Module):
    """PACT activation quantizer with a learned clipping level ``α`` (:func:`quasigrad.quant.pact`)."""

    def __init__(self, bits: int, alpha: float = 6.0):
        super().__init__()
        self.bits = Q._check_bits(bits)
        self.alpha = nn.Parameter(torch.tensor(float(alpha)))

    def forward(self, x):
        return Q.pact(x, self.alpha, self.bits)


class DoReFaQuantizer(nn.Module):
    """DoReFa quantizer, ``kind="weight"`` or ``"activation"``."""

    def __init__(self, bits: int, kind: str = "weight", *, estimator: str = "ste", **params):
        super().__init__()
        if kind not in ("weight", "activation"):
            raise ValueError(f"kind must be 'weight' or 'activation', got {kind!r}")
        self.bits, self.kind = Q._check_bits(bits), kind
        self.estimator, self.params = get_estimator(estimator).name, dict(params)

    def forward(self, x):
        fn = Q.dorefa_weight if self.kind == "weight" else Q.dorefa_activation
        return fn(x, self.bits, estimator=self.estimator, **self.params)


def _check_quantizer(q, name):
    if q is not None and not callable(q):
        raise TypeError(f"{name} must be a module (or callable) or None, got {type(q).__name__}")
    return q


def _set_clip(q, weight):
    if isinstance(q, UniformQuantizer) and q.clip is None:
        fan_in = weight[0].numel()
        q.clip = math.sqrt(6.0 / fan_in)


class _QuantizedLayer:
    """What :class:`QuantLinear` and :class:`QuantConv2d` share: a weight quantizer and an input
    (activation) quantizer, either of which may be ``None``."""

    def _set_quantizers(self, weight_quantizer, act_quantizer):
        self.weight_quantizer = _check_quantizer(weight_quantizer, "weight_quantizer")
        self.act_quantizer = _check_quantizer(act_quantizer, "act_quantizer")
        _set_clip(self.weight_quantizer, self.weight)

    def quantized_weight(self):
        return self.weight if self.weight_quantizer is None else self.weight_quantizer(self.weight)

    def _quantize_input(self, x):
        return x if self.act_quantizer is None else self.act_quantizer(x)


class QuantLinear(_QuantizedLayer, nn.Linear):
    """``nn.Linear`` whose weight passes through ``weight_quantizer`` and whose input passes
    through ``act_quantizer`` (either may be ``None``). A ``UniformQuantizer`` without ``clip``
    gets the He-uniform bound ``√(6/in_features)``."""

    def __init__(self, in_features, out_features, bias=True, *, weight_quantizer=None, act_quantizer=None,
                 device=None, dtype=None):
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        self._set_quantizers(weight_quantizer, act_quantizer)

    def forward(self, x):
        return TF.linear(self._quantize_input(x), self.quantized_weight(), self.bias)


class QuantConv2d(_QuantizedLayer, nn.Conv2d):
    """``nn.Conv2d`` with a weight quantizer and an input (activation) quantizer; see :class:`QuantLinear`."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, padding_mode="zeros", *, weight_quantizer=None, act_quantizer=None, device=None,
                 dtype=None):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         padding_mode, device=device, dtype=dtype)
        self._set_quantizers(weight_quantizer, act_quantizer)

    def forward(self, x):
        return self._conv_forward(self._quantize_input(x), self.quantized_weight(), self.bias)


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
    """Replace every ``nn.Linear`` and ``nn.Conv2d`` in ``model`` (in place) by a ``QuantLinear`` or
    ``QuantConv2d`` holding the same parameters.

    Args:
        weight_quantizer, act_quantizer: ``None``, a quantizer module (deep-copied for each layer)
            or a callable ``layer -> module or None``.
        filter: optional ``(qualified_name, layer) -> bool``; only layers it accepts are swapped.
    Returns:
        ``model`` (also changed in place); the new layers share the old layers' parameter tensors.
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
