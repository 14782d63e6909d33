"""One checkpoint reader: the arch travels inside a retrain checkpoint, so a moved run folder still tests,
exports and publishes; older checkpoints fall back to the arch.yaml snapshot, then the config's path."""
import shutil
from pathlib import Path

import pytest
import torch

from fna_zoo import load_arch
from fna_zoo.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from fna_zoo.cli.retrain import retrain_main
from fna_zoo.cli.test import test_main as evaluate_main
from fna_zoo.export.onnx_export import load_detector
from fna_zoo.data import synthetic_set_path
from fna_zoo.fileio import default_file_mode

KWARGS = 'model.kwargs={min_size: 64, max_size: 64, head_width: 16, score_thresh: 0.0}'


@pytest.fixture(scope='module')
def moved_run(tmp_path_factory) -> dict[str, Path]:
    """A tiny retrain on an arch *file*, then the run folder moved away and the arch file deleted."""
    root = tmp_path_factory.mktemp('ckpt')
    arch = load_arch('fna_retinanet_backbone')
    arch_file = root / 'searched' / 'arch.yaml'
    arch.save(arch_file)
    retrain_main(['-o', str(root / 'run'), '--arch', str(arch_file), '--set',
                  f'data.synthetic.root={root / "data"}', 'data.synthetic.num_train=8', 'data.synthetic.num_val=4',
                  'data.synthetic.image_size=64', 'data.workers=0', KWARGS, 'train.batch_size=4',
                  'train.max_iters=2', 'train.warmup_iters=1', 'eval.batch_size=4', 'train.eval_at_end=false'])
    shutil.move(str(root / 'run'), str(root / 'moved'))
    shutil.rmtree(root / 'searched')
    (root / 'moved' / 'arch.yaml').unlink()  # only the checkpoint itself is left to say what the arch is
    return {'root': root, 'final': root / 'moved' / 'final.pth', 'last': root / 'moved' / 'last.pth', 'arch': arch,
            'data': synthetic_set_path(root / 'data', num_train=8, num_val=4, image_size=64)}


def test_retrain_stores_the_arch_in_every_checkpoint(moved_run):
    for name in ('final', 'last'):
        state = load_checkpoint(moved_run[name])
        assert load_arch(state['arch']) == moved_run['arch']
        assert moved_run[name].stat().st_mode & 0o777 == default_file_mode()
    ckpt = read_checkpoint(moved_run['final'])
    assert ckpt.arch == moved_run['arch'].to_dict() and ckpt.num_classes and ckpt.step == 2
    assert not ckpt.is_search and 'model' not in ckpt.state and ckpt.weights
    assert ckpt.model_config()['model']['backbone'] == ckpt.arch
    assert ckpt.config['model']['backbone'].endswith('arch.yaml')  # the config still names the (gone) file


def test_moved_run_folder_tests_and_exports(moved_run, capsys):
    detector, state = load_detector(moved_run['final'])
    assert state['arch'] == moved_run['arch'].to_dict()
    ckpt = read_checkpoint(moved_run['final'])
    assert all(torch.equal(v, ckpt.weights[k]) for k, v in detector.state_dict().items())
    stats = evaluate_main(['--checkpoint', str(moved_run['final']), '-o', str(moved_run['root'] / 'dets.json'),
                           '--data-path', str(moved_run['data'])])
    assert set(stats) >= {'AP', 'AP50'} and (moved_run['root'] / 'dets.json').is_file()
    assert 'bbox: AP' in capsys.readouterr().out


def test_older_checkpoints_fall_back_to_snapshot_then_config(moved_run, tmp_path):
    state = {k: v for k, v in load_checkpoint(moved_run['final']).items() if k != 'arch'}
    other = load_arch('fna_ssdlite_backbone')
    folder = tmp_path / 'old'
    save_checkpoint(state, folder / 'final.pth')
    with pytest.raises(FileNotFoundError, match=r"the arch file '.*arch.yaml' of checkpoint .* does not exist"):
        read_checkpoint(folder / 'final.pth')
    other.save(folder / 'arch.yaml')  # the snapshot beside the checkpoint wins over the config's path
    assert read_checkpoint(folder / 'final.pth').arch == other.to_dict()
    timm_cfg = {**state['config'], 'model': {**state['config']['model'], 'backbone': 'resnet18'}}
    save_checkpoint({**state, 'config': timm_cfg}, tmp_path / 'timm.pth')
    assert read_checkpoint(tmp_path / 'timm.pth').arch is None
    assert read_checkpoint(tmp_path / 'timm.pth').backbone == 'resnet18'


def test_reader_errors_are_one_line(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint '.*none.pth' does not exist"):
        read_checkpoint(tmp_path / 'none.pth')
    (tmp_path / 'junk.pth').write_bytes(b'not a checkpoint')
    with pytest.raises(ValueError, match='is corrupt or not a checkpoint'):
        read_checkpoint(tmp_path / 'junk.pth')
    torch.save({'model': {}, 'config': 'text'}, tmp_path / 'cfg.pth')
    with pytest.raises(ValueError, match='has no run config'):
        read_checkpoint(tmp_path / 'cfg.pth')
    torch.save({'model': {}, 'config': {}}, tmp_path / 'sections.pth')  # passes the key check: KeyError before
    with pytest.raises(ValueError, match=r"has a run config without \['detector', 'model', 'data', 'train', 'eval'\]"):
        read_checkpoint(tmp_path / 'sections.pth')
    config = {'detector': 'retinanet', 'model': {}, 'data': {}, 'train': {}, 'eval': {}}
    torch.save({'model': [1], 'config': config}, tmp_path / 'weights.pth')
    with pytest.raises(ValueError, match='has no state dict under "model"'):
        read_checkpoint(tmp_path / 'weights.pth')


def test_resume_and_report_an_older_run_whose_arch_file_changed(tmp_path):
    """A run from before the arch was stored (no 'arch' in last.pth) whose arch file was overwritten since:
    resuming builds the arch.yaml snapshot (the weights fit), and `fna-bench report` of the moved folder too."""
    from fna_zoo.bench.report import run_entry

    arch = load_arch('fna_ssdlite_backbone')
    arch.save(tmp_path / 'searched.yaml')
    args = ['--arch', str(tmp_path / 'searched.yaml'), '--set', f'data.synthetic.root={tmp_path / "data"}',
            'data.synthetic.num_train=8', 'data.synthetic.num_val=4', 'data.synthetic.image_size=64',
            'data.workers=0', KWARGS, 'train.batch_size=4', 'train.warmup_iters=1', 'eval.batch_size=4',
            'train.ckpt_interval=1']
    retrain_main(['-o', str(tmp_path / 'run'), *args, 'train.max_iters=1', 'train.eval_at_end=false'])
    last = tmp_path / 'run' / 'last.pth'
    save_checkpoint({k: v for k, v in load_checkpoint(last).items() if k != 'arch'}, last)
    load_arch('fna_retinanet_backbone').save(tmp_path / 'searched.yaml')  # the file changed meanwhile
    result = retrain_main(['-o', str(tmp_path / 'run'), '--resume', *args, 'train.max_iters=2'])
    assert result['step'] == 2 and 'AP' in result
    assert load_arch(load_checkpoint(tmp_path / 'run' / 'final.pth')['arch']) == arch
    assert load_arch(tmp_path / 'run' / 'arch.yaml') == arch
    shutil.move(str(tmp_path / 'run'), str(tmp_path / 'moved'))
    entry = run_entry(tmp_path / 'moved')
    assert load_arch(entry.spec) == arch and entry.size == (64, 64)


def test_fna_test_checks_its_output_before_evaluating(moved_run, tmp_path, capsys):
    from fna_zoo.cli.test import main as fna_test

    assert fna_test(['--checkpoint', str(moved_run['final']), '-o', str(tmp_path / 'dets.txt')]) == 2
    assert capsys.readouterr().err.strip() == (f"error: output path {str(tmp_path / 'dets.txt')!r} has suffix '.txt'; "
                                               'expected a .json file')
