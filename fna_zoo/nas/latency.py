"""Latency lookup tables of a search space on a runtime, and the search's `latency` objective.

FNA (Fang et al., ICLR 2020 - https://arxiv.org/abs/2001.02525) and Jung et al. (ICPR 2022 -
https://arxiv.org/abs/2206.08509) add `lambda * log10(E[MAdds])` to architecture steps; what a deployment
pays is latency on its runtime, and MAdds rank e.g. k7 depthwise convs cheaper than they run. As ProxylessNAS
(Cai et al., ICLR 2019 - https://arxiv.org/abs/1812.00332) does with mobile lookup tables, the `latency`
objective here takes E[latency] from a table measured on the target runtime (`fna_zoo.nas.latency_runtime`,
the runtimes of fna-bench in `fna_zoo.runtime`):

* every candidate block, (op, input width, output width, stride, input resolution), is built from the seed
  `Arch` as a one-stage timm model (`arch.replace(stem_chs=C_in, stages=(Stage(C_out, s, (op,)),))`, so the
  seed's activation / SE settings carry over) and timed alone: exported, warmed up, `repeats` timed runs,
  the median kept (`fna_zoo.runtime.timing`);
* the fixed parts are timed once: the stem with the fixed stages, and the head conv per last-stage width;
  the detector's neck and head (at the seed's widths) may be timed as well, for information only;
* the runtime's per-call overhead (a trivial model) is timed too: it is taken off every part and counted
  once, as a whole network pays it once; so is the cost of converting a part's input and output to and
  from the runtime's internal layout (onnxruntime's NCHWc), from probes of one and of two chained 1x1 convs
  at every input shape (`_boundary_ms`): parts timed alone pay it at every boundary, a network does not.

Entries are shared wherever their keys are equal: a stage's later slots are all the same (op, w, w, 1,
resolution) block, and a stride-1 stage's first slot with C_in == C_out is that block too (its own later
slots', and the previous stage's, which end at the same resolution). So the default MobileNetV2 space (6
stages, 4 slots, 6 ops, 5 widths) times 852 blocks for the 11,202 cells of its cost tables; at 800x1088 the
full table takes 3-10 minutes a pass on 2 shared CPU cores with onnxruntime (3 passes by default).

Two things keep a sum of parts from predicting whole networks on a shared CPU, and the build addresses both:

* drift: the machine's speed wanders by tens of percent within minutes, and parts timed one after the other
  share it. So every part is timed in several passes (`passes`, default 3), each over all parts in its own
  shuffled order, and keeps the median of its passes (on this project's 2-core CPU, onnxruntime at 320x320, the
  mean error of the predicted ratio to the seed over 14 archs fell from 0.053 with one pass to 0.032 with three,
  three builds each; five did no better; docs/latency_tables.md);
* what whole networks pay that parts do not show, and the absolute scale: a finished table is calibrated
  (`calibrate_table`) on whole backbones timed interleaved - the seed, the seed at each width multiplier of the
  space and a few random archs - with `measured = scale * sum + offset` fitted in relative error. The
  `CostTable` is `scale` times every part, plus `offset` on the fixed parts, so it stays a sum (differentiable,
  exact at one-hot probabilities). It corrects predicted milliseconds at the time of the build (an absolute
  `target`, the summary's predicted latency); on this project's machine it did not change ratios measurably.

The table is a JSON file (`build_latency_table`, resumable; `load_table_file` documents the fields): it
records the runtime, its version, threads, precision, device, the machine, the space fingerprint (seed arch,
fixed stages, per-stage strides, widths and op slots) and the input size; its entries are keyed by block
config (`'k5_e6|24>32|s2|200x272'`). `latency_table` checks a table against a space, input size and runtime
(a mismatch is one ValueError line) and lays it out as a `CostTable` in ms, so the objective is differentiable
in the op and width probabilities exactly like the MAdds one and at one-hot probabilities equals the table's
prediction of the derived arch. Importing this module registers `OBJECTIVES['latency']`
(`search.objective: {type: latency, table: <file>, lambda, target (ms)}`).
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import random
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ..builder import build_part
from ..arch import HEAD_OP, Arch, Stage, check_arch
from ..checks import first_difference
from ..checks import check_input_file, check_input_size
from ..fileio import atomic_write_text
from ..runtime.machine import machine_info
from ..runtime.names import ALIASES, runtime_matches
from ..runtime.timing import time_interleaved
from .cost import OBJECTIVES, Cell, CostObjective, CostTable, map_nested, space_cells
from .latency_runtime import Runtime, measure_module
from .space import ArchPath, SearchSpace

__all__ = ['TABLE_FORMAT', 'Part', 'TablePlan', 'table_plan', 'check_space_buildable', 'space_fingerprint',
           'build_latency_table', 'load_table_file', 'check_table', 'latency_table', 'objective_latency_table',
           'predicted_latency_ms', 'arch_module', 'part_module', 'part_ms', 'calibration_paths', 'calibrate_table',
           'table_costs']

_logger = logging.getLogger(__name__)

TABLE_FORMAT = 'fna_zoo.latency_table'
TABLE_VERSION = 1
_DOC = ('Latency lookup table of a search space (fna_zoo.nas.latency). entries: key -> "ms", the median over '
        '`measurement.passes` passes ("passes") of the median of `measurement.repeats` timed runs of that part alone '
        'on `runtime`, and the spread of its last pass. "calibration": scale and offset_ms of '
        '`measured = scale * sum of parts + offset`, fitted on whole backbones (the objective uses them). Keys: '
        '"<op>|<C_in>><C_out>|s<stride>|<H>x<W>" a candidate block at input resolution HxW; '
        '"stem+<n>|<H>x<W>" the stem and the first n (fixed) stages at the image size; '
        '"head|<C_in>><C_out>|<H>x<W>" the final 1x1 conv; "overhead" one call of a trivial model (taken off '
        'every part, counted once per network); "probe<n>|<C>|<H>x<W>" n chained 1x1 convs, for the layout '
        'conversion a part pays at its input when timed alone (2 * probe1 - probe2 - overhead, taken off); '
        '"<detector>_neck_head|<H>x<W>" the neck and detection head at the seed widths (information only, not '
        'in the objective).')


@dataclass(frozen=True)
class Part:
    """One separately timed part of a backbone.

    Args:
        key: Its table key.
        kind: 'overhead', 'stem', 'block', 'head', 'probe' or 'neck_head'.
        shapes: Input shapes (batch 1).
        spec: What to build: for a block `(op, C_in, C_out, stride)`, for a head `(C_in, C_out)`, for a
            probe `(number of chained 1x1 convs,)`.
    """

    key: str
    kind: str
    shapes: tuple[tuple[int, ...], ...]
    spec: tuple[Any, ...] = ()


@dataclass
class TablePlan:
    """Where every cost of a space's `CostTable` comes from, and the parts to time.

    Args:
        stem: Key of the stem + fixed stages.
        first: Per searchable stage, keys of its first slot [op][input width][output width].
        rest: Per searchable stage, per later slot, keys [op][width] (None for 'skip').
        head: Keys of the head conv per last-stage width, or None.
        parts: Every part to time, by key (shared keys appear once).
    """

    stem: str
    first: list[list[list[list[str]]]]
    rest: list[list[list[list[str | None]]]]
    head: list[str] | None
    parts: 'OrderedDict[str, Part]'

    @property
    def cost_keys(self) -> list[str]:
        """Keys the cost table needs (all parts but the informational neck / head)."""
        return [k for k, p in self.parts.items() if p.kind != 'neck_head']

    def keys_of(self, path: ArchPath) -> list[str]:
        """The parts one path is made of, in order (a key appears as often as the path uses it; no overhead).

        Args:
            path: A path of the space.
        """
        keys, w_in = [self.stem], 0
        for k, (ops, w) in enumerate(zip(path.ops, path.widths)):
            keys.append(self.first[k][ops[0]][w_in][w])
            keys += [slot[o][w] for slot, o in zip(self.rest[k], ops[1:]) if slot[o][w] is not None]
            w_in = w
        if self.head is not None:
            keys.append(self.head[w_in])
        return keys


def _check_size(input_size: Sequence[int]) -> tuple[int, int]:
    # NOTE: the input-size rule of every command (`fna_zoo.checks.check_input_size`: multiples of 32), so a table is
    # measured only at sizes fna-export and fna-bench accept
    if input_size is None:
        raise ValueError('latency table input size is None; expected H W, two positive multiples of 32')
    return check_input_size(input_size, 'latency table')


def check_space_buildable(space: SearchSpace) -> None:
    """Refuse a space whose parts could not be built, before anything is measured or written: the widest arch of
    the space a valid arch (a stage too wide is refused by `SearchSpace` itself, naming `search.space.width_mults`).

    Args:
        space: The search space.

    Raises:
        ValueError: An arch error of the space.
    """
    check_arch(space.max_path_arch(space.seed_path()), 'the widest arch of the search space')


def table_plan(space: SearchSpace, input_size: Sequence[int]) -> TablePlan:
    """The parts a latency table of `space` at `input_size` times, and how its `CostTable` reads them.

    Args:
        space: The search space.
        input_size: Image (H, W) the backbone sees.
    """
    size = _check_size(input_size)
    check_space_buildable(space)
    parts: OrderedDict[str, Part] = OrderedDict()

    def add(part: Part) -> str:
        parts.setdefault(part.key, part)
        return part.key

    add(Part('overhead', 'overhead', ((1, 8, 8, 8),)))
    stem = add(Part(f'stem+{space.fixed_stages}|{size[0]}x{size[1]}', 'stem', ((1, 3) + size,)))

    def part(cell: Cell) -> str:
        at = cell.in_hw
        if cell.op == HEAD_OP:
            return add(Part(f'head|{cell.in_chs}>{cell.out_chs}|{at[0]}x{at[1]}', 'head', ((1, cell.in_chs) + at,),
                            (cell.in_chs, cell.out_chs)))
        return add(Part(f'{cell.op}|{cell.in_chs}>{cell.out_chs}|s{cell.stride}|{at[0]}x{at[1]}', 'block',
                        ((1, cell.in_chs) + at,), (cell.op, cell.in_chs, cell.out_chs, cell.stride)))

    first, rest, head = space_cells(space, size).map(part)
    # boundary probes at every input shape of a block or head (see `_boundary_ms`)
    for shape in list(dict.fromkeys(p.shapes[0] for p in parts.values() if p.kind in ('block', 'head'))):
        for n in (1, 2):
            add(Part(_probe_key(shape, n), 'probe', (shape,), (n,)))
    return TablePlan(stem, first, rest, head, parts)


def _probe_key(shape: tuple[int, ...], n: int) -> str:
    return f'probe{n}|{shape[1]}|{shape[2]}x{shape[3]}'


def space_fingerprint(space: SearchSpace) -> dict[str, Any]:
    """What a latency table depends on in a space (JSON types): the seed arch (with its activation / SE
    fields), the fixed stages, the head conv and every searchable stage's stride, widths and op slots."""
    fp = {
        'seed': space.seed_name, 'seed_arch': space.seed.to_dict(), 'fixed_stages': space.fixed_stages,
        'head_chs': space.head_chs,
        'stages': [{'index': st.index, 'stride': st.stride, 'widths': list(st.widths),
                    'slots': [list(slot) for slot in st.slots]} for st in space.stages],
    }
    return json.loads(json.dumps(fp))


# ---------------------------------------------------------------------------------------------- modules
def _block(seed: Arch, op: str, c_in: int, c_out: int, stride: int) -> nn.Module:
    # NOTE: the block is the only block of a one-stage model built from the seed arch, so whatever the arch
    # says about blocks (activation, SE, ...) applies to it exactly as in the whole network.
    arch = seed.replace(stem_chs=c_in, stages=(Stage(c_out, stride, (op,)),), head_chs=None)
    return build_part(arch).blocks[0][0]


def _stem(space: SearchSpace) -> nn.Module:
    model = build_part(space.seed.replace(head_chs=None))
    return nn.Sequential(model.conv_stem, model.bn1, *model.blocks[:space.fixed_stages])


def _head(seed: Arch, c_in: int, c_out: int) -> nn.Module:
    model = build_part(seed.replace(stem_chs=c_in, stages=(Stage(c_in, 1, (seed.stages[-1].ops[0],)),),
                                        head_chs=c_out))
    return nn.Sequential(model.conv_head, model.bn2)


class _Features(nn.Module):
    """A timm EfficientNet's `forward_features`: stem, blocks, head conv (what the table predicts)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(x)


def arch_module(arch: Arch) -> nn.Module:
    """The whole backbone of `arch` as a table predicts it: image in, last feature map (after the head conv,
    when the arch has one) out; random init, eval mode.

    Args:
        arch: The architecture (e.g. `space.derive(path)`).
    """
    return _Features(build_part(arch)).eval()


class _NeckHead(nn.Module):
    """A detector's neck and head on the backbone's maps (RetinaNet: FPN + head; SSDLite: extras + head).

    Args:
        neck: The detector's neck (`DetectorSpec.neck`): backbone maps in, the head's maps out.
        head: The detector's head.
    """

    def __init__(self, neck: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.neck, self.head = neck, head

    def forward(self, *feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.head(self.neck(*feats))
        return out['cls_logits'], out['bbox_regression']


def _neck_head(space: SearchSpace, detector: str, size: tuple[int, int], kwargs: dict[str, Any]
               ) -> tuple[nn.Module, list[torch.Tensor]]:
    """The neck and head of `detector` around the space's seed (random init, eval mode) and the seeded backbone
    maps they take at `size`."""
    from ..detection import get_detector

    spec = get_detector(detector)
    det = spec.build(backbone=space.seed.replace(head_chs=space.head_chs), **kwargs).eval()
    x = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        feats = spec.neck_inputs(det, x)
    return _NeckHead(spec.neck(det), det.head).eval(), feats


def part_module(space: SearchSpace, part: Part) -> tuple[nn.Module, list[torch.Tensor]]:
    """The module of a part (random init) and its seeded inputs.

    Args:
        space: The search space.
        part: A part of its `table_plan` (not the detector's neck / head).
    """
    gen = torch.Generator().manual_seed(0)
    inputs = [torch.rand(*s, generator=gen) for s in part.shapes]
    if part.kind == 'overhead':
        return nn.Conv2d(8, 8, 1, groups=8, bias=False), inputs
    if part.kind == 'stem':
        return _stem(space), inputs
    if part.kind == 'head':
        return _head(space.seed, *part.spec), inputs
    if part.kind == 'probe':
        c = part.shapes[0][1]
        return nn.Sequential(*[nn.Sequential(nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU6())
                               for _ in range(part.spec[0])]), inputs
    return _block(space.seed, *part.spec), inputs


# ---------------------------------------------------------------------------------------------- the file
def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec='seconds')


def load_table_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read a latency table (FileNotFoundError / one-line ValueError for a missing or foreign file).

    The JSON object holds: `format`, `format_version`, `doc` (the key grammar), `runtime` (name, version,
    precision, device, threads, session options), `machine` (`fna_zoo.runtime.machine.machine_info`),
    `input_size` [H, W], `batch`, `space` (`space_fingerprint`), `measurement` (warm-up, repeats, passes,
    statistic, unit), `detector`, `created` / `updated`, `build_time_s`, `complete` (every part has its passes),
    `entries`: key -> {part, ms (the median of its passes' medians), passes (each pass's median; absent in tables
    built before passes: one pass, `ms`), p90, mean, std, n (of its last pass)}, and, once calibrated,
    `calibration` (`calibrate_table`: scale, offset_ms, the whole backbones it was fitted on; absent in tables
    built before it or with `calibrate=False`, which predict the plain sum).

    Args:
        path: The table file.
    """
    path = check_input_file(path, 'latency table', 'a .json table (build it with fna-latency-table)')
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f'latency table {str(path)!r} is not valid JSON ({e}); expected a file written by '
                         'fna-latency-table') from None
    if not isinstance(data, dict) or data.get('format') != TABLE_FORMAT or not isinstance(data.get('entries'), dict):
        raise ValueError(f'{str(path)!r} is not a latency table; expected a file written by fna-latency-table')
    if data.get('format_version') != TABLE_VERSION:
        raise ValueError(f'latency table {str(path)!r} has format version {data.get("format_version")!r}; '
                         f'expected {TABLE_VERSION} (rebuild it with fna-latency-table)')
    if isinstance(data.get('runtime'), dict):
        data['runtime'] = _current_runtime_record(data['runtime'])
    return data


def _current_runtime_record(record: dict[str, Any]) -> dict[str, Any]:
    """A table's runtime record in today's vocabulary: an old name (`onnxruntime-cpu`, `torch-cpu`, ...) becomes
    its canonical name (`fna_zoo.runtime.names`; the device was recorded already), and an old onnxruntime
    record's options are completed.

    NOTE: tables written before the runtime layer recorded three of the session's settings; their sessions
    were made by the same recipe as today's (`fna_zoo.runtime.ort`: sequential, one inter-op thread, the
    table's threads intra-op, CPU provider), so the record is completed with `session_record`, which makes it
    equal to what a new table on the same settings records (and lets such a table resume).
    """
    name = record.get('name')
    if name not in ALIASES:
        return record
    record = dict(record, name=ALIASES[name][0])
    old_keys = {'graph_optimization', 'intra_op_spinning', 'io_binding'}
    if record['name'] == 'onnxruntime' and set(record.get('options') or {}) == old_keys:
        from ..runtime.ort import session_record

        record['options'] = session_record(record.get('threads'), ALIASES[name][1] or 'cpu')
    return record


def check_table(data: dict[str, Any], space: SearchSpace, input_size: Sequence[int], runtime: str | None = None,
                where: str = 'latency table') -> None:
    """Refuse, with one ValueError line naming the mismatch, a table made for another space, input size or
    runtime.

    Args:
        data: The table (`load_table_file`).
        space: The space it should cover.
        input_size: The (H, W) it should be measured at.
        runtime: The runtime it should be measured on, a name or alias (`fna_zoo.runtime.names`; an alias
            naming a device, e.g. 'onnxruntime-cpu', checks the device too); None: any.
        where: How to name the table in messages.
    """
    size = _check_size(input_size)
    if list(data.get('input_size', [])) != list(size):
        have = 'x'.join(map(str, data.get('input_size', [])))
        raise ValueError(f'{where} was measured at input size {have}, the search objective uses {size[0]}x{size[1]}; '
                         'expected a table built at the objective input_size')
    got = data.get('runtime', {})
    if runtime is not None and not runtime_matches(runtime, str(got.get('name')), got.get('device')):
        raise ValueError(f"{where} was measured on runtime {got.get('name')!r} (device {got.get('device')!r}); "
                         f'the search objective expects {runtime!r}')
    diff = first_difference(data.get('space'), space_fingerprint(space))
    if diff:
        raise ValueError(f'{where} was built for another search space (space.{diff}, table vs config); '
                         'expected a table built from this search config')


def _write(path: Path, data: dict[str, Any]) -> None:
    data['updated'] = _now()
    atomic_write_text(path, json.dumps(data, indent=1) + '\n')


def _header(space: SearchSpace, size: tuple[int, int], runtime: Runtime, warmup: int, repeats: int, passes: int,
            detector: str | None) -> dict[str, Any]:
    return {
        'format': TABLE_FORMAT, 'format_version': TABLE_VERSION, 'doc': _DOC,
        'runtime': runtime.describe(), 'machine': machine_info(runtime.threads), 'input_size': list(size), 'batch': 1,
        'space': space_fingerprint(space),
        'measurement': {'warmup': warmup, 'repeats': repeats, 'passes': passes,
                        'statistic': "median of the passes' medians", 'unit': 'ms',
                        'isolation': 'each part alone, one session per part, inputs/outputs bound once',
                        'order': 'every pass over all parts in its own shuffled order (seeded by the pass)'},
        'detector': detector, 'created': _now(), 'updated': None, 'build_time_s': 0.0, 'complete': False,
        'entries': {},
    }


def _check_resumable(old: dict[str, Any], new: dict[str, Any], path: Path, space: SearchSpace,
                     size: tuple[int, int]) -> None:
    where = f'existing latency table {str(path)!r}'
    check_table(old, space, size, new['runtime']['name'], where=where)
    for key in ('version', 'precision', 'threads', 'device', 'options'):
        if old['runtime'].get(key) != new['runtime'][key]:
            raise ValueError(f"{where} was measured with runtime {key} {old['runtime'].get(key)!r}, this run uses "
                             f"{new['runtime'][key]!r}; expected the same settings to resume (or another --output)")
    machine = old.get('machine', {})
    for key in ('cpu_model', 'cpu_isa', 'gpu'):
        if key == 'cpu_isa' and key not in machine:
            continue  # NOTE: tables written before `cpu_isa` was recorded lack it: their model name is compared
        if machine.get(key) != new['machine'].get(key):
            raise ValueError(f"{where} was measured on another machine ({key} {machine.get(key)!r}, here "
                             f"{new['machine'].get(key)!r}); expected another --output for this machine")


def build_latency_table(space: SearchSpace, input_size: Sequence[int], runtime: Runtime, output: str | os.PathLike,
                        warmup: int = 2, repeats: int = 10, save_every: int = 25, progress: bool = True,
                        detector: str | None = None, detector_kwargs: dict[str, Any] | None = None,
                        calibrate: bool = True, calibration_random: int = 6, calibration_rounds: int = 30,
                        recalibrate: bool = False, passes: int = 3) -> dict[str, Any]:
    """Time every part of `space` at `input_size` on `runtime` into the JSON table `output`, then calibrate it on
    whole backbones (`calibrate_table`); returns it.

    Every part is timed in `passes` passes over all parts, each pass in its own shuffled order, and keeps the median
    of its passes' medians.

    NOTE: on a shared 2-core machine the speed drifts by tens of percent within minutes, and parts timed one after
    the other share the drift: in one pass, an arch's parts (a stage's blocks are neighbours in the plan) are off
    together. Three builds of the same table here predicted the 1.25x-width seed at 1.11x, 1.24x and 1.44x the
    seed (measured 1.34x); passes in shuffled orders spread the drift over all parts and the median damps it.

    Resumable: an existing `output` made for the same space, input size, runtime settings and machine keeps
    its entries and only the missing parts and passes are timed (so a 1-pass table gains passes when rerun with
    more); a calibration made before parts were added is made again.
    The file is rewritten atomically every `save_every` new entries and when the build stops (finished,
    interrupted or failed).

    Args:
        space: The search space.
        input_size: Image (H, W) the backbone sees (the search objective's input_size).
        runtime: Where to time (`fna_zoo.nas.latency_runtime.get_runtime`).
        output: The table file (.json).
        warmup: Untimed runs before each part's timed runs.
        repeats: Timed runs per part (the median is kept).
        save_every: Entries between writes of the file.
        progress: Show a tqdm progress bar.
        detector: Also time this detector's neck and head (a name of `fna_zoo.detection.DETECTORS`), for information.
        detector_kwargs: Builder kwargs of that detector (num_classes, head_width, ...).
        passes: Passes over all parts (each part's `ms` is the median of its passes' medians).
        calibrate: Calibrate the finished table on whole backbones (a calibration the file has is kept unless parts
            are timed; False drops it: the plain sum).
        calibration_random: Random archs among the calibration's backbones (`calibration_paths`).
        calibration_rounds: Interleaved timed rounds of the calibration.
        recalibrate: Time the calibration again even when the file has one (e.g. on a machine that has drifted).
    """
    size = _check_size(input_size)
    for name, value, low in (('warmup', warmup, 0), ('repeats', repeats, 1), ('save_every', save_every, 1),
                             ('passes', passes, 1), ('calibration_random', calibration_random, 0),
                             ('calibration_rounds', calibration_rounds, 3)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f'{name} is {value!r}; expected an integer >= {low}')
    path = Path(output)
    plan = table_plan(space, size)
    parts = OrderedDict(plan.parts)
    if detector is not None:
        key = f'{detector}_neck_head|{size[0]}x{size[1]}'
        parts[key] = Part(key, 'neck_head', (), (detector,))
    old = load_table_file(path) if path.exists() else None
    if old is not None:
        # NOTE: a table never loses passes: rerunning a 3-pass table with --passes 1 keeps (and checks) 3
        passes = max(passes, int(old.get('measurement', {}).get('passes', 1)))
    data = _header(space, size, runtime, warmup, repeats, passes, detector)
    if old is not None:
        _check_resumable(old, data, path, space, size)
        if 'cpu_isa' not in old.get('machine', {}):  # entries of an unrecorded instruction set: not stamped with ours
            data['machine'].pop('cpu_isa', None)
        data.update(created=old.get('created'), build_time_s=float(old.get('build_time_s', 0.0)),
                    entries=dict(old['entries']))
        if 'calibration' in old and calibrate:
            data['calibration'] = old['calibration']
    entries = data['entries']

    def shuffled(seed: int) -> list[str]:
        keys = list(parts)
        random.Random(seed).shuffle(keys)
        return keys

    # the detector's neck and head (information only) are timed in one pass
    need = {k: 1 if parts[k].kind == 'neck_head' else passes for k in parts}
    todo = [key for p in range(passes) for key in shuffled(p) if _passes_done(entries.get(key)) <= p < need[key]]
    if any(parts[k].kind != 'neck_head' for k in todo):
        data.pop('calibration', None)   # fitted to parts that are about to change
    total = sum(need.values())
    _logger.info('latency table %s: %d parts x %d passes at %dx%d on %s (%d threads), %d timings done, %d to do',
                 path, len(parts), passes, size[0], size[1], runtime.name, runtime.threads, total - len(todo),
                 len(todo))
    path.parent.mkdir(parents=True, exist_ok=True)
    tic, bar = time.perf_counter(), tqdm(total=total, initial=total - len(todo), desc='latency table',
                                         unit='part', disable=not progress)
    try:
        for n, key in enumerate(todo, 1):
            part = parts[key]
            if part.kind == 'neck_head':
                module, inputs = _neck_head(space, detector, size, dict(detector_kwargs or {}))
            else:
                module, inputs = part_module(space, part)
            stats = measure_module(runtime, module, inputs, warmup, repeats)
            done = _pass_medians(entries.get(key)) + [round(stats.p50, 5)]
            entries[key] = {'part': part.kind, 'ms': round(float(np.median(done)), 5), 'passes': done,
                            'p90': round(stats.p90, 5), 'mean': round(stats.mean, 5), 'std': round(stats.std, 5),
                            'n': stats.n}
            bar.update(1)
            if n % save_every == 0:
                _write(path, data | {'build_time_s': round(data['build_time_s'] + time.perf_counter() - tic, 1)})
    finally:
        bar.close()
        data['build_time_s'] = round(data['build_time_s'] + time.perf_counter() - tic, 1)
        data['complete'] = all(_passes_done(entries.get(k)) >= need[k] for k in parts)
        _write(path, data)
    _logger.info('latency table %s: %d parts, %.0f s of measuring in all', path, len(entries), data['build_time_s'])
    if calibrate and (recalibrate or 'calibration' not in data):
        try:
            data['calibration'] = calibrate_table(space, size, runtime, data, calibration_random, calibration_rounds)
        except (ValueError, RuntimeError, MemoryError) as e:
            # NOTE: the parts are measured and written; a runtime that times parts but not a whole backbone (or
            # runs out of memory holding them) leaves the table uncalibrated, usable as the plain sum
            _logger.warning('latency table %s left uncalibrated: the whole backbones could not be timed (%s); '
                            'the search uses the plain sum of parts (--no-calibration skips this step)', path,
                            str(e).splitlines()[0] if str(e) else type(e).__name__)
        else:
            _write(path, data)
    return data


def _pass_medians(entry: dict[str, Any] | None) -> list[float]:
    """A part's per-pass medians (a table built before passes holds one, its `ms`)."""
    if entry is None:
        return []
    return list(entry.get('passes', [entry['ms']]))


def _passes_done(entry: dict[str, Any] | None) -> int:
    return len(_pass_medians(entry))


# ---------------------------------------------------------------------------------------------- calibration
def calibration_paths(space: SearchSpace, random_count: int = 6, seed: int = 1) -> list[tuple[str, ArchPath]]:
    """The whole backbones a table is calibrated on, named: the seed, the seed at each width multiplier of the
    space (`SearchSpace.width_seed_paths`, the search verification's baselines) and `random_count` uniform draws
    of every slot's op and every stage's width; duplicates dropped.

    Args:
        space: The search space.
        random_count: Random archs.
        seed: Seed of the draws.
    """
    named = [('seed', space.seed_path())] + [(f'seed_width{k}', p) for k, p in enumerate(space.width_seed_paths())]
    rng = random.Random(seed)
    named += [(f'random{i}', space.random_path(rng)) for i in range(random_count)]
    seen: set[ArchPath] = set()
    return [(name, path) for name, path in named if not (path in seen or seen.add(path))]


def _fit(sums: np.ndarray, measured: np.ndarray, fixed: float) -> tuple[float, float, str]:
    """(scale, offset, how) with `measured ~ scale * sums + offset`, least squares in relative error.

    NOTE: relative, so every backbone counts alike whatever its size (the search compares ratios). The affine fit
    needs at least 4 backbones whose sums spread (with 2 or 3 it would pass through their noise) and must keep the
    fixed parts' cost (in every network) between half and twice the plain one; else the scale alone is fitted
    (`how` 'scale': the least-squares scale in relative error, offset 0).
    """
    if len(sums) >= 4 and np.ptp(sums) > 1e-3 * float(sums.max()):
        a = np.stack([sums / measured, 1.0 / measured], axis=1)
        (scale, offset), *_ = np.linalg.lstsq(a, np.ones_like(measured), rcond=None)
        if scale > 0 and 0.5 * fixed <= scale * fixed + offset <= 2.0 * fixed:
            return float(scale), float(offset), 'affine'
    r = sums / measured
    return float(r.sum() / (r * r).sum()), 0.0, 'scale'


def calibrate_table(space: SearchSpace, input_size: Sequence[int], runtime: Runtime, data: dict[str, Any],
                    random_count: int = 6, rounds: int = 30, warmup: int = 3, seed: int = 1) -> dict[str, Any]:
    """Fit a finished table's sums to whole backbones timed on `runtime`: returns the table's `calibration`.

    The backbones of `calibration_paths` (the module the table predicts, `arch_module`) are timed interleaved,
    round after round, so load changes hit them alike; `measured median = scale * sum + offset` is fitted in
    relative error (`_fit`).

    Args:
        space: The table's search space.
        input_size: Its (H, W).
        runtime: The runtime it was measured on (same threads).
        data: The table (complete).
        random_count: Random archs among the backbones.
        rounds: Timed rounds.
        warmup: Untimed rounds first.
        seed: Seed of the random archs.

    Returns:
        `scale`, `offset_ms`, `fit` ('affine' or 'scale'), the settings, `max_abs_error_pct` of the plain sum and of
        the calibrated prediction over the backbones, and per backbone its name, arch string, sum, measured and
        calibrated ms.
    """
    size = _check_size(input_size)
    raw = table_costs(space, size, data, f'latency table of {runtime.name}', calibrated=False)
    named = calibration_paths(space, random_count, seed)
    archs = [space.derive(path) for _, path in named]
    image = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(0))
    tic = time.perf_counter()
    _logger.info('calibrating the latency table on %d whole backbones, %d interleaved rounds', len(named), rounds)
    with runtime.active():
        runners = [runtime.prepare(arch_module(arch), [image]) for arch in archs]
        times = time_interleaved([r.fn for r in runners], warmup=warmup, runs=rounds, sync=runners[-1].sync)
    sums = np.array([raw.of_path(path) for _, path in named])
    measured = np.array([1000.0 * float(np.median(t)) for t in times])
    scale, offset, how = _fit(sums, measured, raw.constant)
    calibrated = scale * sums + offset
    err = lambda pred: round(float(np.abs(100 * (pred - measured) / measured).max()), 2)  # noqa: E731
    out = {'scale': round(scale, 6), 'offset_ms': round(offset, 5), 'fit': how, 'rounds': rounds, 'warmup': warmup,
           'seed': seed, 'created': _now(), 'time_s': round(time.perf_counter() - tic, 1),
           'loadavg_1m': round(os.getloadavg()[0], 2),
           'max_abs_error_pct': {'sum': err(sums), 'calibrated': err(calibrated)},
           'archs': [{'name': name, 'arch': arch.to_fna_string(), 'sum_ms': round(float(s_), 4),
                      'measured_ms': round(float(m), 4), 'calibrated_ms': round(float(c), 4)}
                     for (name, _), arch, s_, m, c in zip(named, archs, sums, measured, calibrated)]}
    _logger.info('latency table calibration: measured = %.4f * sum %+.3f ms (%s); largest error over %d backbones '
                 '%.1f %% -> %.1f %%', scale, offset, how, len(named), out['max_abs_error_pct']['sum'],
                 out['max_abs_error_pct']['calibrated'])
    return out


# ---------------------------------------------------------------------------------------------- the objective
def latency_table(space: SearchSpace, input_size: Sequence[int], table: str | os.PathLike,
                  runtime: str | None = None, calibrated: bool = True) -> CostTable:
    """The latency `CostTable` (ms) of `space` at `input_size` from a table file, checked against both.

    Every part is its median minus the runtime's per-call overhead and minus the layout conversion of its
    input (`_boundary_ms`; at least 0); the stem and fixed stages keep theirs, so the overhead and the
    conversions at the network's input and output are counted once, as a whole network pays them. A calibrated
    table (`calibrate_table`) scales every part by its `scale` and adds its `offset_ms` to the fixed parts.

    Args:
        space: The search space.
        input_size: The (H, W) the table must be measured at.
        table: The table file.
        runtime: The runtime it must be measured on (None: any).
        calibrated: Apply the table's calibration when it has one (False: the plain sum of parts).
    """
    data = load_table_file(table)
    where = f'latency table {str(table)!r}'
    check_table(data, space, input_size, runtime, where=where)
    return table_costs(space, input_size, data, where, calibrated)


def table_costs(space: SearchSpace, input_size: Sequence[int], data: dict[str, Any], where: str = 'latency table',
                calibrated: bool = True) -> CostTable:
    """The `CostTable` (ms) of a loaded table (`load_table_file`; checked against the space with `check_table`):
    what `latency_table` returns for its file.

    Args:
        space: The search space.
        input_size: The (H, W) it was measured at.
        data: The table.
        where: How to name the table in messages.
        calibrated: Apply the table's calibration when it has one (False: the plain sum of parts).

    Raises:
        ValueError: A part missing or short of the table's passes, in one line.
    """
    plan = table_plan(space, input_size)
    entries = data['entries']
    missing = [k for k in plan.cost_keys if k not in entries]
    if missing:
        raise ValueError(f'{where} is incomplete ({len(plan.cost_keys) - len(missing)} of {len(plan.cost_keys)} '
                         'parts measured); expected a finished table (rerun fna-latency-table, it resumes)')
    passes = int(data.get('measurement', {}).get('passes', 1))
    short = sum(_passes_done(entries[k]) < passes for k in plan.cost_keys)
    if short:
        raise ValueError(f'{where} is incomplete ({short} of {len(plan.cost_keys)} parts have fewer than its '
                         f'{passes} passes); expected a finished table (rerun fna-latency-table, it resumes)')
    cal = data.get('calibration') if calibrated else None
    scale, offset = (float(cal['scale']), float(cal['offset_ms'])) if cal else (1.0, 0.0)

    def ms(key: str | None) -> float | None:
        return None if key is None else scale * part_ms(entries, plan, key)

    head = None if plan.head is None else map_nested(ms, plan.head)
    return CostTable.from_lists(ms(plan.stem) + offset, map_nested(ms, plan.first), map_nested(ms, plan.rest), head,
                                'ms')


def part_ms(entries: dict[str, Any], plan: TablePlan, key: str) -> float:
    """What a part adds to a whole network (ms): the stem (with the fixed stages) as timed; any other part
    its median minus the per-call overhead and minus the layout conversion at its input (at least 0).

    Args:
        entries: Timings by key (`{'ms': ...}` each), with the overhead and the probes.
        plan: The table plan the keys come from.
        key: The part.
    """
    part = plan.parts[key]
    if part.kind == 'stem':
        return float(entries[key]['ms'])
    return max(float(entries[key]['ms']) - float(entries['overhead']['ms']) - _boundary_ms(entries, part.shapes[0]),
               0.0)


def _boundary_ms(entries: dict[str, Any], shape: tuple[int, ...]) -> float:
    """What a part timed alone pays at its input beyond what a whole network pays there (ms, >= 0).

    Timed alone, a part converts its input into the runtime's internal layout (onnxruntime's blocked NCHWc)
    and its output back; inside a network the tensor between two parts stays in that layout. Probe `n` is n
    chained 1x1 conv + BN + ReLU6 at the shape: `2 * T(probe1) - T(probe2)` is the overhead plus one
    output and one input conversion of the tensor, which every tensor between two parts costs the sum of
    parts once too often; it is taken off the part that consumes the tensor.
    """
    one, two = entries[_probe_key(shape, 1)]['ms'], entries[_probe_key(shape, 2)]['ms']
    return max(2 * float(one) - float(two) - float(entries['overhead']['ms']), 0.0)


def objective_latency_table(space: SearchSpace, cfg: dict[str, Any]) -> CostTable | None:
    """The latency table a search objective config names (`search.objective.table`), checked; None without one.

    Args:
        space: The search space.
        cfg: The `search.objective` section.
    """
    if not cfg.get('table'):
        if cfg.get('type') == 'latency':
            raise ValueError('search objective type latency needs search.objective.table, a latency table file; '
                             'expected one built with fna-latency-table --config <this config> '
                             '--runtime onnxruntime')
        return None
    return latency_table(space, cfg['input_size'], cfg['table'], cfg.get('runtime'))


def predicted_latency_ms(space: SearchSpace, cfg: dict[str, Any], path: ArchPath,
                         objective: CostObjective | None = None) -> float | None:
    """The table's latency (ms) of a path: from the latency objective itself, or from `search.objective.table`
    when another objective is searched with a table at hand; None when there is no table.

    Args:
        space: The search space.
        cfg: The `search.objective` section.
        path: The path (e.g. the derived one).
        objective: The search's objective (its table is used when it is the latency one).
    """
    if objective is not None and cfg.get('type') == 'latency':
        return objective.table.of_path(path)
    table = objective_latency_table(space, cfg)
    return None if table is None else table.of_path(path)


OBJECTIVES['latency'] = (objective_latency_table, 1.0, 'ms')
