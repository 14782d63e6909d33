"""Parameter remapping: seed (e.g. ImageNet MobileNetV2) weights into any `Arch`, with no retraining.

Implements the three remapping rules of FNA (Fang et al., ICLR 2020 - https://arxiv.org/abs/2001.02525),
FNA++ (https://arxiv.org/abs/2006.12986) and, for widths that grow, Jung et al. (ICPR 2022 -
https://arxiv.org/abs/2206.08509):

* depth: layer `l` of stage `s` copies seed layer `min(l, seed_depth[s] - 1)` of the same stage, so extra
  layers copy the last seed layer of their stage;
* width: the leading channels are kept (the released FNA code), or, with `width='bn_gamma'`, the channels
  with the largest summed |BN gamma| (the FNA paper's Algorithm 1); grown channels are new: their conv
  weights start at zero plus `noise`-scaled kaiming-uniform values (FNA++) and their BN keeps its init;
* kernel: a smaller seed kernel is placed at the centre of the larger one, zeros around it; a larger seed
  kernel is centre-cropped.

Everything works on plain state dicts with timm EfficientNet key names; `remap_state_dict` is the public
entry point, `remap_filter_fn` adapts it to timm's `pretrained_filter_fn`.
"""
from __future__ import annotations

import logging
import math
from typing import Hashable, Literal, Mapping

import torch

from .arch import Arch

__all__ = ['RemapError', 'remap_state_dict', 'remap_filter_fn', 'expected_shapes', 'check_state_dict']

_logger = logging.getLogger(__name__)

WidthMode = Literal['leading', 'bn_gamma']
Group = Hashable  # a channel group: ('stem',), ('stage', s), ('mid', s, l), ('se', s, l), ('head',), ('classes',)

# Module name -> (role of dim 0, role of dim 1) per timm block type. Roles: 'in' (block input channels),
# 'mid' (expanded channels), 'out' (stage output channels), 'se' (SE reduce channels), None (no channel
# selection on that dim).
_BLOCK_LAYOUT: dict[str, dict[str, tuple[str | None, str | None]]] = {
    'ir': {'conv_pw': ('mid', 'in'), 'bn1': ('mid', None), 'conv_dw': ('mid', None), 'bn2': ('mid', None),
           'conv_pwl': ('out', 'mid'), 'bn3': ('out', None)},
    'ds': {'conv_dw': ('in', None), 'bn1': ('in', None), 'conv_pw': ('out', 'in'), 'bn2': ('out', None)},
}
# NOTE: SE widths follow the channels the SE gates (the expansion, or the input of an e1 layer), so its
# convs take the same selection as those; its reduce channels are a group of their own, remapped by the
# depth rule like the expansion and kept leading (no BN ranks them).
_SE_LAYOUT: dict[str, dict[str, tuple[str | None, str | None]]] = {
    'ir': {'se.conv_reduce': ('se', 'mid'), 'se.conv_expand': ('mid', 'se')},
    'ds': {'se.conv_reduce': ('se', 'in'), 'se.conv_expand': ('in', 'se')},
}
_BN_MODULES = {'bn1', 'bn2', 'bn3'}


class RemapError(ValueError):
    """A state dict does not fit the architecture it is remapped from or into."""


def _layout(arch: Arch, num_classes: int) -> dict[str, tuple[str, Group | None, Group | None, bool]]:
    """Module prefix -> (block type, dim-0 group, dim-1 group, is BN) for every parametrised module of a timm model."""
    lay: dict[str, tuple[str, Group | None, Group | None, bool]] = {
        'conv_stem': ('stem', ('stem',), None, False),
        'bn1': ('stem', ('stem',), None, True),
    }
    prev: Group = ('stem',)
    for si, li, op, _, _, _ in arch.iter_layers():
        groups = {'in': prev if li == 0 else ('stage', si), 'mid': ('mid', si, li), 'out': ('stage', si),
                  'se': ('se', si, li), None: None}
        modules = dict(_BLOCK_LAYOUT[op.block_type])
        if arch.se_ratio is not None:
            modules.update(_SE_LAYOUT[op.block_type])
        for name, (g0, g1) in modules.items():
            lay[f'blocks.{si}.{li}.{name}'] = (op.block_type, groups[g0], groups[g1], name in _BN_MODULES)
        if li == arch.stages[si].depth - 1:
            prev = ('stage', si)
    if arch.head_chs is not None:
        lay['conv_head'] = ('head', ('head',), prev, False)
        lay['bn2'] = ('head', ('head',), None, True)
        prev = ('head',)
    if num_classes:
        lay['classifier'] = ('head', ('classes',), prev, False)
    return lay


def _split_key(key: str) -> tuple[str, str]:
    prefix, _, param = key.rpartition('.')
    return prefix, param


def expected_shapes(arch: Arch, num_classes: int = 0, in_chans: int = 3) -> dict[str, tuple[int, ...]]:
    """State dict key -> shape of the timm model built from `arch` (parameters and BN buffers).

    Args:
        arch: The architecture.
        num_classes: Classifier outputs (0: no classifier).
        in_chans: Input image channels.
    """
    shapes: dict[str, tuple[int, ...]] = {}

    def conv(prefix: str, out_c: int, in_c: int, k: int, bias: bool = False) -> None:
        shapes[f'{prefix}.weight'] = (out_c, in_c, k, k)
        if bias:
            shapes[f'{prefix}.bias'] = (out_c,)

    def se(prefix: str, chs: int, se_chs: int) -> None:
        if se_chs:
            conv(f'{prefix}.se.conv_reduce', se_chs, chs, 1, bias=True)
            conv(f'{prefix}.se.conv_expand', chs, se_chs, 1, bias=True)

    def bn(prefix: str, c: int) -> None:
        for p in ('weight', 'bias', 'running_mean', 'running_var'):
            shapes[f'{prefix}.{p}'] = (c,)
        shapes[f'{prefix}.num_batches_tracked'] = ()

    conv('conv_stem', arch.stem_chs, in_chans, 3)
    bn('bn1', arch.stem_chs)
    for si, li, op, in_c, out_c, _ in arch.iter_layers():
        p = f'blocks.{si}.{li}'
        if op.block_type == 'ds':
            conv(f'{p}.conv_dw', in_c, 1, op.kernel)
            bn(f'{p}.bn1', in_c)
            se(p, in_c, arch.se_chs(op, in_c))
            conv(f'{p}.conv_pw', out_c, in_c, 1)
            bn(f'{p}.bn2', out_c)
        else:
            mid = in_c * op.expansion
            conv(f'{p}.conv_pw', mid, in_c, 1)
            bn(f'{p}.bn1', mid)
            conv(f'{p}.conv_dw', mid, 1, op.kernel)
            bn(f'{p}.bn2', mid)
            se(p, mid, arch.se_chs(op, in_c))
            conv(f'{p}.conv_pwl', out_c, mid, 1)
            bn(f'{p}.bn3', out_c)
    feat = arch.out_chs
    if arch.head_chs is not None:
        conv('conv_head', arch.head_chs, feat, 1)
        bn('bn2', arch.head_chs)
        feat = arch.head_chs
    if num_classes:
        shapes['classifier.weight'] = (num_classes, feat)
        shapes['classifier.bias'] = (num_classes,)
    return shapes


def _num_classes(state_dict: Mapping[str, torch.Tensor]) -> int:
    w = state_dict.get('classifier.weight')
    return int(w.shape[0]) if w is not None else 0


def check_state_dict(state_dict: Mapping[str, torch.Tensor], arch: Arch, what: str = 'state dict') -> None:
    """Raise `RemapError` naming the first key whose presence or shape does not match `arch`.

    Keys of the classifier and of modules outside the architecture (e.g. a head conv the arch lacks) are
    ignored, so a full ImageNet checkpoint checks against a backbone-only arch.

    Args:
        state_dict: The tensors to check.
        arch: The architecture they should belong to.
        what: How to name the state dict in the error.
    """
    for key, shape in expected_shapes(arch).items():
        if key not in state_dict:
            raise RemapError(f'{what} has no key {key!r} (expected shape {shape}); it does not match the arch')
        got = tuple(state_dict[key].shape)
        if got != shape:
            raise RemapError(f'{what} key {key!r} has shape {got}, expected {shape}; it does not match the arch')


class _Selector:
    """Which source channels feed each target channel group (leading or by summed |BN gamma|)."""

    def __init__(self, src: Mapping[str, torch.Tensor], src_layout: dict, mode: WidthMode) -> None:
        if mode not in ('leading', 'bn_gamma'):
            raise ValueError(f"width mode {mode!r} is unknown; expected 'leading' or 'bn_gamma'")
        self.mode = mode
        self.importance: dict[Group, torch.Tensor] = {}
        if mode == 'bn_gamma':
            # NOTE: a channel group (e.g. a stage's output, shared by every residual add in the stage) is
            # ranked by the sum of |gamma| over all BN layers that normalise it, so the selection is the
            # same for every tensor that touches the group and residual paths stay aligned.
            for prefix, (_, g0, _, is_bn) in src_layout.items():
                if is_bn:
                    gamma = src[f'{prefix}.weight'].detach().abs().float()
                    self.importance[g0] = self.importance.get(g0, 0) + gamma

    def __call__(self, group: Group | None, n_src: int, n_dst: int) -> torch.Tensor:
        n = min(n_src, n_dst)
        if self.mode == 'leading' or n_dst >= n_src or group not in self.importance:
            return torch.arange(n)
        return torch.topk(self.importance[group], n).indices.sort().values


def _map_group(group: Group | None, src_depths: tuple[int, ...]) -> Group | None:
    if isinstance(group, tuple) and group[0] in ('mid', 'se'):
        kind, si, li = group
        return kind, si, min(li, src_depths[si] - 1)
    return group


def _map_prefix(prefix: str, src_depths: tuple[int, ...]) -> str:
    parts = prefix.split('.')
    if parts[0] == 'blocks':
        si, li = int(parts[1]), int(parts[2])
        parts[2] = str(min(li, src_depths[si] - 1))
    return '.'.join(parts)


def _kernel_slices(k_src: int, k_dst: int, key: str) -> tuple[slice, slice]:
    """(source slice, destination slice) along one spatial dim: centre placement or centre crop."""
    if (k_dst - k_src) % 2:
        raise RemapError(f'cannot centre a kernel of size {k_src} in one of size {k_dst} for key {key!r}; '
                         'expected kernel sizes of equal parity')
    if k_dst >= k_src:
        off = (k_dst - k_src) // 2
        return slice(0, k_src), slice(off, off + k_src)
    off = (k_src - k_dst) // 2
    return slice(off, off + k_dst), slice(0, k_dst)


def _remap_tensor(
        key: str,
        src: torch.Tensor,
        init: torch.Tensor,
        rows: torch.Tensor | None,
        cols: torch.Tensor | None,
        noise: float,
        generator: torch.Generator,
) -> torch.Tensor:
    """Build one target tensor from its source tensor (see the module docstring for the rules)."""
    if src.dim() != init.dim():
        raise RemapError(f'key {key!r}: source shape {tuple(src.shape)} and target shape {tuple(init.shape)} '
                         'have different ranks')
    src = src.detach().to(init.dtype)
    if src.dim() == 0:
        return src.clone()
    if rows is None and src.shape[0] != init.shape[0]:
        raise RemapError(f'key {key!r}: source shape {tuple(src.shape)} does not fit target shape {tuple(init.shape)}')
    rows = torch.arange(src.shape[0]) if rows is None else rows
    if src.dim() == 1:
        # NOTE: BN/bias entries beyond the source keep the target's init (gamma 1, beta 0, mean 0, var 1), as FNA.
        out = init.detach().clone()
        out[:len(rows)] = src[rows]
        return out
    if cols is None and src.shape[1] != init.shape[1]:
        raise RemapError(f'key {key!r}: source shape {tuple(src.shape)} does not fit target shape {tuple(init.shape)}')
    cols = torch.arange(src.shape[1]) if cols is None else cols
    spatial = [_kernel_slices(ks, kd, key) for ks, kd in zip(src.shape[2:], init.shape[2:])]
    src_idx = (slice(None), slice(None)) + tuple(s for s, _ in spatial)
    dst_idx = (slice(0, len(rows)), slice(0, len(cols))) + tuple(d for _, d in spatial)
    out = torch.zeros_like(init)
    out[dst_idx] = src[rows][:, cols][src_idx]
    if len(rows) < init.shape[0] or len(cols) < init.shape[1]:
        # NOTE: FNA++ (issue JaminFong/FNA#18): grown channels start at zero plus 1e-5 * kaiming_uniform
        # noise, so they are not dead (an all-zero filter feeding an all-zero input slice gets no gradient).
        grown = torch.ones(init.shape[:2], dtype=torch.bool)
        grown[:len(rows), :len(cols)] = False
        fan_in = init[0].numel()
        bound = noise * math.sqrt(3.0 / fan_in) * math.sqrt(2.0)  # kaiming_uniform_(a=0) bound, scaled
        rand = (torch.rand(init.shape, generator=generator, dtype=torch.float64) * 2 - 1) * bound
        out[grown] = rand.to(init.dtype)[grown]
    return out


def remap_state_dict(
        seed_state_dict: Mapping[str, torch.Tensor],
        seed_arch: Arch,
        target_arch: Arch,
        target_state_dict: Mapping[str, torch.Tensor],
        width: WidthMode = 'leading',
        noise: float = 1e-5,
        seed: int = 0,
) -> dict[str, torch.Tensor]:
    """Remap seed weights into a target architecture (depth, width and kernel rules of FNA/FNA++).

    Every key of `target_state_dict` gets a value; its tensors supply the init of entries the seed cannot
    (grown BN channels, a classifier of another size keeps the leading rows). Seed keys the target does
    not use (e.g. the ImageNet head of a backbone-only target) are ignored.

    Args:
        seed_state_dict: Seed weights with timm EfficientNet key names (e.g. timm `mobilenetv2_100`).
        seed_arch: The seed's architecture (must match `seed_state_dict`).
        target_arch: The architecture to remap into; same number of stages and layer block types as the seed.
        target_state_dict: The target model's state dict (its freshly initialised values).
        width: 'leading' (FNA code) or 'bn_gamma' (FNA paper) channel selection when a width shrinks.
        noise: Scale of the kaiming-uniform noise added to grown conv channels (FNA++ uses 1e-5).
        seed: Random seed of that noise.

    Returns:
        A new state dict with the keys of `target_state_dict`.
    """
    if len(seed_arch.stages) != len(target_arch.stages):
        raise RemapError(f'target arch has {len(target_arch.stages)} stages, seed arch has {len(seed_arch.stages)}; '
                         'expected the same number of stages')
    # NOTE: the seed's family: its activation, SE, padding and BN eps are what its weights were trained with (TF
    # "same" padding keeps centred kernels function-preserving too: its left / top pad grows by one per kernel step)
    for field in ('act', 'se_ratio', 'pad_type', 'bn_eps'):
        if getattr(seed_arch, field) != getattr(target_arch, field):
            raise RemapError(f'target arch has {field} {getattr(target_arch, field)!r}, seed arch has '
                             f'{getattr(seed_arch, field)!r}; expected the seed\'s {field} (derive archs from the seed '
                             'they are remapped from)')
    check_state_dict(seed_state_dict, seed_arch, 'seed state dict')
    num_classes = _num_classes(target_state_dict)
    src_layout = _layout(seed_arch, _num_classes(seed_state_dict))
    dst_layout = _layout(target_arch, num_classes)
    src_depths = seed_arch.depths
    select = _Selector(seed_state_dict, src_layout, width)
    generator = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    for key, init in target_state_dict.items():
        prefix, param = _split_key(key)
        if prefix not in dst_layout:
            raise RemapError(f'target key {key!r} (shape {tuple(init.shape)}) is not part of the target arch')
        block_type, g0, g1, _ = dst_layout[prefix]
        src_prefix = _map_prefix(prefix, src_depths)
        src_entry = src_layout.get(src_prefix)
        if src_entry is None and prefix == 'classifier':
            _logger.info('seed has no classifier; keeping the initialised %r', key)
            out[key] = init.detach().clone()
            continue
        if src_entry is None or src_entry[0] != block_type:
            raise RemapError(f'target key {key!r} ({block_type} block) has no counterpart {src_prefix!r} of the same '
                             f'block type in the seed arch; expected layer block types to match the seed')
        src_key = f'{src_prefix}.{param}'
        if src_key not in seed_state_dict:
            raise RemapError(f'seed state dict has no key {src_key!r} for target key {key!r} '
                             f'(target shape {tuple(init.shape)})')
        src = seed_state_dict[src_key]
        sg0, sg1 = _map_group(g0, src_depths), _map_group(g1, src_depths)
        rows = select(sg0, src.shape[0], init.shape[0]) if src.dim() >= 1 and g0 is not None else None
        cols = select(sg1, src.shape[1], init.shape[1]) if src.dim() >= 2 and g1 is not None else None
        out[key] = _remap_tensor(key, src, init, rows, cols, noise, generator)
    return out


def _shapes_match(state_dict: Mapping[str, torch.Tensor], model_sd: Mapping[str, torch.Tensor]) -> bool:
    # NOTE: the classifier is timm's business (it drops or resets it when num_classes differs from the cfg's),
    # so a backbone checkpoint matches a model built with a new classifier.
    return all(k in state_dict and tuple(state_dict[k].shape) == tuple(v.shape) for k, v in model_sd.items()
               if not k.startswith('classifier.'))


def remap_filter_fn(
        state_dict: Mapping[str, torch.Tensor],
        model: torch.nn.Module,
        arch: Arch,
        seed_arch: Arch,
        width: WidthMode = 'leading',
) -> dict[str, torch.Tensor]:
    """timm `pretrained_filter_fn`: pass weights made for `arch` through, remap seed weights into it.

    Args:
        state_dict: Loaded checkpoint (retrained weights of this arch, or seed weights).
        model: The timm model being built from `arch`.
        arch: The model's architecture.
        seed_arch: The seed's architecture.
        width: Width selection mode, see `remap_state_dict`.
    """
    model_sd = model.state_dict()
    if _shapes_match(state_dict, model_sd):
        _logger.info('checkpoint matches the model architecture; loading it without remapping')
        # keys the model lacks (the head conv of a features_only model) are dropped instead of warned about
        return {k: v for k, v in state_dict.items() if k in model_sd or k.startswith('classifier.')}
    try:
        check_state_dict(state_dict, seed_arch, 'checkpoint')
    except RemapError as e:
        bad = next(k for k, v in model_sd.items() if k not in state_dict or state_dict[k].shape != v.shape)
        got = tuple(state_dict[bad].shape) if bad in state_dict else 'missing'
        raise RemapError(f'checkpoint fits neither the model (key {bad!r}: {got} vs {tuple(model_sd[bad].shape)}) '
                         f'nor the seed arch ({e})') from None
    _logger.info('remapping seed weights into the model architecture (width=%s)', width)
    return remap_state_dict(state_dict, seed_arch, arch, model_sd, width=width)
