"""Optimisers for networks whose weights are discrete, from two theories of straight-through.

The straight-through estimator (forward `sign(w)`, backward the identity) trains binary
networks well although it is not the gradient of anything. Two lines of work turn it into an
algorithm with a principle behind it, and this module offers both as `torch.optim.Optimizer`:

- **Mirror descent** (Ajanthan et al. 2021): keep the weight `w` inside the convex hull of
  its levels (`(-1, 1)` for binary weights, the interval `[q_1, q_d]` for `d` levels) and
  run mirror descent with a mirror map that makes the hull's boundary infinitely far away.
  `MDTanh` (binary) and `MDSoftmax` (multi-level, i.e. exponentiated gradient on
  the simplex of level probabilities). As the map's sharpness `beta` grows the update becomes
  the straight-through update on latent weights; at evaluation the weights are rounded.
- **The Bayesian learning rule** (Meng, Bachmann, Khan 2020): learn a mean-field Bernoulli
  distribution over `{-1, +1}` weights by natural-gradient variational inference with the
  Gumbel-softmax (concrete) reparameterisation: `BayesBiNN`.

Which parameters are binary is said explicitly: `mark_binary` tags the weights of the
binary layers, and these optimisers refuse any parameter without the tag (biases and
batch-norm parameters belong to an ordinary optimiser such as Adam):

```python
binary = quasigrad.optim.mark_binary(model.fc1, model.fc2)        # their .weight
rest = [p for p in model.parameters() if not quasigrad.optim.is_binary(p)]
opt = quasigrad.optim.MDTanh(binary, lr=1e-3, beta=1.0, beta_growth=1.02, beta_every=200, adam=True)
...
with opt.quantized():                                              # sign(w) for evaluation
    accuracy = evaluate(model)
```

All three keep their own state (the dual variable, or the natural parameter) and write into
each parameter the weight the network should use in the next forward pass: `tanh(beta x)`
for `MDTanh`, a Monte Carlo sample of the relaxed Bernoulli for `BayesBiNN`.
A parameter's `.grad` is always read as the gradient with respect to that weight.

References:
    Thalaiyasingam Ajanthan, Kartik Gupta, Philip H. S. Torr, Richard Hartley, Puneet K. Dokania,
    "Mirror Descent View for Neural Network Quantization", AISTATS 2021 (arXiv:1910.08237).

    Xiangming Meng, Roman Bachmann, Mohammad Emtiyaz Khan, "Training Binary Neural Networks
    using the Bayesian Learning Rule", ICML 2020 (arXiv:2002.10778).
"""

from ._common import is_binary, mark_binary
from .bayesbinn import BayesBiNN
from .mirror import MDSoftmax, MDTanh

__all__ = ["MDTanh", "MDSoftmax", "BayesBiNN", "mark_binary", "is_binary"]
