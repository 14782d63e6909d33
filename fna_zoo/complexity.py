"""MAdds and parameter counts with the conventions of the FNA papers.

Conventions (JaminFong/FNA `tools/multadds_count.py`, reproduced against the FNA tables):

* only Conv2d and Linear layers count (a squeeze-excitation's two 1x1 convs count on its pooled 1x1 map);
  a conv costs `kh * kw * C_in / groups * C_out * H_out * W_out`
  multiply-adds, plus `C_out * H_out * W_out` when it has a bias; BN, activations and additions are free;
* batch 1;
* parameters are all `named_parameters`, BN gamma/beta included (buffers are not parameters).

`count_arch` counts analytically from an `Arch`; `count_model` counts any module with forward hooks. For a
timm model built from an `Arch` the two agree exactly.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from .arch import Arch, Op

__all__ = ['Complexity', 'conv_out_size', 'conv_madds', 'conv_bn_complexity', 'se_complexity', 'op_complexity', 'count_arch', 'count_model']


@dataclass(frozen=True)
class Complexity:
    """Multiply-adds and parameters of a network (or a part of one)."""

    madds: int
    params: int

    def __add__(self, other: 'Complexity') -> 'Complexity':
        return Complexity(self.madds + other.madds, self.params + other.params)

    @property
    def gmadds(self) -> float:
        return self.madds / 1e9

    @property
    def mparams(self) -> float:
        return self.params / 1e6

    def __str__(self) -> str:
        return f'{self.gmadds:.3f}B MAdds, {self.mparams:.3f}M params'


def conv_out_size(size: int, kernel: int, stride: int) -> int:
    """Output length of a conv with symmetric padding `(kernel - 1) // 2` (PyTorch/timm default padding)."""
    pad = (kernel - 1) // 2
    return (size + 2 * pad - kernel) // stride + 1


def conv_madds(in_chs: int, out_chs: int, kernel: int, out_hw: tuple[int, int], groups: int = 1,
               bias: bool = False) -> int:
    """Multiply-adds of one conv (bias adds included when it has a bias).

    Args:
        in_chs: Input channels.
        out_chs: Output channels.
        kernel: Square kernel size.
        out_hw: Output height and width.
        groups: Conv groups.
        bias: Whether the conv has a bias.
    """
    hw = out_hw[0] * out_hw[1]
    return kernel * kernel * in_chs // groups * out_chs * hw + (out_chs * hw if bias else 0)


def conv_bn_complexity(in_chs: int, out_chs: int, kernel: int, stride: int, in_hw: tuple[int, int], groups: int = 1
                       ) -> tuple[Complexity, tuple[int, int]]:
    """Cost of a bias-free conv followed by an affine BN, and its output size.

    Args:
        in_chs: Input channels.
        out_chs: Output channels.
        kernel: Square kernel size.
        stride: Conv stride.
        in_hw: Input height and width.
        groups: Conv groups.
    """
    out_hw = (conv_out_size(in_hw[0], kernel, stride), conv_out_size(in_hw[1], kernel, stride))
    params = kernel * kernel * in_chs // groups * out_chs + 2 * out_chs
    return Complexity(conv_madds(in_chs, out_chs, kernel, out_hw, groups), params), out_hw


def se_complexity(chs: int, se_chs: int) -> Complexity:
    """Cost of a squeeze-excitation on `chs` channels: two biased 1x1 convs on the pooled 1x1 map.

    NOTE: as for every other layer, only the convs count (the FNA convention); the pooling and the
    sigmoid-gated product are free, so SE adds `2 * chs * se_chs + chs + se_chs` of both MAdds and params.

    Args:
        chs: Channels the SE gates (the expansion width; the input width in an e1 layer).
        se_chs: Reduce width (`Arch.se_chs`).
    """
    n = conv_madds(chs, se_chs, 1, (1, 1), bias=True) + conv_madds(se_chs, chs, 1, (1, 1), bias=True)
    return Complexity(n, n)


def op_complexity(op: Op, in_chs: int, out_chs: int, stride: int, in_hw: tuple[int, int], se_chs: int = 0
                  ) -> tuple[Complexity, tuple[int, int]]:
    """Cost of one op (bias-free convs, each followed by an affine BN; SE if any) and its output size.

    Args:
        op: The op (kernel, expansion).
        in_chs: Input channels.
        out_chs: Output channels.
        stride: Stride of the depthwise conv.
        in_hw: Input height and width.
        se_chs: SE reduce width (`Arch.se_chs(op, in_chs)`), 0 for no SE.
    """
    total = Complexity(0, 0)
    hw = in_hw
    mid = in_chs * op.expansion
    if op.block_type == 'ir':
        c, hw = conv_bn_complexity(in_chs, mid, 1, 1, hw)
        total += c
    c, hw = conv_bn_complexity(mid, mid, op.kernel, stride, hw, groups=mid)
    total += c
    if se_chs:
        total += se_complexity(mid, se_chs)
    c, hw = conv_bn_complexity(mid, out_chs, 1, 1, hw)
    return total + c, hw


def count_arch(arch: Arch, input_size: Sequence[int] = (224, 224), num_classes: int = 0, in_chans: int = 3
               ) -> Complexity:
    """Analytic MAdds and params of the timm model built from `arch` at batch 1.

    Args:
        arch: The architecture.
        input_size: (H, W) or (C, H, W) of the input image.
        num_classes: Classifier outputs (0: the backbone without classifier).
        in_chans: Input channels, when `input_size` is (H, W).
    """
    if len(input_size) == 3:
        in_chans, *input_size = input_size
    total, hw = conv_bn_complexity(in_chans, arch.stem_chs, 3, 2, tuple(input_size))
    for _, _, op, in_c, out_c, stride in arch.iter_layers():
        c, hw = op_complexity(op, in_c, out_c, stride, hw, arch.se_chs(op, in_c))
        total += c
    feat = arch.out_chs
    if arch.head_chs is not None:
        c, hw = conv_bn_complexity(feat, arch.head_chs, 1, 1, hw)
        total += c
        feat = arch.head_chs
    if num_classes:
        total += Complexity(feat * num_classes + num_classes, feat * num_classes + num_classes)
    return total


def count_model(model: nn.Module, input_size: Sequence[int] = (3, 224, 224), inputs: object = None) -> Complexity:
    """MAdds (by forward hooks on Conv2d/Linear) and params of any module, at batch 1.

    Args:
        model: The module; it is run once in eval mode under `torch.no_grad`.
        input_size: (C, H, W) of a zero input image, used when `inputs` is None.
        inputs: The forward argument to use instead (e.g. a list of images for a torchvision detector).
    """
    madds = 0

    def conv_hook(m: nn.Conv2d, _inp: tuple, out: torch.Tensor) -> None:
        nonlocal madds
        h, w = out.shape[-2:]
        kh, kw = m.kernel_size
        hw = h * w * (out.shape[0] if out.dim() == 4 else 1)
        madds += kh * kw * m.in_channels // m.groups * m.out_channels * hw
        madds += m.out_channels * hw if m.bias is not None else 0

    def linear_hook(m: nn.Linear, _inp: tuple, out: torch.Tensor) -> None:
        nonlocal madds
        rows = out.numel() // m.out_features
        madds += rows * m.in_features * m.out_features + (rows * m.out_features if m.bias is not None else 0)

    handles = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            if inputs is None:
                p = next(model.parameters(), None)
                inputs = torch.zeros(1, *input_size, device=p.device if p is not None else None)
            model(inputs)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return Complexity(madds, sum(p.numel() for p in model.parameters()))
