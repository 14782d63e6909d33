"""The adaptation study (benchmarks/adaptation_study.py): random archs in the cost band, the statistics (paired
t-interval, Kendall's tau), the plan (width-scaled seeds, searched and committed archs, shared retrains), a tiny
end-to-end study that resumes from its records and writes no absolute path, and the rank fidelity of a search."""
import json
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'benchmarks'))

import adaptation_study as study  # noqa: E402

from fna_zoo import count_arch, load_arch  # noqa: E402
from fna_zoo.engine.config import load_config  # noqa: E402
from fna_zoo.nas.config import SEARCH_DEFAULTS  # noqa: E402
from fna_zoo.nas.fidelity import supernet_estimates  # noqa: E402
from fna_zoo.nas.searcher import search  # noqa: E402

RETINA = 'model.kwargs={min_size: 64, max_size: 64, head_width: 16, score_thresh: 0.0}'


@pytest.fixture(scope='module')
def space():
    return study.study_space()


def test_random_archs_are_in_the_cost_band_and_seeded(space):
    seed = count_arch(space.derive(space.seed_path()), study.STUDY_SIZE).madds
    archs = study.random_archs(space, 3, seed=1)
    assert [a['name'] for a in archs] == ['random_0', 'random_1', 'random_2']
    for a in archs:
        assert a['target'] == seed and space.derive(a['path']) == a['arch'] and space.path_of(a['arch'])
        assert abs(count_arch(a['arch'], study.STUDY_SIZE).madds / seed - 1) <= study.COST_TOLERANCE
    assert len({a['arch'].to_fna_string() for a in archs}) == 3
    again = study.random_archs(space, 3, seed=1)
    assert [a['arch'] for a in again] == [a['arch'] for a in archs]  # the draws are seeded
    # any cost (a latency table's prediction): here the sum of the width indices
    drawn = study.random_archs(space, 2, seed=0, cost=lambda path: float(sum(path.widths)), tolerance=0.0)
    assert all(sum(a['path'].widths) == sum(space.seed_path().widths) for a in drawn)


def _study_table(space):
    for path in sorted((ROOT / 'configs' / 'latency_tables').glob('*.json')):
        try:
            return path, study.cost_function(space, path)[0]
        except ValueError:  # a table of another space or size
            continue
    return None, None


def test_random_archs_at_the_seed_latency_of_a_table(space):
    path, cost = _study_table(space)
    if path is None:
        pytest.skip('no latency table of the study space at 320x320 in configs/latency_tables')
    target = cost(space.seed_path())
    archs = study.random_archs(space, 2, seed=0, cost=cost)
    assert all(a['target'] == target and abs(a['cost'] / target - 1) <= study.COST_TOLERANCE for a in archs)
    assert all(a['cost'] == pytest.approx(cost(space.path_of(a['arch']))) for a in archs)  # skips in any slot


def test_paired_interval_and_t_quantiles_on_known_numbers():
    assert study.t_critical(1) == 12.706 and study.t_critical(3) == 3.182 and study.t_critical(30) == 2.042
    assert study.t_critical(31) == study.t_critical(1000) == 1.96
    # differences 2, 3, 1, 1 (seed 4 has no pair): mean 1.75, sd sqrt(2.75 / 3), t(3) = 3.182
    a = {0: 12.0, 1: 14.0, 2: 10.0, 3: 13.0, 4: 9.0}
    b = {0: 10.0, 1: 11.0, 2: 9.0, 3: 12.0}
    d = study.paired_difference(a, b)
    assert d['n'] == 4 and d['seeds'] == [0, 1, 2, 3] and d['mean'] == pytest.approx(1.75)
    assert d['sd'] == pytest.approx((2.75 / 3) ** 0.5)
    assert d['ci'] == pytest.approx([1.75 - 3.182 * d['sd'] / 2, 1.75 + 3.182 * d['sd'] / 2])
    assert d['ci'] == pytest.approx([0.22673, 3.27327], abs=1e-4)
    one = study.paired_difference({0: 1.0}, {0: 0.5, 1: 2.0})
    assert one['n'] == 1 and one['mean'] == 0.5 and one['sd'] is None and one['ci'] is None
    assert study.paired_difference({0: 1.0}, {1: 1.0})['mean'] is None


def test_kendall_tau_b_on_known_values():
    assert study.kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == 1.0
    assert study.kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == -1.0
    assert study.kendall_tau([1, 2, 3], [1, 3, 2]) == pytest.approx(1 / 3)
    # scipy.stats.kendalltau's documented example (tau-b, ties in both samples)
    assert study.kendall_tau([12, 2, 1, 12, 2], [1, 4, 7, 1, 0]) == pytest.approx(-0.47140452079103173)
    assert study.kendall_tau([1, 1, 1], [1, 2, 3]) != study.kendall_tau([1, 1, 1], [1, 2, 3])  # NaN: undefined
    with pytest.raises(ValueError, match='paired'):
        study.kendall_tau([1, 2], [1])


def test_plan_width_scaled_searched_and_committed_archs(space, tmp_path, capsys):
    out = tmp_path / 'out'
    archs = out / 'study' / 'archs'
    archs.mkdir(parents=True)
    committed = space.scaled_seed(0.5)
    committed.save(archs / 'random_0.yaml')  # a committed arch is read back, not drawn again
    seed_file = tmp_path / 'seed_arch.yaml'
    space.derive(space.seed_path()).save(seed_file)
    models = study.plan_models(space, out, seeds=3, width_mults=[0.75, 0.5], searched=[('same', seed_file)],
                               random_count=2, random_seed=0)
    assert [m.name for m in models] == ['seed', 'seed_w0.75', 'seed_w0.50', 'same', 'fna_retinanet', 'random_0',
                                        'random_1', 'seed_random_init']
    by = {m.name: m for m in models}
    assert by['seed_w0.75'].arch == space.scaled_seed(0.75) and by['seed_w0.75'].seeds == (0, 1, 2)
    assert by['random_0'].arch == committed and by['random_1'].seeds == (0,)
    assert by['same'].owner == 'seed' and by['seed_random_init'].owner == 'seed_random_init'  # its weights differ
    assert by['fna_retinanet'].arch == load_arch('fna_retinanet_backbone')
    assert '# random_1: uniform draw' in (archs / 'random_1.yaml').read_text()
    assert sorted(p.name for p in archs.iterdir()) == sorted(f'{m.name}.yaml' for m in models)
    # a rerun reads every file back: the same models, whatever the random seed says now
    again = study.plan_models(space, out, seeds=3, width_mults=[0.75, 0.5], searched=[('same', None)],
                              random_count=2, random_seed=5)
    assert [(m.name, m.arch) for m in again] == [(m.name, m.arch) for m in models]
    # an expansion-scaled seed joins the scaled seeds: compared with the seed and with each width-scaled seed
    thin = study.plan_models(space, out, seeds=3, width_mults=[0.75], expansions=[3], random_count=0)
    assert [m.name for m in thin][:3] == ['seed', 'seed_w0.75', 'seed_e3']
    assert thin[2].arch == space.derive(space.expansion_seed_path(3)) and thin[2].group == 'expansion-scaled seed'
    rows = [{'name': m.name, 'retrain_seed': k, 'AP50': 0.1 + 0.01 * i + 0.001 * k}
            for i, m in enumerate(thin) for k in range(3)]
    pairs = {(c['a'], c['b']): c for c in study.comparisons(thin, rows)}
    assert {('seed_e3', 'seed'), ('seed_e3', 'seed_w0.75'), ('seed_w0.75', 'seed')} <= set(pairs)
    assert pairs[('seed_e3', 'seed_w0.75')]['mean'] == pytest.approx(1.0)
    # more retrain seeds for some models: their comparisons pair over the seeds both have
    more = study.plan_models(space, out, seeds=3, width_mults=[0.75], random_count=0,
                             more_seeds={'seed': 5, 'fna_retinanet': 5})
    by = {m.name: m for m in more}
    assert by['seed'].seeds == (0, 1, 2, 3, 4) and by['seed_w0.75'].seeds == (0, 1, 2)
    rows = [{'name': m.name, 'retrain_seed': k, 'AP50': 0.1 + 0.01 * i + 0.001 * k}
            for i, m in enumerate(more) for k in m.seeds]
    pairs = {(c['a'], c['b']): c for c in study.comparisons(more, rows)}
    assert pairs[('fna_retinanet', 'seed')]['n'] == 5 and pairs[('seed_w0.75', 'seed')]['n'] == 3
    # retrains recorded beyond a model's planned seeds are named (the report leaves them out)
    runs = out / study.STUDY / 'runs'
    runs.mkdir(parents=True, exist_ok=True)
    for name in ('seed_r0.json', 'seed_r6.json', 'seed_w0.75_r1.json', 'seed_w0.75_r3.json'):
        (runs / name).write_text('{}')
    assert study.unplanned_seeds(out, by['seed']) == [6] and study.unplanned_seeds(out, by['seed_w0.75']) == [3]
    for name in ('seed_r6.json', 'seed_w0.75_r1.json', 'seed_w0.75_r3.json', 'seed_r0.json'):
        (runs / name).unlink()
    # a searched arch that differs from its committed file is refused, in one line
    other = tmp_path / 'other.yaml'
    space.scaled_seed(0.75).save(other)
    with pytest.raises(SystemExit):
        study.main(['--out', str(out), '--random', '2', '--report', '--searched', f'same={other}'])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith('adaptation_study.py: error: --searched same=')
    assert 'differs from the committed <out>/study/archs/same.yaml' in err
    for bad, message in ((['--searched', 'seed=x.yaml'], 'is a name of the study'),
                         (['--searched', f'new={tmp_path / "missing.yaml"}'], 'there is no committed'),
                         (['--width-mults', '0'], 'expected distinct positive'), (['--seeds', '0'], '--seeds is 0'),
                         (['--expansions', '3', '3'], '--expansions [3, 3]; expected distinct integers >= 1'),
                         (['--only-seeds', '4'], '--only-seeds [4]; expected retrain seeds from 0 to 3'),
                         (['--more-seeds', 'seed=6', '--only-seeds', '6'], 'expected retrain seeds from 0 to 5'),
                         (['--more-seeds', 'seed=0'], "--more-seeds 'seed=0'; expected NAME=N, each model once, N a "
                                                      'number of retrain seeds >= 1'),
                         (['--more-seeds', 'nope=6'], "--more-seeds ['nope']: no such model"),
                         (['--name', 'Other'], "--name 'Other'; expected 'study' followed by"),
                         (['--recipe', 'configs/missing.yaml'], 'is not a config file under the repository')):
        with pytest.raises(SystemExit):
            study.main(['--out', str(out), '--random', '2', '--report', *bad])
        assert message in capsys.readouterr().err


def test_lite0_family_has_its_own_archs_and_the_mobilenetv2_seeds_beside_it(tmp_path, monkeypatch):
    for name in ('FAMILY', 'RECIPE', 'STUDY', 'SEARCH_CONFIG', 'SEED_WEIGHTS'):
        monkeypatch.setattr(study, name, getattr(study, name))  # main() sets them; restored after the test
    lite0 = study.FAMILIES['lite0']
    monkeypatch.setattr(study, 'FAMILY', lite0)
    monkeypatch.setattr(study, 'SEARCH_CONFIG', lite0.search_config)
    out = tmp_path / 'out'
    models = study.plan_models(study.study_space(), out, seeds=2, width_mults=[0.75], random_count=0,
                               seed_weights=lite0.seed_weights)
    assert [m.name for m in models] == ['seed', 'seed_w0.75']  # no MobileNetV2-only rows
    seed = models[0].arch
    assert seed.seed == 'tf_efficientnet_lite0' and seed.pad_type == 'same' and seed.bn_eps == 1e-3
    assert models[0].seed_weights == 'asset:efficientnet_lite0.in1k'
    assert sorted(p.name for p in (out / 'study_lite0' / 'archs').iterdir()) == ['seed.yaml', 'seed_w0.75.yaml']
    assert not (out / 'study').exists()
    # the reference family's seeds, read from its committed archs, and their AP50 from its study report
    mbv2 = out / 'study' / 'archs'
    mbv2.mkdir(parents=True)
    for name in ('seed', 'seed_w0.75', 'seed_random_init', 'random_0'):
        load_arch('mobilenetv2_100').save(mbv2 / f'{name}.yaml')
    assert sorted(study.reference_archs(out)) == ['mobilenetv2:seed', 'mobilenetv2:seed_w0.75']
    (out / 'adaptation_study.json').write_text(json.dumps({'summary': [
        {'name': 'seed', 'n': 4, 'AP50_mean': 12.9, 'AP50_sd': 6.3}]}))
    latency = {'archs': {'seed': {'p50_ms': 10.0}},
               'reference': {'mobilenetv2:seed': {'p50_ms': 8.0}, 'mobilenetv2:seed_w0.75': {'p50_ms': 6.0}}}
    rows = study.reference_rows(out, latency)
    assert [(r['name'], r['ort_ratio'], r['n'], r['AP50_mean']) for r in rows] == [
        ('mobilenetv2:seed', 0.8, 4, 12.9), ('mobilenetv2:seed_w0.75', 0.6, 0, None)]
    text = study.markdown([], [], {'recipe': lite0.recipe, 'overrides': '', 'data': 'd', 'size': '320x320',
                                   'machines': 'm', 'wall_min': 0.0, 'runs': 0, 'latency': 'l'}, None, rows)
    assert '| mobilenetv2:seed | 8.00 | 0.80 | 4 | 12.9 ± 6.3 |' in text
    assert '| mobilenetv2:seed_w0.75 | 6.00 | 0.60 | 0 | - |' in text


def tiny(tmp_path: Path) -> list[str]:
    return ['data.path=null', f'data.synthetic.root={tmp_path / "data"}', 'data.synthetic.num_train=8',
            'data.synthetic.num_val=4', 'data.synthetic.image_size=64', 'data.train_crop.size=null', RETINA,
            'train.max_iters=2', 'train.eval_interval=1', 'train.warmup_iters=1', 'eval.batch_size=4']


@pytest.fixture(scope='module')
def search_run(tmp_path_factory, seed_file):
    """A tiny search of the study's space (one weight step and one architecture step) with its last.pth."""
    tmp = tmp_path_factory.mktemp('search')
    cfg = load_config(None, [f'output={tmp / "run"}', f'model.seed_weights={seed_file}',
                             f'data.synthetic.root={tmp / "data"}', 'data.synthetic.num_train=8',
                             'data.synthetic.num_val=4', 'data.synthetic.image_size=64', RETINA, 'train.batch_size=2',
                             'train.max_iters=1', 'train.warmup_iters=1', 'search.arch_update_epoch=0',
                             'search.eval_derived=false', 'search.bn_calib_batches=1', 'eval.batch_size=4'],
                      defaults=SEARCH_DEFAULTS)
    search(cfg)
    return tmp / 'run'


def test_supernet_estimates_in_and_out_of_the_space(search_run, space):
    seed = space.derive(space.seed_path())
    outside = seed.replace(stem_chs=24)
    assert space.path_of(outside) is None
    est = supernet_estimates(search_run, {'seed': seed, 'outside': outside}, calib_batches=1)
    assert est['outside'] is None and 0 <= est['seed']['AP50'] <= 1 and set(est['seed']) >= {'AP', 'AP50'}
    assert supernet_estimates(search_run, {'outside': outside}) == {'outside': None}


def _files(folder: Path) -> dict[str, int]:
    return {p.relative_to(folder).as_posix(): p.stat().st_mtime_ns for p in folder.rglob('*') if p.is_file()}


def test_study_end_to_end_resumes_shares_and_writes_no_absolute_path(tmp_path, seed_file, search_run, monkeypatch,
                                                                    capsys):
    out, runs = tmp_path / 'out', tmp_path / 'runs'
    records = out / 'study' / 'runs'
    args = ['--seeds', '2', '--random', '1', '--rounds', '2', '--seed-weights', seed_file, '--runs', str(runs),
            '--out', str(out), '--set', *tiny(tmp_path)]
    assert study.main([*args, '--only', 'seed', '--only-seeds', '1']) == 0  # one retrain seed (another process)
    assert sorted(_files(records)) == ['seed_r1.json']
    assert study.main([*args, '--only', 'seed']) == 0
    assert sorted(_files(records)) == ['seed_r0.json', 'seed_r1.json']
    stamps = _files(records)
    seed_arch = out / 'study' / 'archs' / 'seed.yaml'
    full = [*args, '--searched', f'same={seed_arch}']
    assert study.main(full) == 0
    assert {k: v for k, v in _files(records).items() if k in stamps} == stamps  # not retrained
    assert sorted(_files(records)) == ['fna_retinanet_r0.json', 'fna_retinanet_r1.json', 'random_0_r0.json',
                                       'seed_r0.json', 'seed_r1.json', 'seed_random_init_r0.json']  # 'same' shares
    rec = json.loads((records / 'seed_r1.json').read_text())
    assert rec['arch'] == '<out>/study/archs/seed.yaml' and rec['recipe'] == 'configs/trees_retinanet.yaml'
    assert rec['retrain_seed'] == 1 and rec['metrics']['step'] == 2 and [p['step'] for p in rec['curve']] == [1, 2]
    assert rec['seed_weights'] == '<local>/mobilenetv2_100.pth' and rec['wall_s'] > 0

    # a finished run folder whose record is missing is read back, not retrained
    final = runs / 'random_0_r0' / 'final.pth'
    stamp = final.stat().st_mtime_ns
    (records / 'random_0_r0.json').unlink()
    assert study.main(full) == 0
    assert final.stat().st_mtime_ns == stamp and (records / 'random_0_r0.json').is_file()

    # from the records alone (another machine, a clean clone): nothing is retrained
    shutil.rmtree(runs)
    monkeypatch.setattr(study, 'retrain_run', lambda *a, **k: pytest.fail('retrained a recorded run'))
    assert study.main(full) == 0
    assert not runs.exists()
    assert study.main([*full, '--latency']) == 0
    assert study.main([*full, '--fidelity', str(search_run), '--calib-batches', '1']) == 0

    data = json.loads((out / 'adaptation_study.json').read_text())
    rows = data['rows']
    assert [(r['name'], r['retrain_seed']) for r in rows] == [
        ('seed', 0), ('seed', 1), ('same', 0), ('same', 1), ('fna_retinanet', 0), ('fna_retinanet', 1),
        ('random_0', 0), ('seed_random_init', 0)]
    same = [r for r in rows if r['name'] == 'same']
    assert [r['same_as'] for r in same] == ['seed', 'seed']
    assert [r['AP50'] for r in same] == [r['AP50'] for r in rows if r['name'] == 'seed']
    summary = {s['name']: s for s in data['summary']}
    ap50 = [100 * r['AP50'] for r in rows if r['name'] == 'seed']
    assert summary['seed']['n'] == 2 and summary['seed']['AP50_mean'] == pytest.approx(sum(ap50) / 2)
    assert summary['seed']['ort_ratio'] == 1.0 and summary['same']['ort_p50_ms'] == summary['seed']['ort_p50_ms']
    assert summary['seed']['gmadds_320'] == pytest.approx(
        count_arch(load_arch(seed_arch), study.STUDY_SIZE).madds / 1e9)
    comps = {(c['a'], c['b']): c for c in data['comparisons']}
    assert set(comps) == {('same', 'seed'), ('fna_retinanet', 'seed')}
    assert comps['same', 'seed']['n'] == 2 and comps['same', 'seed']['ci'] == [0.0, 0.0]
    fid = json.loads((out / 'study' / 'fidelity.json').read_text())
    assert fid['search_run'] == '<local>/run' and fid['n'] == 3  # seed, fna_retinanet, random_0 (same = seed)
    assert set(fid['archs']) == {'seed', 'fna_retinanet', 'random_0'}
    table = (out / 'adaptation_study.md').read_text()
    assert '| seed | seed (ImageNet remap) | 2 |' in table and '| same (= seed) |' in table
    assert '| same - seed | 2 | +0.0 | [+0.0, +0.0] |' in table and "Kendall's tau" in table
    assert len((out / 'adaptation_study.csv').read_text().splitlines()) == 1 + len(rows)
    for png in ('adaptation_study.png', 'adaptation_study_curves.png'):
        assert (out / png).read_bytes()[:4] == b'\x89PNG'
    # no absolute path anywhere: every path is repo-relative (or marked <out>/, <local>/)
    for path in [*out.rglob('*.json'), *out.rglob('*.csv'), *out.rglob('*.md'), *out.rglob('*.yaml')]:
        text = path.read_text()
        assert str(tmp_path) not in text and str(ROOT) not in text and str(search_run) not in text, path
        assert '"/' not in text and "'/" not in text, path

    # partial models are marked; a record made with another recipe is refused in one line
    (records / 'fna_retinanet_r1.json').unlink()
    assert study.main([*full, '--report']) == 0
    assert '| fna_retinanet | FNA RetinaNet arch | 1/2 partial |' in (out / 'adaptation_study.md').read_text()
    # another recipe is another study (its own records and report), sharing the archs; the default comes back
    assert study.main([*full, '--report', '--name', 'study_b', '--recipe', 'configs/trees_retinanet_long.yaml']) == 0
    other_md = (out / 'adaptation_study_b.md').read_text()
    assert '| seed | seed (ImageNet remap) | 0/2 partial |' in other_md and 'trees_retinanet_long.yaml' in other_md
    assert not (out / 'study_b' / 'archs').exists()
    assert study.main([*full, '--report']) == 0 and study.RECIPE == 'configs/trees_retinanet.yaml'
    again = json.loads((out / 'adaptation_study.json').read_text())['fidelity']
    assert again['archs']['fna_retinanet']['n'] == 1  # the retrained side as the records are now
    assert again['archs']['seed']['supernet_AP50'] == fid['archs']['seed']['supernet_AP50']
    other = [*args[:-1], 'train.max_iters=3', '--searched', f'same={seed_arch}', '--report']
    with pytest.raises(SystemExit):
        study.main(other)
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith('adaptation_study.py: error: <out>/study/runs/seed_r0.json was made with another overrides')
