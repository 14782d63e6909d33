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

from ..arch import HEAD_OP, SKIP, Op
from ..complexity import conv_bn_complexity, conv_out_size, op_complexity
from .space import ArchPath, SearchSpace

__all__ = ['CostTable', 'Cell', 'SpaceCells', 'space_cells', 'map_nested', 'madds_table', 'OBJECTIVES', 'TARGET_MODES',
           'CostObjective', 'build_objective']


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

    @classmethod
    def from_lists(cls, constant: float, first: list, rest: list, head: list | None, unit: str) -> 'CostTable':
        """A table from nested lists of costs laid out as `SpaceCells` (None, a skip, costs 0).

        Args:
            constant: Cost of the fixed parts.
            first: [stage][op][input width][output width].
            rest: [stage][slot][op][width].
            head: [last-stage width], or None.
            unit: Unit of the values.
        """
        def t(x: list) -> torch.Tensor:
            return torch.tensor(map_nested(lambda v: 0.0 if v is None else float(v), x), dtype=torch.float64)

        return cls(float(constant), [t(f) for f in first], [[t(slot) for slot in stage] for stage in rest],
                   None if head is None else t(head), unit)

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

    def of_path(self, path: ArchPath) -> float:
        """The cost of one path (the expectation at its one-hot probabilities)."""
        def hot(i: int, n: int) -> torch.Tensor:
            return torch.nn.functional.one_hot(torch.tensor(i), n).double()
        ops = [hot(i, t.shape[0]) for k, idx in enumerate(path.ops)
               for i, t in zip(idx, [self.first[k]] + self.rest[k])]
        widths = [hot(i, t.shape[2]) for i, t in zip(path.widths, self.first)]
        return float(self.expected(ops, widths))


@dataclass(frozen=True)
class Cell:
    """One entry of a space's cost table: a candidate layer at its widths, stride and input size.

    Args:
        op: The op name, or `HEAD_OP` for the head conv.
        in_chs: Input width.
        out_chs: Output width.
        stride: Stride.
        in_hw: Input (H, W).
    """

    op: str
    in_chs: int
    out_chs: int
    stride: int
    in_hw: tuple[int, int]


@dataclass
class SpaceCells:
    """Every cell of a space's cost table at an input size, in `CostTable`'s layout.

    Args:
        first: Per searchable stage, its first slot's cells [op][input width][output width].
        rest: Per searchable stage, per later slot, cells [op][width] (None for 'skip').
        head: The head conv cell per last-stage width, or None.
        hw: Input (H, W) of every stage (fixed ones included) and, last, the backbone's output size.
    """

    first: list[list[list[list[Cell]]]]
    rest: list[list[list[list[Cell | None]]]]
    head: list[Cell] | None
    hw: list[tuple[int, int]]

    def map(self, fn: Callable[[Cell], Any]) -> tuple[list, list, list | None]:
        """(first, rest, head) with `fn` applied to every cell (None stays None), nesting kept; cells are
        visited in network order (stage by stage, first slot then the others, then the head)."""
        def f(cell: Cell | None) -> Any:
            return None if cell is None else fn(cell)

        first, rest = [], []
        for f_k, r_k in zip(self.first, self.rest):
            first.append(map_nested(f, f_k))
            rest.append(map_nested(f, r_k))
        return first, rest, None if self.head is None else [f(c) for c in self.head]


def map_nested(fn: Callable[[Any], Any], x: Any) -> Any:
    """`fn` applied to every leaf (non-list) of nested lists `x`."""
    return [map_nested(fn, v) for v in x] if isinstance(x, list) else fn(x)


def space_cells(space: SearchSpace, input_size: Sequence[int]) -> SpaceCells:
    """The cells of `space` at image size `input_size` (H, W): what every cost table of the space costs.

    Args:
        space: The search space.
        input_size: Image (H, W).
    """
    # NOTE: odd kernels with padding (k - 1) // 2 give one output size per stride, so sizes need no kernel.
    hw = [(conv_out_size(int(input_size[0]), 3, 2), conv_out_size(int(input_size[1]), 3, 2))]
    for s in space.seed.stages[:space.fixed_stages]:
        hw.append(tuple(conv_out_size(v, 3, s.stride) for v in hw[-1]))
    first, rest = [], []
    for k, st in enumerate(space.stages):
        at, out_hw = hw[-1], tuple(conv_out_size(v, 3, st.stride) for v in hw[-1])
        first.append([[[Cell(op, w_in, w, st.stride, at) for w in st.widths] for w_in in space.in_widths(k)]
                      for op in st.slots[0]])
        rest.append([[[None if op == SKIP else Cell(op, w, w, 1, out_hw) for w in st.widths] for op in slot]
                     for slot in st.slots[1:]])
        hw.append(out_hw)
    head = None
    if space.head_chs is not None:
        head = [Cell(HEAD_OP, w, space.head_chs, 1, hw[-1]) for w in space.stages[-1].widths]
    return SpaceCells(first, rest, head, hw)


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

    def madds(cell: Cell) -> int:
        if cell.op == HEAD_OP:
            return conv_bn_complexity(cell.in_chs, cell.out_chs, 1, 1, cell.in_hw)[0].madds
        op = Op.parse(cell.op)
        return op_complexity(op, cell.in_chs, cell.out_chs, cell.stride, cell.in_hw,
                             seed.se_chs(op, cell.in_chs))[0].madds

    return CostTable.from_lists(float(constant), *space_cells(space, input_size).map(madds), 'MAdds')


TARGET_MODES = ('max', 'match')  # with a target: a hinge above it, or two-sided
# name -> (table builder(space, objective config), scale of the log term's unit)
OBJECTIVES: dict[str, tuple[Callable[[SearchSpace, dict[str, Any]], CostTable], float, str]] = {
    'madds': (lambda space, cfg: madds_table(space, cfg['input_size']), 1e9, 'GMAdds'),
}


class CostObjective:
    """The cost term of an architecture step: `lambda * log10(E[cost] / scale)` (FNA); with a `target`,
    `lambda * log10(max(E[cost], target) / target)` (target_mode 'max': penalise only above the target,
    ProxylessNAS / FBNet style) or `lambda * |log10(E[cost] / target)|` ('match': pulled to the target from both
    sides, for a search at a given cost).

    Args:
        table: Costs of every candidate.
        lam: Weight of the cost term (FNA: 0.02 RetinaNet, 0.15 SSDLite).
        scale: Unit of the log term (1e9 for GMAdds, as FNA).
        unit: Name of that unit.
        target: Optional target cost, in `unit`.
        target_mode: 'max' (a hinge above the target) or 'match' (both sides).
    """

    def __init__(self, table: CostTable, lam: float, scale: float, unit: str, target: float | None = None,
                 target_mode: str = 'max') -> None:
        if target_mode not in TARGET_MODES:
            raise ValueError(f'config search.objective.target_mode is {target_mode!r}; expected one of '
                             f'{", ".join(TARGET_MODES)}')
        self.table, self.lam, self.scale, self.unit, self.target = table, float(lam), scale, unit, target
        self.target_mode = target_mode

    def expected(self, op_probs: Sequence[torch.Tensor], width_probs: Sequence[torch.Tensor]) -> torch.Tensor:
        """Expected cost in `unit`."""
        return self.table.expected(op_probs, width_probs) / self.scale

    def loss(self, expected: torch.Tensor) -> torch.Tensor:
        """The cost term for an expected cost in `unit`."""
        if self.target is None:
            return self.lam * torch.log10(expected)
        target = torch.tensor(float(self.target), dtype=expected.dtype)
        if self.target_mode == 'match':
            # NOTE: a hinge has no gradient below its target, so once the entropy term has sharpened cheap choices
            # nothing pulls them back up: two searches with the hinge at the seed's MAdds ended at 0.45x and
            # 0.71x of it; the two-sided term keeps the expected cost at the target while the candidates decide
            return self.lam * torch.log10(expected / target).abs()
        return self.lam * torch.log10(torch.maximum(expected, target) / target)


def build_objective(space: SearchSpace, cfg: dict[str, Any]) -> CostObjective:
    """The objective of a search config's `search.objective` section (its `lambda` and `input_size` checked when
    the config was loaded, `fna_zoo.nas.config`).

    Args:
        space: The search space.
        cfg: `{'type': 'madds', 'lambda': ..., 'input_size': [H, W], 'target': None, 'target_mode': 'max'}`; `target`
            in the objective's unit (GMAdds, ms) or as a ratio of the seed's cost ('0.75x': three quarters of the
            seed's MAdds or latency under the same table).
    """
    kind = cfg['type']
    if kind not in OBJECTIVES:
        raise ValueError(f'search objective type {kind!r} is unknown; expected one of {", ".join(OBJECTIVES)}')
    target, ratio = cfg.get('target'), None
    if isinstance(target, str):
        ratio = _target_ratio(target)
    elif target is not None and (isinstance(target, bool) or not isinstance(target, (int, float)) or
                                 not 0 < target < math.inf):
        raise ValueError(f"config search.objective.target is {_short(target)}; expected a positive number, a ratio "
                         "of the seed's cost such as '0.75x', or null")
    builder, scale, unit = OBJECTIVES[kind]
    table = builder(space, cfg)
    if ratio is not None:
        # NOTE: relative to the seed's own cost under this objective, so one config fits every machine's table
        target = ratio * table.of_path(space.seed_path()) / scale
    return CostObjective(table, cfg['lambda'], scale, unit, target, cfg.get('target_mode', 'max'))


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + '...'


def _target_ratio(text: str) -> float:
    """The ratio of a relative target such as '0.75x' (of the seed's cost)."""
    body = text.strip()
    try:
        ratio = float(body[:-1]) if body.lower().endswith('x') else math.nan
    except ValueError:
        ratio = math.nan
    if not 0 < ratio < math.inf:
        raise ValueError(f"config search.objective.target is {_short(text)}; expected a positive number, a ratio of "
                         "the seed's cost such as '0.75x', or null")
    return ratio
