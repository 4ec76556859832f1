r"""Quantization: rounding and sign with straight-through and custom gradient estimators, affine
fake quantization bit-exact with PyTorch, learned step sizes (LSQ), learned clipping (PACT),
DoReFa, quantized layers, and the "straight-through estimator in disguise" toolkit.

Forward values are exact; the backward pass is the estimator named by `estimator=`:

```python
import quasigrad.quant as qq
y = qq.round(x, estimator="tanh", k=4)                # round(x); gradient k·sech²(k·t)
y = qq.fake_quantize(x, 0.1, 0, -128, 127)            # == torch.fake_quantize_per_tensor_affine
layer = qq.QuantConv2d(1, 32, 3, weight_quantizer=qq.UniformQuantizer(2, estimator="dsq", k=4))
qq.quantize_model(model, weight_quantizer=lambda m: qq.UniformQuantizer(2))
small = qq.convert(model.eval())                      # integer weights, 4 bits and below packed 2 per byte
twin, a, _ = qq.ste_twin(model, "sgd")                # STE from M(w₀), learning rate ×α
```

Estimators (`qq.estimator_table()`): `ste`, `clipped-ste`, `piecewise-linear`,
`approx-sign`, `swish-sign`, `magnitude-aware`, `tanh`, `dsq`, `ewgs`; each says whether
it is in the class covered by Schoenbauer, Moro, Lew, Howard (2024), "Custom gradient estimators
are straight-through estimators in disguise".
"""

from .equivalence import (
                         alignment_error,
                         alpha,
                         check_in_class,
                         least_squares_trend,
                         quantized_agreement,
                         quantized_weights,
                         remap,
                         ste_twin,
)
from .estimators import QuantEstimator, estimator_names, estimator_table, get_estimator, register_estimator
from .functional import (
                         ceil,
                         dorefa_activation,
                         dorefa_weight,
                         fake_quantize,
                         fake_quantize_per_channel,
                         floor,
                         grad_scale,
                         heaviside,
                         lsq,
                         pact,
                         round,
                         sign,
                         ternary,
                         uniform_quantize,
)
from .integer import IntConv2d, IntegerWeight, IntLinear, convert, integer_weight
from .modules import (
                         DoReFaQuantizer,
                         FakeQuantizer,
                         LSQQuantizer,
                         PACTQuantizer,
                         QuantConv2d,
                         QuantLinear,
                         UniformQuantizer,
                         quantize_model,
)

__all__ = [
    # estimators
    "QuantEstimator", "register_estimator", "get_estimator", "estimator_names", "estimator_table",
    # quantizers
    "round", "floor", "ceil", "sign", "heaviside", "ternary", "uniform_quantize", "fake_quantize",
    "fake_quantize_per_channel", "lsq", "pact", "dorefa_weight", "dorefa_activation", "grad_scale",
    # modules
    "UniformQuantizer", "FakeQuantizer", "LSQQuantizer", "PACTQuantizer", "DoReFaQuantizer", "QuantLinear",
    "QuantConv2d", "quantize_model",
    # integer weights
    "convert", "integer_weight", "IntegerWeight", "IntLinear", "IntConv2d",
    # equivalence
    "alpha", "remap", "check_in_class", "ste_twin", "quantized_weights", "quantized_agreement", "alignment_error",
    "least_squares_trend",
]
