"""Do no harm: the seed prior, targets relative to the seed's cost, the space's seed / width-scaled seed / path_of,
the held-out split, the candidates and the verification stage (fna_zoo/nas/verify.py) end to end on a tiny search."""
import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from fna_zoo import count_arch, load_arch
from fna_zoo.cli.search import verification_table
from fna_zoo.data import CocoDetection
from fna_zoo.engine.config import load_config
from fna_zoo.fileio import portable_path
from fna_zoo.nas.config import SEARCH_DEFAULTS
from fna_zoo.nas import SearchSpace, SuperNet
from fna_zoo.nas.space import ArchPath
from fna_zoo.nas import cost as cost_mod
from fna_zoo.nas.searcher import check_search_config, search
from fna_zoo.nas.verify import Candidate, baseline, holdout_split, top_candidates, zoo_candidates

ROOT = Path(__file__).resolve().parents[1]
SPACE = SEARCH_DEFAULTS['search']['space']


def space_of(**changes) -> SearchSpace:
    return SearchSpace.from_config({**SPACE, **changes}, 'retinanet')


def every_layer(space: SearchSpace, op: str):
    """The arch of `space` with `op` in every slot at the seed's widths."""
    return space.derive(ArchPath(tuple(tuple(slot.index(op) for slot in st.slots) for st in space.stages),
                                 space.seed_path().widths))


def test_seed_path_derives_the_seed_and_path_of_inverts_derive():
    space = space_of()
    seed = load_arch('mobilenetv2_100')
    arch = space.derive(space.seed_path())
    assert [(s.out_chs, s.layers) for s in arch.stages] == [(s.out_chs, s.layers) for s in seed.stages]
    assert arch.head_chs is None  # RetinaNet's backbone has no head conv
    assert space.path_of(arch) == space.seed_path()
    fna = load_arch('fna_retinanet_backbone')
    assert space.derive(space.path_of(fna)).stages == fna.stages
    assert space.path_of(seed) == space.seed_path()  # the registered seed, without skip slots
    assert space.path_of(space.scaled_seed(0.6)) is None  # 0.6 x 96 = 56 is not a candidate width
    half = space.scaled_seed(0.5)
    assert [s.out_chs for s in half.stages] == [16, 16, 16, 32, 48, 80, 160]
    assert space.path_of(half) is not None and [s.layers for s in half.stages] == [s.layers for s in seed.stages]
    with pytest.raises(ValueError, match='width multiplier is 0; expected a positive number'):
        space.scaled_seed(0)


def test_expansion_seed_thins_every_layer_and_keeps_depth_and_widths():
    space = space_of()
    seed = space.derive(space.seed_path())
    thin = space.derive(space.expansion_seed_path(3))
    assert [s.out_chs for s in thin.stages] == [s.out_chs for s in seed.stages]
    assert [[o.kernel for o in s.layers] for s in thin.stages] == [[o.kernel for o in s.layers] for s in seed.stages]
    # the fixed first stage (e1) is not searched; every searchable layer of the seed (e6) becomes e3
    assert [o.expansion for s in thin.stages[1:] for o in s.layers] == [3] * 16
    assert thin.stages[0] == seed.stages[0] and space.path_of(thin) == space.expansion_seed_path(3)
    assert space.expansion_seed_path(6) == space.seed_path()
    with pytest.raises(ValueError, match='expansion ratio 4 is not in the search space'):
        space.expansion_seed_path(4)
    for bad in (0, True, 3.0):
        with pytest.raises(ValueError, match=f'expansion ratio is {bad!r}; expected an integer >= 1'):
            space.expansion_seed_path(bad)


def test_seed_prior_starts_the_search_at_the_seed():
    space = space_of()
    net = SuperNet(space)
    net.set_prior(space.seed_path(), 3.0)
    assert net.argmax_path() == space.seed_path()
    ops, widths = net.probabilities()
    ops = [p.detach() for p in ops]
    seven = float(torch.tensor(3.0).exp() / (torch.tensor(3.0).exp() + 6))
    assert float(ops[1].max()) == pytest.approx(seven, abs=1e-2)  # a 7-op slot: e^3 / (e^3 + 6)


def test_a_channel_search_keeps_the_seed_ops_and_searches_only_widths():
    space = space_of()
    net = SuperNet(space)
    path = space.seed_path()
    net.set_prior(path, 3.0, ops=False)  # the width prior only
    net.fix_ops(path)
    before = [a.detach().clone() for a in net.op_alphas]
    net.fix_ops(path)  # a resumed search: idempotent, the logits are not raised twice
    assert all(torch.equal(a, b) for a, b in zip(net.op_alphas, before))
    ops, widths = net.probabilities()
    seed_ops = [i for slot in path.ops for i in slot]
    assert all(float(p[i]) > 1 - 1e-8 for p, i in zip(ops, seed_ops))
    assert all(not a.requires_grad for a in net.op_alphas) and all(a.requires_grad for a in net.width_alphas)
    bonus = float(torch.tensor(3.0).exp())
    assert all(float(p.max()) == pytest.approx(bonus / (bonus + len(p) - 1), abs=1e-2) for p in widths)
    # a loss on the relaxed probabilities moves the widths only
    loss = sum((p * torch.arange(len(p))).sum() for p in ops + widths)
    loss.backward()
    assert all(a.grad is None for a in net.op_alphas) and all(a.grad is not None for a in net.width_alphas)
    assert net.argmax_path().ops == path.ops
    # the warm-up's uniform draws keep the fixed ops and draw the widths
    draws = [net.sample_path(torch.Generator().manual_seed(k), uniform=True) for k in range(20)]
    assert all(d.ops == path.ops for d in draws) and len({d.widths for d in draws}) > 1


def test_relative_target_is_a_share_of_the_seed_cost():
    space = space_of()
    cfg = {'type': 'madds', 'lambda': 1.0, 'input_size': [320, 320], 'target': '0.75x', 'target_mode': 'match'}
    objective = cost_mod.build_objective(space, cfg)
    seed = count_arch(space.derive(space.seed_path()), (320, 320)).madds / 1e9
    assert objective.target == pytest.approx(0.75 * seed)
    for bad in ('abc', '0x', '-1x', 'x', 'nanx'):
        with pytest.raises(ValueError, match=f"target is '{bad}'; expected a positive number, a ratio"):
            cost_mod.build_objective(space, {**cfg, 'target': bad})


def test_baseline_is_the_width_scaled_seed_nearest_the_target():
    space = space_of()
    cfg = {'type': 'madds', 'lambda': 1.0, 'input_size': [320, 320], 'target': None, 'target_mode': 'match'}
    arch, path, _ = baseline(space, cost_mod.build_objective(space, cfg))
    assert path == space.seed_path()
    arch, path, cost = baseline(space, cost_mod.build_objective(space, {**cfg, 'target': '0.3x'}))
    assert arch == space.scaled_seed(0.5)  # the cheapest multiplier is nearest 0.3x of the MAdds
    assert cost == pytest.approx(count_arch(arch, (320, 320)).madds / 1e9)


def _seed_prior_search_at(target: str) -> tuple:
    """(space, MAdds objective at `target`, a super network's op and width probabilities under a seed prior 2)."""
    space = space_of()
    cfg = {'type': 'madds', 'lambda': 1.0, 'input_size': [320, 320], 'target': target, 'target_mode': 'match'}
    net = SuperNet(space)
    net.set_prior(space.seed_path(), 2.0)
    return (space, cost_mod.build_objective(space, cfg), net, *net.probabilities())


def test_top_candidates_rank_by_probability_within_the_band():
    space, objective, net, ops, widths = _seed_prior_search_at('1.0x')
    seed_arch = space.derive(space.seed_path())
    found = top_candidates(space, objective, ops, widths, net.argmax_path(), 4, 0.1, exclude=[seed_arch], draws=300)
    assert len(found) == 4 and [c.name for c in found] == [f'candidate_{i}' for i in range(4)]
    assert all(abs(c.cost / objective.target - 1) <= 0.1 for c in found)
    assert seed_arch.to_fna_string() not in {c.arch.to_fna_string() for c in found}  # the argmax is the baseline
    assert [c.log_prob for c in found] == sorted((c.log_prob for c in found), reverse=True)
    again = top_candidates(space, objective, ops, widths, net.argmax_path(), 4, 0.1, exclude=[seed_arch], draws=300)
    assert [c.arch for c in again] == [c.arch for c in found]  # seeded draws


def test_zoo_candidates_join_within_the_band_labelled_with_their_name(tmp_path):
    space, objective, _, ops, widths = _seed_prior_search_at('1.0x')
    half = tmp_path / 'half.yaml'
    space.scaled_seed(0.5).save(half)
    seed_arch = space.derive(space.seed_path())
    base = Candidate('baseline', seed_arch, space.seed_path(), 0.57, 0.0, 'the seed')
    found, left_out = zoo_candidates(space, objective, ['fna_retinanet_backbone', 'mobilenetv2_100', str(half)], 0.1,
                                     ops, widths, taken=[base], first_index=3)
    fna = load_arch('fna_retinanet_backbone')
    assert [(c.name, c.label) for c in found] == [('candidate_3', 'zoo: fna_retinanet_backbone')]
    assert found[0].arch.stages == fna.stages and found[0].path == space.path_of(fna)
    assert found[0].cost == pytest.approx(count_arch(fna, (320, 320)).madds / 1e9)
    assert found[0].log_prob < 0  # under the search's probabilities (the seed prior makes it unlikely)
    assert left_out[0] == {'zoo': 'mobilenetv2_100', 'why': 'the same arch as baseline (the seed)'}
    assert left_out[1]['zoo'] == portable_path(half) and 'is more than 10% from the target' in left_out[1]['why']


@pytest.mark.parametrize('overrides, message', [
    (['search.verify.zoo=[nope]'], "search.verify.zoo names 'nope': unknown arch 'nope'"),
    (['search.verify.zoo=[efficientnet_b0]'], "search.verify.zoo names 'efficientnet_b0', which is not in the search "
                                              'space; expected an arch of the space of mobilenetv2_100'),
    (['search.verify.zoo=[mobilenetv2_100, mobilenetv2_100]'],
     'search.verify.zoo is .*; expected a list of distinct registered arch'),
    (['search.verify.zoo=[fna_retinanet_backbone]', 'search.verify.candidates=0'],
     'candidates is 0 \\(no verification\\); expected candidates >= 1'),
])
def test_bad_zoo_archs_are_one_line_errors_before_the_search(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        check_search_config(_search_cfg(tmp_path, *overrides))


def _tree(root: Path, size: tuple[int, int]) -> None:
    (root / 'annotations').mkdir(parents=True)
    (root / 'train2017').mkdir()
    Image.new('RGB', size, (40, 90, 40)).save(root / 'train2017' / 'big.png')
    anns = [{'id': 1, 'image_id': 1, 'category_id': 1, 'bbox': [10, 10, 20, 20], 'area': 400, 'iscrowd': 0},
            {'id': 2, 'image_id': 1, 'category_id': 1, 'bbox': [50, 170, 20, 20], 'area': 400, 'iscrowd': 0},
            {'id': 3, 'image_id': 1, 'category_id': 1, 'bbox': [100, 155, 20, 10], 'area': 200, 'iscrowd': 0}]
    (root / 'annotations' / 'instances_train2017.json').write_text(json.dumps(
        {'images': [{'id': 1, 'file_name': 'big.png', 'width': size[0], 'height': size[1]}], 'annotations': anns,
         'categories': [{'id': 1, 'name': 'tree'}]}))


def test_holdout_split_cuts_a_strip_of_a_large_image_into_tiles(tmp_path):
    _tree(tmp_path / 'src', (200, 200))
    out = holdout_split(tmp_path / 'src', 'train2017', 0.2, 40, tmp_path / 'held', 'val2017')
    train = CocoDetection(out / 'annotations' / 'instances_train2017.json', out / 'train2017')
    held = CocoDetection(out / 'annotations' / 'instances_val2017.json', out / 'val2017')
    assert len(train) == 1 and train.load(0)[0].shape[-2:] == (160, 200)  # the top 80 %
    assert len(held) == 5 and all(held.load(i)[0].shape[-2:] == (40, 40) for i in range(5))  # the strip, in tiles
    # the box at y 170-190 is in the strip; the one cut by the line (y 155-165) is half in each part: kept in both
    assert train.boxes[1] == [([10, 10, 30, 30], 0), ([100, 155, 120, 160], 0)]
    held_boxes = [b for i in held.ids for b, _ in held.boxes[i]]
    assert [50 - 40, 10, 70 - 40, 30] in held_boxes and [20, 0, 40, 5] in held_boxes
    stamp = (out / 'holdout_done.json').stat().st_mtime_ns
    assert holdout_split(tmp_path / 'src', 'train2017', 0.2, 40, tmp_path / 'held', 'val2017') == out  # reused
    assert (out / 'holdout_done.json').stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="held-out split name 'train2017' is the training split"):
        holdout_split(tmp_path / 'src', 'train2017', 0.2, 40, tmp_path / 'other', 'train2017')


RETINA = 'model.kwargs={min_size: 64, max_size: 64, head_width: 16, score_thresh: 0.0}'


def _search_cfg(tmp_path: Path, *extra: str) -> dict:
    recipe = tmp_path / 'recipe.yaml'
    recipe.write_text('detector: retinanet\nmodel: {kwargs: {min_size: 64, max_size: 64, head_width: 16, '
                      'score_thresh: 0.0}}\ndata: {workers: 0}\ntrain: {batch_size: 4, epochs: 3, warmup_iters: 1, '
                      'optimizer: adamw, lr: 0.001}\neval: {batch_size: 4}\n')
    return load_config(None, [
        f'output={tmp_path / "s"}', f'data.synthetic.root={tmp_path / "data"}', 'data.synthetic.num_train=16',
        'data.synthetic.num_val=4', 'data.synthetic.image_size=64', 'data.workers=0', RETINA, 'train.batch_size=4',
        'train.epochs=2', 'train.warmup_iters=1', 'train.optimizer=adamw', 'train.lr=0.001', 'train.ckpt_interval=2',
        'search.arch_update_epoch=1', 'search.arch_optimizer.lr=0.05', 'search.bn_calib_batches=1',
        'eval.batch_size=4', 'search.space.layers=[2, 2, 2, 2, 2, 1]', 'search.space.width_mults=[0.5, 1.0]',
        'search.seed_prior=2.0', 'search.objective.target=1.0x', 'search.objective.target_mode=match',
        'search.verify.candidates=2', f'search.verify.recipe={recipe}', 'search.verify.steps=[1, 2]',
        'search.verify.band=0.5', *extra], defaults=SEARCH_DEFAULTS)


def test_verification_hands_on_the_winner_and_reports_every_score(tmp_path, capsys, monkeypatch):
    space = space_of(layers=[2, 2, 2, 2, 2, 1], width_mults=[0.5, 1.0])
    wide = every_layer(space, 'k5_e6')  # every layer k5: no draw near the seed proposes it
    wide.save(tmp_path / 'zoo_k5.yaml')
    space.derive(space.seed_path()).save(tmp_path / 'zoo_seed.yaml')  # the baseline itself: left out
    cfg = _search_cfg(tmp_path, f'search.verify.zoo=[{tmp_path / "zoo_k5.yaml"}, {tmp_path / "zoo_seed.yaml"}]')
    result = search(cfg)
    run, record = tmp_path / 's', result['verify']
    names = [a['name'] for a in record['archs']]
    assert names == ['baseline', 'candidate_0', 'candidate_1', 'candidate_2']
    assert record['archs'][0]['label'] == 'the seed'
    assert record['archs'][3]['label'] == f'zoo: {portable_path(tmp_path / "zoo_k5.yaml")}'
    assert record['archs'][3]['arch'] == wide.to_fna_string()
    assert record['zoo_left_out'] == [{'zoo': portable_path(tmp_path / 'zoo_seed.yaml'),
                                       'why': 'the same arch as baseline (the seed)'}]
    assert [s['steps'] for s in record['archs'][0]['scores']] == [1, 2]  # the baseline runs every rung
    assert sum(len(a['scores']) == 2 for a in record['archs'][1:]) == 2  # halving: two of three candidates go on
    finals = {a['name']: 100 * a['scores'][-1]['AP50'] for a in record['archs'] if len(a['scores']) == 2}
    best = max((n for n in finals if n != 'baseline'), key=finals.get)
    assert record['margin_AP50'] == pytest.approx(finals[best] - finals['baseline'])
    want = best if finals[best] - finals['baseline'] >= 1.0 else 'baseline'
    assert record['winner'] == want
    winner_arch = next(a['arch'] for a in record['archs'] if a['name'] == want)
    assert load_arch(run / 'arch.yaml').to_fna_string() == winner_arch
    assert load_arch(run / 'searched_arch.yaml').to_fna_string() == result['arch']
    summary = json.loads((run / 'summary.json').read_text())
    assert summary['verify'] == record and summary['objective']['target'] == '1.0x'
    assert summary['objective']['target_value'] == pytest.approx(record['archs'][0]['cost'])  # the seed's own cost
    assert json.loads((run / 'verify' / 'verify.json').read_text()) == record
    table = verification_table(record, result['cost_unit'])
    assert table.splitlines()[2].startswith('  baseline') and f'winner: {want}' in table
    assert f"  left out: zoo: {portable_path(tmp_path / 'zoo_seed.yaml')}: the same arch as baseline" in table
    # rerun with --resume: every run is finished, nothing is retrained, the record is the same
    stamp = (run / 'verify' / 'baseline' / 'final.pth').stat().st_mtime_ns
    again = search(cfg, resume=True)
    assert again['verify']['winner'] == record['winner']
    assert (run / 'verify' / 'baseline' / 'final.pth').stat().st_mtime_ns >= stamp
    # benchmarks/reverify.py reruns that verification from the folder's files, with one more zoo arch: the search's
    # own archs keep their names and scores (same seeds, same held-out split), the new one joins after them
    monkeypatch.syspath_prepend(str(ROOT / 'benchmarks'))
    import reverify

    every_layer(space, 'k7_e6').save(tmp_path / 'zoo_k7.yaml')
    rerun = reverify.main([str(run), '--zoo', str(tmp_path / 'zoo_k5.yaml'), str(tmp_path / 'zoo_k7.yaml'),
                           '--out', str(tmp_path / 're'), '--results', str(tmp_path / 'res')])
    assert [a['name'] for a in rerun['archs']] == names + ['candidate_3']
    assert rerun['archs'][4]['label'] == f'zoo: {portable_path(tmp_path / "zoo_k7.yaml")}'
    assert rerun['archs'][4]['log_prob'] is None and '/tmp/' not in json.dumps(rerun)  # no absolute path
    k5_name = portable_path(tmp_path / 'zoo_k5.yaml')
    assert rerun['zoo_left_out'] == [{'zoo': k5_name, 'why': f'the same arch as candidate_2 (zoo: {k5_name})'}]
    first = {a['name']: a['scores'][0]['AP50_seeds'] for a in record['archs']}
    for a in rerun['archs'][:4]:
        assert a['scores'][0]['AP50_seeds'] == pytest.approx(first[a['name']])
    printed = (tmp_path / 'res' / 'verification_table.txt').read_text()
    assert 'committed -> rerun' in printed and f"committed winner: {record['winner']}" in printed
    assert json.loads((tmp_path / 'res' / 'verify.json').read_text()) == rerun
    assert load_config(tmp_path / 'res' / 'config.yaml', defaults=SEARCH_DEFAULTS)['output'].startswith('<tmp>')
    with pytest.raises(SystemExit):  # results into the search folder would overwrite it: one error line
        reverify.main([str(run), '--out', str(tmp_path / 're2'), '--results', str(run / 'copy')])
    assert "--results" in capsys.readouterr().err
    # a rerun with another zoo arch into the same folder would resume the k7 arch's runs as candidate_3: refused
    every_layer(space, 'k5_e3').save(tmp_path / 'zoo_k5e3.yaml')
    with pytest.raises(ValueError, match='trained another arch than candidate_3'):
        reverify.main([str(run), '--zoo', str(tmp_path / 'zoo_k5e3.yaml'), '--out', str(tmp_path / 're')])


def test_a_channel_search_derives_the_seed_ops(tmp_path):
    cfg = _search_cfg(tmp_path, 'search.search_ops=false', 'search.verify.candidates=0', 'search.seed_prior=0.0',
                      'search.objective.target=0.6x', 'search.objective.lambda=5.0')
    result = search(cfg)
    space = space_of(**cfg['search']['space'])
    derived = load_arch(tmp_path / 's' / 'arch.yaml')
    assert derived.to_fna_string() == result['arch']
    assert space.path_of(derived).ops == space.seed_path().ops  # the widths were searched, the ops kept


@pytest.mark.parametrize('override, message', [
    ('search.verify.steps=[2, 1]', 'search.verify.steps is \\[2, 1\\]; expected increasing positive step counts'),
    ('search.verify.recipe=null', 'search.verify.recipe is None; expected the retrain config file'),
    ('search.verify.margin=-1', 'search.verify.margin is -1; expected a number of AP50 points >= 0'),
    ('search.verify.holdout=1.0', 'search.verify.holdout is 1.0; expected a share in \\(0, 1\\)'),
    ('search.seed_prior=-2', 'search.seed_prior is -2; expected a number >= 0'),
    ('search.verify.seeds=0', 'search.verify.seeds is 0; expected'),
])
def test_bad_verify_settings_are_one_line_errors(tmp_path, override, message):
    with pytest.raises(ValueError, match=message):
        check_search_config(_search_cfg(tmp_path, override))


def test_a_verify_recipe_for_another_detector_is_refused(tmp_path):
    other = tmp_path / 'ssd.yaml'
    other.write_text('detector: ssdlite\n')
    with pytest.raises(ValueError, match="trains 'ssdlite'; expected the search's detector 'retinanet'"):
        check_search_config(_search_cfg(tmp_path, f'search.verify.recipe={other}'))
    with pytest.raises(ValueError, match='is a directory; expected a retrain config file'):
        check_search_config(_search_cfg(tmp_path, f'search.verify.recipe={tmp_path}'))


def _fake_retrains(monkeypatch, ap50: dict) -> list:
    """Replace the verification's retrain by a lookup of AP50 by (run folder name, retrain seed); records the calls.

    The selection rule of `verify_candidates` is what these tests check, so the retrains' scores are set by hand."""
    import fna_zoo.engine.train as train_mod

    calls = []

    def retrain(cfg, resume=False):
        out = Path(cfg['output'])
        out.mkdir(parents=True, exist_ok=True)
        torch.save({'seed': cfg['seed']}, out / 'final.pth')
        calls.append((out.name, cfg['seed'], cfg['train']['max_iters']))
        return {'step': cfg['train']['max_iters'], 'AP': 0.0, 'AP50': ap50[out.name.split('_s')[0]][cfg['seed'] - 7]}

    monkeypatch.setattr(train_mod, 'retrain', retrain)
    return calls


def _verify_with(tmp_path, monkeypatch, ap50: dict, seeds: int, margin: float = 1.0) -> tuple[dict, list]:
    from fna_zoo.nas.verify import verify_candidates

    space = space_of()
    arch = space.derive(space.seed_path())
    made = [Candidate(name, arch, space.seed_path(), 1.0, -1.0, name) for name in ap50]
    calls = _fake_retrains(monkeypatch, ap50)
    recipe = {'model': {}, 'train': {}, 'seed': 7}
    return verify_candidates(made[1:], made[0], recipe, [10], margin, tmp_path, seeds=seeds), calls


def test_verification_with_seeds_pairs_them_and_needs_a_win_with_every_seed(tmp_path, monkeypatch):
    # candidate_0's mean beats the baseline by 5 points, but it loses with the second seed: the baseline stays
    ap50 = {'baseline': [0.10, 0.20], 'candidate_0': [0.25, 0.15]}
    record, calls = _verify_with(tmp_path / 'a', monkeypatch, ap50, seeds=2)
    assert sorted(calls) == [('baseline', 7, 10), ('baseline_s1', 8, 10), ('candidate_0', 7, 10),
                             ('candidate_0_s1', 8, 10)]
    assert record['archs'][1]['scores'][0]['AP50_seeds'] == [0.25, 0.15]
    assert record['margin_AP50'] == pytest.approx(5.0) and record['paired_gains_AP50'] == pytest.approx([15, -5])
    assert record['winner'] == 'baseline' and 'with every seed' in record['rule']
    assert torch.load(tmp_path / 'a' / 'winner.pth')['seed'] == 7  # the winner's first-seed run
    assert 'by seed +15.0 / -5.0' in verification_table(record, 'ms')
    # winning with both seeds by a mean over the margin hands the candidate on
    record, _ = _verify_with(tmp_path / 'b', monkeypatch, {'baseline': [0.10, 0.20], 'candidate_0': [0.12, 0.23]}, 2)
    assert record['winner'] == 'candidate_0' and record['margin_AP50'] == pytest.approx(2.5)
    # one seed: the margin alone decides (a 0.5-point gain is below it)
    record, _ = _verify_with(tmp_path / 'c', monkeypatch, {'baseline': [0.10], 'candidate_0': [0.105]}, 1)
    assert record['winner'] == 'baseline' and record['seeds'] == 1 and record['paired_gains_AP50'] == pytest.approx([0.5])
