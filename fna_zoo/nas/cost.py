"""Cost objectives of the search: a cost table per candidate and its expectation under the probabilities.

FNA (Fang et al., ICLR 2020 - https://arxiv.org/abs/2001.02525) adds `lambda * log10(E[MAdds])` to the
detection loss of architecture steps, with `E[MAdds]` summed over the searchable layers' ops weighted by
their probabilities. With searched widths (Jung et al., ICPR 2022 - https://arxiv.org/abs/2206.08509) a
layer's cost depends on its input and output widths too, so a stage's first layer is tabled over
(op, input width, output width), its other layers over (op, width), and the expectation runs over the
independent op and width probabilities. Our tables cover the whole backbone (stem, fixed stages and head
conv as constants or per last width), so at one-hot probabilities the expectation is exactly
`fna_zoo.count_arch` of the derived arch; FNA's counted only the searchable layers, which shifts the log
term by a constant-dependent factor only.

The objective is pluggable: `OBJECTIVES` maps a name to a function building a `CostTable` for a space;
`madds` is built in (the papers' counting conventions, `fna_zoo.complexity`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from ..arch import SKIP, Op
from ..complexity import conv_bn_complexity, conv_out_size, op_complexity
from .space import Path, SearchSpace

__all__ = ['CostTable', 'madds_table', 'OBJECTIVES', 'CostObjective', 'build_objective']


@dataclass
class CostTable:
    """Costs of every candidate of a space, laid out for the expectation.

    Args:
        constant: Cost of the parts no choice changes (stem, fixed stages).
        first: Per searchable stage, its first slot's costs, shape (ops, input widths, output widths).
        rest: Per searchable stage, per later slot, shape (ops, widths) ('skip' costs 0).
        head: Head conv cost per last-stage width, shape (widths,), or None.
        unit: Unit of the values (e.g. 'MAdds').
    """

    constant: float
    first: list[torch.Tensor]
    rest: list[list[torch.Tensor]]
    head: torch.Tensor | None
    unit: str

    def expected(self, op_probs: Sequence[torch.Tensor], width_probs: Sequence[torch.Tensor]) -> torch.Tensor:
        """Expected cost (float64, differentiable in the probabilities).

        Args:
            op_probs: Probabilities of every slot's ops, slots in order (stage by stage).
            width_probs: Probabilities of every searchable stage's widths.
        """
        total = torch.tensor(self.constant, dtype=torch.float64, device=width_probs[0].device)
        slots = iter(op_probs)
        p_in = torch.ones(1, dtype=torch.float64, device=total.device)
        for k, first in enumerate(self.first):
            p_out = width_probs[k].double()
            total = total + torch.einsum('o,i,j,oij->', next(slots).double(), p_in, p_out, first.to(total.device))
            for table in self.rest[k]:
                total = total + torch.einsum('o,j,oj->', next(slots).double(), p_out, table.to(total.device))
            p_in = p_out
        if self.head is not None:
            total = total + p_in @ self.head.to(total.device)
        return total

    def of_path(self, path: Path) -> float:
        """The cost of one path (the expectation at its one-hot probabilities)."""
        def hot(i: int, n: int) -> torch.Tensor:
            return torch.nn.functional.one_hot(torch.tensor(i), n).double()
        ops = [hot(i, t.shape[0]) for k, idx in enumerate(path.ops)
               for i, t in zip(idx, [self.first[k]] + self.rest[k])]
        widths = [hot(i, t.shape[2]) for i, t in zip(path.widths, self.first)]
        return float(self.expected(ops, widths))


def madds_table(space: SearchSpace, input_size: Sequence[int]) -> CostTable:
    """MAdds of every candidate at `input_size` (H, W), with the conventions of `fna_zoo.count_arch`.

    Args:
        space: The search space.
        input_size: Input image (H, W) the costs are counted at (the paper: 800x1088 RetinaNet, 320x320 SSDLite).
    """
    seed = space.seed
    c, hw = conv_bn_complexity(3, seed.stem_chs, 3, 2, (int(input_size[0]), int(input_size[1])))
    constant = c.madds
    for si, _, op, in_c, out_c, stride in seed.iter_layers():
        if si < space.fixed_stages:
            c, hw = op_complexity(op, in_c, out_c, stride, hw, seed.se_chs(op, in_c))
            constant += c.madds
    first, rest = [], []
    for k, st in enumerate(space.stages):
        in_widths = space.in_widths(k)
        out_hw = tuple(conv_out_size(v, 3, st.stride) for v in hw)  # the same for every odd kernel
        t = torch.zeros(len(st.slots[0]), len(in_widths), len(st.widths), dtype=torch.float64)
        for o, name in enumerate(st.slots[0]):
            for i, w_in in enumerate(in_widths):
                for j, w in enumerate(st.widths):
                    op = Op.parse(name)
                    t[o, i, j] = op_complexity(op, w_in, w, st.stride, hw, seed.se_chs(op, w_in))[0].madds
        first.append(t)
        tables = []
        for slot in st.slots[1:]:
            r = torch.zeros(len(slot), len(st.widths), dtype=torch.float64)
            for o, name in enumerate(slot):
                if name != SKIP:
                    for j, w in enumerate(st.widths):
                        op = Op.parse(name)
                        r[o, j] = op_complexity(op, w, w, 1, out_hw, seed.se_chs(op, w))[0].madds
            tables.append(r)
        rest.append(tables)
        hw = out_hw
    head = None
    if space.head_chs is not None:
        head = torch.tensor([conv_bn_complexity(w, space.head_chs, 1, 1, hw)[0].madds for w in space.stages[-1].widths],
                            dtype=torch.float64)
    return CostTable(float(constant), first, rest, head, 'MAdds')


# name -> (table builder(space, objective config), scale of the log term's unit)
OBJECTIVES: dict[str, tuple[Callable[[SearchSpace, dict[str, Any]], CostTable], float, str]] = {
    'madds': (lambda space, cfg: madds_table(space, cfg['input_size']), 1e9, 'GMAdds'),
}


class CostObjective:
    """The cost term of an architecture step: `lambda * log10(E[cost] / scale)` (FNA), or with a `target`,
    `lambda * log10(max(E[cost], target) / target)` (penalise only above a target, ProxylessNAS / FBNet style).

    Args:
        table: Costs of every candidate.
        lam: Weight of the cost term (FNA: 0.02 RetinaNet, 0.15 SSDLite).
        scale: Unit of the log term (1e9 for GMAdds, as FNA).
        unit: Name of that unit.
        target: Optional target cost, in `unit`.
    """

    def __init__(self, table: CostTable, lam: float, scale: float, unit: str, target: float | None = None) -> None:
        self.table, self.lam, self.scale, self.unit, self.target = table, float(lam), scale, unit, target

    def expected(self, op_probs: Sequence[torch.Tensor], width_probs: Sequence[torch.Tensor]) -> torch.Tensor:
        """Expected cost in `unit`."""
        return self.table.expected(op_probs, width_probs) / self.scale

    def loss(self, expected: torch.Tensor) -> torch.Tensor:
        """The cost term for an expected cost in `unit`."""
        if self.target is None:
            return self.lam * torch.log10(expected)
        target = torch.tensor(float(self.target), dtype=expected.dtype)
        return self.lam * torch.log10(torch.maximum(expected, target) / target)


def build_objective(space: SearchSpace, cfg: dict[str, Any]) -> CostObjective:
    """The objective of a search config's `search.objective` section.

    Args:
        space: The search space.
        cfg: `{'type': 'madds', 'lambda': ..., 'input_size': [H, W], 'target': None}`.
    """
    kind = cfg['type']
    if kind not in OBJECTIVES:
        raise ValueError(f'search objective type {kind!r} is unknown; expected one of {", ".join(OBJECTIVES)}')
    lam = cfg['lambda']
    if not isinstance(lam, (int, float)) or lam < 0 or not math.isfinite(lam):
        raise ValueError(f'search objective lambda is {lam!r}; expected a number >= 0')
    builder, scale, unit = OBJECTIVES[kind]
    return CostObjective(builder(space, cfg), lam, scale, unit, cfg.get('target'))
