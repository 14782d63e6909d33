"""The adaptation study: do searched backbones beat the seed and its width-scaled versions, on the tree set?

Every model is a RetinaNet retrained with one recipe (`configs/trees_retinanet.yaml`) on the real tree-crown set
and evaluated on its validation tiles; one retrain seed moves AP50 by several points, so the compared models are
retrained with several retrain seeds (`--seeds`, 0..N-1) and compared paired by retrain seed, with 95 % t-intervals.
The models, in the order they are retrained (every retrain seed of a model before the next model):

- `seed`: the seed MobileNetV2 as an arch of the search space of `configs/trees_search.yaml` (its own choices,
  `SearchSpace.seed_path`), remapped from the ImageNet seed (FNA parameter remapping: Fang et al., ICLR 2020 -
  https://arxiv.org/abs/2001.02525);
- `seed_w<m>`: the seed with every searchable stage's width times m (`--width-mults`; `SearchSpace.scaled_seed`),
  the baseline a user picks without search;
- `seed_e<e>`: the seed with every searchable layer's expansion ratio e instead of 6 (`--expansions`;
  `SearchSpace.expansion_seed_path`), the other baseline without search: thinner blocks, the seed's widths;
- `--searched NAME=ARCH`: archs of searches (Jung et al., ICPR 2022 - https://arxiv.org/abs/2206.08509: channel
  dimensions searched and mapped), remapped;
- `fna_retinanet`: the published FNA RetinaNet arch, remapped;
- `random_<i>` (`--random`, one retrain seed each): uniform draws of the space at the seed's cost (MAdds at 320x320,
  or with `--table` a latency table's prediction) within 5 %, by rejection sampling: the random-search baseline of
  Li & Talwalkar (UAI 2019 - https://arxiv.org/abs/1902.07638);
- `seed_random_init` (one retrain seed): the seed arch from random init, what remapping is worth.

Reproducible and resumable from committed files, under `--out` (default `benchmarks/results/<machine>`):

- `study/archs/<name>.yaml`: every arch. An existing file is read, not regenerated (a clone reruns the committed
  archs; a `--searched` arch that differs from its committed file is refused);
- `study/runs/<name>_r<k>.json`: one finished retrain (metrics, eval curve, wall time, the arch, recipe,
  overrides and seed weights). An existing one is not retrained, so a study continues on any machine from the
  committed JSONs; a missing one retrains in the run folder `<runs>/<name>_r<k>` (resumes an interrupted run; a
  finished folder is read back). Two models with the same arch and seed weights share their retrains (`same_as`);
- `study/latency.json` (`--latency`, run alone on the machine): onnxruntime latency of every distinct backbone at
  320x320, batch 1, timed interleaved (one run of each per round, so load drifts hit all alike);
- `study/fidelity.json` (`--fidelity SEARCH_RUN`): Kendall's tau between the search's super-network AP50 of the
  in-space archs and their retrained AP50 (`fna_zoo.nas.fidelity`);
- `adaptation_study.{md,csv,json,png}` and `adaptation_study_curves.png`: the report, rewritten at the end of every
  invocation from whatever retrains are done (`--report` writes only it). Every path in them is relative to the
  repository root.

The command that reruns the study (retrains what is missing, then `--latency` alone):

    python benchmarks/adaptation_study.py --width-mults 0.75 0.5 --searched searched_lat100 searched_lat75 \\
        --table configs/latency_tables/trees_search_onnxruntime-cpu_320x320.json

(a bare `--searched NAME` reruns the committed `study/archs/NAME.yaml`; `NAME=ARCH` adds a new search's arch).

Another recipe is another study: `--recipe` with `--name` keeps its retrain records, fidelity and report apart
(`<out>/<name>/runs/`, `adaptation_<name>.*`) and shares the archs and latencies of `study/`. The stabler recipe
(`configs/trees_retinanet_long.yaml`: 800 steps, channels_last):

    python benchmarks/adaptation_study.py --recipe configs/trees_retinanet_long.yaml --name study_long \
        --runs runs/study_long --width-mults 0.75 --expansions 3 --searched searched_lat100 searched_lat75 --random 0

The second seed family, EfficientNet-Lite0 (`--family lite0`: the space of `configs/trees_search_lite0.yaml`, its
ImageNet seed `asset:efficientnet_lite0.in1k`, the recipe `configs/trees_retinanet_lite0.yaml`), is its own study
under `study_lite0/` (archs, latency, records; report `adaptation_study_lite0.*`); its `--latency` also times the
MobileNetV2 seed and width-scaled seeds in the same rounds, and the report shows them beside it with their AP50
from `adaptation_study.json` (same recipe settings):

    python benchmarks/adaptation_study.py --family lite0 --seeds 2 --searched searched_lite0 --random 0

`--only NAME ...` and `--only-seeds K ...` split a study across processes or machines (one thread each:
`OMP_NUM_THREADS=1`; a run folder is locked while it trains). `--more-seeds NAME=N ...` gives some models retrain
seeds 0..N-1 instead of their planned ones where one comparison needs a tighter interval; every comparison pairs
over the seeds both models have (the long recipe's seed and FNA arch have 8: add `--more-seeds seed=8
fna_retinanet=8` to its command above).
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import random
import re
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from fna_zoo.arch import Arch, load_arch  # noqa: E402
from fna_zoo.checks import first_difference  # noqa: E402
from fna_zoo.complexity import count_arch  # noqa: E402
from fna_zoo.engine.config import load_config  # noqa: E402
from fna_zoo.fileio import atomic_write_text  # noqa: E402
from fna_zoo.nas.config import SEARCH_DEFAULTS  # noqa: E402
from fna_zoo.nas.space import ArchPath, SearchSpace  # noqa: E402



@dataclass(frozen=True)
class Family:
    """A seed family of the study: its search space, ImageNet seed, default recipe and the folder of its archs.

    Args:
        search_config: The search config whose space holds the seed and the random archs.
        seed_weights: The ImageNet seed remapped into every model but `seed_random_init`.
        recipe: The default retrain config.
        archs: The folder under --out of its archs and latencies (`<archs>/archs`, `<archs>/latency.json`).
        baselines: Whether it has the MobileNetV2-only rows (`fna_retinanet`, `seed_random_init`).
        reference: Another family whose seed and width-scaled seeds are timed beside this one's (`--latency`) and
            shown beside it in the report, from that family's study report.
    """

    search_config: str
    seed_weights: str
    recipe: str
    archs: str
    baselines: bool = True
    reference: str | None = None


FAMILIES = {
    'mobilenetv2': Family('configs/trees_search.yaml', 'asset:mobilenetv2_100.tv_in1k', 'configs/trees_retinanet.yaml',
                          'study'),
    'lite0': Family('configs/trees_search_lite0.yaml', 'asset:efficientnet_lite0.in1k',
                    'configs/trees_retinanet_lite0.yaml', 'study_lite0', baselines=False, reference='mobilenetv2'),
}
FAMILY = FAMILIES['mobilenetv2']  # --family (main sets it)
DEFAULT_RECIPE, DEFAULT_STUDY = FAMILY.recipe, 'study'
RECIPE = DEFAULT_RECIPE  # --recipe (main sets it)
STUDY = DEFAULT_STUDY  # --name: the folder of the retrain records and fidelity, and the report's name (main sets it)
SEARCH_CONFIG = FAMILY.search_config
SEED_WEIGHTS = FAMILY.seed_weights
STUDY_SIZE = (320, 320)     # the recipe's input (model.kwargs min_size = max_size = 320)
COST_TOLERANCE = 0.05       # random archs: cost within 5 % of the seed's
METRICS = ('AP', 'AP50', 'AP75', 'APs', 'APm', 'APl', 'step')
# two-sided 95 % critical values of Student's t for 1..30 degrees of freedom; the normal 1.96 beyond
T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
       2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)
GROUPS = {'seed': 'seed (ImageNet remap)', 'width': 'width-scaled seed', 'expansion': 'expansion-scaled seed',
          'searched': 'searched', 'fna': 'FNA RetinaNet arch', 'random': 'random at the seed cost',
          'init': 'seed (random init)'}
_NAME = re.compile(r'^[A-Za-z][A-Za-z0-9_.-]*$')


class StudyError(ValueError):
    """A study input that cannot be used (one line, for `error: ...`)."""


@dataclass
class Model:
    """One compared model.

    Args:
        name: Its name (also its arch file's and run JSONs' stem).
        group: Its kind (one of `GROUPS`' values).
        arch: The backbone arch.
        seed_weights: Seed weights remapped into it (None: random init).
        seeds: The retrain seeds.
        arch_file: Its `study/archs/<name>.yaml`.
        owner: The first model with the same arch and seed weights, whose retrains it shares (itself if none).
    """

    name: str
    group: str
    arch: Arch
    seed_weights: str | None
    seeds: tuple[int, ...]
    arch_file: Path
    owner: str = ''


# ---------------------------------------------------------------------------------------------- paths
def portable(path: str | os.PathLike, out: Path | None = None) -> str:
    """`path` as written into the outputs: relative to the repository root (POSIX), never absolute.

    NOTE: a path outside the repository has no repo-relative form that means anything on another machine: one
    under the results folder `out` is written `<out>/<relative path>`, any other `<local>/<file name>`.

    Args:
        path: The path.
        out: The study's results folder.
    """
    p = Path(path).resolve()
    for base, prefix in ((ROOT, ''), (out.resolve() if out is not None else None, '<out>/')):
        if base is not None and p.is_relative_to(base):
            return prefix + p.relative_to(base).as_posix()
    return f'<local>/{p.name}'


def portable_value(value: str | None, out: Path | None = None) -> str | None:
    """A setting with its absolute path, if any, made `portable`.

    Args:
        value: A seed weights spec or an override `key=value`.
        out: The study's results folder.
    """
    if value is None:
        return None
    key, eq, val = value.partition('=') if '=' in value and not os.path.isabs(value) else ('', '', value)
    return f'{key}{eq}{portable(val, out)}' if os.path.isabs(val) else value


def arch_key(arch: Arch, seed_weights: str | None) -> str:
    """What makes two models the same retrain: the arch's dict form and the seed weights.

    Args:
        arch: The backbone arch.
        seed_weights: The seed weights remapped into it (None: random init).
    """
    return json.dumps([arch.to_dict(), seed_weights], sort_keys=True)


def same_network(a: Arch, b: Arch) -> bool:
    """Whether two archs build the same RetinaNet backbone: stem, activation, SE, seed and every stage's width,
    stride and layers (skips and the head conv aside).

    NOTE: RetinaNet taps stages 2-4 (`features_only`), so the 1x1 head conv of a registered MobileNetV2
    (head_chs 1280) is never built; the seed as an arch of the space (no head, skip slots) builds bit-identically.

    Args:
        a: An arch.
        b: Another.
    """
    def net(x: Arch) -> tuple:
        return (x.stem_chs, x.act, x.se_ratio, x.seed or 'mobilenetv2_100',
                tuple((s.out_chs, s.stride, s.layers) for s in x.stages))
    return net(a) == net(b)


# ---------------------------------------------------------------------------------------------- the models
def study_space() -> SearchSpace:
    """The search space of `configs/trees_search.yaml` (the study's seed and random archs live in it)."""
    cfg = load_config(ROOT / SEARCH_CONFIG, defaults=SEARCH_DEFAULTS)
    return SearchSpace.from_config(cfg['search']['space'], cfg['detector'])


def cost_function(space: SearchSpace, table: str | os.PathLike | None = None
                  ) -> tuple[Callable[[ArchPath], float], str]:
    """(cost of a path, its description): backbone MAdds at the study size, or a latency table's prediction.

    Args:
        space: The search space.
        table: A latency table file of `space` at 320x320 (`fna-latency-table`), or None for MAdds.
    """
    if table is None:
        return (lambda path: float(count_arch(space.derive(path), STUDY_SIZE).madds)), 'backbone MAdds at 320x320'
    from fna_zoo.nas.latency import latency_table

    costs = latency_table(space, STUDY_SIZE, table)  # checked against the space and the size (one-line errors)
    return costs.of_path, f'latency predicted by {Path(table).name} (ms)'


def random_archs(space: SearchSpace, count: int, seed: int, cost: Callable[[ArchPath], float] | None = None,
                 tolerance: float = COST_TOLERANCE) -> list[dict[str, Any]]:
    """`count` archs drawn uniformly from `space` (an op index per slot, a width index per stage), kept when their
    cost is within `tolerance` of the seed's (rejection sampling).

    Args:
        space: The search space.
        count: How many.
        seed: Seed of the draws.
        cost: Cost of a path (default: backbone MAdds at the study size; see `cost_function`).
        tolerance: Relative band around the seed's cost.

    Returns:
        Per arch: `name` (random_<i>), `arch` (`Arch`), `path`, `cost`, `target` (the seed's cost) and `draws`
        (paths drawn to find it).
    """
    cost = cost or cost_function(space)[0]
    target = cost(space.seed_path())
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    draws = 0
    while len(out) < count:
        draws += 1
        if draws > 1_000_000:
            raise RuntimeError(f'found {len(out)} of {count} archs within {tolerance:.0%} of the seed cost')
        path = space.random_path(rng)
        c = cost(path)
        if abs(c / target - 1) <= tolerance:
            out.append({'name': f'random_{len(out)}', 'arch': space.derive(path), 'path': path, 'cost': c,
                        'target': target, 'draws': draws})
            draws = 0
    return out


def study_arch(path: Path, make: Callable[[], Arch], header: str = '') -> Arch:
    """The arch of `path` when it exists (a committed arch), else `make()`, written there (atomically).

    Args:
        path: `study/archs/<name>.yaml`.
        make: Builds the arch.
        header: A comment line (without '#') written above it, saying where it comes from.
    """
    if path.is_file():
        return load_arch(path)
    arch = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, (f'# {header}\n' if header else '') + arch.to_yaml())
    return arch


def plan_models(space: SearchSpace, out: Path, seeds: int = 4, width_mults: Sequence[float] = (),
                expansions: Sequence[int] = (),
                searched: Sequence[tuple[str, Path | None]] = (), random_count: int = 5, random_seed: int = 0,
                seed_weights: str = SEED_WEIGHTS, table: str | os.PathLike | None = None,
                more_seeds: dict[str, int] | None = None) -> list[Model]:
    """The study's models in their order of work, their archs read from `<out>/<family archs>/archs` (`study/archs`
    for MobileNetV2) or written there.

    Args:
        space: The search space (`study_space`).
        out: The results folder.
        seeds: Retrain seeds of the compared models (0..seeds-1).
        width_mults: Width multipliers of the width-scaled seeds.
        expansions: Expansion ratios of the expansion-scaled seeds.
        searched: (name, arch file or None for the committed one) of each searched arch.
        random_count: Random archs.
        random_seed: Seed of their draws.
        seed_weights: The seed weights remapped into every model but `seed_random_init`.
        table: Latency table whose prediction is the random archs' cost (None: MAdds).
        more_seeds: Retrain seeds (0..n-1) of named models instead of their planned ones (`--more-seeds`: more
            seeds where one comparison needs a tighter interval).

    Raises:
        StudyError: A searched arch that differs from its committed file, or that is nowhere.
    """
    archs = out / FAMILY.archs / 'archs'
    every = tuple(range(seeds))
    models: list[Model] = []

    def add(name: str, group: str, arch: Arch, weights: str | None, model_seeds: tuple[int, ...]) -> None:
        if name in (more_seeds or {}):
            model_seeds = tuple(range(more_seeds[name]))
        models.append(Model(name, group, arch, weights, model_seeds, archs / f'{name}.yaml'))

    seed = study_arch(archs / 'seed.yaml', lambda: space.derive(space.seed_path()),
                      f'seed: the seed of {SEARCH_CONFIG} as an arch of its space (SearchSpace.seed_path)')
    add('seed', GROUPS['seed'], seed, seed_weights, every)
    for m in width_mults:
        name = f'seed_w{m:.2f}'
        add(name, GROUPS['width'], study_arch(archs / f'{name}.yaml', lambda m=m: space.scaled_seed(m),
                                              f'{name}: SearchSpace.scaled_seed({m})'), seed_weights, every)
    for e in expansions:
        name = f'seed_e{e}'
        add(name, GROUPS['expansion'],
            study_arch(archs / f'{name}.yaml', lambda e=e: space.derive(space.expansion_seed_path(e)),
                       f'{name}: SearchSpace.expansion_seed_path({e})'), seed_weights, every)
    for name, path in searched:
        file = archs / f'{name}.yaml'
        if path is None or not path.is_file():
            if not file.is_file():
                where = f'{str(path)!r} does not exist and ' if path is not None else ''
                raise StudyError(f'--searched {name}: {where}there is no committed {portable(file, out)}; expected '
                                 'NAME=ARCH with an arch.yaml of a search')
            arch = load_arch(file)
            if path is not None:
                print(f'study: {path} does not exist; {name} uses the committed {portable(file, out)}')
        else:
            arch = load_arch(path)
            if file.is_file() and load_arch(file).to_dict() != arch.to_dict():
                raise StudyError(f'--searched {name}={path} differs from the committed {portable(file, out)}; '
                                 'expected the same arch (or another name, or another --out)')
            study_arch(file, lambda: arch, f'{name}: {portable(path, out)}')
        add(name, GROUPS['searched'], arch, seed_weights, every)
    if FAMILY.baselines:
        add('fna_retinanet', GROUPS['fna'], study_arch(archs / 'fna_retinanet.yaml', lambda: load_arch(
            'fna_retinanet_backbone'), 'fna_retinanet: the registered fna_retinanet_backbone'), seed_weights, every)
    files = [archs / f'random_{i}.yaml' for i in range(random_count)]
    drawn = None
    if not all(f.is_file() for f in files):  # NOTE: committed random archs are read, whatever --table says now
        cost, what = cost_function(space, table)
        drawn = random_archs(space, random_count, random_seed, cost)
    for i, f in enumerate(files):
        def make(i: int = i) -> Arch:
            return drawn[i]['arch']
        header = '' if drawn is None else (
            f"random_{i}: uniform draw of the space of {SEARCH_CONFIG} within {COST_TOLERANCE:.0%} of the seed's "
            f"{what} ({drawn[i]['cost']:.4g} vs {drawn[i]['target']:.4g}; --random-seed {random_seed})")
        add(f'random_{i}', GROUPS['random'], study_arch(f, make, header), seed_weights, (0,))
    if FAMILY.baselines:
        add('seed_random_init', GROUPS['init'], study_arch(archs / 'seed_random_init.yaml', lambda: seed,
                                                           'seed_random_init: the seed arch, from random init'),
            None, (0,))
    owners: dict[str, str] = {}
    for m in models:
        m.owner = owners.setdefault(arch_key(m.arch, m.seed_weights), m.name)
    return models


# ---------------------------------------------------------------------------------------------- retraining
def run_json(out: Path, name: str, k: int) -> Path:
    """The record of one retrain.

    Args:
        out: The results folder.
        name: The model (the owner of its retrains).
        k: The retrain seed.
    """
    return out / STUDY / 'runs' / f'{name}_r{k}.json'


def retrain_config(model: Model, k: int, folder: Path, overrides: Sequence[str]) -> dict[str, Any]:
    """The retrain config: the recipe with the overrides, the model's arch and seed weights, the seed and output.

    Args:
        model: The model.
        k: The retrain seed.
        folder: The run folder.
        overrides: Recipe overrides (`key=value`).
    """
    cfg = load_config(ROOT / RECIPE, overrides)
    cfg['model']['backbone'] = model.arch.to_dict()
    cfg['model']['seed_weights'] = model.seed_weights
    cfg['seed'] = k
    cfg['output'] = str(folder)
    return cfg


def check_run_folder(folder: Path, cfg: dict[str, Any], arch: Arch) -> None:
    """Refuse (StudyError) a finished run folder trained with another recipe, seed or arch than `cfg`.

    NOTE: a folder of `fna-retrain --config configs/trees_retinanet.yaml --set seed=<k>` (backbone
    'mobilenetv2_100') passes for the seed: its arch.yaml builds the same network (`same_network`).

    Args:
        folder: The run folder (config.yaml, arch.yaml).
        cfg: The config the study would train it with (`retrain_config`).
        arch: The study's arch.
    """
    saved = yaml.safe_load((folder / 'config.yaml').read_text())
    mine = json.loads(json.dumps(cfg))
    for c in (saved, mine):
        c.pop('output', None)
        c.get('model', {}).pop('backbone', None)
    diff = first_difference(saved, mine)
    if diff:
        raise StudyError(f'run folder {folder} was trained with another config ({diff}, folder vs study); expected '
                         'the study recipe (or another --runs)')
    snapshot = folder / 'arch.yaml'
    if not snapshot.is_file() or not same_network(load_arch(snapshot), arch):
        raise StudyError(f'run folder {folder} holds another backbone than the study arch; expected the same arch '
                         '(or another --runs)')


def eval_curve(folder: Path) -> list[dict[str, float]]:
    """A retrain's AP-vs-steps curve (its eval.csv): step, AP and AP50 (fractions).

    Args:
        folder: The run folder.
    """
    path = folder / 'eval.csv'
    if not path.is_file():
        return []
    with path.open() as f:
        return [{'step': int(r['step']), 'AP': float(r['AP']), 'AP50': float(r['AP50'])} for r in csv.DictReader(f)]


def retrain_run(model: Model, k: int, runs: Path, out: Path, overrides: Sequence[str]) -> dict[str, Any]:
    """Retrain seed `k` of `model` in `<runs>/<name>_r<k>` (resuming an interrupted run, reading back a finished
    one) and write its record `study/runs/<name>_r<k>.json`; returns the record.

    Args:
        model: The model (the owner of its retrains).
        k: The retrain seed.
        runs: The run folders' parent.
        out: The results folder.
        overrides: Recipe overrides.
    """
    from fna_zoo.engine.train import retrain
    from fna_zoo.runtime.machine import machine_info

    folder = runs / f'{model.name}_r{k}'
    cfg = retrain_config(model, k, folder, overrides)
    done = folder / 'metrics.json'
    tic, fresh = time.perf_counter(), not (folder / 'last.pth').is_file()
    if done.is_file() and (folder / 'final.pth').is_file():
        check_run_folder(folder, cfg, model.arch)
        print(f'study: {folder} is finished; reading it back')
        fresh = False
    else:
        retrain(cfg, resume=True)
    result = json.loads(done.read_text())
    # NOTE: a run this process did from start to end is timed here; a resumed or read-back one from its first file
    # (config.yaml, written at the start) to its last (metrics.json), interruptions included
    wall = time.perf_counter() - tic if fresh else done.stat().st_mtime - (folder / 'config.yaml').stat().st_mtime
    record = {'name': model.name, 'group': model.group, 'retrain_seed': k, 'arch': portable(model.arch_file, out),
              'backbone': model.arch.to_dict(), 'recipe': RECIPE,
              'overrides': [portable_value(o, out) for o in overrides],
              'seed_weights': portable_value(model.seed_weights, out),
              'metrics': {key: result[key] for key in METRICS if key in result}, 'curve': eval_curve(folder),
              'wall_s': round(wall, 1), 'machine': machine_info()}
    path = run_json(out, model.name, k)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(record, indent=1) + '\n')
    return record


def read_run(path: Path, model: Model, overrides: Sequence[str], out: Path) -> dict[str, Any]:
    """A retrain record, checked against the study: same arch, recipe, overrides and seed weights.

    Args:
        path: The record (`run_json`).
        model: The model that owns it.
        overrides: The study's recipe overrides.
        out: The results folder.

    Raises:
        StudyError: A record of another arch or recipe (results of another study in the same `--out`).
    """
    rec = json.loads(path.read_text())
    want = {'backbone': model.arch.to_dict(), 'recipe': RECIPE,
            'overrides': [portable_value(o, out) for o in overrides],
            'seed_weights': portable_value(model.seed_weights, out)}
    for key, value in want.items():
        if rec.get(key) != value:
            raise StudyError(f'{portable(path, out)} was made with another {key} ({rec.get(key)!r}, the study has '
                             f'{value!r}); expected the study settings (or another --out)')
    return rec


def _machine_name(machine: dict[str, Any]) -> str:
    n = machine.get('threads', '?')
    return f"{machine.get('cpu_model') or '?'} ({n} thread{'' if n == 1 else 's'})"


def load_rows(models: Sequence[Model], out: Path, overrides: Sequence[str]) -> list[dict[str, Any]]:
    """One row per model and retrain seed whose retrain is recorded (a model sharing another's retrains reads
    that model's records, `same_as`).

    Args:
        models: The study's models (`plan_models`).
        out: The results folder.
        overrides: The study's recipe overrides (every record is checked against them, `read_run`).
    """
    by_name = {m.name: m for m in models}
    rows = []
    for m in models:
        for k in m.seeds:
            path = run_json(out, m.owner, k)
            if not path.is_file():
                continue
            rec = read_run(path, by_name[m.owner], overrides, out)
            rows.append({'name': m.name, 'group': m.group, 'retrain_seed': k,
                         'same_as': m.owner if m.owner != m.name else None, 'arch': portable(m.arch_file, out),
                         **{key: rec['metrics'].get(key) for key in METRICS}, 'wall_s': rec.get('wall_s'),
                         'run': f'{m.owner}_r{k}', 'curve': rec.get('curve', []),
                         'cpu': _machine_name(rec.get('machine') or {})})
    return rows


def unplanned_seeds(out: Path, m: Model) -> list[int]:
    """Retrain seeds of a model (owning its retrains) recorded under `out` but not planned (the report leaves them
    out).

    Args:
        out: The results folder.
        m: The model.
    """
    if m.owner != m.name:
        return []
    found = (re.fullmatch(rf'{re.escape(m.name)}_r([0-9]+)', f.stem) for f in (out / STUDY / 'runs').glob('*.json'))
    return sorted(int(x[1]) for x in found if x and int(x[1]) not in m.seeds)


# ---------------------------------------------------------------------------------------------- statistics
def t_critical(df: int) -> float:
    """Two-sided 95 % critical value of Student's t with `df` degrees of freedom (the normal's beyond 30)."""
    if df < 1:
        raise ValueError(f'degrees of freedom is {df}; expected at least 1')
    return T95[df - 1] if df <= len(T95) else 1.96


def paired_difference(a: dict[int, float], b: dict[int, float]) -> dict[str, Any]:
    """Mean of a - b over the keys both have (retrain seeds), with its 95 % t-interval.

    Args:
        a: Value per retrain seed of the first model.
        b: Value per retrain seed of the second.

    Returns:
        `n` (pairs), `seeds`, `mean`, `sd` (sample, n - 1) and `ci` ([low, high]); None where n is too small.
    """
    seeds = sorted(set(a) & set(b))
    d = [a[k] - b[k] for k in seeds]
    n = len(d)
    mean = statistics.mean(d) if n else None
    sd = statistics.stdev(d) if n > 1 else None
    ci = None
    if n > 1:
        half = t_critical(n - 1) * sd / math.sqrt(n)
        ci = [mean - half, mean + half]
    return {'n': n, 'seeds': seeds, 'mean': mean, 'sd': sd, 'ci': ci}


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b of two paired samples (ties in either handled); NaN when undefined (n < 2, or a constant
    sample).

    Args:
        x: The first sample.
        y: The second, paired with `x`.
    """
    if len(x) != len(y):
        raise ValueError(f'kendall_tau of {len(x)} and {len(y)} values; expected paired samples')
    concordant = discordant = ties_x = ties_y = 0
    for i in range(len(x)):
        for j in range(i + 1, len(x)):
            dx, dy = x[i] - x[j], y[i] - y[j]
            if dx == 0 and dy == 0:
                continue  # tied in both: counts in neither term
            if dx == 0:
                ties_x += 1
            elif dy == 0:
                ties_y += 1
            elif (dx > 0) == (dy > 0):
                concordant += 1
            else:
                discordant += 1
    denom = math.sqrt((concordant + discordant + ties_x) * (concordant + discordant + ties_y))
    return (concordant - discordant) / denom if denom else float('nan')


def model_counts(arch: Arch) -> dict[str, float]:
    """Backbone params (M) and GMAdds at the study size, without the head conv (RetinaNet does not build it).

    Args:
        arch: The backbone arch.
    """
    c = count_arch(arch.replace(head_chs=None), STUDY_SIZE)
    return {'params_m': c.params / 1e6, 'gmadds_320': c.madds / 1e9}


def _pct(v: float | None) -> float | None:
    return None if v is None else 100 * v


def summarize(models: Sequence[Model], rows: Sequence[dict[str, Any]],
              latency: dict[str, Any] | None) -> list[dict[str, Any]]:
    """One line per model: n, params, GMAdds, ORT p50 and its ratio to the seed's, AP and AP50 mean and sample sd
    over its retrain seeds (in %); `partial` when it has fewer retrains than planned.

    Args:
        models: The study's models.
        rows: The retrain rows (`load_rows`).
        latency: latency.json (None: not measured).
    """
    lat = (latency or {}).get('archs', {})
    seed_p50 = (lat.get('seed') or {}).get('p50_ms')
    out = []
    for m in models:
        rs = [r for r in rows if r['name'] == m.name]
        line: dict[str, Any] = {'name': m.name, 'group': m.group, 'same_as': m.owner if m.owner != m.name else None,
                                'arch': None, 'n': len(rs), 'planned': len(m.seeds), 'partial': len(rs) < len(m.seeds),
                                **model_counts(m.arch)}
        p50 = (lat.get(m.name) or {}).get('p50_ms')
        line['ort_p50_ms'] = p50
        line['ort_p90_ms'] = (lat.get(m.name) or {}).get('p90_ms')
        line['ort_ratio'] = p50 / seed_p50 if p50 and seed_p50 else None
        for key in ('AP', 'AP50'):
            vals = [100 * r[key] for r in rs if r.get(key) is not None]
            line[f'{key}_mean'] = statistics.mean(vals) if vals else None
            line[f'{key}_sd'] = statistics.stdev(vals) if len(vals) > 1 else None
        out.append(line)
    return out


def comparisons(models: Sequence[Model], rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """AP50 differences (percentage points) paired by retrain seed: each searched arch vs the seed and vs each
    width- or expansion-scaled seed, each scaled seed vs the seed, each expansion-scaled seed vs each width-scaled
    seed, the FNA RetinaNet arch vs the seed.

    Args:
        models: The study's models.
        rows: The retrain rows (`load_rows`).
    """
    per = {m.name: {r['retrain_seed']: 100 * r['AP50'] for r in rows if r['name'] == m.name} for m in models}
    names = {g: [m.name for m in models if m.group == GROUPS[g]] for g in ('searched', 'width', 'expansion', 'fna')}
    scaled = names['width'] + names['expansion']
    pairs = [(s, b) for s in names['searched'] for b in ['seed', *scaled]]
    pairs += [(w, 'seed') for w in scaled] + [(e, w) for e in names['expansion'] for w in names['width']]
    pairs += [(f, 'seed') for f in names['fna']]
    return [{'a': a, 'b': b, 'metric': 'AP50', **paired_difference(per[a], per[b])} for a, b in pairs]


# ---------------------------------------------------------------------------------------------- latency, fidelity
def reference_archs(out: Path) -> dict[str, Arch]:
    """The reference family's seed and width-scaled seeds (`Family.reference`), by `<family>:<name>`, read from its
    committed arch files (none when the study's family has no reference).

    Args:
        out: The results folder.
    """
    if FAMILY.reference is None:
        return {}
    folder = out / FAMILIES[FAMILY.reference].archs / 'archs'
    return {f'{FAMILY.reference}:{f.stem}': load_arch(f) for f in sorted(folder.glob('seed*.yaml'))
            if f.stem != 'seed_random_init'}


def measure_latency(models: Sequence[Model], rounds: int, threads: int,
                    reference: dict[str, Arch] | None = None) -> dict[str, Any]:
    """onnxruntime latency (ms, batch 1, 320x320) of every distinct backbone (its RetinaNet feature levels), timed
    interleaved over `rounds` rounds; per model name its p50 and p90.

    Args:
        models: The study's models.
        rounds: Timed rounds.
        threads: onnxruntime intra-op threads.
        reference: Other archs timed in the same rounds (`reference_archs`), recorded under `reference`.
    """
    import torch

    from fna_zoo.detection import create_backbone
    from fna_zoo.runtime.machine import machine_info
    from fna_zoo.runtime.runners import onnx_bytes, onnxruntime_runner
    from fna_zoo.runtime.timing import stats_from_times, time_interleaved

    x = torch.randn(1, 3, *STUDY_SIZE)
    named = [(m.name, m.arch) for m in models] + list((reference or {}).items())
    first: dict[str, str] = {}  # arch -> the first model with it (random init or shared models are timed once)
    fns = []
    for name, arch in named:
        key = json.dumps(arch.to_dict(), sort_keys=True)
        if key not in first:
            first[key] = name
            body = create_backbone(arch, None, features_only=True, out_indices=(2, 3, 4)).eval()
            fns.append(onnxruntime_runner(onnx_bytes(body, [x]), [x], threads=threads).fn)
    times = time_interleaved(fns, warmup=5, runs=rounds)
    stats = {name: stats_from_times(t) for name, t in zip(first.values(), times)}
    timed: dict[str, dict[str, float]] = {}
    for name, arch in named:
        s = stats[first[json.dumps(arch.to_dict(), sort_keys=True)]]
        timed[name] = {'p50_ms': round(s.p50, 4), 'p90_ms': round(s.p90, 4)}
    result = {'runtime': 'onnxruntime', 'input_size': list(STUDY_SIZE), 'batch': 1, 'threads': threads,
              'rounds': rounds, 'machine': machine_info(threads),
              'archs': {m.name: timed[m.name] for m in models}}
    if reference:
        result['reference'] = {name: timed[name] for name in reference}
    return result


def study_fidelity(models: Sequence[Model], rows: Sequence[dict[str, Any]], search_run: Path, out: Path,
                   calib_batches: int | None = None) -> dict[str, Any]:
    """Super-network AP50 of the study's distinct remapped archs (`fna_zoo.nas.fidelity.supernet_estimates`)
    against their mean retrained AP50, and Kendall's tau over the in-space archs that have both.

    Args:
        models: The study's models.
        rows: The retrain rows (`load_rows`).
        search_run: The search run folder (config.yaml, last.pth).
        out: The results folder.
        calib_batches: BN recalibration batches per arch (None: the search's).
    """
    from fna_zoo.nas.fidelity import supernet_estimates

    # NOTE: random init is left out: the super network ranks archs, not initialisations
    archs = {m.name: m.arch for m in models if m.owner == m.name and m.seed_weights is not None}
    est = supernet_estimates(search_run, archs, calib_batches)
    return {'search_run': portable(search_run, out), 'calib_batches': calib_batches,
            **fidelity_summary({name: est[name] for name in archs}, rows)}


def fidelity_summary(estimates: dict[str, dict[str, float] | None], rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per arch its super-network stats and AP50 and its mean retrained AP50 (in %), and Kendall's tau of the two
    over the archs that have both (None when undefined).

    Args:
        estimates: `supernet_estimates` by model name (None: not in the space).
        rows: The retrain rows (`load_rows`).
    """
    entries = {}
    for name, stats in estimates.items():
        vals = [100 * r['AP50'] for r in rows if r['name'] == name]
        entries[name] = {'in_space': stats is not None, 'supernet': stats,
                         'supernet_AP50': _pct(stats.get('AP50')) if stats else None,
                         'retrained_AP50_mean': statistics.mean(vals) if vals else None, 'n': len(vals)}
    both = [e for e in entries.values() if e['supernet_AP50'] is not None and e['retrained_AP50_mean'] is not None]
    tau = kendall_tau([e['supernet_AP50'] for e in both], [e['retrained_AP50_mean'] for e in both])
    return {'metric': 'AP50 (%)', 'archs': entries, 'n': len(both), 'kendall_tau': None if math.isnan(tau) else tau}


# ---------------------------------------------------------------------------------------------- the report
def _f(v: float | None, fmt: str = '.1f') -> str:
    return '-' if v is None else format(v, fmt)


def _pm(mean: float | None, sd: float | None) -> str:
    return '-' if mean is None else f'{mean:.1f}' + ('' if sd is None else f' ± {sd:.1f}')


def markdown(summary: Sequence[dict[str, Any]], comps: Sequence[dict[str, Any]], header: dict[str, Any],
             fidelity: dict[str, Any] | None = None, reference: Sequence[dict[str, Any]] = ()) -> str:
    """The report: a header naming recipe, data, machine, threads and retrain wall time; the models; the paired
    comparisons; the rank fidelity when measured.

    Args:
        summary: `summarize`'s lines.
        comps: `comparisons`' lines.
        header: recipe, overrides, data, size, machines, wall_min, runs and latency, as text.
        fidelity: fidelity.json with the retrained side as it is now (None: not measured).
        reference: `reference_rows`: another family's seeds timed in the same rounds.
    """
    lines = [f"# Adaptation study\n\nRecipe `{header['recipe']}`{header['overrides']}; data `{header['data']}` "
             f"(its validation set); RetinaNet at {header['size']}. Retrained on: {header['machines']}; retrain wall "
             f"time {header['wall_min']:.1f} min ({header['runs']} retrains). AP in %, mean ± sample sd over retrain "
             'seeds. Params and GMAdds (320²): backbone, without the head conv. ORT: backbone, onnxruntime, batch 1, '
             f"320x320, p50 ({header['latency']}).", '',
             '| model | group | n | params (M) | GMAdds 320² | ORT p50 (ms) | x seed | AP | AP50 |',
             '|---|---|---|---|---|---|---|---|---|']
    for s in summary:
        name = s['name'] + (f" (= {s['same_as']})" if s['same_as'] else '')
        n = f"{s['n']}/{s['planned']} partial" if s['partial'] else str(s['n'])
        lines.append(f"| {name} | {s['group']} | {n} | {s['params_m']:.2f} | {s['gmadds_320']:.3f} | "
                     f"{_f(s['ort_p50_ms'], '.2f')} | {_f(s['ort_ratio'], '.2f')} | {_pm(s['AP_mean'], s['AP_sd'])} | "
                     f"{_pm(s['AP50_mean'], s['AP50_sd'])} |")
    lines += ['', 'AP50 differences in percentage points, paired by retrain seed, with the 95 % t-interval:', '',
              '| comparison | pairs | mean ΔAP50 | 95 % interval |', '|---|---|---|---|']
    for c in comps:
        ci = '-' if c['ci'] is None else f"[{c['ci'][0]:+.1f}, {c['ci'][1]:+.1f}]"
        mean = '-' if c['mean'] is None else f"{c['mean']:+.1f}"
        lines.append(f"| {c['a']} - {c['b']} | {c['n']} | {mean} | {ci} |")
    if reference:
        lines += ['', f"Beside the other seed family, timed in the same interleaved rounds (AP50 from "
                  f"`{reference[0]['source']}`, its study on the same recipe settings):", '',
                  '| model | ORT p50 (ms) | x this seed | n | AP50 |', '|---|---|---|---|---|']
        for r in reference:
            lines.append(f"| {r['name']} | {_f(r['ort_p50_ms'], '.2f')} | {_f(r['ort_ratio'], '.2f')} | {r['n']} | "
                         f"{_pm(r['AP50_mean'], r['AP50_sd'])} |")
    if fidelity:
        tau = fidelity['kendall_tau']
        lines += ['', f"Rank fidelity of the search `{fidelity['search_run']}`: Kendall's tau between the super "
                  f"network's AP50 (its weights, BN recalibrated per arch) and the retrained mean AP50 over "
                  f"{fidelity['n']} in-space archs: {_f(tau, '.2f')}.", '',
                  '| arch | super network AP50 | retrained AP50 (mean) | n |', '|---|---|---|---|']
        for name, e in fidelity['archs'].items():
            sup = _f(e['supernet_AP50']) if e['in_space'] else 'not in the space'
            lines.append(f"| {name} | {sup} | {_f(e['retrained_AP50_mean'])} | {e['n']} |")
    return '\n'.join(lines) + '\n'


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    return plt


def _colors(plt: Any, summary: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """A colour per model with retrains of its own (the same in both figures)."""
    palette = plt.get_cmap('tab20').colors
    own = [s['name'] for s in summary if s['n'] and not s['same_as']]
    return {name: palette[i % len(palette)] for i, name in enumerate(own)}


def plot_tradeoff(summary: Sequence[dict[str, Any]], rows: Sequence[dict[str, Any]], path: Path,
                  use_latency: bool) -> None:
    """AP50 against ORT p50 (or GMAdds without latency.json): one marker per retrain, mean ± sd per model.

    Args:
        summary: `summarize`'s lines.
        rows: The retrain rows.
        path: The PNG.
        use_latency: Plot against the ORT p50 (models without one are left out) instead of GMAdds.
    """
    from fna_zoo.fileio import save_figure

    plt = _pyplot()
    key, label = ('ort_p50_ms', 'backbone onnxruntime p50 (ms), batch 1, 320x320') if use_latency else (
        'gmadds_320', 'backbone GMAdds at 320x320')
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    colors = _colors(plt, summary)
    for s in summary:
        if s['name'] not in colors or s[key] is None:
            continue
        ys = [100 * r['AP50'] for r in rows if r['name'] == s['name']]
        c = colors[s['name']]
        # NOTE: models sharing this one's retrains (same_as) are the same points: named in its label, not drawn again
        also = [x['name'] for x in summary if x['same_as'] == s['name']]
        ax.scatter([s[key]] * len(ys), ys, color=c, s=12, alpha=0.5)
        ax.errorbar([s[key]], [s['AP50_mean']], yerr=[s['AP50_sd'] or 0.0], color=c, marker='o', ms=6, capsize=3,
                    label=s['name'] + ''.join(f' = {a}' for a in also) + f" (n={s['n']})")
    ax.set_xlabel(label)
    ax.set_ylabel('AP50 (%) on the validation set')
    ax.set_title('Adaptation study: retrained RetinaNet, one recipe (mean ± sd over retrain seeds)')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)


def plot_curves(summary: Sequence[dict[str, Any]], rows: Sequence[dict[str, Any]], path: Path) -> None:
    """AP50 against retrain steps, one line per retrain, one colour per model.

    Args:
        summary: `summarize`'s lines.
        rows: The retrain rows (with their curves).
        path: The PNG.
    """
    from fna_zoo.fileio import save_figure

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    colors = _colors(plt, summary)
    for s in summary:
        runs = [r for r in rows if r['name'] == s['name'] and r['curve']] if s['name'] in colors else []
        for j, r in enumerate(runs):
            pts = r['curve']
            ax.plot([p['step'] for p in pts], [100 * p['AP50'] for p in pts], color=colors[s['name']], lw=1,
                    marker='o', ms=2, label=s['name'] if j == 0 else None)
    ax.set_xlabel('retrain step')
    ax.set_ylabel('AP50 (%) on the validation set')
    ax.set_title(f'AP50 during retraining ({RECIPE})')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)


def _read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def reference_rows(out: Path, latency: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The reference family's timed archs (`latency.json`'s `reference`) with their AP50 from that family's study
    report on the same recipe settings (`adaptation_study.json`), and their latency as a multiple of this seed's.

    Args:
        out: The results folder.
        latency: This family's latency.json (None: not measured).
    """
    timed = (latency or {}).get('reference') or {}
    report = _read_json(out / f'adaptation_{DEFAULT_STUDY}.json') if timed else None
    by_name = {r['name']: r for r in (report or {}).get('summary', [])}
    seed_p50 = ((latency or {}).get('archs', {}).get('seed') or {}).get('p50_ms')
    rows = []
    for key, t in timed.items():
        r = by_name.get(key.partition(':')[2], {})
        rows.append({'name': key, 'ort_p50_ms': t['p50_ms'], 'ort_ratio': t['p50_ms'] / seed_p50 if seed_p50 else None,
                     'n': r.get('n', 0), 'AP50_mean': r.get('AP50_mean'), 'AP50_sd': r.get('AP50_sd'),
                     'source': f'adaptation_{DEFAULT_STUDY}.json'})
    return rows


def write_report(models: Sequence[Model], out: Path, overrides: Sequence[str]) -> str:
    """Write adaptation_study.{md,csv,json,png} and adaptation_study_curves.png from the recorded retrains (and
    latency.json / fidelity.json when present); returns the markdown.

    Args:
        models: The study's models.
        out: The results folder.
        overrides: The study's recipe overrides.
    """
    rows = load_rows(models, out, overrides)
    latency = _read_json(out / FAMILY.archs / 'latency.json')
    fidelity = _read_json(out / STUDY / 'fidelity.json')
    if fidelity:  # NOTE: the retrained side from the rows as they are now (fidelity.json has them as they were)
        known = [name for name in fidelity['archs'] if name in {m.name for m in models}]
        fidelity = {**fidelity, **fidelity_summary({n: fidelity['archs'][n]['supernet'] for n in known}, rows)}
    summary = summarize(models, rows, latency)
    for s, m in zip(summary, models):
        s['arch'] = portable(m.arch_file, out)
    comps = comparisons(models, rows)
    distinct = {r['run']: r for r in rows}.values()  # shared retrains count once
    cfg = load_config(ROOT / RECIPE, overrides)
    shown = [portable_value(o, out) for o in overrides]
    header = {'recipe': RECIPE, 'overrides': f" with {', '.join(f'`{o}`' for o in shown)}" if shown else '',
              'data': portable_value(cfg['data']['path'], out) or 'synthetic (data.path null)',
              'size': 'x'.join(str(cfg['model']['kwargs'].get(k, '?')) for k in ('min_size', 'max_size')),
              'machines': ', '.join(sorted({r['cpu'] or '?' for r in distinct})) or 'none yet',
              'wall_min': sum(r['wall_s'] or 0 for r in distinct) / 60, 'runs': len(distinct),
              'latency': 'not measured' if latency is None else
              f"{latency['threads']} threads, {latency['rounds']} interleaved rounds, "
              f"{latency['machine']['cpu_model']}"}
    reference = reference_rows(out, latency)
    text = markdown(summary, comps, header, fidelity, reference)
    atomic_write_text(out / f'adaptation_{STUDY}.md', text)
    fields = ['name', 'group', 'retrain_seed', 'same_as', 'arch', *METRICS, 'wall_s', 'run']
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fields, extrasaction='ignore', lineterminator='\n')
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / f'adaptation_{STUDY}.csv', buf.getvalue())
    atomic_write_text(out / f'adaptation_{STUDY}.json', json.dumps(
        {'recipe': RECIPE, 'overrides': shown, 'search_config': SEARCH_CONFIG, 'units': {
            'rows': 'AP.. as fractions (COCO eval)', 'summary, comparisons, fidelity': 'AP in %, differences in '
            'percentage points'}, 'header': header,
         'archs': {m.name: portable(m.arch_file, out) for m in models},
         'rows': [{k: v for k, v in r.items() if k != 'curve'} for r in rows], 'summary': summary,
         'comparisons': comps, 'curves': {r['run']: r['curve'] for r in distinct}, 'latency': latency,
         'fidelity': fidelity, 'reference': reference}, indent=1) + '\n')
    if rows:
        plot_tradeoff(summary, rows, out / f'adaptation_{STUDY}.png', latency is not None)
        plot_curves(summary, rows, out / f'adaptation_{STUDY}_curves.png')
    return text


# ---------------------------------------------------------------------------------------------- the command
def _parse_searched(p: argparse.ArgumentParser, items: Sequence[str]) -> list[tuple[str, Path | None]]:
    out: list[tuple[str, Path | None]] = []
    for item in items:
        name, _, path = item.partition('=')
        if not _NAME.match(name):
            p.error(f'--searched {item!r}: the name {name!r} is not a name; expected NAME=ARCH with NAME of letters, '
                    'digits, _ . -')
        if name in ('seed', 'fna_retinanet', 'seed_random_init') or name.startswith(('seed_w', 'random_')):
            p.error(f'--searched {item!r}: {name!r} is a name of the study; expected another name')
        if name in [n for n, _ in out]:
            p.error(f'--searched names {name!r} twice; expected one arch per name')
        out.append((name, Path(path) if path else None))
    return out


def _parse_more_seeds(p: argparse.ArgumentParser, items: Sequence[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in items:
        name, _, n = item.partition('=')
        if not _NAME.match(name) or not re.fullmatch('[0-9]+', n) or int(n) < 1 or name in out:
            p.error(f'--more-seeds {item!r}; expected NAME=N, each model once, N a number of retrain seeds >= 1')
        out[name] = int(n)
    return out


def main(argv: list[str] | None = None) -> int:
    # NOTE: --family, --recipe and --name set them for the whole study (one study per process)
    global FAMILY, RECIPE, STUDY, SEARCH_CONFIG, SEED_WEIGHTS
    from fna_zoo.runtime.machine import machine_slug

    p = argparse.ArgumentParser(prog='adaptation_study.py', description=__doc__.split('\n')[0])
    p.add_argument('--family', choices=sorted(FAMILIES), default='mobilenetv2',
                   help='the seed family: its search space, ImageNet seed, default recipe and archs folder '
                        '(default mobilenetv2; lite0: EfficientNet-Lite0, archs under study_lite0/)')
    p.add_argument('--seeds', type=int, default=4, help='retrain seeds of the compared models (default 4)')
    p.add_argument('--width-mults', nargs='+', type=float, default=[], metavar='M',
                   help='width multipliers of the width-scaled seeds (seed_w<M>)')
    p.add_argument('--expansions', nargs='+', type=int, default=[], metavar='E',
                   help="expansion ratios of the expansion-scaled seeds (seed_e<E>: every layer's expansion E where "
                        "the space has that op, the seed's widths)")
    p.add_argument('--searched', nargs='+', action='extend', default=[], metavar='NAME=ARCH',
                   help="searched archs (a search's arch.yaml); NAME alone: the committed study/archs/NAME.yaml")
    p.add_argument('--random', type=int, default=5, help='random archs at the seed cost (default 5)')
    p.add_argument('--random-seed', type=int, default=0, help='seed of the random draws')
    p.add_argument('--table', help="latency table (fna-latency-table) whose prediction is the random archs' cost "
                                   '(default: MAdds)')
    p.add_argument('--seed-weights', help="the ImageNet seed remapped into every model but seed_random_init (default: "
                                          "the family's)")
    p.add_argument('--set', nargs='*', default=[], metavar='KEY=VALUE', help='recipe overrides')
    p.add_argument('--recipe', help=f"the retrain config of every model (default: the family's, {DEFAULT_RECIPE} "
                                    'for mobilenetv2)')
    p.add_argument('--name', help="the study's folder under --out (retrain records, fidelity) and its report "
                                  "adaptation_<name>.* (default: the family's archs folder, study or study_lite0; "
                                  "archs and latency are shared from that folder)")
    p.add_argument('--runs', default='runs/study', help='parent of the run folders (default runs/study)')
    p.add_argument('--out', help='results folder (default benchmarks/results/<machine>)')
    p.add_argument('--more-seeds', nargs='+', default=[], metavar='NAME=N',
                   help='retrain seeds 0..N-1 of these models instead of their planned ones (a tighter interval for '
                        'one comparison; pairs with the other models over the seeds both have)')
    p.add_argument('--only', nargs='+', metavar='NAME', help='retrain only these models')
    p.add_argument('--only-seeds', nargs='+', type=int, metavar='K',
                   help='retrain only these retrain seeds (split a study across processes or machines)')
    p.add_argument('--report', action='store_true', help='only write the report from the recorded retrains')
    p.add_argument('--latency', action='store_true', help='time the backbones (alone on the machine), then report')
    p.add_argument('--rounds', type=int, default=50, help='interleaved onnxruntime rounds (default 50)')
    p.add_argument('--threads', type=int, default=2, help='onnxruntime threads (default 2)')
    p.add_argument('--fidelity', metavar='SEARCH_RUN', help="a search run folder: rank fidelity of its super network "
                                                            'over the in-space archs, then report')
    p.add_argument('--calib-batches', type=int, help="BN recalibration batches per arch for --fidelity (default: the "
                                                     "search's bn_calib_batches)")
    args = p.parse_args(argv)
    FAMILY = FAMILIES[args.family]
    SEARCH_CONFIG, SEED_WEIGHTS = FAMILY.search_config, FAMILY.seed_weights
    args.recipe = args.recipe or FAMILY.recipe
    args.seed_weights = args.seed_weights or FAMILY.seed_weights
    if not (ROOT / args.recipe).is_file() or Path(args.recipe).is_absolute():
        p.error(f'--recipe {args.recipe!r} is not a config file under the repository; expected e.g. {DEFAULT_RECIPE}')
    args.name = args.name or FAMILY.archs
    if not re.fullmatch(r'study[a-z0-9_]*', args.name):
        p.error(f"--name {args.name!r}; expected 'study' followed by lower-case letters, digits or '_'")
    RECIPE, STUDY = args.recipe, args.name
    for name, value, low in (('--seeds', args.seeds, 1), ('--random', args.random, 0), ('--rounds', args.rounds, 1),
                             ('--threads', args.threads, 1)):
        if value < low:
            p.error(f'{name} is {value}; expected an integer >= {low}')
    more = _parse_more_seeds(p, args.more_seeds)
    top = max([args.seeds, *more.values()])
    if args.only_seeds is not None and any(not 0 <= k < top for k in args.only_seeds):
        p.error(f'--only-seeds {args.only_seeds}; expected retrain seeds from 0 to {top - 1}')
    if any(not m > 0 for m in args.width_mults) or len({f'{m:.2f}' for m in args.width_mults}) < len(args.width_mults):
        p.error(f'--width-mults {args.width_mults}; expected distinct positive multipliers (two decimals)')
    if any(e < 1 for e in args.expansions) or len(set(args.expansions)) < len(args.expansions):
        p.error(f'--expansions {args.expansions}; expected distinct integers >= 1')
    if args.table and not Path(args.table).is_file():
        p.error(f'--table {args.table!r} does not exist; expected a latency table file')
    if args.fidelity and not (Path(args.fidelity) / 'last.pth').is_file():
        p.error(f'--fidelity {args.fidelity!r} has no last.pth; expected a search run folder')
    searched = _parse_searched(p, args.searched)
    try:
        load_config(ROOT / RECIPE, args.set)
    except (ValueError, KeyError) as e:
        p.error(f'--set: {e}')
    out = Path(args.out) if args.out else ROOT / 'benchmarks' / 'results' / machine_slug()
    try:
        models = plan_models(study_space(), out, args.seeds, args.width_mults, args.expansions, searched, args.random,
                             args.random_seed, args.seed_weights, args.table, more)
    except (ValueError, FileNotFoundError) as e:
        p.error(str(e))
    names = [m.name for m in models]
    if set(more) - set(names):
        p.error(f'--more-seeds {sorted(set(more) - set(names))}: no such model; expected some of {", ".join(names)}')
    if args.only and set(args.only) - set(names):
        p.error(f'--only {sorted(set(args.only) - set(names))}: no such model; expected some of {", ".join(names)}')
    by_name = {m.name: m for m in models}
    for m in models:
        if extra := unplanned_seeds(out, m):
            print(f'study: {m.name} has retrains recorded with seeds {extra} beyond its planned ones, left out of the '
                  f'report (--more-seeds {m.name}={max(extra) + 1} includes them)')
    try:
        if args.latency:
            print(f'study: timing {len(models)} backbones, {args.rounds} rounds at {args.threads} threads')
            lat = measure_latency(models, args.rounds, args.threads, reference_archs(out))
            atomic_write_text(out / FAMILY.archs / 'latency.json', json.dumps(lat, indent=1) + '\n')
        if args.fidelity:
            fid = study_fidelity(models, load_rows(models, out, args.set), Path(args.fidelity), out, args.calib_batches)
            atomic_write_text(out / STUDY / 'fidelity.json', json.dumps(fid, indent=1) + '\n')
        if not (args.report or args.latency or args.fidelity):
            todo = [(m, k) for m in models for k in m.seeds if (not args.only or m.name in args.only)
                    and (args.only_seeds is None or k in args.only_seeds)]
            for i, (m, k) in enumerate(todo, 1):
                path = run_json(out, m.owner, k)
                if path.is_file():
                    read_run(path, by_name[m.owner], args.set, out)
                    continue
                print(f'study: [{i}/{len(todo)}] retraining {m.owner}_r{k}' + (
                    f' (for {m.name})' if m.owner != m.name else ''))
                rec = retrain_run(by_name[m.owner], k, Path(args.runs), out, args.set)
                print(f"study: {m.owner}_r{k}: AP {100 * rec['metrics']['AP']:.1f}, AP50 "
                      f"{100 * rec['metrics']['AP50']:.1f}, {rec['wall_s'] / 60:.1f} min")
        text = write_report(models, out, args.set)
    except StudyError as e:
        p.error(str(e))
    print(text)
    return 0


if __name__ == '__main__':
    sys.exit(main())
