"""NAS-Bench-201 cell networks (Dong & Yang, ICLR 2020), written from the paper's description.

The search space the small-network latency regime is checked on: a 3×3 stem conv (16 channels), three
stages of ``cells_per_stage`` identical cells at 16/32/64 channels joined by residual reduction blocks,
then BN-ReLU, global average pooling and a linear classifier, on 32×32 inputs.

A cell is a DAG of 4 nodes; node ``j`` is the sum of one operation applied to each earlier node ``i``.
The operation on each of the 6 edges is one of :data:`OPS`. An architecture is written as in the
benchmark's own strings: ``|nor_conv_3x3~0|+|skip_connect~0|avg_pool_3x3~1|+|none~0|nor_conv_1x1~1|skip_connect~2|``.

Edges with ``none`` are left out of the graph (they add zeros). A cell whose output is not connected
to its input is degenerate (its output is constant zero); :func:`sample_archs` never returns one.
"""
from __future__ import annotations

import itertools
import random

import torch
from torch import nn

from ..errors import UnknownModelError

#: the five edge operations of the NAS-Bench-201 space
OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")

#: (to_node, from_node) of the 6 edges, in the order the arch string lists them
EDGES = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))


def parse_arch(arch: str) -> tuple[str, ...]:
    """The 6 edge ops of an arch string, in :data:`EDGES` order."""
    nodes = [n for n in arch.strip().split("+")]
    ops: list[str] = []
    try:
        for j, node in enumerate(nodes, start=1):
            items = [x for x in node.strip("|").split("|") if x]
            if len(items) != j:
                raise ValueError
            for i, item in enumerate(items):
                op, src = item.split("~")
                if int(src) != i or op not in OPS:
                    raise ValueError
                ops.append(op)
    except ValueError:
        raise UnknownModelError(
            f"not a NAS-Bench-201 arch string: {arch!r}; expected e.g. '|nor_conv_3x3~0|+|skip_connect~0|"
            f"avg_pool_3x3~1|+|none~0|nor_conv_1x1~1|skip_connect~2|' with ops from {', '.join(OPS)}"
        ) from None
    if len(ops) != 6:
        raise UnknownModelError(f"a NAS-Bench-201 arch string has 3 nodes and 6 edges, got {arch!r}")
    return tuple(ops)


def arch_string(ops: tuple[str, ...]) -> str:
    parts, k = [], 0
    for j in (1, 2, 3):
        parts.append("|" + "|".join(f"{ops[k + i]}~{i}" for i in range(j)) + "|")
        k += j
    return "+".join(parts)


def connected(ops: tuple[str, ...]) -> bool:
    """Whether node 3 depends on node 0 through edges that are not ``none``."""
    live = {0}
    for (j, i), op in zip(EDGES, ops):
        if op != "none" and i in live:
            live.add(j)
    return 3 in live


def all_archs() -> list[str]:
    """The 15,625 arch strings of the space (5^6), degenerate ones included."""
    return [arch_string(ops) for ops in itertools.product(OPS, repeat=6)]


def sample_archs(n: int, seed: int = 0) -> list[str]:
    """``n`` distinct connected architectures drawn uniformly at random."""
    pool = [a for a in all_archs() if connected(parse_arch(a))]
    if n > len(pool):
        raise ValueError(f"only {len(pool)} connected NAS-Bench-201 architectures exist, asked for {n}")
    return random.Random(seed).sample(pool, n)


class ReLUConvBN(nn.Sequential):
    def __init__(self, cin: int, cout: int, k: int, stride: int = 1):
        super().__init__(nn.ReLU(), nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout))


def _edge(op: str, c: int) -> nn.Module | None:
    if op == "none":
        return None
    if op == "skip_connect":
        return nn.Identity()
    if op == "nor_conv_1x1":
        return ReLUConvBN(c, c, 1)
    if op == "nor_conv_3x3":
        return ReLUConvBN(c, c, 3)
    return nn.AvgPool2d(3, 1, 1, count_include_pad=False)


class Cell(nn.Module):
    def __init__(self, ops: tuple[str, ...], c: int):
        super().__init__()
        self.ops = ops
        self.edges = nn.ModuleDict({f"{j}_{i}": m for (j, i), op in zip(EDGES, ops) if (m := _edge(op, c)) is not None})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes: list[torch.Tensor | None] = [x]
        for j in (1, 2, 3):
            terms = [self.edges[f"{j}_{i}"](nodes[i]) for i in range(j)
                     if f"{j}_{i}" in self.edges and nodes[i] is not None]
            total = None
            for t in terms:
                total = t if total is None else total + t
            nodes.append(total)
        out = nodes[3]
        return out if out is not None else torch.zeros_like(x)


class ResidualReduction(nn.Module):
    """The stride-2 residual block between stages: two ReLU-Conv-BN 3×3, shortcut avg-pool + 1×1 conv."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.a = ReLUConvBN(cin, cout, 3, 2)
        self.b = ReLUConvBN(cout, cout, 3, 1)
        self.shortcut = nn.Sequential(nn.AvgPool2d(2, 2), nn.Conv2d(cin, cout, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.a(x)) + self.shortcut(x)


class NB201Net(nn.Module):
    def __init__(self, arch: str, channels: int = 16, cells_per_stage: int = 5, num_classes: int = 10,
                 in_channels: int = 3):
        super().__init__()
        ops = parse_arch(arch)
        self.arch = arch_string(ops)
        c = channels
        layers: list[nn.Module] = [nn.Conv2d(in_channels, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c)]
        for stage in range(3):
            if stage:
                layers.append(ResidualReduction(c, 2 * c))
                c *= 2
            layers += [Cell(ops, c) for _ in range(cells_per_stage)]
        layers += [nn.BatchNorm2d(c), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def nb201(arch: str = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|",
          num_classes: int = 10, in_channels: int = 3, channels: int = 16, cells_per_stage: int = 5) -> nn.Module:
    """A NAS-Bench-201 network (the default arch is the space's ResNet-like cell)."""
    return NB201Net(arch, channels, cells_per_stage, num_classes, in_channels)
