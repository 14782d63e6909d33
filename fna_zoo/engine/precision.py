"""Mixed precision for training and search: `train.amp` ('off', 'bf16', 'fp16') and `train.channels_last`.

bf16 autocast runs on CPUs (oneDNN: AVX512-BF16 / AMX make it fast) and on CUDA; fp16 runs on CUDA only, with a
gradient scaler (Micikevicius et al., "Mixed Precision Training", ICLR 2018), as torchvision's detection references
(`--amp`) and timm's train script do. channels_last (NHWC) is a memory layout, not a precision: the convolutions
pick faster kernels on both devices, the numbers stay fp32.

What stays fp32 (NOTE): parameters, gradients and optimizer states (autocast casts per op, the weights are fp32
masters); BatchNorm statistics (autocast leaves `batch_norm` at its input's precision and the running estimates are
fp32 buffers); the loss sum, the finite check and gradient clipping (the loss terms are cast back before they are
added); the MAdds/latency objective and the architecture entropy (computed from fp32 logits outside autocast);
parameter remapping; evaluation (no autocast in `fna_zoo.engine.evaluate`: the reported AP is an fp32 model's).
"""
from __future__ import annotations

import contextlib
from typing import Any, ContextManager, Mapping, Sequence

import torch
from torch import nn

from .config import AMP_MODES

__all__ = ['AMP_MODES', 'check_precision', 'autocast', 'grad_scaler', 'apply_memory_format', 'forward_losses',
           'scaler_states', 'restore_scalers', 'check_resume_precision']


def check_precision(amp: str, device: torch.device) -> None:
    """Refuse a precision the device cannot run, in one line.

    Args:
        amp: 'off', 'bf16' or 'fp16'.
        device: The training device.

    Raises:
        ValueError: Unknown mode, fp16 off CUDA, or bf16 on a GPU without it.
    """
    if amp not in AMP_MODES:
        raise ValueError(f"config train.amp is {amp!r}; expected one of {', '.join(AMP_MODES)}")
    if amp == 'fp16' and device.type != 'cuda':
        raise ValueError(f"config train.amp is 'fp16' on {device.type}; fp16 needs a CUDA device (use 'bf16' on CPU)")
    if amp == 'bf16' and device.type == 'cuda' and not torch.cuda.is_bf16_supported():
        raise ValueError(f"config train.amp is 'bf16' but {torch.cuda.get_device_name(device)} has no bf16; "
                         "use 'fp16'")


def autocast(amp: str, device: torch.device) -> ContextManager[Any]:
    """The autocast context of the forward pass (a no-op context when `amp` is 'off').

    Args:
        amp: 'off', 'bf16' or 'fp16'.
        device: The training device.
    """
    if amp == 'off':
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == 'bf16' else torch.float16)


def grad_scaler(amp: str, device: torch.device) -> torch.amp.GradScaler | None:
    """A gradient scaler for fp16 (None otherwise: bf16 has fp32's exponent range and needs none).

    Args:
        amp: 'off', 'bf16' or 'fp16'.
        device: The training device.
    """
    return torch.amp.GradScaler(device.type) if amp == 'fp16' else None


def apply_memory_format(model: nn.Module, channels_last: bool) -> nn.Module:
    """Put the model's 4-d parameters in channels_last (NHWC) when asked; returns the model.

    NOTE: the images stay NCHW; a convolution with NHWC weights returns NHWC activations, so the layout spreads
    through the network from the stem (the detection transform's batching needs no change).

    Args:
        model: The model (on its device).
        channels_last: Convert, or leave as it is.
    """
    return model.to(memory_format=torch.channels_last) if channels_last else model


def forward_losses(model: nn.Module, images: Sequence[torch.Tensor], targets: Sequence[dict[str, torch.Tensor]],
                   amp: str) -> dict[str, torch.Tensor]:
    """The loss terms of a detector's training forward, run under `amp`'s autocast, in fp32.

    NOTE: the terms are cast back to fp32 before anyone adds them up (a bf16 sum of small terms loses their low
    bits; the finite check and an fp16 scaler's scaling then see fp32 numbers).

    Args:
        model: The detector (or its DDP wrapper) in training mode.
        images: The batch's images, on the model's device.
        targets: Their targets.
        amp: 'off', 'bf16' or 'fp16'.
    """
    device = images[0].device
    with autocast(amp, device):
        losses = model(images, targets)
    return {k: v.float() for k, v in losses.items()}


def scaler_states(scalers: Mapping[str, torch.amp.GradScaler | None]) -> dict[str, Any]:
    """The checkpoint entries of the gradient scalers in use, by their key (none for 'off' and 'bf16').

    Args:
        scalers: Checkpoint key -> scaler or None ('scaler', 'arch_scaler').
    """
    return {key: s.state_dict() for key, s in scalers.items() if s is not None}


def restore_scalers(state: Mapping[str, Any], scalers: Mapping[str, torch.amp.GradScaler | None]) -> None:
    """Load the scalers' states from a checkpoint (`scaler_states`' entries); the scale an fp16 run reached is kept.

    Args:
        state: The checkpoint.
        scalers: Checkpoint key -> scaler or None.

    Raises:
        ValueError: A scaler in use has no entry in the checkpoint.
    """
    for key, s in scalers.items():
        if s is None:
            continue
        if key not in state:
            raise ValueError(f'checkpoint holds no {key} state; expected the last.pth of a run with train.amp fp16')
        s.load_state_dict(state[key])


def check_resume_precision(saved: dict[str, Any], train_cfg: dict[str, Any]) -> None:
    """Refuse to resume a run with another precision or layout than it started with (resume is exact only then).

    Args:
        saved: The checkpoint's `config['train']` (runs from before these keys count as 'off' / False).
        train_cfg: The config's `train` section now.

    Raises:
        ValueError: `train.amp` or `train.channels_last` differs.
    """
    for key, before in (('amp', 'off'), ('channels_last', False)):
        was = saved.get(key, before)
        if was != train_cfg[key]:
            raise ValueError(f'config train.{key} is {train_cfg[key]!r} but the run started with {was!r}; resume '
                             f'with --set train.{key}={was} or start a new run')
