"""fna_custom and fna-publish: derived archs as timm models, published in timm's Hugging Face layout and reloaded
through `local-dir:` (and `hf-hub:`, from an offline hub cache) to the same outputs; the CLI error convention."""
import json
import re
import shutil
from pathlib import Path

import huggingface_hub
import pytest
import timm
import torch
from huggingface_hub import ModelCard, constants
from huggingface_hub.errors import HfHubHTTPError

from fna_zoo import Arch, count_arch, get_arch, load_arch
from fna_zoo.builder import build_backbone
from fna_zoo.engine import load_config, save_checkpoint
from fna_zoo.detection import build_model
from fna_zoo.publish import CARD_INPUT_SIZES, PushError, publish, push
from fna_zoo.cli.publish import main

from conftest import randomize_bn

FEATURES = (1, 2, 3, 4)
KWARGS = {
    'retinanet': 'model.kwargs={min_size: 64, max_size: 64, head_width: 16}',
    'ssdlite': 'model.kwargs={image_size: 64, head_norm: true}',
}


def _retrain_run(run: Path, detector: str, backbone: str, ap: float = 0.25) -> Path:
    """A retrain-style run folder: final.pth (tiny detector, random BN statistics), arch.yaml, metrics.json."""
    cfg = load_config(None, [f'detector={detector}', KWARGS[detector], f'model.backbone={backbone}',
                             'model.seed_weights=timm', 'model.num_classes=3', f'output={run}'])
    torch.manual_seed(0)
    model = randomize_bn(build_model(cfg, 3, with_seed=False))
    run.mkdir(parents=True)
    load_arch(backbone).save(run / 'arch.yaml')  # what retraining writes for an FNA arch
    (run / 'metrics.json').write_text(json.dumps({'step': 40, 'AP': ap, 'AP50': 0.5}))
    return save_checkpoint({'model': model.state_dict(), 'config': cfg, 'num_classes': 3, 'step': 40},
                           run / 'final.pth')


def _detector(ckpt: Path) -> torch.nn.Module:
    state = torch.load(ckpt, weights_only=True)
    model = build_model(state['config'], state['num_classes'], with_seed=False)
    model.load_state_dict(state['model'])
    return model.eval()


@pytest.fixture(scope='module')
def arch_file(tmp_path_factory) -> Path:
    """A derived arch that is not registered (FNA's RetinaNet arch with one more layer in stage 2)."""
    d = get_arch('fna_retinanet_backbone').to_dict()
    d['stages'][2]['ops'] = ['k7_e6', 'k5_e6', 'k3_e3', 'skip']
    return Arch.from_dict(d).save(tmp_path_factory.mktemp('arch') / 'derived.yaml')


@pytest.fixture(scope='module')
def runs(tmp_path_factory, arch_file) -> dict[str, Path]:
    root = tmp_path_factory.mktemp('runs')
    return {'ssdlite': _retrain_run(root / 'ssd', 'ssdlite', 'fna_ssdlite_backbone'),
            'retinanet': _retrain_run(root / 'retina', 'retinanet', str(arch_file))}


@pytest.fixture(scope='module')
def published(tmp_path_factory, runs) -> dict[str, Path]:
    out = tmp_path_factory.mktemp('hub')
    return {k: publish(None, out / f'fna_{k}', checkpoint=ckpt) for k, ckpt in runs.items()}


def _x() -> torch.Tensor:
    return torch.randn(2, 3, 96, 128, generator=torch.Generator().manual_seed(7))


# ---------------------------------------------------------------------------------------------- fna_custom
def test_fna_custom_takes_dict_file_and_string(arch_file, seed_file, seed_state_dict):
    arch = load_arch(arch_file)
    x = _x()
    outs = []
    for spec in (arch.to_dict(), str(arch_file), arch.to_fna_string(), arch):
        model = timm.create_model('fna_custom', arch=spec, pretrained=True,
                                  pretrained_cfg_overlay=dict(file=seed_file)).eval()
        assert model.fna_arch == arch and model.num_classes == 0
        assert model.pretrained_cfg['architecture'] == 'fna_custom'
        with torch.no_grad():
            outs.append(model(x))
    with torch.no_grad():  # the seed file is remapped into the arch on load, as build_backbone does
        ref = build_backbone(arch, seed_state_dict).eval()(x)
    assert all(torch.equal(o, ref) for o in outs)
    feats = timm.create_model('fna_custom', arch=arch.to_dict(), features_only=True, out_indices=FEATURES)
    assert feats.feature_info.channels() == [24, 32, 96, 320] and feats.feature_info.reduction() == [4, 8, 16, 32]


def test_fna_custom_without_arch_is_the_seed_arch():
    assert timm.create_model('fna_custom').fna_arch == get_arch('mobilenetv2_100')
    with pytest.raises(ValueError, match="unknown arch keys"):
        timm.create_model('fna_custom', arch={'stem_chs': 32, 'stages': [], 'bogus': 1})


def test_fna_custom_is_builtin_but_has_no_weights():
    assert 'fna_custom' in timm.list_models('fna*')
    assert not any(m.startswith('fna_custom') for m in timm.list_models('fna*', pretrained=True))
    with pytest.raises(RuntimeError, match='No pretrained weights exist for fna_custom'):
        timm.create_model('fna_custom', arch='fna_ssdlite_backbone', pretrained=True)


# ---------------------------------------------------------------------------------------------- publish
def test_layout_and_config(published, runs):
    folder = published['ssdlite']
    assert sorted(p.name for p in folder.iterdir()) == ['README.md', 'config.json', 'model.safetensors']
    assert not [p for p in folder.parent.iterdir() if p.name.startswith('.')]  # no temp folder left
    cfg = json.loads((folder / 'config.json').read_text())
    arch = get_arch('fna_ssdlite_backbone')
    assert cfg['architecture'] == 'fna_custom' and cfg['num_classes'] == 0 and cfg['num_features'] == 1280
    assert cfg['model_args']['arch'] == arch.to_dict() and cfg['model_args']['num_classes'] == 0
    pcfg = cfg['pretrained_cfg']
    assert pcfg['num_classes'] == 0 and pcfg['first_conv'] == 'conv_stem' and pcfg['classifier'] == 'classifier'
    assert pcfg['tag'] == 'ssdlite_retrain' and pcfg['input_size'] == [3, 224, 224]
    assert not {'file', 'source', 'hf_hub_id', 'url', 'state_dict'} & set(pcfg)  # timm adds the source on load
    meta = cfg['fna_zoo']
    assert meta['seed'] == 'mobilenetv2_100' and meta['ap'] == 0.25 and meta['fna_net_config'] == arch.to_fna_string()
    c = count_arch(arch, (800, 1088))
    assert meta['complexity']['800x1088'] == {'madds': c.madds, 'params': c.params}


def test_model_card(published, arch_file):
    card = (published['ssdlite'] / 'README.md').read_text()
    arch = get_arch('fna_ssdlite_backbone')
    assert card.startswith('---\n') and '\nlibrary_name: timm\n' in card.split('\n---\n')[0]  # Hub metadata first
    for h, w in CARD_INPUT_SIZES:
        c = count_arch(arch, (h, w))
        assert f'{h}x{w}: {c.params:,} params ({c.mparams:.2f}M), {c.madds:,} MAdds ({c.gmadds:.3f}B)' in card
    assert '**Seed:** mobilenetv2_100' in card and '**Detection AP:** 25.0 (box AP x100, AP50 50.0' in card
    assert "synthetic COCO-style set (6 classes" in card and "seed weights 'timm' remapped" in card
    assert arch.to_yaml() in card and arch.to_fna_string(multiline=True) in card
    assert 'hf upload <user>/<repo>' in card and 'push_to_hf_hub' in card and 'arXiv' not in card.split('##')[0]
    retina = (published['retinanet'] / 'README.md').read_text()
    assert load_arch(arch_file).to_yaml() in retina and '**Detection AP:**' in retina


def test_card_metadata_parses_back_with_the_model_index(published):
    card = ModelCard.load(published['ssdlite'] / 'README.md')
    data = card.data
    assert data.library_name == 'timm' and data.pipeline_tag == 'image-feature-extraction'
    assert data.base_model == 'timm/mobilenetv2_100.ra_in1k'  # the run's seed weights were timm's (seed_weights=timm)
    assert data.license == 'apache-2.0' and data.datasets == ['imagenet-1k']  # the seed's pretraining data
    assert {'image-feature-extraction', 'timm', 'object-detection', 'fna', 'ssdlite'} <= set(data.tags)
    assert data.model_name == 'fna_ssdlite'
    by_metric = {r.metric_type: r for r in data.eval_results}
    assert sorted(by_metric) == ['map', 'map_50']
    ap, ap50 = by_metric['map'], by_metric['map_50']
    assert ap.metric_value == 0.25 and ap50.metric_value == 0.5  # the run's metrics.json, box AP in [0, 1]
    for r in (ap, ap50):
        assert (r.task_type, r.dataset_type, r.dataset_split) == ('object-detection', 'synthetic', 'val2017')
        assert 'synthetic' in r.dataset_name
    assert card.text.startswith('\n# Model card for fna_ssdlite\n') and '## Architecture' in card.text
    retina = ModelCard.load(published['retinanet'] / 'README.md').data
    assert retina.eval_results[0].metric_value == 0.25 and 'retinanet' in retina.tags


def test_ssdlite_checkpoint_round_trip_local_dir(published, runs):
    det = _detector(runs['ssdlite'])
    folder = published['ssdlite']
    model = timm.create_model(f'local-dir:{folder}', pretrained=True).eval()
    feats = timm.create_model(f'local-dir:{folder}', pretrained=True, features_only=True, out_indices=FEATURES).eval()
    assert model.fna_arch == get_arch('fna_ssdlite_backbone') and model.pretrained_cfg['source'] == 'local-dir'
    x = _x()
    with torch.no_grad():
        assert torch.equal(model(x), det.backbone.body(x))  # the classifier-free backbone, bit for bit
        ref = det.backbone.body.forward_intermediates(x, indices=FEATURES, intermediates_only=True)
        out = feats(x)
    assert len(out) == 4 and all(torch.equal(a, b) for a, b in zip(out, ref))


def test_published_backbone_takes_a_new_classifier(published, runs, caplog):
    # fine-tuning: the backbone weights load unchanged, timm gives the new classifier its init
    body = _detector(runs['ssdlite']).backbone.body
    model = timm.create_model(f'local-dir:{published["ssdlite"]}', pretrained=True, num_classes=10)
    assert model.classifier.out_features == 10
    assert torch.equal(model.blocks[3][0].conv_pw.weight, body.blocks[3][0].conv_pw.weight)
    with caplog.at_level('WARNING'):
        timm.create_model(f'local-dir:{published["ssdlite"]}', pretrained=True, features_only=True)
    assert 'Unexpected keys' not in caplog.text  # the head conv a features model lacks is dropped quietly


def test_retinanet_checkpoint_round_trip_local_dir(published, runs, arch_file):
    det = _detector(runs['retinanet'])
    folder = published['retinanet']
    feats = timm.create_model(f'local-dir:{folder}', pretrained=True, features_only=True, out_indices=(2, 3, 4)).eval()
    x = _x()
    with torch.no_grad():
        out, ref = feats(x), det.backbone.body(x)
    assert feats.feature_info.channels() == [32, 96, 320]
    assert all(torch.equal(a, b) for a, b in zip(out, ref))
    model = timm.create_model(f'local-dir:{folder}', pretrained=True)
    assert model.fna_arch == load_arch(arch_file) and model.num_features == 320


def test_head_conv_a_retinanet_never_trained_is_left_out(tmp_path):
    ckpt = _retrain_run(tmp_path / 'run', 'retinanet', 'mobilenetv2_100')  # an arch with a 1x1 conv to 1280
    folder = publish(None, tmp_path / 'out', checkpoint=ckpt)
    cfg = json.loads((folder / 'config.json').read_text())
    assert cfg['model_args']['arch']['head_chs'] is None and cfg['num_features'] == 320
    assert 'head conv (to 1280) was not trained and is left out' in (folder / 'README.md').read_text()
    headless = get_arch('mobilenetv2_100').replace(head_chs=None)  # naming the published arch is fine too
    assert publish(headless, tmp_path / 'out2', checkpoint=ckpt, check=False).is_dir()


def test_hf_hub_loads_the_same_folder_offline(published, tmp_path):
    """`hf-hub:` takes the same path as `local-dir:` in timm; here from a hub cache (HF_HUB_OFFLINE=1, no network)."""
    rev = '0' * 40
    repo = tmp_path / 'models--someone--fna-ssdlite'
    (repo / 'refs').mkdir(parents=True)
    (repo / 'refs' / 'main').write_text(rev)
    shutil.copytree(published['ssdlite'], repo / 'snapshots' / rev)
    hub = timm.create_model('hf-hub:someone/fna-ssdlite', pretrained=True, cache_dir=tmp_path).eval()
    local = timm.create_model(f'local-dir:{published["ssdlite"]}', pretrained=True).eval()
    assert hub.pretrained_cfg['source'] == 'hf-hub' and hub.pretrained_cfg['hf_hub_id'] == 'someone/fna-ssdlite'
    x = _x()
    with torch.no_grad():
        assert torch.equal(hub(x), local(x))


def test_seed_weights_route(tmp_path, arch_file, seed_file, seed_state_dict):
    folder = publish(arch_file, tmp_path / 'seeded', seed_weights=seed_file, name='my_fna', dataset='in1k')
    cfg = json.loads((folder / 'config.json').read_text())
    assert cfg['pretrained_cfg']['tag'] == 'paramremap' and cfg['fna_zoo']['dataset'] == 'in1k'
    card = (folder / 'README.md').read_text()
    assert '# Model card for my_fna' in card and 'datasets:\n- in1k' in card and 'no training after remapping' in card
    data = ModelCard.load(folder / 'README.md').data  # no AP: no model-index; a weights file: no Hub base model
    assert data.library_name == 'timm' and data.datasets == ['in1k'] and data.base_model is None
    assert data.eval_results is None and 'model-index' not in card
    arch = load_arch(arch_file)
    x = _x()
    with torch.no_grad():
        ref = build_backbone(arch, seed_file).eval()(x)
        assert torch.equal(timm.create_model(f'local-dir:{folder}', pretrained=True).eval()(x), ref)
        file_route = timm.create_model('fna_custom', arch=arch.to_dict(), pretrained=True,
                                       pretrained_cfg_overlay=dict(file=str(folder / 'model.safetensors'))).eval()
        assert torch.equal(file_route(x), ref)  # weights made for the arch load as they are


def test_library_errors(tmp_path, runs, arch_file, seed_file):
    with pytest.raises(ValueError, match='expected exactly one weights source'):
        publish(arch_file, tmp_path / 'a')
    with pytest.raises(ValueError, match=r"disagrees with the arch checkpoint .* was trained with \(stage 2"):
        publish('fna_retinanet_backbone', tmp_path / 'b', checkpoint=runs['retinanet'])
    with pytest.raises(ValueError, match=r'AP is 33.9; expected box AP in \[0, 1\]'):
        publish(None, tmp_path / 'c', checkpoint=runs['ssdlite'], ap=33.9)
    with pytest.raises(ValueError, match="dataset is 'COCO: 2017'; expected a dataset id"):
        publish(None, tmp_path / 'c', checkpoint=runs['ssdlite'], dataset='COCO: 2017')
    search = tmp_path / 'search.pth'
    state = torch.load(runs['ssdlite'], weights_only=True)
    save_checkpoint({**state, 'config': {**state['config'], 'search': {}}}, search)
    with pytest.raises(ValueError, match='is an architecture search checkpoint'):
        publish(None, tmp_path / 'd', checkpoint=search)
    # an older checkpoint (no arch stored in it), no arch.yaml beside it, and its config names a file now gone
    old = {k: v for k, v in state.items() if k != 'arch'}
    moved = tmp_path / 'moved' / 'final.pth'
    save_checkpoint({**old, 'config': {**state['config'], 'model': {**state['config']['model'],
                                                                    'backbone': str(tmp_path / 'gone.yaml')}}}, moved)
    with pytest.raises(FileNotFoundError, match=r"the arch file '.*gone.yaml' of checkpoint .* does not exist"):
        publish(None, tmp_path / 'e', checkpoint=moved)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['moved', 'search.pth']


# ---------------------------------------------------------------------------------------------- CLI
def test_cli_publishes(tmp_path, runs, capsys):
    out = tmp_path / 'nested' / 'fna_ssd'
    assert main(['--checkpoint', str(runs['ssdlite']), '--arch', 'fna_ssdlite_backbone', '--output', str(out),
                 '--dataset', 'synthetic', '--ap', '0.5']) == 0
    printed = capsys.readouterr().out
    assert f'wrote {out} (fna_custom' in printed and f"timm.create_model('local-dir:{out}', pretrained=True)" in printed
    assert json.loads((out / 'config.json').read_text())['fna_zoo']['ap'] == 0.5  # --ap wins over metrics.json
    data = ModelCard.load(out / 'README.md').data
    assert data.datasets == ['synthetic', 'imagenet-1k']
    [result] = data.eval_results  # the run's AP50 went with the run's AP, not with the one given
    assert (result.metric_type, result.metric_value, result.dataset_type, result.dataset_split) == \
        ('map', 0.5, 'synthetic', 'val2017')


def _corrupt(tmp_path: Path) -> Path:
    p = tmp_path / 'corrupt.pth'
    p.write_bytes(b'not a checkpoint' * 10)
    return p


def _non_empty(tmp_path: Path) -> Path:
    d = tmp_path / 'taken'
    d.mkdir()
    (d / 'keep.txt').write_text('x')
    return d


@pytest.mark.parametrize('case, message', [
    ('missing_arch', "arch file '.*nope.yaml' does not exist"),
    ('corrupt_checkpoint', "checkpoint '.*corrupt.pth' is corrupt or not a checkpoint"),
    ('mismatched_arch', r'disagrees with the arch checkpoint .* was trained with \(stage'),
    ('non_empty_output', "--output '.*taken' exists and is not an empty folder"),
    ('seed_without_arch', '--seed-weights are remapped into an arch; expected --arch'),
    ('ap_in_points', r'--ap is 33.9; expected box AP in \[0, 1\]'),
    ('foreign_seed', r"checkpoint fits neither the model \(key 'conv_stem.weight': missing"),  # a detector file
    ('bad_push_repo', "--push 'not a repo' is not a Hugging Face repo id; expected <user>/<name>"),
])
def test_cli_errors_one_line_nothing_written(tmp_path, runs, seed_file, case, message, capsys):
    out = tmp_path / 'out'
    argv = {
        'missing_arch': ['--arch', str(tmp_path / 'nope.yaml'), '--seed-weights', seed_file],
        'corrupt_checkpoint': ['--checkpoint', str(_corrupt(tmp_path))],
        'mismatched_arch': ['--checkpoint', str(runs['retinanet']), '--arch', 'fna_retinanet_backbone'],
        'non_empty_output': ['--checkpoint', str(runs['ssdlite'])],
        'seed_without_arch': ['--seed-weights', seed_file],
        'ap_in_points': ['--checkpoint', str(runs['ssdlite']), '--ap', '33.9'],
        'foreign_seed': ['--arch', 'fna_ssdlite_backbone', '--seed-weights', str(runs['ssdlite'])],
        'bad_push_repo': ['--checkpoint', str(runs['ssdlite']), '--push', 'not a repo'],
    }[case]
    if case == 'non_empty_output':
        out = _non_empty(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main([*argv, '--output', str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('error: '), err
    assert re.search(message, err[0]), err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written, no temp folder
    if case == 'non_empty_output':
        assert [p.name for p in out.iterdir()] == ['keep.txt']


def test_cli_usage_error(tmp_path, seed_file, capsys):
    with pytest.raises(SystemExit) as e:
        main(['--checkpoint', 'a.pth', '--seed-weights', seed_file, '--output', str(tmp_path / 'o')])
    assert e.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: argument --seed-weights: not allowed with argument '
                                                   '--checkpoint'), lines
    assert list(tmp_path.iterdir()) == []


def test_efficientnet_seed_arch_publishes_through_the_same_path(tmp_path):
    """Arch fields beyond MobileNetV2's (activation, squeeze-excitation) travel in model_args unchanged."""
    torch.manual_seed(0)
    ref = randomize_bn(timm.create_model('efficientnet_b0', num_classes=0)).eval()
    torch.save(ref.state_dict(), tmp_path / 'effb0.pth')
    folder = publish('efficientnet_b0', tmp_path / 'out', seed_weights=str(tmp_path / 'effb0.pth'))
    config = json.loads((folder / 'config.json').read_text())
    assert config['model_args']['arch'] == get_arch('efficientnet_b0').to_dict()
    assert '**Seed:** efficientnet_b0' in (folder / 'README.md').read_text()
    x = _x()
    with torch.no_grad():  # the EfficientNet seed into its own arch is the identity: timm's model exactly
        assert torch.equal(timm.create_model(f'local-dir:{folder}', pretrained=True).eval()(x), ref(x))


# ---------------------------------------------------------------------------------------------- --push
class _FakeHfApi:
    """Stands in for huggingface_hub.HfApi: records the calls, never touches the network."""
    calls: list = []
    fail_with: BaseException | None = None

    def __init__(self, token=None, **kwargs):
        self.calls.append(('init', token))

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(('create_repo', repo_id, kwargs))
        return f'https://huggingface.co/{repo_id}'

    def upload_folder(self, **kwargs):
        self.calls.append(('upload_folder', kwargs))
        if self.fail_with is not None:
            raise self.fail_with


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """Online mode, no token anywhere (environment, token file), and a fake HfApi."""
    monkeypatch.delenv('HF_HUB_OFFLINE', raising=False)
    monkeypatch.setattr(constants, 'HF_HUB_OFFLINE', False)
    for var in ('HF_TOKEN', 'HUGGING_FACE_HUB_TOKEN', 'HF_OIDC_RESOURCE'):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(constants, 'HF_TOKEN_PATH', str(tmp_path / 'no_token'))
    monkeypatch.setattr(_FakeHfApi, 'calls', [])
    monkeypatch.setattr(_FakeHfApi, 'fail_with', None)
    monkeypatch.setattr(huggingface_hub, 'HfApi', _FakeHfApi)
    return _FakeHfApi


def test_cli_push_offline_fails_in_one_line_after_writing(tmp_path, runs, hub, monkeypatch, capsys):
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    monkeypatch.setenv('HF_TOKEN', 'hf_fake')
    out = tmp_path / 'fna_ssd'
    assert main(['--checkpoint', str(runs['ssdlite']), '--output', str(out), '--push', 'someone/fna-ssd']) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('error: cannot push to someone/fna-ssd: offline mode is on'), err
    assert f'hf upload someone/fna-ssd {out} .' in err[0]
    assert sorted(p.name for p in out.iterdir()) == ['README.md', 'config.json', 'model.safetensors']  # kept
    assert hub.calls == []


def test_push_without_token_fails_in_one_line(published, hub):
    with pytest.raises(PushError, match=r'^cannot push to someone/fna-ssd: no Hugging Face token \(log in with hf '
                                        r'auth login, or set HF_TOKEN\)'):
        push(published['ssdlite'], 'someone/fna-ssd')
    assert hub.calls == []


def test_cli_push_uploads_the_folder(tmp_path, runs, hub, monkeypatch, capsys):
    monkeypatch.setenv('HF_TOKEN', 'hf_fake')
    out = tmp_path / 'fna_ssd'
    assert main(['--checkpoint', str(runs['ssdlite']), '--output', str(out), '--push', 'someone/fna-ssd']) == 0
    assert hub.calls[0] == ('init', 'hf_fake')
    assert hub.calls[1] == ('create_repo', 'someone/fna-ssd', {'repo_type': 'model', 'exist_ok': True})
    (_, upload), = hub.calls[2:]
    assert upload['repo_id'] == 'someone/fna-ssd' and Path(upload['folder_path']) == out
    assert upload['repo_type'] == 'model'
    assert "pushed to https://huggingface.co/someone/fna-ssd: timm.create_model('hf-hub:someone/fna-ssd'" in \
        capsys.readouterr().out


def test_push_network_error_fails_in_one_line(published, hub, monkeypatch, capsys):
    monkeypatch.setenv('HF_TOKEN', 'hf_fake')
    # the HTTP library's base error (httpx's transport errors are not OSErrors)
    http_error = next(c for c in HfHubHTTPError.__mro__ if c.__name__ == 'HTTPError')
    monkeypatch.setattr(_FakeHfApi, 'fail_with', http_error('[Errno -3] Temporary failure in name resolution\nmore'))
    with pytest.raises(PushError, match=r'^cannot push to someone/fna-ssd: HTTPError: \[Errno -3\] Temporary failure '
                                        r'in name resolution; .* is written, upload it later with hf upload'):
        push(published['ssdlite'], 'someone/fna-ssd')


def test_card_metadata_of_the_demo_seed_and_data():
    """The demo's run (torchvision seed asset, the tree set): no Hub base model, the seed's ImageNet and the tree
    set's validation split; timm's seed weights name their Hub repo."""
    from fna_zoo.publish import _eval_data, _seed_source

    assert _seed_source('asset:mobilenetv2_100.tv_in1k', 'mobilenetv2_100') == {'dataset': 'imagenet-1k'}
    assert _seed_source('timm', 'efficientnet_b0') == {'base_model': 'timm/efficientnet_b0.ra_in1k',
                                                       'dataset': 'imagenet-1k', 'license': 'apache-2.0'}
    assert _seed_source('/some/weights.pth', 'mobilenetv2_100') == {} and _seed_source(None, 'mobilenetv2_100') == {}
    cfg = load_config(Path(__file__).parents[1] / 'configs' / 'demo_retinanet.yaml')
    assert _eval_data(cfg) == {'type': 'neon_trees', 'name': 'neon_trees', 'split': 'val2017'}
    assert _eval_data({'data': {'path': '/data/coco/', 'val_split': 'val2017'}})['type'] == 'coco'


def test_an_ap_without_a_dataset_stays_out_of_the_model_index(tmp_path, arch_file, seed_file, caplog):
    folder = publish(arch_file, tmp_path / 'seeded', seed_weights=seed_file, ap=0.3, check=False)
    card = ModelCard.load(folder / 'README.md')
    assert card.data.eval_results is None and '**Detection AP:** 30.0 (box AP x100, as given)' in card.text
    assert 'has no dataset to go with it' in caplog.text
    folder = publish(arch_file, tmp_path / 'named', seed_weights=seed_file, ap=0.3, dataset='coco', check=False)
    [result] = ModelCard.load(folder / 'README.md').data.eval_results
    assert (result.metric_value, result.dataset_type, result.dataset_split) == (0.3, 'coco', None)
