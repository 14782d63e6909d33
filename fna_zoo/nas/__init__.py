"""Architecture adaptation search (FNA + Jung et al.'s channel search); not imported by `import fna_zoo`.

* `config`: the search's config defaults (`SEARCH_DEFAULTS`) and the checks of its `search` section;
* `space`: the search space around a seed `Arch` (ops, depth, per-stage widths) and its `ArchPath`s;
* `supernet`: the super network (candidate ops, width masks, architecture parameters, seed remapping);
* `cost`: cost tables and the objectives of architecture steps (`madds` built in);
* `latency`: latency lookup tables measured on a runtime (`latency_runtime`) and the `latency` objective;
* `searcher`: the alternating weight / architecture optimisation, checkpoints and outputs;
* `plot`: probabilities over a search as a PNG.
"""
from .config import SEARCH_DEFAULTS
from .cost import OBJECTIVES, CostObjective, CostTable, build_objective, madds_table
from .latency import build_latency_table, latency_table  # registers OBJECTIVES['latency']
from .space import ArchPath, SearchSpace, StageSpace
from .supernet import SuperNet

__all__ = ['SEARCH_DEFAULTS', 'ArchPath', 'SearchSpace', 'StageSpace', 'SuperNet', 'CostTable', 'CostObjective',
           'OBJECTIVES', 'build_objective', 'madds_table', 'build_latency_table', 'latency_table']
