"""The super network: every candidate op of every layer, weights shared across widths by channel masks.

Structure (FNA, Fang et al., ICLR 2020 - https://arxiv.org/abs/2001.02525): the seed's stem and fixed
stages, then per searchable stage its layer slots; a slot holds one `CandidateOp` per candidate op
(timm `InvertedResidual` parameter names), each built at the largest widths it can see. Architecture
parameters are one logit vector per slot (ops) and per stage (widths).

Channel encoding (our choice; Jung et al., ICPR 2022 - https://arxiv.org/abs/2206.08509, do not publish
theirs): weights live at each stage's largest width, and a width `w` keeps the leading `w` channels, the
rest are multiplied by zero (FBNetV2-style masks, OFA-style leading-channel sharing). A layer's expansion
channels follow its input width (`e x C_in`) the same way. Relaxed, a mask is the probability-weighted sum
of the candidates' 0/1 masks. Leading channels are exactly what `remap_state_dict` keeps when it shrinks a
width, so a sampled path computes what the derived network remapped from the super network computes
(`path_state_dict`), and a super network seeded by remapping sees, at each width, what retraining's seed
remap gives that width.

Modes: `set_path(path)` runs one path (weight steps, evaluation), `set_relaxed()` runs every candidate
weighted by its probability (DARTS, FNA's arch step), `set_relaxed(gumbel=True)` runs one Gumbel-sampled
path whose straight-through weights pass gradients to every logit (GDAS-style, cheaper),
`set_relaxed(pairs=True)` runs two candidates per slot and stage drawn by the probabilities, mixed by their
renormalised probabilities (ProxylessNAS's two-path update, Cai et al., ICLR 2019 -
https://arxiv.org/abs/1812.00332).
"""
from __future__ import annotations

import logging
import math
from functools import partial
from typing import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn
from timm.layers import create_conv2d
from timm.layers.conv2d_same import Conv2dSame
from timm.layers.padding import pad_same
from timm.models._features import FeatureInfo

from ..arch import ACTS, SKIP, Arch, Op, Stage, se_reduce_chs
from ..builder import seed_input_cfg
from ..deprecation import moved_names
from ..remap import WidthMode, expected_shapes, remap_state_dict
from .space import ArchPath, SearchSpace

__all__ = ['SqueezeExcite', 'CandidateOp', 'MixedLayer', 'SuperNet']

_logger = logging.getLogger(__name__)

# NOTE: `_ACTS`, this module's copy of the activation table, is the one `fna_zoo.arch.ACTS` now
__getattr__ = moved_names(__name__, {'_ACTS': ('fna_zoo.arch', 'ACTS')})

# NOTE: the lead of a fixed op's logit over its rivals (`SuperNet.fix_ops`), in units of the softmax temperature:
# each rival keeps a probability below e^-25 ~ 1e-11
_FIXED_LOGIT = 25.0


def _lead(alpha: torch.Tensor, i: int) -> float:
    """How far candidate i's logit leads its best rival's (inf: no rival)."""
    rivals = torch.cat([alpha[:i], alpha[i + 1:]]).detach()
    return float(alpha[i].detach() - rivals.max()) if len(rivals) else math.inf


def _mask(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    return x if mask is None else x * mask.view(1, -1, 1, 1)


def _conv(in_chs: int, out_chs: int, k: int, stride: int = 1, groups: int = 1, pad_type: str = '') -> nn.Conv2d:
    """A bias-free conv as timm's builder makes it: padding k // 2 ('') or TF "same" ('same'; timm's `Conv2dSame`,
    asymmetric at stride 2, where it is not static)."""
    return create_conv2d(in_chs, out_chs, k, stride=stride, groups=groups, padding=pad_type, bias=False)


def _norm(bn_eps: float | None) -> Callable[[int], nn.BatchNorm2d]:
    """BatchNorm2d with the seed's eps (None: PyTorch's 1e-5)."""
    return nn.BatchNorm2d if bn_eps is None else partial(nn.BatchNorm2d, eps=bn_eps)


def _width_mask(probs: torch.Tensor, widths: torch.Tensor, channels: int) -> torch.Tensor:
    """Expected 0/1 mask of `channels` channels when width `widths[i]` has probability `probs[i]`."""
    keep = (torch.arange(channels, device=probs.device)[None] < widths[:, None]).to(probs.dtype)
    return (probs[:, None] * keep).sum(0)


class SqueezeExcite(nn.Module):
    """timm's `SqueezeExcite` (mean pool, biased 1x1 reduce, act, biased 1x1 expand, sigmoid gate) at its
    largest widths, runnable on leading slices or with a reduce-channel mask.

    Args:
        chs: Largest gated width.
        rd_chs: Largest reduce width.
    """

    def __init__(self, chs: int, rd_chs: int) -> None:
        super().__init__()
        self.conv_reduce = nn.Conv2d(chs, rd_chs, 1, bias=True)
        self.conv_expand = nn.Conv2d(rd_chs, chs, 1, bias=True)

    def forward(self, x: torch.Tensor, act: Callable[[torch.Tensor], torch.Tensor],
                rd_mask: torch.Tensor | None = None) -> torch.Tensor:
        # NOTE: the reduce mask goes after the activation: a masked reduce channel still has a bias.
        s = _mask(act(self.conv_reduce(x.mean((2, 3), keepdim=True))), rd_mask)
        return x * torch.sigmoid(self.conv_expand(s))

    def forward_sliced(self, x: torch.Tensor, rd_chs: int, act: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        chs = x.shape[1]
        s = F.conv2d(x.mean((2, 3), keepdim=True), self.conv_reduce.weight[:rd_chs, :chs], self.conv_reduce.bias[:rd_chs])
        gate = F.conv2d(act(s), self.conv_expand.weight[:chs, :rd_chs], self.conv_expand.bias[:chs])
        return x * torch.sigmoid(gate)


class CandidateOp(nn.Module):
    """One op at its largest widths, with timm's parameter names (`InvertedResidual` / `DepthwiseSeparableConv`).

    Args:
        op: Kernel and expansion.
        in_chs: Largest input width.
        out_chs: Largest output width.
        stride: Depthwise conv stride.
        act: Activation name (`Arch.act`).
        se_ratio: Squeeze-excitation ratio (`Arch.se_ratio`), None for none.
        pad_type: Conv padding (`Arch.pad_type`: '' or TF 'same').
        bn_eps: BatchNorm eps (`Arch.bn_eps`; None: PyTorch's 1e-5).
    """

    def __init__(self, op: Op, in_chs: int, out_chs: int, stride: int, act: str = 'relu6',
                 se_ratio: float | None = None, pad_type: str = '', bn_eps: float | None = None) -> None:
        super().__init__()
        self.op, self.act, self.se_ratio = op, ACTS[act], se_ratio
        k = op.kernel
        mid = in_chs * op.expansion
        norm = _norm(bn_eps)
        if op.block_type == 'ir':
            self.conv_pw = _conv(in_chs, mid, 1)
            self.bn1 = norm(mid)
            self.conv_dw = _conv(mid, mid, k, stride, groups=mid, pad_type=pad_type)
            self.bn2 = norm(mid)
            self.se = SqueezeExcite(mid, self.se_chs(in_chs)) if se_ratio else None
            self.conv_pwl = _conv(mid, out_chs, 1)
            self.bn3 = norm(out_chs)
        else:
            self.conv_dw = _conv(in_chs, in_chs, k, stride, groups=in_chs, pad_type=pad_type)
            self.bn1 = norm(in_chs)
            self.se = SqueezeExcite(in_chs, self.se_chs(in_chs)) if se_ratio else None
            self.conv_pw = _conv(in_chs, out_chs, 1)
            self.bn2 = norm(out_chs)

    def se_chs(self, in_chs: int) -> int:
        """SE reduce width at input width `in_chs` (0 without SE)."""
        return se_reduce_chs(self.se_ratio, in_chs, self.op.expansion) if self.se_ratio else 0

    def _se(self, h: torch.Tensor, rd_mask: torch.Tensor | None = None) -> torch.Tensor:
        return h if self.se is None else self.se(h, self.act, rd_mask)

    def forward(self, x: torch.Tensor, mid_mask: torch.Tensor | None = None, se_mask: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (output without residual, expansion output)."""
        if self.op.block_type == 'ds':
            mid = self._se(self.act(self.bn1(self.conv_dw(x))))
            return self.bn2(self.conv_pw(mid)), mid
        # NOTE: masks go after the activation: a masked channel is exactly zero (BN of an all-zero channel is
        # its beta, not zero), so the next conv sees only the kept channels, as in the narrower derived layer;
        # the SE gate keeps a zero channel zero.
        mid = _mask(self.act(self.bn1(self.conv_pw(x))), mid_mask)
        h = self._se(_mask(self.act(self.bn2(self.conv_dw(mid))), mid_mask), se_mask)
        return self.bn3(self.conv_pwl(h)), mid

    def forward_sliced(self, x: torch.Tensor, out_chs: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The op at the input's width and `out_chs` outputs, computed on the leading slices of its weights.

        Exactly the masked forward's leading channels at the cost of the narrow layer (a sampled path's
        weight step costs what training the derived network costs).
        """
        in_chs = x.shape[1]
        if self.op.block_type == 'ds':
            mid = self.act(_sliced_bn(self.bn1, _sliced_conv(self.conv_dw, x, in_chs, 1), in_chs))
            mid = mid if self.se is None else self.se.forward_sliced(mid, self.se_chs(in_chs), self.act)
            return _sliced_bn(self.bn2, _sliced_conv(self.conv_pw, mid, out_chs, in_chs), out_chs), mid
        mid_chs = in_chs * self.op.expansion
        mid = self.act(_sliced_bn(self.bn1, _sliced_conv(self.conv_pw, x, mid_chs, in_chs), mid_chs))
        h = self.act(_sliced_bn(self.bn2, _sliced_conv(self.conv_dw, mid, mid_chs, 1), mid_chs))
        h = h if self.se is None else self.se.forward_sliced(h, self.se_chs(in_chs), self.act)
        return _sliced_bn(self.bn3, _sliced_conv(self.conv_pwl, h, out_chs, mid_chs), out_chs), mid


def _sliced_conv(conv: nn.Conv2d, x: torch.Tensor, out_chs: int, in_per_group: int) -> torch.Tensor:
    groups = out_chs if conv.groups > 1 else 1  # depthwise convs keep one group per channel
    if isinstance(conv, Conv2dSame):  # TF "same" where it is not static: pad as Conv2dSame does (its padding is 0)
        x = pad_same(x, conv.kernel_size, conv.stride, conv.dilation)
    return F.conv2d(x, conv.weight[:out_chs, :in_per_group], None, conv.stride, conv.padding, conv.dilation, groups)


def _sliced_bn(bn: nn.BatchNorm2d, x: torch.Tensor, chs: int) -> torch.Tensor:
    """`bn` on its leading `chs` channels (running statistics of those channels updated in place, as `bn` would)."""
    momentum = 0.0 if bn.momentum is None else bn.momentum
    if bn.training and bn.track_running_stats:
        bn.num_batches_tracked.add_(1)
        if bn.momentum is None:  # cumulative average (BN recalibration)
            momentum = 1.0 / float(bn.num_batches_tracked)
    return F.batch_norm(x, bn.running_mean[:chs], bn.running_var[:chs], bn.weight[:chs], bn.bias[:chs],
                        bn.training or not bn.track_running_stats, momentum, bn.eps)


class MixedLayer(nn.Module):
    """A layer slot: its candidate ops ('skip' is the identity) and their weighted sum.

    Args:
        names: Candidate op names.
        in_chs: Largest input width.
        out_chs: Largest output width.
        stride: Stride (slot 0 only).
        act: Activation name (`Arch.act`).
        se_ratio: Squeeze-excitation ratio (`Arch.se_ratio`), None for none.
        pad_type: Conv padding (`Arch.pad_type`).
        bn_eps: BatchNorm eps (`Arch.bn_eps`).
    """

    def __init__(self, names: tuple[str, ...], in_chs: int, out_chs: int, stride: int, act: str = 'relu6',
                 se_ratio: float | None = None, pad_type: str = '', bn_eps: float | None = None) -> None:
        super().__init__()
        self.names = names
        self.expansions = tuple(0 if n == SKIP else Op.parse(n).expansion for n in names)
        self.ops = nn.ModuleDict({n: CandidateOp(Op.parse(n), in_chs, out_chs, stride, act, se_ratio, pad_type, bn_eps)
                                  for n in names if n != SKIP})

    def forward(self, x: torch.Tensor, weights: torch.Tensor, active: list[int], mid_masks: list[torch.Tensor | None],
                residual: torch.Tensor | float, tap: bool = False, se_masks: list[torch.Tensor | None] | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Weighted sum of the `active` candidates and (tap) of their expansion outputs.

        Args:
            x: Input.
            weights: One weight per candidate.
            active: Indices of the candidates to run (the others weigh zero).
            mid_masks: Expansion-channel mask per candidate (None: keep all).
            residual: Weight of the identity shortcut (1 for stride-1 slots after the first; for a first slot,
                the probability that its input and output widths are equal, when timm adds the residual).
            tap: Also return the weighted expansion outputs (the candidates must share one expansion).
            se_masks: SE reduce-channel mask per candidate (None: keep all).
        """
        out = tapped = None
        for i in active:
            name = self.names[i]
            if name == SKIP:
                y, mid = x, None
            else:
                y, mid = self.ops[name](x, mid_masks[i], se_masks[i] if se_masks else None)
                if not isinstance(residual, float) or residual:
                    y = y + residual * _fit_channels(x, y.shape[1])
            out = weights[i] * y if out is None else out + weights[i] * y
            if tap and mid is not None:
                tapped = weights[i] * mid if tapped is None else tapped + weights[i] * mid
        return out, tapped


def _fit_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """`x` cut or zero-padded to `channels` channels (a residual between different largest widths)."""
    if x.shape[1] == channels:
        return x
    if x.shape[1] > channels:
        return x[:, :channels]
    return F.pad(x, (0, 0, 0, 0, 0, channels - x.shape[1]))


class SuperNet(nn.Module):
    """Backbone super network of a `SearchSpace` (FPN features or SSDLite taps), with architecture parameters.

    Args:
        space: The search space.
        out_indices: Feature levels returned by `forward` (timm's stage-end convention; (2, 3, 4) are the
            stride 8/16/32 maps of MobileNetV2-like seeds).
    """

    def __init__(self, space: SearchSpace, out_indices: tuple[int, ...] = (2, 3, 4)) -> None:
        super().__init__()
        self.space = space
        seed = space.seed
        self.act = ACTS[seed.act]
        # NOTE: the seed's family throughout (activation, SE, padding, BN eps), and its input normalisation for
        # the detector the super network sits in (as a timm model's `pretrained_cfg` records it)
        family = dict(act=seed.act, se_ratio=seed.se_ratio, pad_type=seed.pad_type, bn_eps=seed.bn_eps)
        self.pretrained_cfg = seed_input_cfg(space.seed_name)
        norm = _norm(seed.bn_eps)
        self.conv_stem = _conv(3, seed.stem_chs, 3, 2, pad_type=seed.pad_type)
        self.bn1 = norm(seed.stem_chs)
        self.blocks = nn.ModuleList()
        self._fixed_skip: list[list[bool]] = []
        for si in range(space.fixed_stages):
            layers = nn.ModuleList()
            skips = []
            for _, _, op, in_c, out_c, stride in (t for t in seed.iter_layers() if t[0] == si):
                layers.append(CandidateOp(op, in_c, out_c, stride, **family))
                skips.append(in_c == out_c and stride == 1)
            self.blocks.append(layers)
            self._fixed_skip.append(skips)
        for k, st in enumerate(space.stages):
            in_max = max(space.in_widths(k))
            self.blocks.append(nn.ModuleList(
                MixedLayer(names, in_max if slot == 0 else st.max_width, st.max_width, st.stride if slot == 0 else 1,
                           **family)
                for slot, names in enumerate(st.slots)))
        last = space.stages[-1].max_width
        if space.head_chs is not None:
            self.conv_head = _conv(last, space.head_chs, 1)
            self.bn2 = norm(space.head_chs)
        self.op_alphas = nn.ParameterList(
            nn.Parameter(1e-3 * torch.randn(len(names))) for st in space.stages for names in st.slots)
        self.width_alphas = nn.ParameterList(nn.Parameter(1e-3 * torch.randn(len(st.widths))) for st in space.stages)
        for k, st in enumerate(space.stages):  # candidate widths as buffers, for the masks
            self.register_buffer(f'_widths{k}', torch.tensor(st.widths), persistent=False)
            self.register_buffer(f'_in_widths{k}', torch.tensor(space.in_widths(k)), persistent=False)
        self._features = self._feature_stages()
        self.out_indices = tuple(out_indices)
        self.feature_info = FeatureInfo(
            [dict(num_chs=c, reduction=r, module=f'blocks.{si}') for si, r, c in self._features], self.out_indices)
        self._mode, self._path, self._tau, self._masked = 'relaxed', None, 1.0, False
        self._generator: torch.Generator | None = None

    # ------------------------------------------------------------------ structure
    def _stage_max_width(self, si: int) -> int:
        k = si - self.space.fixed_stages
        return self.space.seed.stages[si].out_chs if k < 0 else self.space.stages[k].max_width

    def _feature_stages(self) -> list[tuple[int, int, int]]:
        """(stage index, reduction, largest channels) of each stage end at which the stride changes, as timm."""
        stages = self.space.seed.stages
        out, reduction = [], 2
        for si, s in enumerate(stages):
            reduction *= s.stride
            if si == len(stages) - 1 or stages[si + 1].stride == 2:
                out.append((si, reduction, self._stage_max_width(si)))
        return out

    @property
    def ssdlite_channels(self) -> tuple[int, int]:
        """Channels of the SSDLite taps: the tapped layer's expansion and the head conv."""
        k = self.space.tap_stage
        if self.space.head_chs is None or k is None:
            raise ValueError('SSDLite needs a super network with a head conv; build the space for ssdlite')
        exp = max(Op.parse(n).expansion for n in self.space.stages[k].slots[0])
        return max(self.space.in_widths(k)) * exp, self.space.head_chs

    def set_prior(self, path: ArchPath, strength: float, ops: bool = True, widths: bool = True) -> None:
        """Start the architecture logits at `path` (the seed's choices, `SearchSpace.seed_path`): `strength` is added
        to the logit of the path's candidate in every slot and stage, so the search starts at the seed and the
        detection and cost gradients must earn every move away from it.

        NOTE: a logit bonus b gives the path's candidate probability e^b / (e^b + n - 1) of n: with b = 2, 0.55 of
        7 ops and 0.65 of 5 widths. Adam moves a logit by about its LR per step, so a prior of b costs roughly
        b / lr architecture steps of consistent gradient to overturn.

        Args:
            path: The choices to favour.
            strength: The logit bonus (0: none).
            ops: Add it to the op logits of every slot.
            widths: Add it to the width logits of every stage.
        """
        with torch.no_grad():
            for alpha, i in zip(self.op_alphas if ops else [], (i for slot in path.ops for i in slot)):
                alpha[i] += strength
            for alpha, i in zip(self.width_alphas if widths else [], path.widths):
                alpha[i] += strength

    def fix_ops(self, path: ArchPath) -> None:
        """Fix every slot's op at `path`'s (a channel search, Jung et al. 2022: only the stage widths are searched):
        the op logits get a bonus that leaves the other ops a probability below 1e-10 and stop taking gradients.
        Idempotent: a resumed search (its logits restored, already fixed) only stops their gradients again.

        Args:
            path: The ops to keep (`SearchSpace.seed_path`).
        """
        lead = _FIXED_LOGIT * self.space.temperature  # probabilities are softmax(logits / temperature)
        ops = [i for slot in path.ops for i in slot]
        if any(_lead(a, i) < lead / 2 for a, i in zip(self.op_alphas, ops)):  # not fixed yet
            self.set_prior(path, lead, widths=False)
        for alpha in self.op_alphas:
            alpha.requires_grad_(False)

    def arch_parameters(self) -> list[nn.Parameter]:
        """The architecture logits (op logits of every slot, then width logits of every stage)."""
        return list(self.op_alphas) + list(self.width_alphas)

    # ------------------------------------------------------------------ probabilities and paths
    def probabilities(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(op probabilities per slot, width probabilities per stage): softmax of the logits / temperature."""
        t = self.space.temperature
        return [F.softmax(a / t, -1) for a in self.op_alphas], [F.softmax(a / t, -1) for a in self.width_alphas]

    def sample_path(self, generator: torch.Generator, uniform: bool) -> ArchPath:
        """Draw a path: every slot's op and every stage's width, uniformly or by the current probabilities (a
        fixed choice, `fix_ops`, always by its probabilities: a channel search warms up the seed's ops only)."""
        ops_p, width_p = self.probabilities()
        # NOTE: drawn on the CPU whatever the model's device: the generator is a CPU one (the same draws on every
        # rank and device, and after a resume)
        draw = (lambda p, free: int(torch.multinomial(torch.ones(len(p)) if uniform and free
                                                      else p.detach().float().cpu(), 1, generator=generator)))
        it = iter([(p, a.requires_grad) for p, a in zip(ops_p, self.op_alphas)])
        ops = tuple(tuple(draw(*next(it)) for _ in st.slots) for st in self.space.stages)
        return ArchPath(ops, tuple(draw(p, a.requires_grad) for p, a in zip(width_p, self.width_alphas)))

    def argmax_path(self) -> ArchPath:
        """The path of the most likely op of every slot and width of every stage (FNA's derivation)."""
        it = iter(self.op_alphas)
        ops = tuple(tuple(int(next(it).argmax()) for _ in st.slots) for st in self.space.stages)
        return ArchPath(ops, tuple(int(a.argmax()) for a in self.width_alphas))

    def set_path(self, path: ArchPath, masked: bool = False) -> None:
        """Run one path: one op per slot, one width per stage.

        Args:
            path: The path.
            masked: Run it through the relaxed forward with one-hot weights (at the largest widths, masked)
                instead of on sliced weights; the same result, slower (for checks).
        """
        self._mode, self._path, self._masked = 'path', path, masked

    def set_relaxed(self, gumbel: bool = False, generator: torch.Generator | None = None, tau: float = 1.0,
                    pairs: bool = False) -> None:
        """Run all candidates weighted by their probabilities, or (gumbel) one Gumbel-softmax sampled path, or
        (pairs) two candidates per slot and stage drawn by their probabilities.

        Args:
            gumbel: Sample a hard path with straight-through weights instead of running every candidate.
            generator: Random source of the Gumbel noise and the pairs (a fixed one keeps DDP ranks and resumed
                runs in step).
            tau: Gumbel-softmax temperature.
            pairs: Per slot and stage, draw two distinct candidates by the probabilities (without replacement)
                and run their mix, weighted by their two probabilities renormalised (ProxylessNAS's two-path
                update, Cai et al., ICLR 2019 - https://arxiv.org/abs/1812.00332).
        """
        if gumbel and pairs:
            raise ValueError('set_relaxed: gumbel and pairs are two different relaxations; expected one of them')
        mode = 'gumbel' if gumbel else 'pairs' if pairs else 'relaxed'
        self._mode, self._generator, self._tau = mode, generator, tau

    def _choice(self, logits: torch.Tensor, index: int | None) -> tuple[torch.Tensor, list[int]]:
        """(weights, active candidates) of one slot or stage in the current mode."""
        if self._mode == 'path':
            w = torch.zeros_like(logits)
            w[index] = 1.0
            return w.detach(), [index]
        soft = F.softmax(logits / self.space.temperature, -1)
        if self._mode == 'relaxed' or (self._mode == 'pairs' and len(soft) < 3):
            return soft, list(range(len(soft)))
        if self._mode == 'pairs':
            # NOTE: a one-path straight-through gradient (gumbel) measures how the loss changes when the sampled
            # op's output is scaled, not how the op compares with the others; mixing two candidates gives
            # d loss / d logit that compares them (DARTS restricted to a sampled pair), at twice a path's cost.
            pick = torch.multinomial(soft.detach().float().cpu(), 2, replacement=False, generator=self._generator)
            idx = pick.sort().values.to(logits.device)
            mix = F.softmax(logits.index_select(0, idx) / self.space.temperature, -1)
            return torch.zeros_like(soft).scatter(0, idx, mix), [int(i) for i in idx]
        u = torch.rand(logits.shape, generator=self._generator).to(logits.device)
        gumbel = -torch.log((-torch.log(u.clamp_min(1e-10))).clamp_min(1e-10))
        y = F.softmax((logits / self.space.temperature + gumbel) / self._tau, -1)
        hard = torch.zeros_like(y)
        hard[int(y.argmax())] = 1.0
        return hard - y.detach() + y, [int(y.argmax())]  # straight-through: forward one-hot, gradient soft

    # ------------------------------------------------------------------ forward
    def _run(self, x: torch.Tensor, tap: bool = False) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        """Stage ends of every stage (at the largest widths, zeros beyond the active width) and (tap) the
        SSDLite tapped expansion."""
        x = self.act(self.bn1(self.conv_stem(x)))
        ends = []
        for si, skips in enumerate(self._fixed_skip):
            for layer, skip in zip(self.blocks[si], skips):
                y, _ = layer(x)
                x = y + x if skip else y
            ends.append(x)
        if self._mode == 'path' and not self._masked:
            return self._run_sliced(x, ends, tap)
        return self._run_masked(x, ends, tap)

    def _run_sliced(self, x: torch.Tensor, ends: list[torch.Tensor], tap: bool
                    ) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        path, tapped = self._path, None
        tap_k = self.space.tap_stage if tap else None
        for k, st in enumerate(self.space.stages):
            width = st.widths[path.widths[k]]
            for slot, layer in enumerate(self.blocks[st.index]):
                name = layer.names[path.ops[k][slot]]
                if name == SKIP:
                    continue
                y, mid = layer.ops[name].forward_sliced(x, width)
                x = y + x if slot > 0 or (st.stride == 1 and x.shape[1] == width) else y
                if k == tap_k and slot == 0:
                    tapped = _fit_channels(mid, self.ssdlite_channels[0])
            ends.append(_fit_channels(x, st.max_width))
        if self.space.head_chs is not None and tap:
            head = F.conv2d(x, self.conv_head.weight[:, :x.shape[1]])
            ends.append(self.act(self.bn2(head)))
        return ends, tapped

    def _run_masked(self, x: torch.Tensor, ends: list[torch.Tensor], tap: bool
                    ) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        tapped = None
        alphas = iter(self.op_alphas)
        path = self._path
        tap_k = self.space.tap_stage if tap else None
        prev_w: torch.Tensor | None = None
        for k, st in enumerate(self.space.stages):
            widths, in_widths = getattr(self, f'_widths{k}'), getattr(self, f'_in_widths{k}')
            w_weights, _ = self._choice(self.width_alphas[k], path.widths[k] if path else None)
            out_mask = _width_mask(w_weights, widths, st.max_width)
            for slot, layer in enumerate(self.blocks[st.index]):
                op_w, active = self._choice(next(alphas), path.ops[k][slot] if path else None)
                p_in = (prev_w if prev_w is not None else torch.ones(1, device=x.device)) if slot == 0 else w_weights
                w_in = in_widths if slot == 0 else widths
                mids = [None if i not in active or n == SKIP else
                        _width_mask(p_in, w_in * layer.expansions[i], layer.ops[n].bn1.num_features)
                        for i, n in enumerate(layer.names)]
                ses = [None if m is None or layer.ops[n].se is None else
                       _width_mask(p_in, w_in.new_tensor([layer.ops[n].se_chs(int(w)) for w in w_in]),
                                   layer.ops[n].se.conv_reduce.out_channels)
                       for m, n in zip(mids, layer.names)]
                if slot > 0:
                    residual: torch.Tensor | float = 1.0
                elif st.stride == 1:
                    # NOTE: timm adds a residual to a stage's first layer when its input and output widths
                    # happen to be equal (stride 1); weight it by the probability that they are.
                    same = (w_in[:, None] == widths[None, :]).to(w_weights.dtype)
                    # NOTE: a probability, in fp32 under autocast too (which would run the matmul in bf16 / fp16);
                    # the softmax of `_choice` and the width masks stay fp32 by themselves
                    with torch.autocast(x.device.type, enabled=False):
                        residual = p_in @ same @ w_weights
                else:
                    residual = 0.0
                y, mid = layer(x, op_w, active, mids, residual, tap=k == tap_k and slot == 0, se_masks=ses)
                x = _mask(y, out_mask)
                if k == tap_k and slot == 0:
                    tapped = mid
            prev_w = w_weights
            ends.append(x)
        if self.space.head_chs is not None and tap:
            ends.append(self.act(self.bn2(self.conv_head(x))))
        return ends, tapped

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps at `out_indices` (for an FPN), in the current mode."""
        ends, _ = self._run(x)
        feats = [ends[si] for si, _, _ in self._features]
        return [feats[i] for i in self.out_indices]

    def ssdlite_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """[the tapped layer's expansion (stride 16), the head conv output (stride 32)] for SSDLite."""
        ends, tapped = self._run(x, tap=True)
        return [tapped, ends[-1]]

    # ------------------------------------------------------------------ weights
    def load_seed(self, seed_state_dict: Mapping[str, torch.Tensor], width: WidthMode = 'leading',
                  noise: float = 1e-5) -> None:
        """Remap seed weights into every candidate op (FNA seed -> super network remapping).

        Every candidate op of a slot starts from the same seed layer (depth rule), its kernel centred, its
        widths by `remap_state_dict` at the largest widths (grown channels: zero plus FNA++ noise).

        Args:
            seed_state_dict: Weights of the space's seed arch (timm key names).
            width: Width rule, 'leading' (FNA code) or 'bn_gamma'.
            noise: Noise scale of grown channels.
        """
        space = self.space
        names = sorted({n for st in space.stages for slot in st.slots for n in slot if n != SKIP})
        sd = self.state_dict()
        for i, name in enumerate(names):
            stages = list(space.seed.stages[:space.fixed_stages])
            stages += [Stage(st.max_width, st.stride, (name,) * len(st.slots)) for st in space.stages]
            arch = space.seed.replace(stages=tuple(stages), head_chs=space.head_chs)
            remapped = remap_state_dict(seed_state_dict, space.seed, arch, _init_state_dict(arch), width, noise)
            for key, value in remapped.items():
                target = self._super_key(key, name)
                if target is not None and (i == 0 or '.ops.' in target):
                    sd[target] = value
        self.load_state_dict(sd)

    def _super_key(self, key: str, name: str) -> str | None:
        """Super network key of a key of the all-`name` arch (None: `name` is not a candidate there)."""
        parts = key.split('.')
        if parts[0] != 'blocks' or int(parts[1]) < self.space.fixed_stages:
            return key
        si, slot = int(parts[1]), int(parts[2])
        layer = self.blocks[si][slot]
        return f'blocks.{si}.{slot}.ops.{name}.{".".join(parts[3:])}' if name in layer.ops else None

    def path_state_dict(self, path: ArchPath) -> dict[str, torch.Tensor]:
        """Weights of the derived network of `path` (timm key names) cut from the super network.

        The path's tensors at the largest widths are sliced to the path's widths by `remap_state_dict`
        (leading channels), so `build_backbone(space.derive(path))` loaded with them computes what the
        super network computes on that path.

        Args:
            path: The path.
        """
        big = self.space.max_path_arch(path)
        sd = self.state_dict()
        src = {k: v for k, v in sd.items() if not k.startswith(('op_alphas', 'width_alphas', 'blocks.'))}
        for si in range(self.space.fixed_stages):
            src.update({k: v for k, v in sd.items() if k.startswith(f'blocks.{si}.')})
        for k, st in enumerate(self.space.stages):
            kept = [(slot, st.slots[slot][i]) for slot, i in enumerate(path.ops[k]) if st.slots[slot][i] != SKIP]
            for li, (slot, name) in enumerate(kept):
                prefix = f'blocks.{st.index}.{slot}.ops.{name}.'
                src.update({f'blocks.{st.index}.{li}.{key[len(prefix):]}': v for key, v in sd.items()
                            if key.startswith(prefix)})
        derived = self.space.derive(path)
        return remap_state_dict(src, big, derived, _init_state_dict(derived), 'leading')


def _init_state_dict(arch: Arch) -> dict[str, torch.Tensor]:
    """A freshly initialised state dict of `arch`'s timm model as remapping needs it (BN gamma/var 1, rest 0)."""
    out = {}
    for key, shape in expected_shapes(arch).items():
        if key.endswith('num_batches_tracked'):
            out[key] = torch.zeros((), dtype=torch.long)
        elif key.endswith(('bn1.weight', 'bn2.weight', 'bn3.weight', 'running_var')):
            out[key] = torch.ones(shape)
        else:
            out[key] = torch.zeros(shape)
    return out
