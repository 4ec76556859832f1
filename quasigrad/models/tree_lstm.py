r"""A Gumbel tree-LSTM (Choi, Yoo and Lee 2018, "Learning to Compose Task-Specific Tree
Structures", AAAI) whose merge choices get their gradient from any registered estimator.

A sentence of `n` tokens becomes `n` leaves (the states of a left-to-right LSTM over the
word vectors). At each of the `n − 1` steps every adjacent pair of nodes `(l, r)` gets a
candidate parent from a binary Tree-LSTM cell (Tai, Socher and Manning 2015),

$$
[i; f_l; f_r; u; o] = W [h_l; h_r] + b,\quad
c = c_l\,\sigma(f_l + 1) + c_r\,\sigma(f_r + 1) + \tanh(u)\,\sigma(i),\quad
h = \sigma(o) \tanh(c),
$$

each candidate a score `s_j = q·h_j / \sqrt{H}`, and one pair is chosen,
`D ~ Categorical(softmax(s))`, as a hard one-hot sample from the estimator's sample-level
function (`quasigrad.registry.get(name).function("categorical")`): its forward value is the
sample, its backward pass the estimator. The chosen pair is replaced by its parent through
masks built from `D` (cumulative sums, as in Choi et al.), so that `D` enters the new node
list linearly and the estimator's gradient reaches the scores. The root after the last merge
represents the sentence. In evaluation mode the highest-scoring pair is merged.

Sentences of different lengths are processed together: a sentence of length `n` in a batch
padded to `L` takes part in steps `0 … n − 2` only (padding pairs get logit `−∞`) and
keeps its root through the remaining steps.

`estimator=None` draws the choices without a gradient through them; the log-probability of
the choices (`TreeOutput.log_prob`, always returned) then lets a caller build a
score-function estimator.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, Optional

import torch
from torch import nn

from .. import registry
from ..estimators import sample_categorical

__all__ = ["TreeLSTMCell", "GumbelTreeEncoder", "GumbelTreeClassifier", "TreeOutput"]


@dataclasses.dataclass
class TreeOutput:
    """What the encoder did for each sentence of a batch.

    Attributes:
        root: `(B, H)` hidden state of each sentence's root.
        choices: `(B, L − 1)` int64: at step `t` the position of the left node of the merged
            pair among the sentence's current nodes, `−1` for steps after the sentence's last
            merge (so a sentence of length `n` has exactly `n − 1` choices `≥ 0`).
        log_prob: `(B,)` log-probability of the sentence's merge sequence under the model's
            scores (0 for a sentence of one or two tokens, whose tree is forced).
    """

    root: torch.Tensor
    choices: torch.Tensor
    log_prob: torch.Tensor

    @property
    def merges(self) -> torch.Tensor:
        """`(B,)` number of merges made in each sentence."""
        return (self.choices >= 0).sum(1)


class TreeLSTMCell(nn.Module):
    """Binary Tree-LSTM cell: `(h_l, c_l), (h_r, c_r) → (h, c)`, on any leading shape."""

    def __init__(self, hidden_dim: int):
        super().__init__()
        self.hidden_dim = hidden_dim
        self.linear = nn.Linear(2 * hidden_dim, 5 * hidden_dim)
        nn.init.orthogonal_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, hl: torch.Tensor, cl: torch.Tensor, hr: torch.Tensor, cr: torch.Tensor):
        i, fl, fr, u, o = self.linear(torch.cat([hl, hr], -1)).chunk(5, -1)
        c = cl * torch.sigmoid(fl + 1) + cr * torch.sigmoid(fr + 1) + torch.tanh(u) * torch.sigmoid(i)
        return torch.sigmoid(o) * torch.tanh(c), c


def _check_estimator(estimator: Optional[str]):
    """The sample-level function and default keyword arguments for `estimator`."""
    if estimator is None:
        return None, {}, False
    if not isinstance(estimator, str):
        raise TypeError(f"estimator must be a registered name or None, got {type(estimator).__name__}")
    info = registry.get(estimator)
    if info.categorical is None:
        raise ValueError(f"estimator {estimator!r} has no sample-level function for categorical variables "
                         f"(it works on an objective, not inside a network); use one of "
                         f"{registry.names(variable='categorical', layer=1)} or None")
    return info.categorical, dict(info.defaults), info.has_tau


class GumbelTreeEncoder(nn.Module):
    """Leaves by a left-to-right LSTM, then `n − 1` sampled merges (see the module docstring).

    Args:
        word_dim: size of the input vectors.
        hidden_dim: size `H` of the node states.
        estimator: registered name of the estimator that gives the merge choices their
            gradient (`"reinmax"`, `"st"`, `"gumbel_softmax"`, …), or None for choices
            without a gradient through them.
        tau: temperature passed to estimators that take one.
        estimator_kwargs: further keyword arguments for the estimator (over the registry's
            defaults, e.g. `{"k": 100}` for `gumbel_rao`).
    """

    def __init__(self, word_dim: int, hidden_dim: int, *, estimator: Optional[str] = "reinmax", tau: float = 1.0,
                 estimator_kwargs: Optional[Dict[str, Any]] = None):
        super().__init__()
        self._fn, kwargs, has_tau = _check_estimator(estimator)
        if not (isinstance(tau, (int, float)) and tau > 0 and math.isfinite(tau)):
            raise ValueError(f"tau must be a positive finite number, got {tau!r}")
        kwargs.update(estimator_kwargs or {})
        if has_tau:
            kwargs["tau"] = float(tau)
        self.estimator, self.tau, self.estimator_kwargs = estimator, float(tau), kwargs
        self.hidden_dim = hidden_dim
        self.leaf = nn.LSTMCell(word_dim, hidden_dim)
        self.cell = TreeLSTMCell(hidden_dim)
        self.query = nn.Parameter(torch.empty(hidden_dim))
        nn.init.kaiming_normal_(self.leaf.weight_ih)
        nn.init.orthogonal_(self.leaf.weight_hh)
        nn.init.zeros_(self.leaf.bias_ih)
        nn.init.zeros_(self.leaf.bias_hh)
        with torch.no_grad():
            self.leaf.bias_ih[hidden_dim:2 * hidden_dim].fill_(1.0)       # forget-gate bias 1
        nn.init.normal_(self.query, mean=0.0, std=0.01)

    def leaves(self, x: torch.Tensor):
        """`(h, c)`, each `(B, L, H)`: the LSTM's states after each word (padding comes last,
        so it never reaches a real word's state)."""
        b, n, _ = x.shape
        h = c = x.new_zeros(b, self.hidden_dim)
        hs, cs = [], []
        for t in range(n):
            h, c = self.leaf(x[:, t], (h, c))
            hs.append(h)
            cs.append(c)
        return torch.stack(hs, 1), torch.stack(cs, 1)

    def _choose(self, logits: torch.Tensor, forced: Optional[torch.Tensor]) -> torch.Tensor:
        """One-hot choice per row: the estimator's sample (training), the argmax (evaluation),
        or the forced index, with the estimator's gradient where there is one."""
        if forced is None and not self.training:
            forced = logits.detach().argmax(-1)
        if self._fn is None or not torch.is_grad_enabled():
            idx = forced if forced is not None else sample_categorical(logits.detach())
            return torch.zeros_like(logits).scatter_(-1, idx.unsqueeze(-1), 1.0)
        return self._fn(logits, index=forced, **self.estimator_kwargs)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor, *, index: Optional[torch.Tensor] = None) -> TreeOutput:
        """Encode a padded batch.

        Args:
            x: `(B, L, word_dim)` word vectors, padded after each sentence's end.
            lengths: `(B,)` int64 sentence lengths, each in `1 … L`.
            index: optional `(B, L − 1)` int64 merge choices to make instead of sampling (the
                layout of `TreeOutput.choices`; entries after a sentence's last merge are
                ignored). The estimator still gives them its gradient.

        Returns:
            A `TreeOutput`.

        Raises:
            ValueError: bad lengths or an index that names a pair a sentence does not have.
        """
        if x.dim() != 3:
            raise ValueError(f"x must be (batch, length, word_dim), got shape {tuple(x.shape)}")
        b, n, _ = x.shape
        lengths = torch.as_tensor(lengths, device=x.device)
        if lengths.shape != (b,) or lengths.dtype != torch.long:
            raise ValueError(f"lengths must be an int64 tensor of shape ({b},), got {lengths.dtype} "
                             f"{tuple(lengths.shape)}")
        if b and (int(lengths.min()) < 1 or int(lengths.max()) > n):
            raise ValueError(f"lengths must lie in 1..{n}, got values from {int(lengths.min())} to {int(lengths.max())}")
        if index is not None:
            index = torch.as_tensor(index, device=x.device)
            if index.shape != (b, max(n - 1, 0)) or index.dtype != torch.long:
                raise ValueError(f"index must be an int64 tensor of shape ({b}, {max(n - 1, 0)}), got "
                                 f"{index.dtype} {tuple(index.shape)}")
        h, c = self.leaves(x)
        choices = torch.full((b, max(n - 1, 0)), -1, dtype=torch.long, device=x.device)
        log_prob = x.new_zeros(b)
        scale = 1.0 / math.sqrt(self.hidden_dim)
        for t in range(n - 1):
            ph, pc = self.cell(h[:, :-1], c[:, :-1], h[:, 1:], c[:, 1:])      # (B, m − 1, H) candidates
            pairs = lengths - 1 - t                                            # valid pairs per row
            active = pairs >= 1
            valid = torch.arange(ph.shape[1], device=x.device) < pairs.unsqueeze(1)
            # finished rows get a dummy distribution on pair 0 (their result is discarded)
            fill = torch.full_like(valid, float("-inf"), dtype=ph.dtype)
            fill[:, 0] = torch.where(active, float("-inf"), 0.0)
            logits = torch.where(valid, (ph @ self.query) * scale, fill)
            forced = None
            if index is not None:
                forced = torch.where(active, index[:, t], 0)
                if bool(((forced < 0) | (forced >= pairs.clamp(min=1))).any()):
                    bad = int(((forced < 0) | (forced >= pairs.clamp(min=1))).nonzero()[0, 0])
                    raise ValueError(f"index[{bad}, {t}] = {int(index[bad, t])} names no pair: sentence {bad} has "
                                     f"{int(pairs[bad])} pairs at step {t}")
            sel = self._choose(logits, forced)
            idx = sel.detach().argmax(-1)
            lp = torch.log_softmax(logits, -1).gather(-1, idx.unsqueeze(-1)).squeeze(-1)
            log_prob = log_prob + torch.where(active, lp, torch.zeros_like(lp))
            choices[:, t] = torch.where(active, idx, -1)
            cum = sel.cumsum(-1)
            left, right = (1.0 - cum).unsqueeze(-1), (cum - sel).unsqueeze(-1)
            s = sel.unsqueeze(-1)
            new_h = s * ph + left * h[:, :-1] + right * h[:, 1:]
            new_c = s * pc + left * c[:, :-1] + right * c[:, 1:]
            keep = active.view(b, 1, 1)
            h = torch.where(keep, new_h, h[:, :-1])
            c = torch.where(keep, new_c, c[:, :-1])
        return TreeOutput(root=h[:, 0], choices=choices, log_prob=log_prob)


class GumbelTreeClassifier(nn.Module):
    """Word embeddings, `GumbelTreeEncoder` and an MLP classifier of the root (the model
    of Choi et al. 2018 as the ReinMax paper trains it on ListOps).

    Args:
        vocab_size: number of token ids (id 0 is padding).
        num_classes: number of classes.
        word_dim: size of the word vectors.
        hidden_dim: size of the node states.
        clf_hidden_dim: size of the classifier's hidden layer.
        dropout: dropout on the word vectors and the classifier's input and hidden layer.
        estimator: as in `GumbelTreeEncoder`: the registered name of a sample-level estimator, or None.
        tau: as in `GumbelTreeEncoder`: temperature for estimators that take one.
        estimator_kwargs: as in `GumbelTreeEncoder`: further keyword arguments for the estimator.
    """

    def __init__(self, vocab_size: int, num_classes: int, *, word_dim: int = 300, hidden_dim: int = 300,
                 clf_hidden_dim: int = 300, dropout: float = 0.5, estimator: Optional[str] = "reinmax",
                 tau: float = 1.0, estimator_kwargs: Optional[Dict[str, Any]] = None):
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.embedding = nn.Embedding(vocab_size, word_dim, padding_idx=0)
        nn.init.normal_(self.embedding.weight, std=0.01)
        self.encoder = GumbelTreeEncoder(word_dim, hidden_dim, estimator=estimator, tau=tau,
                                         estimator_kwargs=estimator_kwargs)
        self.dropout = nn.Dropout(dropout)
        self.hidden = nn.Linear(hidden_dim, clf_hidden_dim)
        self.out = nn.Linear(clf_hidden_dim, num_classes)
        nn.init.kaiming_normal_(self.hidden.weight)
        nn.init.zeros_(self.hidden.bias)
        nn.init.uniform_(self.out.weight, -0.002, 0.002)
        nn.init.zeros_(self.out.bias)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor, *, index: Optional[torch.Tensor] = None):
        """Class logits `(B, num_classes)` and the encoder's `TreeOutput`.

        Args:
            tokens: `(B, L)` int64 token ids, padded with 0 after each sentence.
            lengths: `(B,)` int64 sentence lengths.
            index: optional forced merge choices (see `GumbelTreeEncoder.forward`).
        """
        tree = self.encoder(self.dropout(self.embedding(tokens)), lengths, index=index)
        hidden = torch.relu(self.hidden(self.dropout(tree.root)))
        return self.out(self.dropout(hidden)), tree
