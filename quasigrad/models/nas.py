"""A cell-based search space and its GDAS supernet (Dong and Yang 2019, "Searching for a Robust
Neural Architecture in Four GPU Hours", CVPR), with any registered estimator on the
architecture logits.

The cell is the one of NAS-Bench-201 / NATS-Bench's topology space: `nodes` nodes (node 0 is
the cell's input), an edge from every node `i` to every later node `j`, node `j` the sum
of its incoming edges, the cell's output the last node. Each edge applies one operation of
`OPS`: `none` (zero), `skip_connect`, `nor_conv_3x3` and `nor_conv_1x1`
(ReLU → convolution → batch norm) and `avg_pool_3x3`. With 4 nodes a cell has 6 edges and
5⁶ = 15,625 architectures; every cell of a network shares one architecture.

`SearchNetwork` holds one logit per (edge, operation). Each forward pass draws one
operation per edge, `D = estimator(logits)` (one-hot; shared by all cells of the network), and
runs **only the drawn operation** of each edge. As in GDAS's code, the edge's output is
`D_k · op_k(x) + Σ_{k' ≠ k} D_{k'}`: the other operations' entries of `D` (zero in the
forward pass) are added as constants, so that each gets the sum of the node's gradient. The
architecture logits then get the estimator's gradient (GDAS uses straight-through
Gumbel-softmax, `gumbel_softmax` with `hard=True`). `SearchNetwork.genotype` is the
argmax operation per edge; `FixedNetwork` builds that architecture alone, to be trained
from scratch.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from .. import registry

__all__ = ["OPS", "cell_edges", "make_op", "SearchCell", "FixedCell", "SearchNetwork", "FixedNetwork"]

OPS: Tuple[str, ...] = ("none", "skip_connect", "nor_conv_3x3", "nor_conv_1x1", "avg_pool_3x3")


def cell_edges(nodes: int) -> List[Tuple[int, int]]:
    """The edges `(i, j)`, `i < j`, of a cell with `nodes` nodes, ordered by target node."""
    if not isinstance(nodes, int) or nodes < 2:
        raise ValueError(f"nodes must be an int >= 2, got {nodes!r}")
    return [(i, j) for j in range(1, nodes) for i in range(j)]


class Zero(nn.Module):
    """The `none` operation: zeros shaped like the input."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mul(0.0)


class ReLUConvBN(nn.Sequential):
    """ReLU, a `k × k` convolution (no bias) and batch norm."""

    def __init__(self, c_in: int, c_out: int, k: int, stride: int = 1, *, affine: bool = True):
        super().__init__(nn.ReLU(), nn.Conv2d(c_in, c_out, k, stride=stride, padding=k // 2, bias=False),
                         nn.BatchNorm2d(c_out, affine=affine, track_running_stats=affine))


def make_op(name: str, channels: int, *, affine: bool = True) -> nn.Module:
    """The operation `name` of `OPS` on `channels` channels, stride 1.

    Args:
        name: one of `OPS`.
        channels: input and output channels.
        affine: learn the batch norm's scale and shift and keep running statistics (False in the
            supernet, as in NAS-Bench-201's search).
    """
    if name == "none":
        return Zero()
    if name == "skip_connect":
        return nn.Identity()
    if name == "nor_conv_3x3":
        return ReLUConvBN(channels, channels, 3, affine=affine)
    if name == "nor_conv_1x1":
        return ReLUConvBN(channels, channels, 1, affine=affine)
    if name == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    raise ValueError(f"unknown operation {name!r}; known: {', '.join(OPS)}")


class SearchCell(nn.Module):
    """Every operation on every edge; a forward pass runs one per edge (see the module docstring)."""

    def __init__(self, channels: int, nodes: int = 4, ops: Sequence[str] = OPS):
        super().__init__()
        self.nodes, self.ops, self.edges = nodes, tuple(ops), cell_edges(nodes)
        self.candidates: List[nn.ModuleList] = nn.ModuleList(  # type: ignore[assignment]
            nn.ModuleList(make_op(o, channels, affine=False) for o in self.ops) for _ in self.edges)

    def forward(self, x: torch.Tensor, weights: torch.Tensor, index: Sequence[int]) -> torch.Tensor:
        """`weights`: `(edges, ops)` one-hot rows (with the estimator's gradient); `index`:
        the drawn operation per edge."""
        states = [x]
        for j in range(1, self.nodes):
            total: Any = 0.0
            for e, (i, target) in enumerate(self.edges):
                if target != j:
                    continue
                k = index[e]
                w = weights[e]
                total = total + w[k] * self.candidates[e][k](states[i]) + (w.sum() - w[k])
            states.append(total)
        return states[-1]


class FixedCell(nn.Module):
    """The cell of one architecture: only its operations, `none` edges dropped."""

    def __init__(self, channels: int, genotype: Sequence[str], nodes: int = 4):
        super().__init__()
        self.nodes, self.edges = nodes, cell_edges(nodes)
        if len(genotype) != len(self.edges):
            raise ValueError(f"genotype must name one operation per edge ({len(self.edges)}), got {len(genotype)}")
        bad = [g for g in genotype if g not in OPS]
        if bad:
            raise ValueError(f"unknown operation(s) {bad} in genotype; known: {', '.join(OPS)}")
        self.genotype = tuple(genotype)
        self.ops = nn.ModuleDict({f"{i}_{j}": make_op(g, channels) for (i, j), g in zip(self.edges, genotype)
                                  if g != "none"})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        states = [x]
        for j in range(1, self.nodes):
            parts = [self.ops[f"{i}_{t}"](states[i]) for i, t in self.edges if t == j and f"{i}_{t}" in self.ops]
            states.append(torch.stack(parts).sum(0) if parts else torch.zeros_like(x))
        return states[-1]


class _Backbone(nn.Module):
    """Stem (a 3 × 3 convolution of stride `stem_stride`), `stages` stages of `cells` cells with a stride-2 convolution doubling the channels
    between stages, global average pooling and a linear classifier."""

    def __init__(self, make_cell, channels: int, cells: int, stages: int, num_classes: int, in_channels: int,
                 affine: bool, stem_stride: int):
        super().__init__()
        for name, v in (("channels", channels), ("cells", cells), ("stages", stages), ("stem_stride", stem_stride)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        self.stem = nn.Sequential(nn.Conv2d(in_channels, channels, 3, stride=stem_stride, padding=1, bias=False),
                                  nn.BatchNorm2d(channels))
        layers: List[nn.Module] = []
        c = channels
        for s in range(stages):
            if s:
                layers.append(ReLUConvBN(c, 2 * c, 3, stride=2))
                c *= 2
            layers.extend(make_cell(c) for _ in range(cells))
        self.layers = nn.ModuleList(layers)
        self.head = nn.Sequential(nn.BatchNorm2d(c, affine=affine, track_running_stats=affine), nn.ReLU())
        self.classifier = nn.Linear(c, num_classes)

    def run(self, x: torch.Tensor, cell_fn) -> torch.Tensor:
        h = self.stem(x)
        for layer in self.layers:
            h = cell_fn(layer, h) if isinstance(layer, (SearchCell, FixedCell)) else layer(h)
        return self.classifier(self.head(h).mean((2, 3)))


class SearchNetwork(nn.Module):
    """The GDAS supernet: a `_Backbone` of `SearchCell`s sharing one set of
    architecture logits, sampled once per forward pass.

    Args:
        channels: channels of the first stage (doubled at each later stage).
        cells: cells per stage.
        stages: number of stages.
        nodes: nodes per cell.
        num_classes: classes of the data.
        in_channels: channels of the input images.
        stem_stride: stride of the stem convolution (2 halves the images' size before the cells).
        estimator: registered name of a sample-level estimator for the architecture logits
            (`"gumbel_softmax"`, with `hard=True` from the registry's defaults, is GDAS).
        tau: initial temperature for estimators that take one (change it with `tau`).
        estimator_kwargs: further keyword arguments for the estimator.
    """

    def __init__(self, channels: int = 16, cells: int = 1, stages: int = 2, nodes: int = 4, num_classes: int = 10,
                 in_channels: int = 1, *, stem_stride: int = 1, estimator: str = "gumbel_softmax", tau: float = 10.0,
                 estimator_kwargs: Optional[Dict[str, Any]] = None):
        super().__init__()
        info = registry.get(estimator)
        if info.categorical is None:
            raise ValueError(f"estimator {estimator!r} has no sample-level function for categorical variables; "
                             f"use one of {registry.names(variable='categorical', layer=1)}")
        self._fn, self._has_tau = info.categorical, info.has_tau
        self.estimator_kwargs = {**info.defaults, **(estimator_kwargs or {})}
        self.estimator = estimator
        self.tau = tau
        self.nodes = nodes
        self.backbone = _Backbone(lambda c: SearchCell(c, nodes), channels, cells, stages, num_classes, in_channels,
                                  affine=False, stem_stride=stem_stride)
        self.arch_logits = nn.Parameter(1e-3 * torch.randn(len(cell_edges(nodes)), len(OPS)))

    @property
    def tau(self) -> float:
        return self._tau

    @tau.setter
    def tau(self, value: float) -> None:
        if not (isinstance(value, (int, float)) and value > 0 and math.isfinite(value)):
            raise ValueError(f"tau must be a positive finite number, got {value!r}")
        self._tau = float(value)

    def sample(self, index: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, List[int]]:
        """One operation per edge: one-hot `(edges, ops)` weights with the estimator's gradient
        and the drawn indices (`index` given: those)."""
        kwargs = dict(self.estimator_kwargs)
        if self._has_tau:
            kwargs["tau"] = self._tau
        weights = self._fn(self.arch_logits, index=index, **kwargs)
        return weights, weights.detach().argmax(-1).tolist()

    def forward(self, x: torch.Tensor, *, argmax: bool = False) -> torch.Tensor:
        """Class logits, for one architecture drawn for the whole batch (`argmax`: the current
        best one, `genotype`)."""
        weights, index = self.sample(self.arch_logits.detach().argmax(-1) if argmax else None)
        return self.backbone.run(x, lambda cell, h: cell(h, weights, index))

    def weight_parameters(self) -> List[nn.Parameter]:
        """The network's weights (everything but the architecture logits)."""
        return list(self.backbone.parameters())

    def genotype(self) -> Tuple[str, ...]:
        """The argmax operation of each edge (in the order of `cell_edges`)."""
        return tuple(OPS[k] for k in self.arch_logits.detach().argmax(-1).tolist())


class FixedNetwork(nn.Module):
    """The network of one architecture (`genotype`: one operation name per edge), the same
    backbone as `SearchNetwork`, trained from scratch."""

    def __init__(self, genotype: Sequence[str], channels: int = 16, cells: int = 1, stages: int = 2, nodes: int = 4,
                 num_classes: int = 10, in_channels: int = 1, *, stem_stride: int = 1):
        super().__init__()
        self.genotype = tuple(genotype)
        self.backbone = _Backbone(lambda c: FixedCell(c, genotype, nodes), channels, cells, stages, num_classes,
                                  in_channels, affine=True, stem_stride=stem_stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.run(x, lambda cell, h: cell(h))
