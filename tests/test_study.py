"""The adaptation study script (benchmarks/adaptation_study.py): random archs at the seed's MAdds, and a tiny
end-to-end run that resumes model by model and writes the table, the JSON and both plots."""
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'benchmarks'))

import adaptation_study as study  # noqa: E402

from fna_zoo import count_arch, load_arch  # noqa: E402


def test_random_archs_match_the_seed_madds():
    seed = count_arch(load_arch('mobilenetv2_100'), study.STUDY_SIZE).madds
    archs = study.random_archs(3, seed=1)
    assert [a['name'] for a in archs] == ['random_0', 'random_1', 'random_2']
    for a in archs:
        assert abs(count_arch(load_arch(a['arch']), study.STUDY_SIZE).madds / seed - 1) <= study.MADDS_TOLERANCE
    assert len({load_arch(a['arch']).to_fna_string() for a in archs}) == 3
    assert study.random_archs(3, seed=1) == archs  # the draws are seeded


def test_study_end_to_end_resumes_model_by_model(tmp_path, seed_file):
    tiny = ['data.path=null', f'data.synthetic.root={tmp_path / "data"}', 'data.synthetic.num_train=8',
            'data.synthetic.num_val=4', 'data.synthetic.image_size=64', 'data.train_crop.size=null',
            'model.kwargs={min_size: 64, max_size: 64, head_width: 16, score_thresh: 0.0}', 'train.max_iters=2',
            'train.eval_interval=1', 'train.warmup_iters=1', 'eval.batch_size=4']
    args = ['--runs', str(tmp_path / 'runs'), '--out', str(tmp_path / 'out'), '--random', '1', '--rounds', '2',
            '--seed-weights', seed_file, '--searched', str(ROOT / 'fna_zoo' / 'archs' / 'fna_retinanet_backbone.yaml'),
            '--other-searched', str(ROOT / 'fna_zoo' / 'archs' / 'fna_ssdlite_backbone.yaml'), '--set', *tiny]
    assert study.main([*args, '--only', 'seed_imagenet_r0']) == 0
    first = tmp_path / 'runs' / 'seed_imagenet_r0' / 'metrics.json'
    stamp = first.stat().st_mtime_ns
    assert not (tmp_path / 'out').exists()  # a partial study writes no table
    assert study.main(args) == 0
    assert first.stat().st_mtime_ns == stamp  # a finished model is read back, not retrained
    data = json.loads((tmp_path / 'out' / 'adaptation_study.json').read_text())
    names = [r['name'] for r in data['rows']]
    assert names == ['seed_imagenet_r0', 'seed_imagenet_r1', 'seed_random_init', 'fna_retinanet', 'searched_s0_r0',
                     'searched_s0_r1', 'other_archs_r0', 'random_0']
    assert data['rows'][6]['group'] == 'searched, archs (remap)'
    row = data['rows'][0]
    assert row['gmadds_320'] == pytest.approx(count_arch(load_arch('mobilenetv2_100'), (320, 320)).madds / 1e9)
    assert row['ort_p50_ms'] > 0 and 0 <= row['AP50'] <= 1 and row['steps'] == 2
    assert [p['step'] for p in data['curves']['seed_imagenet_r0']] == [1, 2]
    seed_line = next(s for s in data['summary'] if s['model'] == 'seed (ImageNet remap)')
    both = (data['rows'][0]['AP50'] + data['rows'][1]['AP50']) / 2
    assert seed_line['n'] == 2 and seed_line['AP50'] == pytest.approx(both)
    table = (tmp_path / 'out' / 'adaptation_study.md').read_text()
    assert '| seed (ImageNet remap) | 2 |' in table and '| random_0 | 1 |' in table
    for png in ('adaptation_study.png', 'adaptation_study_curves.png'):
        assert (tmp_path / 'out' / png).read_bytes()[:4] == b'\x89PNG'


def test_arch_agreement_counts_slots_and_widths(tmp_path):
    seed = load_arch('mobilenetv2_100')
    path = ROOT / 'fna_zoo' / 'archs' / 'mobilenetv2_100.yaml'
    same = study.arch_agreement(path, path)
    assert same == {'slots_alike': sum(len(s.ops) for s in seed.stages), 'slots': sum(len(s.ops) for s in seed.stages),
                    'widths_alike': len(seed.stages), 'stages': len(seed.stages)}
    assert study.search_summary(tmp_path) is None
