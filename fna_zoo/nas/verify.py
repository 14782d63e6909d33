"""The verification stage of a search: retrain its top candidates and the baseline briefly, keep the best on
held-out data, and hand back the baseline unless a candidate beats it by a margin.

A weight-sharing search ranks architectures by a super network whose ranking may mean little (Sciuto et al.,
"Evaluating the search phase of neural architecture search", ICLR 2020 - https://arxiv.org/abs/1902.08142;
Yu et al., ICLR 2020 - https://arxiv.org/abs/1912.12522; Li & Talwalkar's random search, UAI 2019 -
https://arxiv.org/abs/1902.07638), and FNA (Fang et al., ICLR 2020 - https://arxiv.org/abs/2001.02525) hands its
argmax on unchecked. One-shot NAS usually ends with a selection among top candidates by short training; here it
is successive halving (Jamieson & Talwalkar, AISTATS 2016 - https://arxiv.org/abs/1502.07943) over the search's
most probable distinct archs near the cost target and the *baseline*: the seed at that cost (the seed itself
at the seed's cost, the width-scaled seed below it), the network a user has without searching.

Do no harm: the arch handed on (`arch.yaml`) is the best candidate only when its held-out AP50 beats the
baseline's by `search.verify.margin` points; otherwise it is the baseline, and the summary says so.

Zoo candidates (`search.verify.zoo`): archs the user names (a registered arch such as FNA's published
`fna_retinanet_backbone`, or an arch file) join the search's candidates when they lie in the space and within the
cost band of the target, so a published arch retrained on the user's data competes with what the search proposes;
the record labels each candidate with where it came from.

Held-out data: images of the training split the search saw are also the candidates' training images, so the
scores come from a part of the training split the candidate retrains never see (`holdout_split`): whole images
when the split has several, else a strip of each large image (the tree set has one training image), cut into
tiles. NOTE: a box cut by the strip's edge follows the crop rule of `fna_zoo.data.crops` on both sides, so a
tree on the line may be half seen in training; the validation set stays untouched for the final report.
"""
from __future__ import annotations

import json
import logging
import math
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from PIL import Image

from ..arch import Arch, load_arch
from ..data.coco import coco_split_paths
from ..data.crops import crop_boxes, tile_windows
from ..fileio import atomic_path, atomic_write_text, portable_path
from .cost import CostObjective
from .space import ArchPath, SearchSpace

__all__ = ['Candidate', 'holdout_split', 'path_cost', 'baseline', 'top_candidates', 'zoo_candidates', 'zoo_paths',
           'verify_candidates']

_logger = logging.getLogger(__name__)

_MIN_IMAGES = 5  # a split with at least this many images is held out by image, else by strips of each image
_DONE = 'holdout_done.json'


@dataclass(frozen=True)
class Candidate:
    """One arch of the verification.

    Args:
        name: Its name in the outputs ('baseline' for the baseline, else 'candidate_<i>').
        arch: The arch.
        path: Its path in the space.
        cost: Its cost under the search objective, in the objective's unit.
        log_prob: Log-probability of its path under the final architecture probabilities (None: not known, e.g. a
            zoo arch in a verification rerun without the super network).
        label: What it is, in words.
    """

    name: str
    arch: Arch
    path: ArchPath
    cost: float
    log_prob: float | None
    label: str


def _write_coco(path: Path, images: list[dict[str, Any]], annotations: list[dict[str, Any]],
                categories: list[dict[str, Any]]) -> None:
    atomic_write_text(path, json.dumps({'images': images, 'annotations': annotations, 'categories': categories}))


def _crop_entries(window: tuple[int, int, int, int], anns: list[dict[str, Any]], image_id: int,
                  first_ann_id: int) -> list[dict[str, Any]]:
    """COCO annotations of the boxes seen through `window` (the crop rule), in window coordinates."""
    if not anns:
        return []
    boxes = torch.tensor([[a['bbox'][0], a['bbox'][1], a['bbox'][0] + a['bbox'][2], a['bbox'][1] + a['bbox'][3]]
                          for a in anns])
    kept, keep = crop_boxes(boxes, window)
    out = []
    for j, (box, i) in enumerate(zip(kept.tolist(), keep.tolist())):
        w, h = box[2] - box[0], box[3] - box[1]
        out.append({'id': first_ann_id + j, 'image_id': image_id, 'category_id': anns[i]['category_id'],
                    'bbox': [box[0], box[1], w, h], 'area': w * h, 'iscrowd': anns[i].get('iscrowd', 0)})
    return out


def holdout_split(root: str | Path, split: str, fraction: float, tile: int, out: str | Path, held_name: str,
                  seed: int = 0) -> Path:
    """A COCO tree at `out` with the splits `split` (what is left for training) and `held_name` (the held-out part)
    made from split `split` of the tree at `root`.

    NOTE: the parts keep the search's split names (e.g. train2017 / val2017), so a verification checkpoint's config
    names the same splits as the search's data, and `--data-path <the search's data>` evaluates it on the real
    validation set (`make demo` does).

    With at least 5 images, `fraction` of them (a seeded draw) are held out whole. With fewer (large aerial images),
    the bottom `fraction` of each image's height is held out, cut into `tile`-px tiles (`tile_windows`), and the
    rest is the training image. Written once: a finished tree (its marker file) is reused.

    Args:
        root: The COCO tree of the search.
        split: Its training split (e.g. 'train2017').
        fraction: Share held out, in (0, 1).
        tile: Side of the held-out tiles in px (the recipe's crop size).
        out: Folder of the new tree.
        held_name: Split name of the held-out part.
        seed: Seed of the image draw.
    """
    if held_name == split:
        raise ValueError(f'held-out split name {held_name!r} is the training split; expected another name')
    out = Path(out)
    marker = {'root': str(root), 'split': split, 'held': held_name, 'fraction': fraction, 'tile': tile, 'seed': seed}
    done = out / _DONE
    if done.is_file() and json.loads(done.read_text()) == marker:
        return out
    if out.exists():
        shutil.rmtree(out)
    ann_file, img_dir = coco_split_paths(root, split)
    data = json.loads(ann_file.read_text())
    by_image: dict[int, list[dict[str, Any]]] = {}
    for a in data['annotations']:
        by_image.setdefault(a['image_id'], []).append(a)
    sides: dict[str, tuple[list, list]] = {split: ([], []), held_name: ([], [])}
    for name in sides:
        (out / name).mkdir(parents=True, exist_ok=True)
    images = sorted(data['images'], key=lambda im: im['id'])
    if len(images) >= _MIN_IMAGES:
        order = list(range(len(images)))
        random.Random(seed).shuffle(order)
        held = set(order[:max(1, round(fraction * len(images)))])
        for i, im in enumerate(images):
            side = held_name if i in held else split
            shutil.copyfile(img_dir / im['file_name'], out / side / Path(im['file_name']).name)
            sides[side][0].append({**im, 'file_name': Path(im['file_name']).name})
            sides[side][1].extend(by_image.get(im['id'], []))
    else:
        for im in images:
            with Image.open(img_dir / im['file_name']) as pil:
                pil = pil.convert('RGB')
            w, h = pil.size
            cut = h - max(1, round(fraction * h))
            stem = Path(im['file_name']).stem
            windows = [(split, (0, 0, w, cut))]
            windows += [(held_name, (x0, cut + y0, x1, cut + y1)) for x0, y0, x1, y1 in tile_windows(w, h - cut, tile)]
            for side, win in windows:
                imgs, anns = sides[side]
                image_id = len(imgs) + 1
                fname = f'{stem}_x{win[0]}_y{win[1]}.png'
                pil.crop(win).save(out / side / fname)
                imgs.append({'id': image_id, 'file_name': fname, 'width': win[2] - win[0], 'height': win[3] - win[1]})
                anns.extend(_crop_entries(win, by_image.get(im['id'], []), image_id, len(anns) + 1))
    (out / 'annotations').mkdir(exist_ok=True)
    for side, (imgs, anns) in sides.items():
        _write_coco(out / 'annotations' / f'instances_{side}.json', imgs, anns, data['categories'])
    atomic_write_text(done, json.dumps(marker))
    return out


def _path_log_prob(path: ArchPath, ops: Sequence[torch.Tensor], widths: Sequence[torch.Tensor]) -> float:
    flat = [i for stage in path.ops for i in stage]
    return float(sum(math.log(max(float(p[i]), 1e-30)) for p, i in zip(ops, flat))
                 + sum(math.log(max(float(p[i]), 1e-30)) for p, i in zip(widths, path.widths)))


def path_cost(objective: CostObjective, path: ArchPath) -> float:
    """The cost of a path under the search objective, in the objective's unit.

    Args:
        objective: The search's cost objective.
        path: A path of its space.
    """
    return objective.table.of_path(path) / objective.scale


def _in_band(objective: CostObjective, cost: float, band: float) -> bool:
    """Whether `cost` is within `band` (relative) of the objective's target (always, without a target)."""
    return objective.target is None or abs(cost / objective.target - 1) <= band


def _on_cpu(probs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    return [p.detach().float().cpu() for p in probs]


def baseline(space: SearchSpace, objective: CostObjective) -> tuple[Arch, ArchPath, float]:
    """The seed at the objective's target: (arch, path, cost), the seed's ops at the width multiplier of the space
    whose cost is closest (in log ratio) to the target; the seed itself without a target.

    Args:
        space: The search space.
        objective: The search's cost objective.
    """
    seed_path = space.seed_path()
    options = [seed_path]
    if objective.target is not None:
        options += space.width_seed_paths()
        options.sort(key=lambda p: abs(math.log(path_cost(objective, p) / objective.target)))
    best = options[0]
    return space.derive(best), best, path_cost(objective, best)


def top_candidates(space: SearchSpace, objective: CostObjective, ops: Sequence[torch.Tensor],
                   widths: Sequence[torch.Tensor], argmax: ArchPath, count: int, band: float,
                   exclude: Sequence[Arch] = (), draws: int = 2000, seed: int = 0) -> list[Candidate]:
    """The search's `count` most probable distinct archs: its argmax first, then archs drawn from the final
    probabilities, ranked by path probability, kept when their cost is within `band` (relative) of the target.

    Args:
        space: The search space.
        objective: The cost objective (its target sets the band; no target: no band).
        ops: Final probabilities of every slot's ops.
        widths: Final probabilities of every stage's widths.
        argmax: The derived (argmax) path, always the first candidate.
        count: How many candidates.
        band: Relative cost band around the target.
        exclude: Archs not to propose (the baseline).
        draws: Paths drawn to find them.
        seed: Seed of the draws.
    """
    gen = torch.Generator().manual_seed(seed)
    ops, widths = _on_cpu(ops), _on_cpu(widths)
    sizes = [len(st.slots) for st in space.stages]
    found: dict[str, Candidate] = {}
    skip = {a.to_fna_string() for a in exclude}

    def consider(path: ArchPath, first: bool = False) -> None:
        arch = space.derive(path)
        key = arch.to_fna_string()
        cost = path_cost(objective, path)
        if key in skip or key in found:
            return
        if not first and not _in_band(objective, cost, band):
            return
        found[key] = Candidate('', arch, path, cost, _path_log_prob(path, ops, widths),
                               'argmax of the search' if first else 'drawn from the search probabilities')

    consider(argmax, first=True)
    op_draws = [torch.multinomial(p, draws, replacement=True, generator=gen) for p in ops]
    width_draws = [torch.multinomial(p, draws, replacement=True, generator=gen) for p in widths]
    for d in range(draws):
        flat = iter(int(o[d]) for o in op_draws)
        path_ops = tuple(tuple(next(flat) for _ in range(n)) for n in sizes)
        consider(ArchPath(path_ops, tuple(int(w[d]) for w in width_draws)))
    # NOTE: the argmax first (when it is not the baseline), then the others by path probability
    ranked = list(found.values())
    first = [c for c in ranked[:1] if c.label.startswith('argmax')]
    chosen = (first + sorted(ranked[len(first):], key=lambda c: -c.log_prob))[:count]
    return [Candidate(f'candidate_{i}', c.arch, c.path, c.cost, c.log_prob, c.label) for i, c in enumerate(chosen)]


def zoo_candidates(space: SearchSpace, objective: CostObjective, specs: Sequence[str], band: float,
                   ops: Sequence[torch.Tensor] | None, widths: Sequence[torch.Tensor] | None,
                   taken: Sequence[Candidate] = (), first_index: int = 0) -> tuple[list[Candidate], list[dict[str, str]]]:
    """Named archs as further candidates: (the candidates, one `{'zoo': name, 'why': reason}` per arch left out). An
    arch is left out when its cost is more than `band` (relative) from the target, or when it is the same arch as
    one already in the verification.

    Args:
        space: The search space.
        objective: The cost objective (its target sets the band; no target: no band).
        specs: Registered arch names or arch files (`fna_zoo.arch.load_arch`), each in the space (`zoo_paths`).
        band: Relative cost band around the target.
        ops: Final probabilities of every slot's ops (the candidates' log-probabilities; None: not known).
        widths: Final probabilities of every stage's widths (None with `ops`).
        taken: The archs already in the verification (the baseline, the search's candidates).
        first_index: Index of the first one's name (`candidate_<i>`).

    Raises:
        ValueError: A name that cannot be read or is not in the space (`zoo_paths`).
    """
    known = ops is not None and widths is not None
    if known:
        ops, widths = _on_cpu(ops), _on_cpu(widths)
    seen = {c.arch.to_fna_string(): c for c in taken}
    chosen: list[Candidate] = []
    left_out: list[dict[str, str]] = []
    for spec, path in zoo_paths(space, specs).items():
        arch, cost = space.derive(path), path_cost(objective, path)
        name = portable_path(spec)  # NOTE: records hold no absolute path of this machine
        if (same := seen.get(arch.to_fna_string())) is not None:
            left_out.append({'zoo': name, 'why': f'the same arch as {same.name} ({same.label})'})
        elif not _in_band(objective, cost, band):
            left_out.append({'zoo': name, 'why': f'cost {cost:.4g} is more than {band:.0%} from the target '
                                                 f'{objective.target:.4g}'})
        else:
            c = Candidate(f'candidate_{first_index + len(chosen)}', arch, path, cost,
                          _path_log_prob(path, ops, widths) if known else None, f'zoo: {name}')
            chosen.append(c)
            seen[arch.to_fna_string()] = c
    for item in left_out:
        _logger.info('verification: zoo arch %s left out: %s', item['zoo'], item['why'])
    return chosen, left_out


def zoo_paths(space: SearchSpace, specs: Sequence[str]) -> dict[str, ArchPath]:
    """The path in the space of every named arch (`search.verify.zoo`).

    Args:
        space: The search space.
        specs: Registered arch names or arch files.

    Raises:
        ValueError: The first name that cannot be read or is not in the space, in one line.
    """
    paths: dict[str, ArchPath] = {}
    for spec in specs:
        try:
            arch = load_arch(spec)
        except (ValueError, OSError) as e:
            raise ValueError(f'config search.verify.zoo names {spec!r}: {e}') from None
        path = space.path_of(arch)
        if path is None:
            raise ValueError(f'config search.verify.zoo names {spec!r}, which is not in the search space; expected an '
                             f'arch of the space of {space.seed_name} (its stem and fixed stages, the widths and ops '
                             'of search.space)')
        paths[spec] = path
    return paths


def _run_name(name: str, k: int) -> str:
    """The run folder of retrain seed offset `k` of an arch (`k` 0: the arch's own name, as with one seed)."""
    return name if k == 0 else f'{name}_s{k}'


def _check_run_arch(run: Path, c: Candidate) -> None:
    """Refuse to resume a verification run that trained another arch (its candidates changed since it ran, e.g. a
    different `search.verify.zoo`): a resumed run keeps the arch it started with, whatever `c` is."""
    if (run / 'arch.yaml').is_file() and any((run / f).is_file() for f in ('last.pth', 'final.pth')):
        if load_arch(run / 'arch.yaml').to_fna_string() != c.arch.to_fna_string():
            raise ValueError(f'verification run {portable_path(run)} trained another arch than {c.name} ({c.label}); '
                             'expected the same candidates as when it ran: remove its verify/ folder to verify anew')


def _rung_score(c: Candidate, steps: int, recipe: dict[str, Any], out: Path, seeds: int) -> dict[str, Any]:
    """Retrain `c` to `steps` steps with `seeds` retrain seeds (resuming its runs) and score it on the held-out split:
    the mean AP and AP50 over the seeds, and each seed's AP50."""
    from ..engine.train import retrain

    runs = []
    for k in range(seeds):
        cfg = json.loads(json.dumps(recipe))  # a deep copy
        cfg['model']['backbone'] = c.arch.to_dict()
        cfg['train']['max_iters'] = steps
        cfg['seed'] = int(recipe['seed']) + k
        cfg['output'] = str(out / _run_name(c.name, k))
        _check_run_arch(Path(cfg['output']), c)
        runs.append(retrain(cfg, resume=True))
    ap50s = [float(res.get('AP50') or 0.0) for res in runs]
    return {'steps': int(runs[0].get('step', steps)), 'AP': sum(float(res.get('AP') or 0.0) for res in runs) / seeds,
            'AP50': sum(ap50s) / seeds, 'AP50_seeds': ap50s}


def verify_candidates(candidates: list[Candidate], base: Candidate, recipe: dict[str, Any], steps: Sequence[int],
                      margin: float, out: Path, seeds: int = 1,
                      left_out: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """Successive halving over `candidates` and `base`: each rung retrains the survivors to that many steps (runs
    resume, so a rung continues the last) with `seeds` retrain seeds and scores them on the held-out split (the
    mean AP50 over the seeds); after every rung but the last the better half of the candidates goes on, the
    baseline always does. The winner is the best candidate at the last rung when its mean beats the baseline's by
    `margin` AP50 points and, with several seeds, it beats the baseline with every seed (paired by seed); else the
    baseline.

    NOTE: one short retrain moves held-out AP50 by many points on small data (the tree study: sd 6 at 400 steps),
    so with one seed the margin guards against little; the every-seed rule is the paired sign test's strictest
    form, cheap enough for 2-3 seeds where an interval from so few pairs would be uninformative.

    Args:
        candidates: The search's candidates.
        base: The baseline (the seed at the target).
        recipe: Retrain config of every run (its data on the held-out tree; model.backbone, seed and output are set
            here: retrain seed `recipe['seed'] + k` for k < `seeds`).
        steps: Retrain steps of each rung, increasing.
        margin: AP50 points a candidate must gain over the baseline (mean over the seeds) to be handed on.
        out: Folder of the runs (`<out>/<name>`, `<out>/<name>_s<k>` for the further seeds), of `verify.json` and of
            `winner.pth` (a copy of the winner's first-seed checkpoint, to evaluate or export).
        seeds: Retrain seeds per arch and rung.
        left_out: Zoo archs left out of the verification and why (`zoo_candidates`), recorded as `zoo_left_out`.

    Returns:
        The verification record: every arch's scores per rung (mean and per seed), the winner, the baseline's
        score, the paired gains and the margin.
    """
    alive = [base] + list(candidates)
    scores: dict[str, list[dict[str, Any]]] = {c.name: [] for c in alive}
    for r, n in enumerate(steps):
        for c in alive:
            _logger.info('verification rung %d (%d steps): %s', r + 1, n, c.name)
            scores[c.name].append(_rung_score(c, int(n), recipe, out, seeds))
        if r < len(steps) - 1:
            ranked = sorted(alive[1:], key=lambda c: -scores[c.name][-1]['AP50'])
            alive = [base] + ranked[:max(1, math.ceil(len(ranked) / 2))]
    finals = {c.name: 100 * scores[c.name][-1]['AP50'] for c in alive}  # in AP50 points
    best = max(alive[1:], key=lambda c: finals[c.name]) if len(alive) > 1 else None
    gain, paired = None, None
    if best is not None:
        gain = finals[best.name] - finals[base.name]
        paired = [100 * (a - b) for a, b in zip(scores[best.name][-1]['AP50_seeds'], scores[base.name][-1]['AP50_seeds'])]
    wins = best is not None and gain >= margin and (seeds == 1 or min(paired) > 0)
    winner = best if wins else base
    rule = f'a candidate is handed on when its held-out AP50 beats the baseline by at least {margin} points'
    if seeds > 1:
        rule = (f'a candidate is handed on when its held-out AP50, the mean over {seeds} retrain seeds, beats the '
                f"baseline's by at least {margin} points and it beats the baseline with every seed")
    record = {
        'rule': rule, 'steps': list(steps), 'seeds': seeds, 'margin_required': margin,
        'archs': [{'name': c.name, 'label': c.label, 'arch': c.arch.to_fna_string(), 'cost': c.cost,
                   'log_prob': None if c is base or c.log_prob is None else round(c.log_prob, 3),
                   'scores': scores[c.name]}
                  for c in [base] + list(candidates)],
        'baseline': base.name, 'baseline_AP50': finals[base.name],
        'best_candidate': None if best is None else best.name,
        'best_candidate_AP50': None if best is None else finals[best.name],
        'margin_AP50': gain, 'paired_gains_AP50': paired, 'winner': winner.name, 'winner_label': winner.label,
        'winner_arch': winner.arch.to_fna_string(), 'zoo_left_out': list(left_out),
    }
    with atomic_path(out / 'winner.pth') as tmp:  # the winner's checkpoint (held-out data, `steps[-1]` steps)
        shutil.copyfile(out / winner.name / 'final.pth', tmp)
    atomic_write_text(out / 'verify.json', json.dumps(record, indent=2) + '\n')
    return record
