"""Architecture search: space, super network (seed remap, sampled path == derived network), MAdds objective,
the search loop (outputs, resume, NaN, DDP) and its command line."""
import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch

from conftest import randomize_bn, run_side_by_side
from fna_zoo import build_backbone, count_arch, load_arch
from fna_zoo.detection import SSDLiteBackbone
from fna_zoo.engine.config import load_config
from fna_zoo.nas.config import SEARCH_DEFAULTS
from fna_zoo.nas import SearchSpace, SuperNet, madds_table
from fna_zoo.nas import cost as cost_mod
from fna_zoo.nas.searcher import build_search, check_search_config, search
from fna_zoo.nas.space import ArchPath

ROOT = Path(__file__).resolve().parents[1]
SPACE = SEARCH_DEFAULTS['search']['space']


def space_of(detector: str = 'retinanet', **changes) -> SearchSpace:
    return SearchSpace.from_config({**SPACE, **changes}, detector)


def test_space_size_and_derive():
    # FNA's space (fixed widths): 6^6 * 259^5 distinct archs once skips move to the stage end (method.md 1.1)
    assert space_of(width_mults=[1.0]).num_paths() == 6 ** 6 * 259 ** 5
    space = space_of()
    assert [st.widths for st in space.stages][:2] == [(16, 24, 32, 40), (16, 24, 32, 40, 48)]
    seed_path = ArchPath(tuple(tuple(0 if i < d else len(st.slots[i]) - 1 for i in range(len(st.slots)))
                               for st, d in zip(space.stages, (2, 3, 4, 3, 3, 1))),
                         tuple(st.widths.index(space.seed.stages[st.index].out_chs) for st in space.stages))
    arch = space.derive(seed_path)
    assert arch.depths == space.seed.depths and arch.head_chs is None  # k3_e3 ops, the seed's depths and widths
    assert space_of('ssdlite').stages[4].slots[0] == ('k3_e6', 'k5_e6', 'k7_e6')  # the SSDLite tap: e6 only


@pytest.mark.parametrize('changes, message', [
    (dict(ops=['k4_e6']), "op 'k4_e6' has kernel 4; expected an odd kernel"),
    (dict(ops=['k3_e1', 'skip']), "op 'k3_e1' cannot be mapped from the seed"),
    (dict(first_ops=['k3_e6', 'skip']), "first_ops .* has 'skip'"),
    (dict(layers=[4, 4, 1]), r'layers \[4, 4, 1\] has 3 entries; expected 6'),
    (dict(width_mults=[1.0, -0.5]), 'width_mults is .*; expected positive multipliers'),
    (dict(seed='resnet50'), "seed 'resnet50' is unknown"),
])
def test_space_errors(changes, message):
    with pytest.raises(ValueError, match=message):
        space_of(**changes)
    with pytest.raises(ValueError, match='no valid architecture: no e6 first_ops for the SSDLite tap'):
        space_of('ssdlite', first_ops=['k3_e3', 'k5_e3'])


# searchable stage depths of each seed (EfficientNet-Lite0: B0's stages without SE, with TF "same" padding and BN eps
# 1e-3, which the super network's candidate ops, its sliced path and the derived network all carry)
SEEDS = {'mobilenetv2_100': (2, 3, 4, 3, 3, 1), 'efficientnet_b0': (2, 2, 3, 3, 4, 1),
         'tf_efficientnet_lite0': (2, 2, 3, 3, 4, 1)}


@pytest.fixture(scope='module')
def seed_models(seed_model):
    torch.manual_seed(0)
    models = {'mobilenetv2_100': seed_model,
              'efficientnet_b0': randomize_bn(timm.create_model('efficientnet_b0')).eval()}
    with torch.random.fork_rng():  # NOTE: the global stream the super networks' logits draw from stays as it was
        torch.manual_seed(0)
        models['tf_efficientnet_lite0'] = randomize_bn(timm.create_model('tf_efficientnet_lite0')).eval()
    return models


@pytest.fixture(scope='module')
def supernets(seed_models):
    nets = {}
    for seed, model in seed_models.items():
        for det in ('retinanet', 'ssdlite'):
            net = SuperNet(space_of(det, seed=seed))
            net.load_seed(model.state_dict())
            nets[seed, det] = net.train()
    return nets


def _features(net: SuperNet, det: str, x: torch.Tensor) -> list[torch.Tensor]:
    return net(x) if det == 'retinanet' else net.ssdlite_features(x)


@pytest.mark.parametrize('seed', SEEDS)
@pytest.mark.parametrize('det', ['retinanet', 'ssdlite'])
def test_sampled_path_computes_the_derived_network(supernets, seed, det, image):
    net, gen = supernets[seed, det], torch.Generator().manual_seed(0)
    for mode in ('train', 'eval'):
        net.train(mode == 'train')
        for _ in range(3):
            path = net.sample_path(gen, uniform=True)
            arch = net.space.derive(path)
            if det == 'retinanet':
                derived = build_backbone(arch, features_only=True, out_indices=(2, 3, 4))
            else:
                derived = SSDLiteBackbone(build_backbone(arch))
            state = net.path_state_dict(path)
            (derived.body if det == 'ssdlite' else derived).load_state_dict(state)
            derived.train(mode == 'train')
            with torch.no_grad():
                net.set_path(path)
                sliced = _features(net, det, image)
                net.set_path(path, masked=True)
                masked = _features(net, det, image)
                ref = derived(image) if det == 'retinanet' else list(derived(image).values())[:2]
            for s, m, r in zip(sliced, masked, ref):
                assert torch.equal(s[:, :r.shape[1]], r)  # exactly the derived network, leading channels
                assert not s[:, r.shape[1]:].any()        # zeros beyond the path's width
                # slicing == masking; masked convs (and SE means) run at the largest widths, whose kernels may sum
                # in another order (it depends on the thread count), so to float rounding (1.6e-5 of the largest
                # feature seen at 1 thread, through the whole backbone)
                assert (s - m).abs().max() <= 1e-4 * max(1.0, s.abs().max().item())
    net.train()


@pytest.mark.parametrize('seed', SEEDS)
def test_seed_remap_into_the_super_network(seed_models, seed, image):
    # the seed's own path (its ops, depths and widths) computes exactly the seed (eval mode: the seed's BN
    # statistics), and so does it with every layer k7_e6 (centred kernels) up to float rounding
    space = space_of(seed=seed)
    net = SuperNet(space)
    net.load_seed(seed_models[seed].state_dict())
    net.eval()
    ref = timm.create_model(seed, features_only=True, out_indices=(2, 3, 4))
    ref.load_state_dict(seed_models[seed].state_dict(), strict=False)
    ref.eval()
    for op, tol in ((None, 0.0), ('k7_e6', 1e-4)):
        seed_ops = [space.seed.stages[st.index].ops for st in space.stages]
        ops = tuple(tuple(st.slots[i].index(op or seed_ops[k][i]) if i < d else len(st.slots[i]) - 1
                          for i in range(len(st.slots)))
                    for k, (st, d) in enumerate(zip(space.stages, SEEDS[seed])))
        widths = tuple(st.widths.index(space.seed.stages[st.index].out_chs) for st in space.stages)
        net.set_path(ArchPath(ops, widths))
        with torch.no_grad():
            for got, want in zip(net(image), ref(image)):
                assert (got[:, :want.shape[1]] - want).abs().max().item() <= tol
    net.train()


@pytest.mark.parametrize('seed', SEEDS)
def test_seed_to_super_network_to_derived(seed_models, seed):
    # the chain: the seed remapped into the super network, the derived network cut from it (`path_state_dict`) on
    # the seed's own path and on the all-k7_e6 path; both compute the seed (max abs difference of the stride 8/16/32
    # maps), at an odd input size too (TF "same" padding pads stride-2 convs asymmetrically there)
    space = space_of(seed=seed)
    net = SuperNet(space)
    net.load_seed(seed_models[seed].state_dict())
    ref = timm.create_model(seed, features_only=True, out_indices=(2, 3, 4))
    ref.load_state_dict(seed_models[seed].state_dict(), strict=False)
    ref.eval()
    widths = tuple(st.widths.index(space.seed.stages[st.index].out_chs) for st in space.stages)
    seed_ops = [space.seed.stages[st.index].ops for st in space.stages]
    for op, tol in ((None, 0.0), ('k7_e6', 1e-4)):
        path = ArchPath(tuple(tuple(st.slots[i].index(op or seed_ops[k][i]) if i < d else len(st.slots[i]) - 1
                                    for i in range(len(st.slots)))
                              for k, (st, d) in enumerate(zip(space.stages, SEEDS[seed]))), widths)
        derived = build_backbone(space.derive(path), features_only=True, out_indices=(2, 3, 4))
        derived.load_state_dict(net.path_state_dict(path))
        derived.eval()
        for size in ((96, 128), (97, 131)):
            x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(2))
            with torch.no_grad():
                diff = max((d - r).abs().max().item() for d, r in zip(derived(x), ref(x)))
            assert diff <= tol, (op, size, diff)


@pytest.mark.parametrize('seed', SEEDS)
@pytest.mark.parametrize('det, size', [('retinanet', (800, 1088)), ('ssdlite', (320, 320))])
def test_expected_madds(supernets, seed, det, size):
    net = supernets[seed, det]
    table = madds_table(net.space, size)
    gen = torch.Generator().manual_seed(1)
    for _ in range(5):  # at one-hot probabilities the expectation is count_arch of the derived arch, exactly
        path = net.sample_path(gen, uniform=True)
        assert table.of_path(path) == count_arch(net.space.derive(path), size).madds
    ops, widths = net.probabilities()
    expected = table.expected(ops, widths)
    expected.backward()
    assert all(a.grad is not None and a.grad.abs().sum() > 0 for a in net.arch_parameters())
    net.zero_grad()


def test_cost_objective_forms():
    space = space_of()
    table = madds_table(space, (800, 1088))
    log_form = cost_mod.CostObjective(table, 0.02, 1e9, 'GMAdds')
    assert log_form.loss(torch.tensor(10.0, dtype=torch.float64)).item() == pytest.approx(0.02)
    target = cost_mod.CostObjective(table, 0.5, 1e9, 'GMAdds', target=4.0)
    assert target.loss(torch.tensor(3.0, dtype=torch.float64)).item() == 0.0  # below target: no penalty
    assert target.loss(torch.tensor(8.0, dtype=torch.float64)).item() == pytest.approx(0.5 * 0.30103, rel=1e-4)
    with pytest.raises(ValueError, match="search objective type 'flops' is unknown; expected one of madds"):
        cost_mod.build_objective(space, {'type': 'flops', 'lambda': 0.1, 'input_size': [32, 32]})
    # 'match': two-sided, so below the target the gradient pushes the expected cost up (the hinge's is 0 there)
    match = cost_mod.CostObjective(table, 0.5, 1e9, 'GMAdds', target=4.0, target_mode='match')
    for value, penalty, sign in ((2.0, 0.5 * 0.30103, -1), (8.0, 0.5 * 0.30103, 1), (4.0, 0.0, 0)):
        x = torch.tensor(value, dtype=torch.float64, requires_grad=True)
        loss = match.loss(x)
        loss.backward()
        assert loss.item() == pytest.approx(penalty, rel=1e-4) and torch.sign(x.grad).item() == sign
    for cfg, message in (({'target': 'abc'}, "target is 'abc'; expected a positive number, a ratio"),
                         ({'target': 1.0, 'target_mode': 'both'}, "target_mode is 'both'; expected one of max, match")):
        with pytest.raises(ValueError, match=message):
            cost_mod.build_objective(space, {'type': 'madds', 'lambda': 0.1, 'input_size': [32, 32], **cfg})


RETINA = 'model.kwargs={min_size: 64, max_size: 64, head_width: 16, score_thresh: 0.0}'


def tiny(tmp_path: Path, *extra: str, kwargs: str = RETINA) -> list[str]:
    return [f'data.synthetic.root={tmp_path / "data"}', 'data.synthetic.num_train=16', 'data.synthetic.num_val=4',
            'data.synthetic.image_size=64', 'data.workers=0', kwargs,
            'train.batch_size=4', 'train.epochs=3', 'train.warmup_iters=1', 'train.optimizer=adamw', 'train.lr=0.001',
            'train.log_interval=1', 'train.ckpt_interval=2', 'search.arch_update_epoch=1', 'search.arch_log_interval=1',
            'search.arch_optimizer.lr=0.05', 'search.bn_calib_batches=1', 'eval.batch_size=4',
            'search.space.layers=[2, 2, 2, 2, 2, 1]', 'search.space.width_mults=[0.5, 1.0]', *extra]


def run_search(tmp_path: Path, name: str, *extra: str, resume: bool = False, kwargs: str = RETINA) -> dict:
    cfg = load_config(None, [f'output={tmp_path / name}', *tiny(tmp_path, *extra, kwargs=kwargs)],
                      defaults=SEARCH_DEFAULTS)
    return search(cfg, resume=resume)


def test_search_outputs_and_exact_resume(tmp_path, capsys):
    full = run_search(tmp_path, 'full')  # 6 weight steps (2 per epoch), arch steps from epoch 1
    run = tmp_path / 'full'
    for name in ('arch.yaml', 'alphas.pt', 'summary.json', 'search.log', 'metrics.csv', 'probs.png', 'last.pth',
                 'config.yaml'):
        assert (run / name).is_file(), name
    assert (run / 'probs.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    arch = load_arch(run / 'arch.yaml')
    assert arch.seed == 'mobilenetv2_100'  # the arch file names its seed for retraining, export and the zoo
    summary = json.loads((run / 'summary.json').read_text())
    assert summary['arch'] == arch.to_fna_string() == full['arch']
    assert summary['madds'] == count_arch(arch, (800, 1088)).madds and summary['steps'] == 6
    assert summary['arch_steps'] == 4 and 0.0 <= summary['skip_fraction'] <= 1.0
    assert len(summary['probabilities']['ops']) == 11 and 0.0 <= summary['supernet_eval']['AP'] <= 1.0
    assert 'phase' in (run / 'metrics.csv').read_text().splitlines()[0]
    assert 'argmax arch' in (run / 'search.log').read_text()
    alphas = torch.load(run / 'alphas.pt', weights_only=True)
    # killed after step 3 (a checkpoint at step 2 and at the epoch end, step 4 is not reached) ...
    run_search(tmp_path, 'part', 'train.max_iters=3')
    resumed = run_search(tmp_path, 'part', resume=True)
    assert resumed['arch'] == full['arch'] and resumed['steps'] == 6
    again = torch.load(tmp_path / 'part' / 'alphas.pt', weights_only=True)
    for a, b in zip(alphas['op_alphas'] + alphas['width_alphas'], again['op_alphas'] + again['width_alphas']):
        assert torch.allclose(a, b, atol=1e-6)
    # the derived arch retrains as it is (seed remapped into it)
    from fna_zoo.cli.retrain import retrain_main
    result = retrain_main(['--output', str(tmp_path / 'retrain'), '--arch', str(run / 'arch.yaml'), '--set',
                               f'data.synthetic.root={tmp_path / "data"}', 'data.synthetic.num_train=16',
                               'data.synthetic.num_val=4', 'data.synthetic.image_size=64', 'data.workers=0',
                               RETINA, 'train.max_iters=2', 'train.batch_size=4', 'eval.batch_size=4'])
    assert result['step'] == 2 and load_arch(tmp_path / 'retrain' / 'arch.yaml') == arch


def test_gumbel_ssdlite_search(tmp_path):
    result = run_search(tmp_path, 'ssd', 'detector=ssdlite', 'search.relaxation=gumbel', 'search.eval_derived=false',
                        'search.objective.input_size=[320, 320]', 'train.max_iters=4',
                        kwargs='model.kwargs={image_size: 64, score_thresh: 0.0}')
    arch = load_arch(tmp_path / 'ssd' / 'arch.yaml')
    assert arch.head_chs == 1280 and result['madds'] == count_arch(arch, (320, 320)).madds
    assert arch.stages[5].layers[0].expansion == 6  # the SSDLite tap (96 -> 160 stage) keeps e6


def test_effnet_search_derives_an_effnet_arch(tmp_path):
    result = run_search(tmp_path, 'eff', 'search.space.seed=efficientnet_b0', 'search.relaxation=gumbel',
                        'search.eval_derived=false', 'train.max_iters=4')
    arch = load_arch(tmp_path / 'eff' / 'arch.yaml')
    assert (arch.seed, arch.act, arch.se_ratio) == ('efficientnet_b0', 'silu', 0.25)
    assert result['madds'] == count_arch(arch, (800, 1088)).madds
    body = build_backbone(arch, features_only=True, out_indices=(2, 3, 4))  # retraining builds it like this
    assert body.feature_info.reduction() == [8, 16, 32] and body.blocks[1][0].se is not None


def test_lite0_search_derives_a_lite0_arch(tmp_path):
    result = run_search(tmp_path, 'lite0', 'search.space.seed=tf_efficientnet_lite0', 'search.relaxation=gumbel',
                        'search.eval_derived=false', 'train.max_iters=4')
    arch = load_arch(tmp_path / 'lite0' / 'arch.yaml')
    # the arch file keeps the seed's family, so retraining, export and the zoo rebuild it with TF padding and eps
    assert (arch.seed, arch.act, arch.se_ratio, arch.pad_type, arch.bn_eps) == (
        'tf_efficientnet_lite0', 'relu6', None, 'same', 1e-3)
    assert result['madds'] == count_arch(arch, (800, 1088)).madds
    body = build_backbone(arch, features_only=True, out_indices=(2, 3, 4))
    assert body.feature_info.reduction() == [8, 16, 32] and body.bn1.eps == 1e-3
    assert body.pretrained_cfg['mean'] == (0.5, 0.5, 0.5)  # the seed's normalisation, recorded with the model
    # the search's detector normalises as the seed expects too (the super network records the seed's input cfg)
    cfg = load_config(None, tiny(tmp_path, 'search.space.seed=tf_efficientnet_lite0'), defaults=SEARCH_DEFAULTS)
    detector = build_search(cfg, 2)[2]
    assert detector.transform.image_mean == detector.transform.image_std == [0.5, 0.5, 0.5]


def test_nan_loss_stops_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setattr(cost_mod.CostObjective, 'loss', lambda self, e: e * float('nan'))
    with pytest.raises(FloatingPointError, match=r'architecture loss is nan at step 2; search stopped, the last '
                                                 r'good checkpoint is .*last.pth'):
        run_search(tmp_path, 'nan')
    assert torch.load(tmp_path / 'nan' / 'last.pth', weights_only=True)['step'] == 2
    assert not (tmp_path / 'nan' / 'arch.yaml').exists()


def test_cli_errors_leave_nothing(tmp_path):
    cases = [(['--set', 'search.space.ops=[k3_e1]'], "error: op 'k3_e1' cannot be mapped from the seed"),
             (['--set', 'search.objectiv.lambda=1'], "error: unknown config key 'search.objectiv'"),
             (['--set', 'search.relaxation=random'], "error: config search.relaxation is 'random'; expected one of"),
             (['--config', str(tmp_path / 'none.yaml')], 'error: config file .* does not exist')]
    outs = [tmp_path / f'run{i}' for i in range(len(cases))]
    procs = run_side_by_side([[sys.executable, str(ROOT / 'search' / 'run.py'), '--output', str(out), *args]
                              for out, (args, _) in zip(outs, cases)], env={'HF_HUB_OFFLINE': '1'})
    for proc, out, (_, message) in zip(procs, outs, cases):
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1, proc.stderr
        assert re.match(message, lines[0]), lines[0]
        assert not out.exists()


def test_ddp_ranks_derive_the_same_arch(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE='1', OMP_NUM_THREADS='1')
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2',
           str(ROOT / 'search' / 'run.py'), '--output', str(tmp_path / 'ddp'),
           '--set', *tiny(tmp_path, 'train.batch_size=2', 'train.max_iters=3', 'search.eval_derived=false')]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / 'ddp' / 'summary.json').read_text())
    assert summary['processes'] == 2 and proc.stdout.count('derived arch') == 1  # only rank 0 prints
    assert summary['arch'] == load_arch(tmp_path / 'ddp' / 'arch.yaml').to_fna_string()


@pytest.mark.parametrize('name', ['fna_retinanet_search', 'fna_ssdlite_search', 'fna_effnet_retinanet_search',
                                  'demo_search'])
def test_search_configs_build(name):
    cfg = load_config(ROOT / 'configs' / f'{name}.yaml', defaults=SEARCH_DEFAULTS)
    space = SearchSpace.from_config(cfg['search']['space'], cfg['detector'])
    assert [len(st.slots) for st in space.stages] == [4, 4, 4, 4, 4, 1]
    if name.startswith('fna_'):  # the paper's search settings (method.md 3.3)
        ssd = cfg['detector'] == 'ssdlite'
        assert cfg['search']['objective']['lambda'] == (0.15 if ssd else 0.02)
        assert cfg['search']['arch_update_epoch'] == (15 if ssd else 8) and cfg['train']['epochs'] == (30 if ssd else 14)
        assert (cfg['search']['weight_steps'], space.temperature) == ((5, 0.9) if ssd else (1, 1.0))


def _flat(d: dict, prefix: str = '') -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f'{prefix}{k}.') if isinstance(v, dict) else {f'{prefix}{k}': v})
    return out


def test_lite0_tree_configs_follow_the_mobilenetv2_ones():
    # the Lite0 search and retrain configs are the tree ones with the seed swapped: the same data, schedule, search
    # and verification settings; the cost term is MAdds at the Lite0 seed's own (no Lite0 latency table)
    lite0 = load_config(ROOT / 'configs' / 'trees_search_lite0.yaml', defaults=SEARCH_DEFAULTS)
    mbv2 = load_config(ROOT / 'configs' / 'trees_search.yaml', defaults=SEARCH_DEFAULTS)
    a, b = _flat(lite0), _flat(mbv2)
    assert {k for k in a.keys() | b.keys() if a.get(k) != b.get(k)} == {
        'model.seed_weights', 'search.space.seed', 'search.objective.type', 'search.objective.table',
        'search.verify.recipe', 'output'}
    space, objective, _ = check_search_config(lite0)  # the space, the objective and the verification recipe
    seed = load_arch('tf_efficientnet_lite0')
    assert space.seed == seed and objective.unit == 'GMAdds'
    assert objective.target == count_arch(seed.replace(head_chs=None), (320, 320)).madds / 1e9
    a = _flat(load_config(ROOT / 'configs' / 'trees_retinanet_lite0.yaml'))
    b = _flat(load_config(ROOT / 'configs' / 'trees_retinanet.yaml'))
    changed = {k for k in a.keys() | b.keys() if a.get(k) != b.get(k)}
    assert changed == {'model.backbone', 'model.seed_weights', 'output'}
    assert a['model.seed_weights'] == 'asset:efficientnet_lite0.in1k'


def test_weight_and_arch_steps_split_by_image(tmp_path):
    from fna_zoo.data import CocoDetection, RandomCrops, coco_split_paths, make_synthetic_coco
    from fna_zoo.nas.searcher import split_indices

    root = make_synthetic_coco(tmp_path / 'syn', num_train=6, num_val=2, image_size=64)
    base = CocoDetection(*coco_split_paths(root, 'train2017'), train=True)
    w, a = split_indices(base, 0.5, seed=0)
    assert sorted(w + a) == list(range(len(base))) and len(w) == 3
    crops = RandomCrops(base, 32, crops_per_image=4)
    w, a = split_indices(crops, 0.5, seed=0)
    assert sorted(w + a) == list(range(24))
    assert {i // 4 for i in w}.isdisjoint({i // 4 for i in a})  # every window of an image on one side
    # one image: its windows are split instead
    one = CocoDetection(*coco_split_paths(root, 'train2017'), train=True)
    one.ids = one.ids[:1]
    w, a = split_indices(RandomCrops(one, 32, crops_per_image=4), 0.5, seed=0)
    assert sorted(w + a) == [0, 1, 2, 3] and len(w) == 2
    with pytest.raises(ValueError, match=r'1 training images \(or windows of one image\) cannot be split'):
        split_indices(RandomCrops(one, 32), 0.5, seed=0)


def test_pairs_relaxation_compares_two_candidates(supernets, image):
    net = supernets['mobilenetv2_100', 'retinanet']
    net.zero_grad()
    net.set_relaxed(pairs=True, generator=torch.Generator().manual_seed(3))
    sum(f.square().mean() for f in net(image[:1, :, :64, :64])).backward()
    for a in net.arch_parameters():
        g = a.grad if a.grad is not None else torch.zeros_like(a)
        # two candidates drawn per slot / stage: only their logits move, and softmax over the pair makes their
        # gradients opposite (one gains what the other loses)
        assert (g != 0).sum() <= 2 and g.sum().abs() <= 1e-6 * max(1.0, g.abs().max().item())
    assert sum(int((a.grad != 0).sum()) for a in net.arch_parameters() if a.grad is not None) >= 10
    with pytest.raises(ValueError, match='gumbel and pairs'):
        net.set_relaxed(gumbel=True, pairs=True)
    net.zero_grad()
    net.set_path(net.argmax_path())


def test_pairs_search_runs_and_resumes(tmp_path):
    full = run_search(tmp_path, 'full', 'search.relaxation=pairs', 'search.eval_derived=false',
                      'search.arch_batch_size=2')
    run_search(tmp_path, 'part', 'search.relaxation=pairs', 'search.eval_derived=false', 'search.arch_batch_size=2',
               'train.max_iters=3')
    resumed = run_search(tmp_path, 'part', 'search.relaxation=pairs', 'search.eval_derived=false',
                         'search.arch_batch_size=2', resume=True)
    assert resumed['arch'] == full['arch'] and full['arch_steps'] == 4
    assert 0.0 < full['op_entropy_fraction'] < 1.0 and 0.0 < full['width_entropy_fraction'] <= 1.0


def test_entropy_term_ramps_in_and_sharpens_what_is_favoured(tmp_path):
    from fna_zoo.nas.searcher import entropy_fraction, mean_entropy_fraction

    logits = torch.tensor([0.3, 0.1, -0.2, 0.0], requires_grad=True)
    frac = mean_entropy_fraction([logits.softmax(-1), torch.ones(1)])  # one-candidate slots are left out
    value = float(frac.detach())
    assert value == pytest.approx(entropy_fraction([logits.softmax(-1)])) and value > 0.95
    frac.backward()
    stepped = (logits - 5 * logits.grad).softmax(-1)
    assert int(stepped.argmax()) == 0 and entropy_fraction([stepped]) < value  # the favourite, sharper
    common = ('search.relaxation=darts', 'search.eval_derived=false', 'search.objective.lambda=0.0',
              'search.arch_optimizer.lr=0.05')
    plain = run_search(tmp_path, 'plain', *common)
    sharp = run_search(tmp_path, 'sharp', *common, 'search.entropy_weight=50.0')
    assert sharp['op_entropy_fraction'] < plain['op_entropy_fraction']
    assert sharp['width_entropy_fraction'] < plain['width_entropy_fraction']
    rows = list(csv.DictReader((tmp_path / 'sharp' / 'metrics.csv').open()))
    plain_rows = list(csv.DictReader((tmp_path / 'plain' / 'metrics.csv').open()))
    first_arch = next(i for i, r in enumerate(rows) if r['phase'] == 'arch')
    assert rows[first_arch]['loss'] == plain_rows[first_arch]['loss']  # the ramp starts at 0
    with pytest.raises(ValueError, match='config search.entropy_weight is -1.0; expected a number >= 0'):
        run_search(tmp_path, 'bad', 'search.entropy_weight=-1.0')


def test_paths_are_drawn_on_the_cpu_whatever_the_model_device():
    # the searcher's generator is a CPU one (the same draws on every rank and device); a model on another device
    # (meta here, CUDA on a GPU) must not move the uniform draw off the CPU
    with torch.device('meta'):
        net = SuperNet(space_of())
    assert net.op_alphas[0].device.type == 'meta'
    paths = [net.sample_path(torch.Generator().manual_seed(3), uniform=True) for _ in range(2)]
    assert paths[0] == paths[1]
    assert len(paths[0].ops) == len(net.space.stages) and len(paths[0].widths) == len(net.width_alphas)
