"""The device kinds a runtime runs on: one reader of a device name (`cpu`, `cuda`, `cuda:N`), at the bottom of
`fna_zoo.runtime` so the runners, the plugins and the vocabulary share it without importing each other."""
from __future__ import annotations

__all__ = ['DEVICES', 'device_kind']

DEVICES = ('cpu', 'cuda')


def device_kind(device: str) -> str:
    """'cpu' or 'cuda' of a device name such as 'cuda:1' (ValueError in one line for anything else).

    Args:
        device: A device name.
    """
    kind = str(device).split(':', 1)[0].strip().lower()
    if kind not in DEVICES:
        raise ValueError(f"device {device!r} is unknown; expected 'cpu' or 'cuda' (or 'cuda:N')")
    return kind
