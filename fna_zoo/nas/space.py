"""The search space: per-layer ops, depth (skip) and per-stage output widths around a seed `Arch`.

FNA (Fang et al., ICLR 2020 - https://arxiv.org/abs/2001.02525) searches, per stage of the MobileNetV2 seed,
up to 4 layers: the first layer picks one of k{3,5,7} x e{3,6}, the others may also be `skip` (a dropped
layer, moved to the stage end), the last stage picks its op only. Jung et al. (ICPR 2022 -
https://arxiv.org/abs/2206.08509) also search each stage's output channels; here a stage picks its width
from multiples of the seed width (rounded to multiples of 8), shared by all its layers so residual adds stay
aligned, and a layer's expansion width follows its input width (`e x C_in`), as in the derived network.

A point of the space is an `ArchPath`: per searchable stage, the op index of every layer slot and a width index.
`SearchSpace.derive` turns it into the `Arch` that retraining, the zoo and export read.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any, Sequence

from timm.layers import make_divisible

from ..arch import MAX_CHANNELS, SKIP, Arch, Op, Stage
from ..archs import get_arch, list_archs

__all__ = ['ArchPath', 'StageSpace', 'SearchSpace']


@dataclass(frozen=True)
class ArchPath:
    """One architecture of the space: op index per layer slot and width index, per searchable stage.

    Args:
        ops: For each searchable stage, the index (into that slot's candidates) of every slot's op.
        widths: For each searchable stage, the index of its output width.
    """

    ops: tuple[tuple[int, ...], ...]
    widths: tuple[int, ...]


@dataclass(frozen=True)
class StageSpace:
    """Candidates of one searchable stage.

    Args:
        index: The stage's index in the seed `Arch`.
        stride: Stride of its first layer.
        widths: Output width candidates, ascending.
        slots: Candidate op names of each layer slot (slot 0 has no 'skip').
    """

    index: int
    stride: int
    widths: tuple[int, ...]
    slots: tuple[tuple[str, ...], ...]

    @property
    def max_width(self) -> int:
        return self.widths[-1]


class SearchSpace:
    """Searchable stages of a seed arch, with their op and width candidates.

    Args:
        seed: The seed architecture (every searchable layer of it must be an inverted residual, 'ir').
        seed_name: Registered name of the seed (recorded in outputs; also the timm model of its weights).
        fixed_stages: Leading stages kept exactly as in the seed.
        layers: Layer slots per searchable stage (one entry per stage after the fixed ones).
        first_ops: Candidates of a stage's first layer.
        ops: Candidates of the other layers ('skip' allowed).
        width_mults: Output width multipliers of the seed widths.
        width_divisor: Widths are rounded to multiples of this (timm `make_divisible`).
        head_chs: Width of the final 1x1 conv of derived archs (None: no head conv, e.g. for RetinaNet).
        tap_expansion: When set, the first layer of the stage going from stride 16 to 32 may only use ops of
            this expansion (FNA's SSDLite taps that layer's expansion).
        temperature: Softmax temperature of the architecture probabilities.
    """

    def __init__(self, seed: Arch, seed_name: str, fixed_stages: int, layers: Sequence[int], first_ops: Sequence[str],
                 ops: Sequence[str], width_mults: Sequence[float], width_divisor: int = 8,
                 head_chs: int | None = None, tap_expansion: int | None = None, temperature: float = 1.0) -> None:
        self.seed, self.seed_name, self.head_chs, self.temperature = seed, seed_name, head_chs, float(temperature)
        self.width_divisor = width_divisor
        n = len(seed.stages)
        if not isinstance(fixed_stages, int) or not 0 <= fixed_stages < n:
            raise ValueError(f'search space fixed_stages is {fixed_stages!r}; expected 0..{n - 1} for the {n}-stage seed')
        self.fixed_stages = fixed_stages
        if len(layers) != n - fixed_stages:
            raise ValueError(f'search space layers {list(layers)} has {len(layers)} entries; expected {n - fixed_stages} '
                             f'(one per searchable stage of {seed_name})')
        first_ops, ops = [str(o) for o in first_ops], [str(o) for o in ops]
        if SKIP in first_ops:
            raise ValueError(f"search space first_ops {first_ops} has 'skip'; the first layer of a stage cannot be skipped")
        for name in first_ops + ops:
            if name != SKIP:
                self._check_mappable(name)
        if not width_mults or any(not isinstance(m, (int, float)) or m <= 0 for m in width_mults):
            raise ValueError(f'search space width_mults is {list(width_mults)}; expected positive multipliers')
        tap = self._tap_stage(seed) if tap_expansion is not None or head_chs is not None else None
        stages = []
        for si in range(fixed_stages, n):
            s, n_slots = seed.stages[si], layers[si - fixed_stages]
            if not isinstance(n_slots, int) or n_slots < 1:
                raise ValueError(f'search space layers entry {n_slots!r} for stage {si}; expected a positive integer')
            first = first_ops
            if si == tap and tap_expansion is not None:
                first = [o for o in first_ops if Op.parse(o).expansion == tap_expansion]
            if not first or (n_slots > 1 and not ops):
                which = f'e{tap_expansion} first_ops for the SSDLite tap of stage {si}' if si == tap and not first else 'ops'
                raise ValueError(f'search space has no valid architecture: no {which}; first_ops {first_ops}, ops {ops}')
            widths = sorted({make_divisible(s.out_chs * m, width_divisor) for m in width_mults})
            if widths[-1] > MAX_CHANNELS:  # NOTE: named by the user's key, before a super network eats the memory
                raise ValueError(f'config search.space.width_mults makes stage {si} {widths[-1]} channels wide (its '
                                 f'seed width is {s.out_chs}); expected multipliers that keep every stage within '
                                 f'{MAX_CHANNELS} channels')
            stages.append(StageSpace(si, s.stride, tuple(widths), (tuple(first),) + (tuple(ops),) * (n_slots - 1)))
        self.stages: tuple[StageSpace, ...] = tuple(stages)
        if tap is not None and tap < fixed_stages:
            raise ValueError(f'search space fixed_stages is {fixed_stages}, which fixes stage {tap}, the SSDLite tap; '
                             f'expected at most {tap}')
        # searchable stage whose first layer's expansion SSDLite taps (stride 16 -> 32), or None
        self.tap_stage: int | None = None if tap is None else tap - fixed_stages

    @staticmethod
    def _check_mappable(name: str) -> None:
        op = Op.parse(name)  # raises for unknown ops
        if op.expansion < 2:
            raise ValueError(f"op {name!r} cannot be mapped from the seed: its searchable layers are inverted residuals "
                             "with an expansion conv; expected an op with expansion >= 2 (e.g. 'k3_e3')")

    @staticmethod
    def _tap_stage(seed: Arch) -> int:
        stride = 2
        for si, s in enumerate(seed.stages):
            if stride == 16 and s.stride == 2:
                return si
            stride *= s.stride
        raise ValueError('seed arch has no stage going from stride 16 to 32 for the SSDLite tap; expected output stride 32')

    @classmethod
    def from_config(cls, space: dict[str, Any], detector: str) -> 'SearchSpace':
        """The space of a search config's `search.space` section, for a detector of `fna_zoo.detection.DETECTORS`.

        Args:
            space: The `search.space` mapping (see `fna_zoo.nas.config.SEARCH_DEFAULTS`).
            detector: The detector's name; its spec says whether derived archs keep the seed's head conv
                (`head_conv`, SSDLite) and whether the tapped layer's expansion is fixed (`taps_expansion`).
        """
        from ..detection import get_detector

        spec = get_detector(detector)
        name = space['seed']
        if name not in list_archs():
            raise ValueError(f'search space seed {name!r} is unknown; expected one of {", ".join(list_archs())}')
        seed = get_arch(name)
        return cls(seed, name, space['fixed_stages'], space['layers'], space['first_ops'], space['ops'],
                   space['width_mults'], space['width_divisor'], head_chs=seed.head_chs if spec.head_conv else None,
                   tap_expansion=space['tap_expansion'] if spec.taps_expansion else None,
                   temperature=space['temperature'])

    # ------------------------------------------------------------------ structure
    def in_widths(self, k: int) -> tuple[int, ...]:
        """Input width candidates of searchable stage `k` (the previous stage's widths, or its fixed width)."""
        if k > 0:
            return self.stages[k - 1].widths
        return (self.seed.stage_in_chs(self.stages[0].index),)

    def num_paths(self) -> int:
        """Number of distinct architectures (skips moved to the stage end, so only their count matters)."""
        total = 1
        for st in self.stages:
            first, rest = len(st.slots[0]), st.slots[1:]
            non_skip = [sum(o != SKIP for o in slot) for slot in rest]
            # depth d keeps the first d - 1 of the other slots as ops, the rest skip
            depth_choices = sum(math.prod(non_skip[:d]) for d in range(len(rest) + 1)
                                if all(SKIP in slot for slot in rest[d:]))
            total *= first * depth_choices * len(st.widths)
        return total

    def derive(self, path: ArchPath, widths: Sequence[int] | None = None) -> Arch:
        """The architecture of a path (skips dropped at the stage end, as FNA derives), naming its seed.

        Args:
            path: The path.
            widths: Output width of each searchable stage instead of the path's (e.g. the maximum widths).
        """
        stages = list(self.seed.stages[:self.fixed_stages])
        for k, st in enumerate(self.stages):
            ops = tuple(st.slots[slot][i] for slot, i in enumerate(path.ops[k]))
            width = st.widths[path.widths[k]] if widths is None else widths[k]
            stages.append(Stage(width, st.stride, ops))
        # NOTE: the seed's activation and SE ratio carry over (`replace`), so a derived arch is of its seed's family.
        return self.seed.replace(stages=tuple(stages), head_chs=self.head_chs, seed=self.seed_name)

    def path_of(self, arch: Arch) -> ArchPath | None:
        """The path whose derived arch is `arch`, or None when `arch` is not in the space.

        A stage of depth d takes its ops for the first d slots and 'skip' for the rest (skips sit at the stage end,
        as `derive` puts them), so each arch of the space has exactly one path.

        Args:
            arch: An arch of this seed family (fixed stages as in the seed).
        """
        if len(arch.stages) != len(self.seed.stages) or arch.stem_chs != self.seed.stem_chs:
            return None
        if arch.stages[:self.fixed_stages] != self.seed.stages[:self.fixed_stages]:
            return None
        ops, widths = [], []
        for st, stage in zip(self.stages, arch.stages[self.fixed_stages:]):
            if stage.stride != st.stride or stage.out_chs not in st.widths or len(stage.ops) > len(st.slots):
                return None
            names = list(stage.ops) + [SKIP] * (len(st.slots) - len(stage.ops))
            if any(name not in slot for name, slot in zip(names, st.slots)):
                return None
            ops.append(tuple(slot.index(name) for name, slot in zip(names, st.slots)))
            widths.append(st.widths.index(stage.out_chs))
        path = ArchPath(tuple(ops), tuple(widths))

        def layers(a: Arch) -> list[tuple[int, int, tuple[Op, ...]]]:  # skips dropped: a stage is its layers
            return [(s.out_chs, s.stride, s.layers) for s in a.stages]

        return path if layers(self.derive(path)) == layers(arch) else None

    def seed_path(self) -> ArchPath:
        """The seed's own choices: its op in each of its layer slots, 'skip' in the slots past its depth, its width.

        Where the seed's op or width is not a candidate (a space without the seed's op), the nearest stand-in is
        taken: the first candidate for an op, the candidate width closest to the seed's.
        """
        ops, widths = [], []
        for st in self.stages:
            seed_ops = [o for o in self.seed.stages[st.index].ops if o != SKIP]
            chosen = []
            for i, slot in enumerate(st.slots):
                want = seed_ops[i] if i < len(seed_ops) else SKIP
                chosen.append(slot.index(want) if want in slot else 0)
            ops.append(tuple(chosen))
            seed_w = self.seed.stages[st.index].out_chs
            widths.append(min(range(len(st.widths)), key=lambda j: abs(st.widths[j] - seed_w)))
        return ArchPath(tuple(ops), tuple(widths))

    def scaled_seed(self, width_mult: float) -> Arch:
        """The seed's ops at every searchable stage's width times `width_mult` (rounded as the space rounds): the
        width-scaled seed, the baseline a user picks without search (MobileNetV2's width multiplier, applied to the
        searchable stages only). Its widths need not be candidates of the space.

        Args:
            width_mult: Width multiplier (> 0).
        """
        if not width_mult > 0:
            raise ValueError(f'width multiplier is {width_mult!r}; expected a positive number')
        widths = [make_divisible(self.seed.stages[st.index].out_chs * width_mult, self.width_divisor)
                  for st in self.stages]
        return self.derive(self.seed_path(), widths)

    def random_path(self, rng: random.Random) -> ArchPath:
        """A path drawn uniformly: an op index per slot (stage by stage), then a width index per stage.

        Args:
            rng: The draws' generator (seeded by the caller, so the draws repeat).
        """
        return ArchPath(tuple(tuple(rng.randrange(len(slot)) for slot in st.slots) for st in self.stages),
                        tuple(rng.randrange(len(st.widths)) for st in self.stages))

    def width_seed_paths(self) -> list[ArchPath]:
        """The seed's ops at each width multiplier of the space: the k-th path takes every stage's k-th candidate
        width (narrowest first), the width-scaled seeds that are paths of the space.

        NOTE: the k-th width of every stage is the k-th multiplier where the rounding keeps widths distinct; a stage
        with fewer candidates keeps its largest.
        """
        seed = self.seed_path()
        return [ArchPath(seed.ops, tuple(min(k, len(st.widths) - 1) for st in self.stages))
                for k in range(max(len(st.widths) for st in self.stages))]

    def expansion_seed_path(self, expansion: int) -> ArchPath:
        """The seed's path with every layer's expansion ratio set to `expansion` where the space has that op (the
        same kernel), at the seed's widths: the expansion-scaled seed, the other baseline a user picks without
        search (thinner blocks instead of narrower stages). Skips and layers without such a candidate keep the
        seed's choice; the widths are the seed path's (the candidate widths nearest the seed's).

        Args:
            expansion: Expansion ratio (>= 1), e.g. 3 for the seed's 6.
        """
        if isinstance(expansion, bool) or not (isinstance(expansion, int) and expansion >= 1):
            raise ValueError(f'expansion ratio is {expansion!r}; expected an integer >= 1')
        if not any(name != SKIP and Op.parse(name).expansion == expansion
                   for st in self.stages for slot in st.slots for name in slot):
            raise ValueError(f'expansion ratio {expansion} is not in the search space; expected one of its ops\' '
                             'expansions')
        seed = self.seed_path()
        ops = []
        for st, chosen in zip(self.stages, seed.ops):
            row = []
            for slot, i in zip(st.slots, chosen):
                want = SKIP if slot[i] == SKIP else Op(Op.parse(slot[i]).kernel, expansion).name
                row.append(slot.index(want) if want in slot else i)
            ops.append(tuple(row))
        return ArchPath(tuple(ops), seed.widths)

    def max_path_arch(self, path: ArchPath) -> Arch:
        """The path's ops at every stage's largest width (the super network's weights of that path)."""
        return self.derive(path, [st.max_width for st in self.stages])

    def describe(self) -> str:
        lines = [f'seed {self.seed_name}, {self.num_paths():.3g} architectures']
        for st in self.stages:
            lines.append(f'  stage {st.index}: widths {list(st.widths)}, slots '
                         + ' | '.join(','.join(slot) for slot in st.slots))
        return '\n'.join(lines)
