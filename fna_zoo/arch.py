"""Architecture descriptions for FNA backbones: one `Arch` type, many spellings.

An `Arch` is the data a searched (or hand-designed) MobileNetV2-family backbone is made of: a stem width,
a list of stages (output channels, stride, one op per layer slot) and an optional 1x1 head conv. It
round-trips to:

* JSON / YAML (`Arch.to_json`, `Arch.from_json`, `Arch.to_yaml`, `Arch.from_yaml`, `Arch.save`, `Arch.load`);
* FNA `net_config` strings, `[[32, 16], ['k3_e1'], 1]|[[16, 24], ['k3_e6', 'skip'], 2]|...`
  (`Arch.from_fna_string`, `Arch.to_fna_string`), as written by the FNA search code;
* timm EfficientNet arch_def lists, `[['ds_r1_k3_s1_c16'], ['ir_r1_k7_s2_e6_c24', ...], ...]`
  (`Arch.to_timm_arch_def`, `Arch.from_timm_arch_def`).

Ops are `k{K}_e{E}` (inverted residual with a KxK depthwise conv and expansion E; `e1` is the
depthwise-separable block without the expansion conv) and `skip` (the layer is dropped). As in FNA, skips
may appear anywhere in a stage of an FNA string and are moved to the end, so a stage's depth is its number
of non-skip ops and the op list also records how many layer slots the search space had.

Papers:
* FNA: `Fast Neural Network Adaptation via Parameter Remapping and Architecture Search`, Fang et al.,
  ICLR 2020 - https://arxiv.org/abs/2001.02525
* FNA++: Fang et al., TPAMI - https://arxiv.org/abs/2006.12986
* `Neural Architecture Adaptation for Object Detection by Searching Channel Dimensions and Mapping
  Pre-trained Parameters`, Jung et al., ICPR 2022 - https://arxiv.org/abs/2206.08509
"""
from __future__ import annotations

import ast
import json
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F
import yaml

from .checks import check_input_file
from .fileio import atomic_write_text

__all__ = ['Arch', 'Op', 'Stage', 'SKIP', 'ACTS', 'PAD_TYPES',
           'is_arch_spec', 'load_arch', 'check_arch', 'get_arch', 'list_archs',
           'atomic_write_text', 'se_reduce_chs', 'STEM_STRIDE', 'OUTPUT_STRIDE']

SKIP = 'skip'
HEAD_OP = 'conv_2d_1x1'  # FNA / code-Jung spelling of the final 1x1 conv stage (e.g. 320 -> 1280)
_OP_RE = re.compile(r'^k(\d+)_e(\d+)$')
_STAGE_KEYS = ('out_chs', 'stride', 'ops')
_ARCH_KEYS = ('stem_chs', 'stages', 'head_chs', 'seed', 'act', 'se_ratio', 'pad_type', 'bn_eps')
# NOTE: the one activation table: `Arch.act` names, as timm's `get_act_layer` spells them ('silu' is
# EfficientNet's swish), and the function each is; the super network applies these, the built timm model the
# layers `get_act_layer` makes of the same names (they compute the same).
ACTS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {'relu6': F.relu6, 'relu': F.relu, 'silu': F.silu}
DEFAULT_ACT = 'relu6'
# NOTE: conv padding, timm's `pad_type`: '' is PyTorch's symmetric k // 2, 'same' TensorFlow's "SAME" (at stride 2
# the extra pixel goes right and bottom; timm's `Conv2dSame`), which the TF-trained seeds (EfficientNet-Lite) need
PAD_TYPES = ('', 'same')
TORCH_BN_EPS = 1e-5  # BatchNorm2d's default eps; an arch's `bn_eps` None means it
STEM_STRIDE = 2  # the 3x3 stem conv
# NOTE: the detectors take the stride 8/16/32 stage ends (RetinaNet's FPN; SSDLite taps the 16 -> 32 stage), so a
# buildable arch reaches exactly stride 32: the stem's 2, then four stride-2 stages (strides 4, 8, 16, 32 on the way)
OUTPUT_STRIDE = 32


@dataclass(frozen=True)
class Op:
    """One non-skip layer: a KxK depthwise inverted residual with expansion E (E == 1: no expansion conv).

    Args:
        kernel: Depthwise kernel size (odd).
        expansion: Expansion ratio of the first 1x1 conv; 1 means the depthwise-separable block.
    """

    kernel: int
    expansion: int

    @classmethod
    def parse(cls, name: str) -> 'Op':
        """Parse an op name such as 'k5_e6'.

        Args:
            name: The op name.
        """
        m = _OP_RE.match(str(name))
        if not m:
            raise ValueError(f"unknown op {name!r}; expected 'k<kernel>_e<expansion>' (e.g. 'k3_e6') or 'skip'")
        kernel, expansion = int(m.group(1)), int(m.group(2))
        if kernel < 1 or kernel % 2 == 0:
            raise ValueError(f"op {name!r} has kernel {kernel}; expected an odd kernel size >= 1")
        if expansion < 1:
            raise ValueError(f"op {name!r} has expansion {expansion}; expected an integer >= 1")
        return cls(kernel, expansion)

    @property
    def name(self) -> str:
        return f'k{self.kernel}_e{self.expansion}'

    @property
    def block_type(self) -> str:
        """timm block type: 'ds' (depthwise-separable) for e1, else 'ir' (inverted residual)."""
        return 'ds' if self.expansion == 1 else 'ir'


# NOTE: a bound on channel widths, far above any detection backbone (MobileNetV2: 1280 at most), so a typo such
# as 10**9 fails here instead of attempting a multi-terabyte allocation
MAX_CHANNELS = 8192


def _check_positive_int(value: Any, what: str) -> int:
    """A channel width: a positive integer up to `MAX_CHANNELS` (ValueError naming `what` otherwise)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_CHANNELS:
        raise ValueError(f'{what} is {value!r}; expected a positive integer up to {MAX_CHANNELS}')
    return value


@dataclass(frozen=True)
class Stage:
    """A stage: layers sharing one output width; the first layer carries the stride.

    Args:
        out_chs: Output channels of every layer in the stage.
        stride: Stride of the first layer (1 or 2).
        ops: One op name per layer slot; 'skip' slots are moved to the end (they drop the layer).
    """

    out_chs: int
    stride: int
    ops: tuple[str, ...]

    def __post_init__(self) -> None:
        _check_positive_int(self.out_chs, 'stage out_chs')
        if self.stride not in (1, 2):
            raise ValueError(f'stage stride is {self.stride!r}; expected 1 or 2')
        ops = tuple(str(o) for o in self.ops)
        if not ops:
            raise ValueError('stage has no ops; expected at least one op')
        for o in ops:
            if o != SKIP:
                Op.parse(o)
        if all(o == SKIP for o in ops):
            raise ValueError(f'stage ops {list(ops)} are all skip; the first layer of a stage cannot be skipped')
        # NOTE: FNA moves skips to the end of a stage (tools/utils.py:sort_net_config), so 'skip' means
        # "drop this layer" whatever its slot; the canonical order keeps the non-skip ops in order.
        canonical = tuple(o for o in ops if o != SKIP) + tuple(o for o in ops if o == SKIP)
        object.__setattr__(self, 'ops', canonical)

    @property
    def layers(self) -> tuple[Op, ...]:
        """The non-skip layers, in order."""
        return tuple(Op.parse(o) for o in self.ops if o != SKIP)

    @property
    def depth(self) -> int:
        return sum(o != SKIP for o in self.ops)

    def to_dict(self) -> dict[str, Any]:
        return {'out_chs': self.out_chs, 'stride': self.stride, 'ops': list(self.ops)}

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = 'stage') -> 'Stage':
        if not isinstance(d, dict):
            raise ValueError(f'{where} is {d!r}; expected a mapping with keys {", ".join(_STAGE_KEYS)}')
        unknown = sorted(set(d) - set(_STAGE_KEYS))
        missing = [k for k in _STAGE_KEYS if k not in d]
        if unknown or missing:
            raise ValueError(
                f'{where} has unknown keys {unknown} / missing keys {missing}; expected {", ".join(_STAGE_KEYS)}')
        if isinstance(d['ops'], str) or not isinstance(d['ops'], Sequence):
            raise ValueError(f"{where} ops is {d['ops']!r}; expected a list of op names")
        try:
            return cls(d['out_chs'], d['stride'], tuple(d['ops']))
        except ValueError as e:
            raise ValueError(f'{where}: {e}') from None


@dataclass(frozen=True)
class Arch:
    """A MobileNetV2 / EfficientNet-family backbone: stem conv, stages of inverted residual layers (with
    squeeze-excitation when `se_ratio` is set), optional 1x1 head conv; one activation throughout.

    Args:
        stem_chs: Output channels of the 3x3 stride-2 stem conv.
        stages: The stages, in order; stage i's input width is stage i-1's output (the stem's for i == 0).
        head_chs: Output channels of the final 1x1 conv (1280 for MobileNetV2), or None for no head conv.
        seed: Registered name of the seed network whose weights are remapped into this arch (None: the
            MobileNetV2 seed, `mobilenetv2_100`, as for arch files written before the field existed).
        act: Activation of every conv + BN (and of the SE reduce conv): 'relu6' (MobileNetV2), 'silu'
            (EfficientNet's swish) or 'relu'.
        se_ratio: Squeeze-excitation in every layer, timm's ratio relative to the layer's *input* width
            (EfficientNet: 0.25; see `se_reduce_chs`), or None for no SE (MobileNetV2).
        pad_type: Conv padding, timm's `pad_type`: '' (PyTorch's symmetric k // 2) or 'same' (TensorFlow "SAME",
            asymmetric at stride 2: EfficientNet-Lite's TF-trained weights need it).
        bn_eps: BatchNorm eps of every BN (TensorFlow-trained seeds: 1e-3), or None for PyTorch's 1e-5 (an
            explicit 1e-5 is stored as None, so equal networks compare equal).
    """

    stem_chs: int
    stages: tuple[Stage, ...]
    head_chs: int | None = None
    seed: str | None = None
    act: str = DEFAULT_ACT
    se_ratio: float | None = None
    pad_type: str = ''
    bn_eps: float | None = None

    def __post_init__(self) -> None:
        _check_positive_int(self.stem_chs, 'arch stem_chs')
        if self.act not in ACTS:
            raise ValueError(f'arch act is {self.act!r}; expected one of {", ".join(ACTS)}')
        if self.se_ratio is not None:
            ok = isinstance(self.se_ratio, (int, float)) and not isinstance(self.se_ratio, bool)
            if not ok or not 0 < self.se_ratio <= 1:
                raise ValueError(f'arch se_ratio is {self.se_ratio!r}; expected a number in (0, 1] (EfficientNet: '
                                 '0.25) or null for no squeeze-excitation')
            object.__setattr__(self, 'se_ratio', float(self.se_ratio))
        if self.pad_type not in PAD_TYPES:
            raise ValueError(f'arch pad_type is {self.pad_type!r}; expected \'\' (symmetric, PyTorch) or \'same\' '
                             '(TensorFlow "SAME", EfficientNet-Lite)')
        if self.bn_eps is not None:
            ok = isinstance(self.bn_eps, (int, float)) and not isinstance(self.bn_eps, bool)
            if not ok or not 0 < self.bn_eps < 1:
                raise ValueError(f'arch bn_eps is {self.bn_eps!r}; expected a number in (0, 1) (TensorFlow-trained '
                                 'seeds: 0.001) or null for PyTorch\'s 1e-5')
            object.__setattr__(self, 'bn_eps', None if float(self.bn_eps) == TORCH_BN_EPS else float(self.bn_eps))
        if self.seed is not None and (not isinstance(self.seed, str) or not self.seed.strip()):
            raise ValueError(f'arch seed is {self.seed!r}; expected a registered seed name such as mobilenetv2_100')
        if self.head_chs is not None:
            _check_positive_int(self.head_chs, 'arch head_chs')
        stages = tuple(self.stages)
        if not stages:
            raise ValueError('arch has no stages; expected at least one')
        for i, s in enumerate(stages):
            if not isinstance(s, Stage):
                raise ValueError(f'arch stage {i} is {s!r}; expected a Stage')
        object.__setattr__(self, 'stages', stages)

    # ---------------------------------------------------------------- structure
    def stage_in_chs(self, index: int) -> int:
        """Input channels of stage `index`."""
        return self.stem_chs if index == 0 else self.stages[index - 1].out_chs

    def iter_layers(self) -> Iterator[tuple[int, int, Op, int, int, int]]:
        """Yield (stage index, layer index, op, in_chs, out_chs, stride) for every non-skip layer."""
        for si, stage in enumerate(self.stages):
            in_chs = self.stage_in_chs(si)
            for li, op in enumerate(stage.layers):
                yield si, li, op, in_chs if li == 0 else stage.out_chs, stage.out_chs, stage.stride if li == 0 else 1

    def se_chs(self, op: Op, in_chs: int) -> int:
        """SE reduce width of a layer with `op` and input width `in_chs` (0 when the arch has no SE).

        Args:
            op: The layer's op.
            in_chs: The layer's input channels.
        """
        return 0 if self.se_ratio is None else se_reduce_chs(self.se_ratio, in_chs, op.expansion)

    @property
    def depths(self) -> tuple[int, ...]:
        """Number of non-skip layers per stage."""
        return tuple(s.depth for s in self.stages)

    @property
    def out_chs(self) -> int:
        """Channels of the last stage (before the head conv)."""
        return self.stages[-1].out_chs

    @property
    def output_stride(self) -> int:
        """Stride of the last stage's output relative to the input image (stem included)."""
        stride = STEM_STRIDE
        for s in self.stages:
            stride *= s.stride
        return stride

    def replace(self, **changes: Any) -> 'Arch':
        """Return a copy with some fields replaced (e.g. `arch.replace(head_chs=None)`)."""
        d = {'stem_chs': self.stem_chs, 'stages': self.stages, 'head_chs': self.head_chs, 'seed': self.seed,
             'act': self.act, 'se_ratio': self.se_ratio, 'pad_type': self.pad_type, 'bn_eps': self.bn_eps}
        d.update(changes)
        return Arch(**d)

    # ---------------------------------------------------------------- dict / JSON / YAML
    def to_dict(self) -> dict[str, Any]:
        d = {'stem_chs': self.stem_chs, 'stages': [s.to_dict() for s in self.stages], 'head_chs': self.head_chs}
        # NOTE: fields at their MobileNetV2 defaults are left out, so older readers and files stay valid.
        if self.seed is not None:
            d['seed'] = self.seed
        if self.act != DEFAULT_ACT:
            d['act'] = self.act
        if self.se_ratio is not None:
            d['se_ratio'] = self.se_ratio
        if self.pad_type:
            d['pad_type'] = self.pad_type
        if self.bn_eps is not None:
            d['bn_eps'] = self.bn_eps
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> 'Arch':
        """Build from the dict form written by `to_dict` (unknown or missing keys raise ValueError)."""
        if not isinstance(d, dict):
            raise ValueError(f'arch is {type(d).__name__}; expected a mapping with keys {", ".join(_ARCH_KEYS)}')
        if 'arch' in d and set(d) - {'arch'} <= {'name', 'description'}:
            d = d['arch']  # tolerate a wrapping {'arch': {...}} as written by search runs
            if not isinstance(d, dict):
                raise ValueError(f"arch is {d!r}; expected a mapping with keys {', '.join(_ARCH_KEYS)}")
        unknown = sorted(set(d) - set(_ARCH_KEYS))
        if unknown:
            raise ValueError(f'unknown arch keys {unknown}; expected {", ".join(_ARCH_KEYS)}')
        for k in ('stem_chs', 'stages'):
            if k not in d:
                raise ValueError(f'arch is missing key {k!r}; expected {", ".join(_ARCH_KEYS)}')
        if not isinstance(d['stages'], list):
            raise ValueError(f"arch stages is {d['stages']!r}; expected a list of stage mappings")
        stages = tuple(Stage.from_dict(s, f'arch stage {i}') for i, s in enumerate(d['stages']))
        return cls(d['stem_chs'], stages, d.get('head_chs'), d.get('seed'), d.get('act', DEFAULT_ACT),
                   d.get('se_ratio'), d.get('pad_type', ''), d.get('bn_eps'))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str) -> 'Arch':
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f'malformed arch JSON: {e}') from None
        except RecursionError:
            raise ValueError(_TOO_DEEP.format(what='JSON')) from None
        return cls.from_dict(data)

    def to_yaml(self) -> str:
        # flow style for op lists keeps one stage per line, the way FNA net_configs read
        d = self.to_dict()
        lines = [f'stem_chs: {d["stem_chs"]}', 'stages:']
        for s in d['stages']:
            ops = ', '.join(s['ops'])
            lines.append(f'  - {{out_chs: {s["out_chs"]}, stride: {s["stride"]}, ops: [{ops}]}}')
        lines.append(f'head_chs: {"null" if d["head_chs"] is None else d["head_chs"]}')
        for key in ('seed', 'act', 'se_ratio', 'pad_type', 'bn_eps'):
            if key in d:
                # NOTE: through PyYAML, so 1e-05 is written 1.0e-05 (YAML 1.1 reads a float without a dot as text)
                lines.append(f'{key}: {yaml.safe_dump(d[key]).splitlines()[0]}')
        return '\n'.join(lines) + '\n'

    @classmethod
    def from_yaml(cls, text: str) -> 'Arch':
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ValueError(f'malformed arch YAML: {e}') from None
        except RecursionError:
            raise ValueError(_TOO_DEEP.format(what='YAML')) from None
        return cls.from_dict(data)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the arch to `path` (.json, .yaml or .yml) atomically (temp file + rename)."""
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix == '.json':
            text = self.to_json() + '\n'
        elif suffix in ('.yaml', '.yml'):
            text = self.to_yaml()
        else:
            raise ValueError(f"arch file {str(path)!r} has suffix {suffix!r}; expected '.json', '.yaml' or '.yml'")
        atomic_write_text(path, text)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> 'Arch':
        """Read an arch file (.json, .yaml/.yml, or .txt holding an FNA net_config string)."""
        path = check_input_file(path, 'arch file', 'a .yaml/.json/.txt arch file')
        suffix = path.suffix.lower()
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            raise ValueError(f'arch file {str(path)!r} is not text; expected a .json, .yaml or .txt arch file') from None
        try:
            if suffix == '.json':
                return cls.from_json(text)
            if suffix in ('.yaml', '.yml'):
                return cls.from_yaml(text)
            if suffix == '.txt':
                return cls.from_fna_string(text)
        except ValueError as e:
            raise ValueError(f'{path}: {e}') from None
        raise ValueError(f"arch file {str(path)!r} has suffix {suffix!r}; expected '.json', '.yaml', '.yml' or '.txt'")

    # ---------------------------------------------------------------- FNA net_config strings
    @classmethod
    def from_fna_string(cls, text: str, head_chs: int | None = None) -> 'Arch':
        """Parse an FNA `net_config` string: `[[C_in, C_out], [ops...], stride]` stages joined by '|'.

        The stem width is the first stage's C_in. A final `[[C, H], ['conv_2d_1x1'], 1]` stage (as in
        code-Jung's YOLOF configs) sets `head_chs=H`.

        Args:
            text: The net_config string (newlines and surrounding quotes are ignored).
            head_chs: Head conv width when the string has no `conv_2d_1x1` stage.
        """
        parts = [p.strip() for p in str(text).strip().strip('\'"').split('|')]
        if not parts or not parts[0]:
            raise ValueError("empty FNA net_config string; expected stages like \"[[32, 16], ['k3_e1'], 1]|...\"")
        stages: list[Stage] = []
        stem_chs = None
        prev_out = None
        for i, part in enumerate(parts):
            where = f'FNA net_config stage {i} {part!r}'
            try:
                item = ast.literal_eval(part)
            except (ValueError, SyntaxError, RecursionError, MemoryError):  # NOTE: deep nesting: one of the last two
                item = None
            ok = (isinstance(item, (list, tuple)) and len(item) == 3 and isinstance(item[0], (list, tuple))
                  and len(item[0]) == 2 and isinstance(item[1], (list, tuple)) and all(isinstance(o, str) for o in item[1]))
            if not ok:
                raise ValueError(f"malformed {where}; expected [[C_in, C_out], ['op', ...], stride]")
            (c_in, c_out), ops, stride = item
            if prev_out is not None and c_in != prev_out:
                raise ValueError(f'{where} has C_in {c_in}; expected {prev_out} (the previous stage C_out)')
            if stem_chs is None:
                stem_chs = c_in
            if list(ops) == [HEAD_OP]:
                if i != len(parts) - 1:
                    raise ValueError(f"{where}: '{HEAD_OP}' is only allowed as the last stage")
                head_chs = _check_positive_int(c_out, f'{where} head width')
                break
            try:
                stages.append(Stage(c_out, stride, tuple(ops)))
            except ValueError as e:
                raise ValueError(f'{where}: {e}') from None
            prev_out = c_out
        return cls(_check_positive_int(stem_chs, 'FNA net_config stem width'), tuple(stages), head_chs)

    def to_fna_string(self, multiline: bool = False) -> str:
        """Format as an FNA `net_config` string (a `conv_2d_1x1` stage is appended when there is a head conv).

        NOTE: FNA strings describe layers and widths only; an arch's seed, activation, SE ratio, padding and BN eps
        live in its YAML/JSON form (an FNA string read back is a MobileNetV2-family arch).

        Args:
            multiline: Put each stage on its own line, as FNA's retrain configs do.
        """
        parts = [repr([[self.stage_in_chs(i), s.out_chs], list(s.ops), s.stride]) for i, s in enumerate(self.stages)]
        if self.head_chs is not None:
            parts.append(repr([[self.out_chs, self.head_chs], [HEAD_OP], 1]))
        return ('|\n' if multiline else '|').join(parts)

    # ---------------------------------------------------------------- timm arch_def
    def to_timm_arch_def(self) -> list[list[str]]:
        """timm EfficientNet arch_def: one list per stage, one block string per layer (skips dropped)."""
        arch_def = []
        for stage in self.stages:
            blocks = []
            for li, op in enumerate(stage.layers):
                stride = stage.stride if li == 0 else 1
                exp = '' if op.block_type == 'ds' else f'_e{op.expansion}'
                se = '' if self.se_ratio is None else f'_se{self.se_ratio!r}'
                blocks.append(f'{op.block_type}_r1_k{op.kernel}_s{stride}{exp}_c{stage.out_chs}{se}')
            arch_def.append(blocks)
        return arch_def

    @classmethod
    def from_timm_arch_def(
            cls,
            arch_def: Sequence[Sequence[str]],
            stem_chs: int = 32,
            head_chs: int | None = None,
            slots: Sequence[int] | None = None,
            act: str = DEFAULT_ACT,
            seed: str | None = None,
            pad_type: str = '',
            bn_eps: float | None = None,
    ) -> 'Arch':
        """Build from a timm arch_def (block types 'ds' and 'ir'; tokens r, k, s, e, c, se).

        timm arch_defs carry no stem/head widths, activation, seed, padding, BN eps or skip slots, so those are
        arguments. An `se` token must be on every block or on none (an `Arch` has one `se_ratio`).

        Args:
            arch_def: One list of block strings per stage, e.g. `[['ir_r2_k3_s2_e6_c24'], ...]`.
            stem_chs: Stem conv width.
            head_chs: Head conv width, or None.
            slots: Layer slots per stage; stages with fewer layers are padded with 'skip'.
            act: Activation ('relu6' for MobileNetV2, 'silu' for EfficientNet).
            seed: Registered seed name to record in the arch.
            pad_type: Conv padding ('' or 'same', timm's `pad_type`).
            bn_eps: BatchNorm eps (None: PyTorch's 1e-5).
        """
        stages = []
        se_ratios: set[float | None] = set()
        for si, blocks in enumerate(arch_def):
            if isinstance(blocks, str):
                raise ValueError(f'timm arch_def stage {si} is the string {blocks!r}; expected a list of block strings')
            ops: list[str] = []
            stride = out_chs = None
            for bi, block in enumerate(blocks):
                b = _decode_timm_block(block)
                if bi > 0 and b['s'] != 1:
                    raise ValueError(f'timm block {block!r} in stage {si} has stride {b["s"]}; '
                                     'only the first block string of a stage may have a stride other than 1')
                if out_chs is not None and b['c'] != out_chs:
                    raise ValueError(f'timm block {block!r} in stage {si} has c{b["c"]}; expected c{out_chs} '
                                     '(one output width per stage)')
                stride = b['s'] if stride is None else stride
                out_chs = b['c']
                se_ratios.add(b.get('se'))
                ops.extend([f'k{b["k"]}_e{b["e"]}'] * b['r'])
            if not ops:
                raise ValueError(f'timm arch_def stage {si} is empty; expected at least one block string')
            if slots is not None:
                if si >= len(slots) or slots[si] < len(ops):
                    raise ValueError(f'slots {list(slots)} has no room for the {len(ops)} layers of stage {si}')
                ops.extend([SKIP] * (slots[si] - len(ops)))
            stages.append(Stage(out_chs, stride, tuple(ops)))
        if len(se_ratios) > 1:
            shown = sorted('none' if r is None else repr(r) for r in se_ratios)
            raise ValueError(f'timm arch_def mixes squeeze-excitation ratios {shown}; expected the same se token on '
                             'every block (or on none)')
        se_ratio = se_ratios.pop() if se_ratios else None
        return cls(stem_chs, tuple(stages), head_chs, seed, act, se_ratio, pad_type, bn_eps)


def se_reduce_chs(se_ratio: float, in_chs: int, expansion: int) -> int:
    """Reduce width of the SE in a layer of input width `in_chs` and expansion `expansion`, as timm builds it.

    NOTE: timm's builder divides the ratio by the expansion (its `se_from_exp=False`) and `SqueezeExcite`
    rounds `mid * ratio` with Python's `round`; the float arithmetic is repeated here term by term so widths
    agree with timm exactly (e.g. 0.25 of a 16-channel input gives 4 for e1, e3 and e6 alike).

    Args:
        se_ratio: The arch's SE ratio (relative to the layer input).
        in_chs: Layer input channels.
        expansion: The op's expansion (1: the depthwise-separable block, SE on its input width).
    """
    return round(in_chs * expansion * (se_ratio / float(expansion)))


def _decode_timm_block(block: str) -> dict[str, Any]:
    """Decode the subset of timm's block grammar an `Arch` can express."""
    tokens = str(block).split('_')
    if tokens[0] not in ('ds', 'ir'):
        raise ValueError(f"timm block {block!r} has block type {tokens[0]!r}; expected 'ds' or 'ir'")
    out: dict[str, Any] = {'r': 1, 'k': 3, 's': 1, 'e': 1}
    for tok in tokens[1:]:
        m = re.match(r'^(?:([rksec])(\d+)|se(\d*\.?\d+))$', tok)
        if not m:
            raise ValueError(f'timm block {block!r} has unsupported token {tok!r}; expected r<n>, k<n>, s<n>, e<n>, '
                             'c<n> or se<ratio>')
        if m.group(3) is not None:
            out['se'] = float(m.group(3)) or None  # NOTE: timm reads se0 as "no SE"
        else:
            out[m.group(1)] = int(m.group(2))
    if 'c' not in out:
        raise ValueError(f'timm block {block!r} has no output channels; expected a c<n> token')
    if tokens[0] == 'ds' and out['e'] != 1:
        raise ValueError(f"timm block {block!r} is 'ds' with expansion {out['e']}; expected e1")
    if tokens[0] == 'ir' and out['e'] == 1:
        # NOTE: a timm 'ir' block with e1 keeps its 1x1 expansion conv, an FNA 'k*_e1' op has none.
        raise ValueError(f"timm block {block!r} is 'ir' with e1; write it as 'ds' (FNA e1 ops have no expansion conv)")
    return out


_ARCH_SUFFIXES = ('.json', '.yaml', '.yml', '.txt')
# NOTE: json / PyYAML parse nested lists recursively, so a file of thousands of nested brackets raises RecursionError
_TOO_DEEP = ('arch {what} is nested too deeply to parse; expected a mapping with stem_chs and a list of stage '
             'mappings (out_chs, stride, ops)')


_REGISTRY = Path(__file__).parent / 'archs'


def list_archs() -> list[str]:
    """Names of the registered architectures (the YAML data files of `fna_zoo/archs/`)."""
    return sorted(p.stem for p in _REGISTRY.glob('*.yaml'))


@lru_cache(maxsize=None)
def get_arch(name: str) -> Arch:
    """Return a registered architecture (`Arch` is immutable, so the cached object is safe to share).

    Args:
        name: One of `list_archs()`.
    """
    path = _REGISTRY / f'{name}.yaml'
    if not path.is_file():
        raise ValueError(f'unknown arch {name!r}; expected one of {", ".join(list_archs())}')
    return Arch.load(path)


def is_arch_spec(spec: object) -> bool:
    """Whether `load_arch` reads `spec` as an architecture (an `Arch`, a registered arch name, an FNA
    net_config string or an arch file name), as opposed to, e.g., a timm model name.

    Args:
        spec: The candidate.
    """
    if isinstance(spec, (Arch, Mapping)):
        return True
    text = str(spec).strip()
    return text.startswith('[') or text in list_archs() or Path(text).suffix.lower() in _ARCH_SUFFIXES


def load_arch(spec: 'Arch | Mapping[str, Any] | str | os.PathLike') -> Arch:
    """Resolve an arch from an `Arch`, its dict form (`Arch.to_dict`), a file path, a registered arch/model
    name or an FNA net_config string, and check it can become a backbone (`check_arch`).

    Args:
        spec: e.g. `'fna_retinanet_backbone'`, `'mobilenetv2_100'`, `'runs/search/arch.yaml'`,
            `"[[32, 16], ['k3_e1'], 1]|..."` or `{'stem_chs': 32, 'stages': [...], ...}`.
    """
    return check_arch(_resolve_arch(spec), _spec_name(spec))


def _spec_name(spec: object) -> str:
    """How to name an arch spec in an error: a file or registered name as given, else 'arch'."""
    if isinstance(spec, (Arch, Mapping)):
        return 'arch'
    text = str(spec).strip()
    return 'FNA net_config arch' if text.startswith('[') else f'arch {text!r}'


def _resolve_arch(spec: 'Arch | Mapping[str, Any] | str | os.PathLike') -> Arch:
    """`load_arch` without the validity check."""
    if isinstance(spec, Arch):
        return spec
    if isinstance(spec, Mapping):
        return Arch.from_dict(dict(spec))
    text = str(spec).strip()
    if text.startswith('['):
        return Arch.from_fna_string(text)
    if text in list_archs():
        return get_arch(text)
    if Path(text).suffix or os.sep in text:
        return Arch.load(text)
    raise ValueError(f'unknown arch {text!r}; expected an arch file (.yaml/.json/.txt), an FNA net_config string '
                     f'or one of {", ".join(list_archs())}')


def check_arch(arch: Arch, what: str = 'arch') -> Arch:
    """The validity check of an arch every model builder goes through (`load_arch` calls it): the arch must reach
    output stride `OUTPUT_STRIDE` (32), so the detectors find their stride 8/16/32 feature levels.

    An `Arch` itself may describe any stack of stages (a part of a network, for remapping tests or surgery); this
    is the check for one that is to become a backbone. Returns `arch`.

    Args:
        arch: The architecture.
        what: How to name it in the error (e.g. the file it came from).
    """
    if arch.output_stride != OUTPUT_STRIDE:
        strides = [s.stride for s in arch.stages]
        raise ValueError(f'{what} has output stride {arch.output_stride} (stem {STEM_STRIDE} x stage strides {strides}); '
                         f'expected {OUTPUT_STRIDE}, i.e. four stride-2 stages after the stem, so the detectors find '
                         'their stride 8/16/32 feature levels')
    return arch
