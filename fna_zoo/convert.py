"""Checkpoint conversion from torchvision's MobileNetV2 layout to timm's `mobilenetv2_100`.

torchvision's `mobilenet_v2` (Sandler et al., `MobileNetV2: Inverted Residuals and Linear Bottlenecks`,
CVPR 2018 - https://arxiv.org/abs/1801.04381) and timm's `mobilenetv2_100` are the same network: stem 32,
stages 16/24/32/64/96/160/320 with 1/2/3/4/3/3/1 layers, a 1x1 head conv to 1280, symmetric padding,
ReLU6 and BatchNorm with eps 1e-5. Only the key names differ, so a rename carries torchvision's ImageNet
weights (`MobileNet_V2_Weights.IMAGENET1K_V1`) or a user's own torchvision checkpoint into timm, and from
there into any FNA arch by parameter remapping.
"""
from __future__ import annotations

import re
from typing import Mapping

import torch

__all__ = ['TV_MOBILENETV2_DEPTHS', 'torchvision_mobilenetv2_key', 'convert_torchvision_mobilenetv2']

# layers per stage of MobileNetV2; torchvision numbers them features.1 .. features.17 in one run
TV_MOBILENETV2_DEPTHS = (1, 2, 3, 4, 3, 3, 1)
_HEAD = 1 + sum(TV_MOBILENETV2_DEPTHS)  # features.18: the 1x1 conv to 1280
# NOTE: the first block (expansion 1, timm DepthwiseSeparableConv) has no expansion conv, so its
# `conv` Sequential is [dw ConvBNAct, pw conv, bn]; every other block is [pw ConvBNAct, dw ConvBNAct, pwl, bn].
_DS_PARTS = {'0.0': 'conv_dw', '0.1': 'bn1', '1': 'conv_pw', '2': 'bn2'}
_IR_PARTS = {'0.0': 'conv_pw', '0.1': 'bn1', '1.0': 'conv_dw', '1.1': 'bn2', '2': 'conv_pwl', '3': 'bn3'}
_BLOCK = re.compile(r'features\.(\d+)\.conv\.(\d(?:\.\d)?)\.(\w+)$')
_ENDS = re.compile(r'features\.(\d+)\.([01])\.(\w+)$')


def _stage_layer(index: int) -> tuple[int, int]:
    """(stage, layer) of torchvision's `features.<index>` block (1-based, after the stem)."""
    n = index - 1
    for stage, depth in enumerate(TV_MOBILENETV2_DEPTHS):
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
        stage, layer = _stage_layer(index)
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
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        try:
            out[torchvision_mobilenetv2_key(key)] = value
        except KeyError:
            raise ValueError(f'checkpoint key {key!r} is not torchvision mobilenet_v2\'s; expected the state dict '
                             'of torchvision.models.mobilenet_v2()') from None
    return out
