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
full table takes 3-10 minutes on 2 shared CPU cores with onnxruntime.

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
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

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
from .cost import OBJECTIVES, Cell, CostObjective, CostTable, map_nested, space_cells
from .latency_runtime import Runtime, measure_module
from .space import ArchPath, SearchSpace

__all__ = ['TABLE_FORMAT', 'Part', 'TablePlan', 'table_plan', 'check_space_buildable', 'space_fingerprint',
           'build_latency_table', 'load_table_file', 'check_table', 'latency_table', 'objective_latency_table',
           'predicted_latency_ms', 'arch_module', 'part_module', 'part_ms']

_logger = logging.getLogger(__name__)

TABLE_FORMAT = 'fna_zoo.latency_table'
TABLE_VERSION = 1
_DOC = ('Latency lookup table of a search space (fna_zoo.nas.latency). entries: key -> median (ms, "ms") and '
        'spread of `measurement.repeats` timed runs of that part alone on `runtime`. Keys: '
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
    `input_size` [H, W], `batch`, `space` (`space_fingerprint`), `measurement` (warm-up, repeats, statistic,
    unit), `detector`, `created` / `updated`, `build_time_s`, `complete`, and `entries`: key -> {part,
    ms (median), p90, mean, std, n}.

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


def _header(space: SearchSpace, size: tuple[int, int], runtime: Runtime, warmup: int, repeats: int,
            detector: str | None) -> dict[str, Any]:
    return {
        'format': TABLE_FORMAT, 'format_version': TABLE_VERSION, 'doc': _DOC,
        'runtime': runtime.describe(), 'machine': machine_info(runtime.threads), 'input_size': list(size), 'batch': 1,
        'space': space_fingerprint(space),
        'measurement': {'warmup': warmup, 'repeats': repeats, 'statistic': 'median', 'unit': 'ms',
                        'isolation': 'each part alone, one session per part, inputs/outputs bound once'},
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
    for key in ('cpu_model', 'gpu'):
        if old.get('machine', {}).get(key) != new['machine'][key]:
            raise ValueError(f"{where} was measured on another machine ({key} {old['machine'].get(key)!r}, here "
                             f"{new['machine'][key]!r}); expected another --output for this machine")


def build_latency_table(space: SearchSpace, input_size: Sequence[int], runtime: Runtime, output: str | os.PathLike,
                        warmup: int = 2, repeats: int = 10, save_every: int = 25, progress: bool = True,
                        detector: str | None = None, detector_kwargs: dict[str, Any] | None = None
                        ) -> dict[str, Any]:
    """Time every part of `space` at `input_size` on `runtime` into the JSON table `output`; returns it.

    Resumable: an existing `output` made for the same space, input size, runtime settings and machine keeps
    its entries and only the missing ones are timed. The file is rewritten atomically every `save_every`
    new entries and when the build stops (finished, interrupted or failed).

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
    """
    size = _check_size(input_size)
    for name, value, low in (('warmup', warmup, 0), ('repeats', repeats, 1), ('save_every', save_every, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f'{name} is {value!r}; expected an integer >= {low}')
    path = Path(output)
    plan = table_plan(space, size)
    parts = OrderedDict(plan.parts)
    if detector is not None:
        key = f'{detector}_neck_head|{size[0]}x{size[1]}'
        parts[key] = Part(key, 'neck_head', (), (detector,))
    data = _header(space, size, runtime, warmup, repeats, detector)
    if path.exists():
        old = load_table_file(path)
        _check_resumable(old, data, path, space, size)
        data.update(created=old.get('created'), build_time_s=float(old.get('build_time_s', 0.0)),
                    entries=dict(old['entries']))
    entries = data['entries']
    todo = [k for k in parts if k not in entries]
    _logger.info('latency table %s: %d parts at %dx%d on %s (%d threads), %d already measured, %d to measure',
                 path, len(parts), size[0], size[1], runtime.name, runtime.threads, len(parts) - len(todo), len(todo))
    path.parent.mkdir(parents=True, exist_ok=True)
    tic, bar = time.perf_counter(), tqdm(total=len(parts), initial=len(parts) - len(todo), desc='latency table',
                                         unit='part', disable=not progress)
    try:
        for n, key in enumerate(todo, 1):
            part = parts[key]
            if part.kind == 'neck_head':
                module, inputs = _neck_head(space, detector, size, dict(detector_kwargs or {}))
            else:
                module, inputs = part_module(space, part)
            stats = measure_module(runtime, module, inputs, warmup, repeats)
            entries[key] = {'part': part.kind, 'ms': round(stats.p50, 5), 'p90': round(stats.p90, 5),
                            'mean': round(stats.mean, 5), 'std': round(stats.std, 5), 'n': stats.n}
            bar.update(1)
            if n % save_every == 0:
                _write(path, data | {'build_time_s': round(data['build_time_s'] + time.perf_counter() - tic, 1)})
    finally:
        bar.close()
        data['build_time_s'] = round(data['build_time_s'] + time.perf_counter() - tic, 1)
        data['complete'] = all(k in entries for k in parts)
        _write(path, data)
    _logger.info('latency table %s: %d parts, %.0f s of measuring in all', path, len(entries), data['build_time_s'])
    return data


# ---------------------------------------------------------------------------------------------- the objective
def latency_table(space: SearchSpace, input_size: Sequence[int], table: str | os.PathLike,
                  runtime: str | None = None) -> CostTable:
    """The latency `CostTable` (ms) of `space` at `input_size` from a table file, checked against both.

    Every part is its median minus the runtime's per-call overhead and minus the layout conversion of its
    input (`_boundary_ms`; at least 0); the stem and fixed stages keep theirs, so the overhead and the
    conversions at the network's input and output are counted once, as a whole network pays them.

    Args:
        space: The search space.
        input_size: The (H, W) the table must be measured at.
        table: The table file.
        runtime: The runtime it must be measured on (None: any).
    """
    data = load_table_file(table)
    where = f'latency table {str(table)!r}'
    check_table(data, space, input_size, runtime, where=where)
    plan = table_plan(space, input_size)
    entries = data['entries']
    missing = [k for k in plan.cost_keys if k not in entries]
    if missing:
        raise ValueError(f'{where} is incomplete ({len(plan.cost_keys) - len(missing)} of {len(plan.cost_keys)} '
                         'parts measured); expected a finished table (rerun fna-latency-table, it resumes)')

    def ms(key: str | None) -> float | None:
        return None if key is None else part_ms(entries, plan, key)

    head = None if plan.head is None else map_nested(ms, plan.head)
    return CostTable.from_lists(ms(plan.stem), map_nested(ms, plan.first), map_nested(ms, plan.rest), head, 'ms')


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
