"""Nothing lost, nothing mixed (issue 21): the built-in set never deletes a folder the project did not create and
is swapped in whole; one writer per run folder; a resume keeps metrics.csv exact and removes stale temp files;
categories agree between the splits and with the checkpoint."""
import json

import pytest

from fna_zoo.checkpoint import load_checkpoint
from fna_zoo.data import make_synthetic_coco, synthetic_set_path
from fna_zoo.fileio import atomic_dir

SMALL = dict(num_train=3, num_val=2, image_size=32)


def test_foreign_folder_is_refused_and_kept(tmp_path):
    root = tmp_path / 'mine'
    root.mkdir()
    (root / 'thesis.tex').write_text('years of work')
    with pytest.raises(FileExistsError, match="data.synthetic.root '.*mine' is not empty and holds no built-in set"):
        make_synthetic_coco(root, **SMALL)
    assert [p.name for p in root.iterdir()] == ['thesis.tex'] and (root / 'thesis.tex').read_text() == 'years of work'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['mine']  # no temp folder left
    (tmp_path / 'file').write_text('x')
    with pytest.raises(NotADirectoryError, match='is a file; expected a folder'):
        make_synthetic_coco(tmp_path / 'file', **SMALL)


def test_each_setting_is_its_own_set_reused_never_rebuilt_in_place(tmp_path):
    empty = tmp_path / 'empty'
    empty.mkdir()
    first = make_synthetic_coco(empty, **SMALL)  # an empty folder is fine
    assert first.parent == empty and first == synthetic_set_path(empty, **SMALL) and len(first.name) == 12
    root = tmp_path / 'syn'
    a = make_synthetic_coco(root, **SMALL)
    ann = a / 'annotations' / 'instances_train2017.json'
    assert len(json.loads(ann.read_text())['images']) == 3
    assert json.loads((a / '.done').read_text()) == {**SMALL, 'num_classes': 6, 'seed': 0, 'version': 1}
    stamp = (a / '.done').stat().st_mtime_ns
    assert make_synthetic_coco(root, **SMALL) == a and make_synthetic_coco(a, **SMALL) == a  # reused as it is
    assert (a / '.done').stat().st_mtime_ns == stamp
    before = {p: p.stat().st_mtime_ns for p in a.rglob('*')}
    b = make_synthetic_coco(root, **{**SMALL, 'num_train': 5})  # other settings: a new set beside, the old untouched
    assert b != a and b.parent == root and len(list((b / 'train2017').iterdir())) == 5
    assert {p: p.stat().st_mtime_ns for p in a.rglob('*')} == before
    assert sorted(p.name for p in root.iterdir()) == sorted(['.fna_synthetic_sets', a.name, b.name])  # no temp left
    assert make_synthetic_coco(root, **SMALL) == a  # and switching back reuses the first


def test_a_set_written_before_hashed_folders_is_reused(tmp_path):
    legacy = make_synthetic_coco(tmp_path / 'sets', **SMALL)
    old = tmp_path / 'old'
    legacy.rename(old)  # the layout of earlier versions: the COCO tree at data.synthetic.root itself
    assert make_synthetic_coco(old, **SMALL) == old
    new = make_synthetic_coco(old, **{**SMALL, 'seed': 1})  # other settings: a set inside, the old one kept
    assert new.parent == old and (old / 'train2017').is_dir() and (old / '.done').is_file()


def test_a_reader_of_one_set_is_not_disturbed_by_other_settings(tmp_path):
    """A job reading a set while another job with other settings starts (the crash of issue 21)."""
    from fna_zoo.data import CocoDetection, coco_split_paths

    a = make_synthetic_coco(tmp_path / 'data', **SMALL)
    reader = CocoDetection(*coco_split_paths(a, 'train2017'))
    make_synthetic_coco(tmp_path / 'data', **{**SMALL, 'image_size': 64})
    for i in range(len(reader)):  # every image is still there, unchanged in size
        image, _ = reader[i]
        assert image.shape[-2:] == (32, 32)


def test_a_set_folder_that_is_not_complete_is_refused(tmp_path):
    target = synthetic_set_path(tmp_path / 'data', **SMALL)
    target.mkdir(parents=True)
    (target / 'partial.png').write_bytes(b'x')
    (tmp_path / 'data' / '.fna_synthetic_sets').write_text('sets\n')
    with pytest.raises(FileExistsError, match='exists but holds no complete set of these settings'):
        make_synthetic_coco(tmp_path / 'data', **SMALL)
    assert [p.name for p in target.iterdir()] == ['partial.png']


def test_atomic_dir_replace_keeps_the_old_folder_on_error(tmp_path):
    dest = tmp_path / 'd'
    dest.mkdir()
    (dest / 'old.txt').write_text('old')
    with pytest.raises(RuntimeError):
        with atomic_dir(dest, replace=True) as tmp:
            (tmp / 'new.txt').write_text('new')
            raise RuntimeError('killed')
    assert [p.name for p in dest.iterdir()] == ['old.txt'] and sorted(p.name for p in tmp_path.iterdir()) == ['d']
    with atomic_dir(dest, replace=True) as tmp:
        (tmp / 'new.txt').write_text('new')
    assert [p.name for p in dest.iterdir()] == ['new.txt'] and sorted(p.name for p in tmp_path.iterdir()) == ['d']
    with pytest.raises(FileExistsError, match='exists already; expected a new folder'):
        with atomic_dir(dest):
            pass


KWARGS = 'model.kwargs={min_size: 64, max_size: 64, head_width: 16, score_thresh: 0.0}'
SMALL_RUN = dict(num_train=8, num_val=4, image_size=64)  # the built-in set of `_tiny`


def _tiny(tmp_path, *extra):
    return ['--set', f'data.synthetic.root={tmp_path / "data"}', 'data.synthetic.num_train=8',
            'data.synthetic.num_val=4', 'data.synthetic.image_size=64', 'data.workers=0', KWARGS,
            'train.batch_size=4', 'train.warmup_iters=1', 'eval.batch_size=4', 'train.log_interval=1',
            'train.eval_at_end=false', *extra]


def test_one_writer_per_run_folder(tmp_path, capsys):
    import subprocess
    import sys

    from fna_zoo.cli.retrain import main as retrain_cli
    from fna_zoo.fileio import lock_folder, unlock_folder

    run = tmp_path / 'run'
    holder = subprocess.Popen([sys.executable, '-c', 'import sys, time; from fna_zoo.fileio import lock_folder; '
                               f'lock_folder({str(run)!r}); print("locked", flush=True); time.sleep(60)'],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == 'locked'
        with pytest.raises(FileExistsError, match=rf"run folder '.*run' is in use by pid {holder.pid} on "):
            lock_folder(run)
        assert retrain_cli(['-o', str(run), *_tiny(tmp_path, 'train.max_iters=1')]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith('error: run folder') and f'in use by pid {holder.pid}' in err[-1]
        assert sorted(p.name for p in run.iterdir()) == ['.lock']  # the second writer wrote nothing
    finally:
        holder.kill()
        holder.wait()
    lock_folder(run)  # a killed holder leaves no stale lock: the OS dropped it
    unlock_folder(run)


def test_resume_drops_rows_logged_after_the_checkpoint(tmp_path):
    from fna_zoo.cli.retrain import retrain_main

    run = tmp_path / 'run'
    retrain_main(['-o', str(run), *_tiny(tmp_path, 'train.max_iters=2', 'train.ckpt_interval=2')])
    with (run / 'metrics.csv').open('a') as f:  # a row the killed run logged after its last checkpoint
        f.write('3,0,0.01,9.9,9.9,9.9,0.1\n')
    retrain_main(['-o', str(run), '--resume', *_tiny(tmp_path, 'train.max_iters=3', 'train.ckpt_interval=2')])
    rows = (run / 'metrics.csv').read_text().splitlines()
    assert [r.split(',')[0] for r in rows] == ['step', '1', '2', '3'] and '9.9' not in rows[-1]


def test_next_run_removes_temp_files_a_killed_run_left(tmp_path):
    from fna_zoo.cli.retrain import retrain_main

    run = tmp_path / 'run'
    retrain_main(['-o', str(run), *_tiny(tmp_path, 'train.max_iters=1')])
    stale = [run / '.last.pth.k1ll3d.tmp', run / '.probs.png.x7.tmp.png']
    for p in stale:
        p.write_bytes(b'half a file')
    retrain_main(['-o', str(run), '--resume', *_tiny(tmp_path, 'train.max_iters=2')])
    assert not any(p.exists() for p in stale) and (run / 'final.pth').is_file()


def test_categories_must_match_between_splits_and_checkpoint(tmp_path):
    import shutil

    from fna_zoo.cli.retrain import retrain_main
    from fna_zoo.cli.test import test_main as evaluate_main

    base = _tiny(tmp_path, 'data.synthetic.num_classes=3', 'train.max_iters=1')
    retrain_main(['-o', str(tmp_path / 'run'), *base])
    assert load_checkpoint(tmp_path / 'run' / 'final.pth')['cat_ids'] == [1, 2, 3]
    other = tmp_path / 'other'  # the same images, the val split with one category id changed
    shutil.copytree(synthetic_set_path(tmp_path / 'data', **SMALL_RUN, num_classes=3), other)
    ann = other / 'annotations' / 'instances_val2017.json'
    data = json.loads(ann.read_text())
    data['categories'][2]['id'] = 9
    for a in data['annotations']:
        a['category_id'] = 9 if a['category_id'] == 3 else a['category_id']
    ann.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r'was trained on category ids \[1, 2, 3\], the evaluation annotations have '
                                         r'\[1, 2, 9\]; expected the same categories'):
        evaluate_main(['--checkpoint', str(tmp_path / 'run' / 'final.pth'), '--data-path', str(other)])
    with pytest.raises(ValueError, match=r'the training annotations have category ids \[1, 2, 3\], the validation '
                                         r'annotations \[1, 2, 9\]; expected the same categories in both splits'):
        retrain_main(['-o', str(tmp_path / 'run2'), '--data-path', str(other), *base])
    assert not (tmp_path / 'run2').exists()


@pytest.mark.parametrize('override, message', [
    ('model.kwargs={bogus: 1}', 'unknown config key model.kwargs.bogus for retinanet'),
    ('model.kwargs.min_size=100000', 'config model.kwargs.min_size is 100000; expected an image side up to'),
    ('model.seed_weights={garbage}', "seed weights file '.*garbage.pth' is not a readable state dict"),
    ('model.backbone={stride16}', "arch '.*stride16.yaml' has output stride 16"),
])
def test_a_bad_model_setting_leaves_no_run_folder(tmp_path, override, message):
    """A fresh retrain builds its model before the run folder exists (found by scripts/bad_input_sweep.py)."""
    from fna_zoo import get_arch
    from fna_zoo.cli.retrain import retrain_main

    (tmp_path / 'garbage.pth').write_bytes(b'\x80\x04not a pickle' * 40)
    seed = get_arch('mobilenetv2_100')
    seed.replace(stages=seed.stages[:5]).save(tmp_path / 'stride16.yaml')
    value = override.replace('{garbage}', str(tmp_path / 'garbage.pth')).replace('{stride16}',
                                                                                  str(tmp_path / 'stride16.yaml'))
    with pytest.raises(ValueError, match=message):
        retrain_main(['-o', str(tmp_path / 'run'), *_tiny(tmp_path, 'train.max_iters=1', value)])
    assert not (tmp_path / 'run').exists()


def test_a_bad_seed_file_leaves_no_search_folder(tmp_path):
    from fna_zoo.cli.search import search_main

    import safetensors.torch
    import torch

    safetensors.torch.save_file({'x': torch.ones(2)}, tmp_path / 'keys.safetensors')
    with pytest.raises(ValueError, match=r"seed weights file '.*keys.safetensors' does not fit timm mobilenetv2_100"):
        search_main(['-o', str(tmp_path / 'run'), *_tiny(tmp_path, 'train.max_iters=1',
                                                          f'model.seed_weights={tmp_path / "keys.safetensors"}')])
    assert not (tmp_path / 'run').exists()


@pytest.mark.parametrize('command', ['retrain', 'search'])
def test_a_run_that_fails_before_its_first_checkpoint_leaves_nothing(tmp_path, command):
    """A training image that cannot be decoded surfaces at the first batch, after the run folder was started (found
    by scripts/bad_input_sweep.py): the fresh run removes what it wrote; files that were there stay."""
    import shutil

    from fna_zoo.cli.retrain import retrain_main
    from fna_zoo.cli.search import search_main

    main = {'retrain': retrain_main, 'search': search_main}[command]
    data = tmp_path / 'copy'
    make_synthetic_coco(tmp_path / 'data', **SMALL_RUN)
    shutil.copytree(synthetic_set_path(tmp_path / 'data', **SMALL_RUN), data)
    for p in (data / 'train2017').iterdir():
        p.write_bytes(b'not an image')
    args = [*_tiny(tmp_path, 'train.max_iters=1'), '--data-path', str(data)]
    with pytest.raises(ValueError, match=r"image '.*train2017.*' \(image id \d+\) cannot be decoded"):
        main(['-o', str(tmp_path / 'run'), *args])
    assert not (tmp_path / 'run').exists()
    mine = tmp_path / 'mine'
    mine.mkdir()
    (mine / 'notes.txt').write_text('keep')
    with pytest.raises(ValueError, match='cannot be decoded'):
        main(['-o', str(mine), *args])
    assert [p.name for p in mine.iterdir()] == ['notes.txt']


def test_a_failed_fresh_run_removes_only_what_it_wrote(tmp_path):
    """Files written into the folder by someone else while the run ran stay; a run that logged a step keeps its
    logs (the record of what it did)."""
    import torch

    from fna_zoo.engine.distributed import DistInfo
    from fna_zoo.engine.run import TrainingRun

    info = DistInfo(0, 1, 0, torch.device('cpu'))
    out = tmp_path / 'shared'
    with pytest.raises(KeyboardInterrupt):
        with TrainingRun({'output': str(out), 'seed': 0}, info, resume=False, num_classes=2) as run:
            run.begin(torch.nn.Linear(2, 1), {})
            run.metrics_log(['step', 'loss'])
            (out / 'someone_else.txt').write_text('x')
            raise KeyboardInterrupt
    assert [p.name for p in out.iterdir()] == ['someone_else.txt']
    with pytest.raises(ValueError):
        with TrainingRun({'output': str(tmp_path / 'logged'), 'seed': 0}, info, resume=False, num_classes=2) as run:
            run.begin(torch.nn.Linear(2, 1), {})
            run.metrics_log(['step', 'loss']).write([1, 0.5])
            raise ValueError('late failure')
    assert sorted(p.name for p in (tmp_path / 'logged').iterdir()) == ['.lock', 'config.yaml', 'metrics.csv']
