"""Issue 33, a second bad-input sweep: each class fixed where it starts, checked on small inputs, offline.

* one path-kind check (`fna_zoo.checks.check_input_file` / `check_input_folder`): 'is a directory', 'is a file',
  'is not a file', not 'does not exist' for a path that is there;
* echoed values capped (`fna_zoo.checks.error_line`, where every command prints its error);
* one input-size rule (`check_input_size`) for fna-latency-table too;
* fna-latency-table checks its space can be built before it opens its output;
* a resume checks the checkpoint's kind, and a failed resume leaves no lock file;
* fna-export --int8 decodes the gate's images before the float32 export;
* examples/predict_onnx.py prints only once its PNG is written, and makes a missing output folder;
* a hint on the Hub's offline error for the zoo's default pretrained tag.
"""
import importlib.util
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fna_zoo.checks import (MAX_LINE, check_input_file, check_input_folder, check_input_size, check_output_path,
                            error_line, shorten)

ROOT = Path(__file__).resolve().parents[1]
TINY_DATA = dict(num_train=2, num_val=2, image_size=64, num_classes=3)
KWARGS = 'model.kwargs={min_size: 64, max_size: 64, head_width: 16}'


# ------------------------------------------------------------------------------------------- path kinds
def test_path_kind_check_names_what_is_there(tmp_path):
    (tmp_path / 'f.pth').write_bytes(b'x')
    (tmp_path / 'd.pth').mkdir()
    assert check_input_file(tmp_path / 'f.pth', 'checkpoint') == tmp_path / 'f.pth'
    assert check_input_folder(tmp_path / 'd.pth', 'data folder') == tmp_path / 'd.pth'
    with pytest.raises(IsADirectoryError, match=r"checkpoint '.*d.pth' is a directory; expected a final.pth"):
        check_input_file(tmp_path / 'd.pth', 'checkpoint', 'a final.pth')
    with pytest.raises(NotADirectoryError, match=r"data folder '.*f.pth' is a file; expected a COCO tree"):
        check_input_folder(tmp_path / 'f.pth', 'data folder', 'a COCO tree')
    with pytest.raises(FileNotFoundError, match=r"checkpoint '.*none.pth' does not exist; expected a final.pth"):
        check_input_file(tmp_path / 'none.pth', 'checkpoint', 'a final.pth')
    with pytest.raises(FileNotFoundError, match='does not exist'):  # under a file: nothing there either
        check_input_file(tmp_path / 'f.pth' / 'x.pth', 'checkpoint')
    os.mkfifo(tmp_path / 'pipe.yaml')
    with pytest.raises(ValueError, match=r"config file '.*pipe.yaml' is not a file \(a FIFO"):
        check_input_file(tmp_path / 'pipe.yaml', 'config file')
    with pytest.raises(IsADirectoryError, match=r"output path '.*d.pth' is a directory; expected a .json file path"):
        check_output_path(tmp_path / 'd.pth', '.json')


@pytest.mark.parametrize('call, message', [
    ('checkpoint', r"checkpoint '.*dir.pth' is a directory; expected a .pth file"),
    ('weights', r"seed weights file '.*dir.pth' is a directory; expected a .pth/.safetensors file"),
    ('arch', r"arch file '.*dir.pth' is a directory; expected a .yaml/.json/.txt arch file"),
    ('coco', r"data folder '.*blocker' is a file; expected a COCO tree"),
    ('table', r"latency table '.*dir.pth' is a directory; expected a .json table"),
    ('model', r"model '.*dir.pth' is a directory; expected a zoo arch name"),
])
def test_the_loaders_use_the_path_kind_check(tmp_path, call, message):
    from fna_zoo.arch import Arch
    from fna_zoo.checkpoint import check_weights_file, load_checkpoint
    from fna_zoo.data.coco import coco_split_paths
    from fna_zoo.nas.latency import load_table_file
    from fna_zoo.specs import resolve_model

    folder = tmp_path / 'dir.pth'
    folder.mkdir()
    (tmp_path / 'blocker').write_text('a file\n')
    calls = {'checkpoint': lambda: load_checkpoint(folder), 'weights': lambda: check_weights_file(folder),
             'arch': lambda: Arch.load(folder), 'coco': lambda: coco_split_paths(tmp_path / 'blocker', 'val2017'),
             'table': lambda: load_table_file(folder), 'model': lambda: resolve_model(str(tmp_path / 'dir'))}
    (tmp_path / 'dir').mkdir()
    message = message.replace('dir.pth', 'dir') if call == 'model' else message
    with pytest.raises(OSError, match=message):
        calls[call]()


def test_config_flag_names_a_folder_as_one(tmp_path, capsys):
    from fna_zoo.cli.retrain import main

    assert main(['-o', str(tmp_path / 'run'), '--config', str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: config file {str(tmp_path)!r} is a directory; expected a YAML config file"]
    assert not (tmp_path / 'run').exists()


# ------------------------------------------------------------------------------------------- echoed values capped
def test_error_line_caps_an_echoed_value():
    value = '[' * 100000 + ']' * 100000
    text = shorten(repr(value))
    assert len(text) < 250 and text.startswith("'[[[[") and text.endswith("]]]]'") and '199,' in text
    line = error_line(f"malformed FNA net_config stage 0 {value!r}; expected [[c_in, c_out], [ops], stride]")
    assert len(line) < 400 and line.endswith('expected [[c_in, c_out], [ops], stride]')
    many = error_line('config x is [' + ', '.join(['1'] * 100000) + ']; expected a number')
    assert len(many) <= MAX_LINE + 40 and many.endswith('expected a number')
    assert error_line('short\n  one') == 'short one'


def test_a_command_prints_a_nested_input_in_one_short_line(tmp_path, capsys):
    from fna_zoo.cli.retrain import main

    (tmp_path / 'deep.txt').write_text('[' * 100000 + ']' * 100000)
    assert main(['-o', str(tmp_path / 'run'), '--arch', str(tmp_path / 'deep.txt')]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('error: ') and 'deep.txt' in err[0] and len(err[0]) < 600, err[0][:300]
    assert not (tmp_path / 'run').exists()


# ------------------------------------------------------------------------------------------- one input-size rule
@pytest.mark.parametrize('size', [[33, 47], [0, 0], [True, 64], [64], 64, [64.0, 64]])
def test_one_input_size_rule(size):
    with pytest.raises(ValueError, match='expected H W, two positive multiples of 32 up to 4096'):
        check_input_size(size, 'latency table')


def test_latency_table_refuses_what_export_refuses(tmp_path):
    from fna_zoo.cli.latency_table import latency_table_main
    from fna_zoo.nas.config import SEARCH_DEFAULTS
    from fna_zoo.nas.latency import table_plan
    from fna_zoo.nas.space import SearchSpace

    space = SearchSpace.from_config(SEARCH_DEFAULTS['search']['space'], 'retinanet')
    assert table_plan(space, [64, 96]).parts  # multiples of 32 pass
    with pytest.raises(ValueError, match='input size 33 x 47 for the latency table is invalid'):
        table_plan(space, [33, 47])
    out = tmp_path / 't.json'
    with pytest.raises(ValueError, match='input size 33 x 47 for the latency table is invalid'):
        latency_table_main(['--runtime', 'onnxruntime', '--input-size', '33', '47', '-o', str(out)])
    assert not out.exists()


# ------------------------------------------------------------------------------------------- no stub table
def test_latency_table_checks_the_space_before_opening_its_output(tmp_path):
    from fna_zoo.cli.latency_table import latency_table_main

    out = tmp_path / 'tables' / 't.json'
    with pytest.raises(ValueError, match=r'config search.space.width_mults makes stage \d+ 24000 channels wide '
                                         r'\(its seed width is 24\); expected multipliers that keep every stage '
                                         r'within 8192 channels'):
        latency_table_main(['--runtime', 'onnxruntime', '--no-detector', '--input-size', '64', '64', '-o', str(out),
                            '--set', 'search.space.layers=[1, 1, 1, 1, 1, 1]', 'search.space.width_mults=[1000.0]'])
    assert not (tmp_path / 'tables').exists()


# ------------------------------------------------------------------------------------------- resume
def _run(tmp_path, cfg=None):
    from fna_zoo.engine.distributed import DistInfo
    from fna_zoo.engine.run import TrainingRun

    info = DistInfo(0, 1, 0, torch.device('cpu'))
    return lambda out, **kw: TrainingRun({'output': str(out), 'seed': 0, **(cfg or {})}, info, resume=True,
                                         num_classes=2, **kw)


def test_resume_refuses_a_finished_runs_weights_and_leaves_the_folder(tmp_path):
    from fna_zoo.checkpoint import save_checkpoint

    run = _run(tmp_path)
    out = tmp_path / 'run'
    save_checkpoint({'model': {}, 'config': {'seed': 0}, 'num_classes': 2}, out / 'last.pth')  # a final.pth's keys
    with pytest.raises(ValueError, match=r"checkpoint '.*last.pth' holds no rng, optimizer state to resume from \(a "
                                         r"finished run's final.pth\?\); expected the last.pth an interrupted "
                                         'fna-retrain run wrote'):
        run(out)
    assert [p.name for p in out.iterdir()] == ['last.pth']  # no lock file left
    search = tmp_path / 'search'
    save_checkpoint({'model': {}, 'config': {'search': {}}, 'rng': torch.get_rng_state(), 'optimizer': {}},
                    search / 'last.pth')
    with pytest.raises(ValueError, match="is the last.pth of a fna-search run; expected one of fna-retrain"):
        run(search)
    assert [p.name for p in search.iterdir()] == ['last.pth']


def test_resume_checks_every_state_it_restores_and_a_failed_one_leaves_no_lock(tmp_path):
    from fna_zoo.checkpoint import save_checkpoint

    run = _run(tmp_path, {'search': {}})
    out = tmp_path / 'run'
    model = torch.nn.Linear(2, 1)
    save_checkpoint({'model': model.state_dict(), 'config': {'search': {}}, 'rng': torch.get_rng_state(),
                     'optimizer': torch.optim.SGD(model.parameters(), lr=0.1).state_dict()}, out / 'last.pth')
    opts = {'optimizer': torch.optim.SGD(model.parameters(), lr=0.1),
            'arch_optimizer': torch.optim.SGD(model.parameters(), lr=0.1)}
    with pytest.raises(ValueError, match=r"holds no arch_optimizer state to resume from; expected the last.pth an "
                                         'interrupted fna-search run wrote'):
        with run(out) as r:
            r.begin(model, opts)
    assert [p.name for p in out.iterdir()] == ['last.pth']
    # a lock file that was there before stays (it is not this run's)
    (out / '.lock').write_text('')
    with pytest.raises(ValueError, match='holds no arch_optimizer state'):
        with run(out) as r:
            r.begin(model, opts)
    assert sorted(p.name for p in out.iterdir()) == ['.lock', 'last.pth']


# ------------------------------------------------------------------------------------------- INT8 gate data
def test_int8_export_decodes_the_gate_images_before_writing(tmp_path):
    from fna_zoo.cli.export import export_main
    from fna_zoo.data import make_synthetic_coco
    from fna_zoo.engine import load_config, save_checkpoint
    from fna_zoo.detection import build_model

    data = make_synthetic_coco(tmp_path / 'data', **TINY_DATA)
    cfg = load_config(None, [KWARGS, 'model.num_classes=3', f'data.synthetic.root={tmp_path / "data"}',
                             *(f'data.synthetic.{k}={v}' for k, v in TINY_DATA.items())])
    torch.manual_seed(0)
    save_checkpoint({'model': build_model(cfg, 3, with_seed=False).state_dict(), 'config': cfg, 'num_classes': 3,
                     'step': 0}, tmp_path / 'ok.pth')
    bad = sorted((data / 'val2017').iterdir())[0]
    bad.write_bytes(os.urandom(2000))  # only the validation split (the gate's data) is broken
    out = tmp_path / 'out' / 'e.onnx'
    with pytest.raises(ValueError, match=rf"image '.*{bad.name}' \(image id \d+\) cannot be decoded"):
        export_main(['--checkpoint', str(tmp_path / 'ok.pth'), '--int8', '--calib-images', '1', '--data_path',
                     str(data), '--output', str(out), '-q'])
    assert not (tmp_path / 'out').exists()


# ------------------------------------------------------------------------------------------- predict_onnx.py
@pytest.fixture
def predict_onnx(monkeypatch, tmp_path):
    """examples/predict_onnx.py as a module, its model stubbed (no detections), and an image to run it on."""
    from PIL import Image

    spec = importlib.util.spec_from_file_location('predict_onnx_under_test', ROOT / 'examples' / 'predict_onnx.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, 'load_session', lambda path: (None, {'class_names': '[]'}))
    monkeypatch.setattr(module, 'predict', lambda *a: (np.zeros((0, 4)), np.zeros(0), np.zeros(0)))
    Image.new('RGB', (32, 32)).save(tmp_path / 'img.png')
    yield module
    for name in ('_fna_zoo_checks', '_fna_zoo_fileio', '_fna_zoo_preprocess'):
        sys.modules.pop(name, None)


def test_predict_onnx_makes_a_missing_output_folder(predict_onnx, tmp_path, capsys):
    out = tmp_path / 'new' / 'sub' / 'det.png'
    assert predict_onnx.main([str(tmp_path / 'm.onnx'), str(tmp_path / 'img.png'), '-o', str(out)]) == 0
    assert out.is_file() and capsys.readouterr().out.strip() == f'0 detections (score >= 0.3) -> {out}'


def test_predict_onnx_announces_nothing_it_did_not_write(predict_onnx, tmp_path, capsys, monkeypatch):
    import errno

    from PIL import Image

    def full_disk(self, fp, *args, **kwargs):
        raise OSError(errno.ENOSPC, 'No space left on device')

    monkeypatch.setattr(Image.Image, 'save', full_disk)
    out = tmp_path / 'det.png'
    with pytest.raises(OSError, match=rf"cannot write {str(out)!r}: No space left on device"):
        predict_onnx.main([str(tmp_path / 'm.onnx'), str(tmp_path / 'img.png'), '-o', str(out)])
    assert capsys.readouterr().out == '' and sorted(p.name for p in tmp_path.iterdir()) == ['img.png']
    with pytest.raises(IsADirectoryError, match=r"image '.*' is a directory; expected a PNG/JPEG file"):
        predict_onnx.main([str(tmp_path / 'm.onnx'), str(tmp_path), '-o', str(out)])


# ------------------------------------------------------------------------------------------- offline hub hint
def test_offline_default_tag_says_which_tag_works_offline(monkeypatch):
    import timm
    import timm.models._hub as hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    def offline(*args, **kwargs):
        raise LocalEntryNotFoundError('Cannot find the requested files in the disk cache and outgoing traffic has '
                                      'been disabled.')

    monkeypatch.setattr(hub, 'hf_hub_download', offline)
    with pytest.raises(LocalEntryNotFoundError) as e:
        timm.create_model('fna_retinanet_backbone', pretrained=True)
    assert "timm.create_model('fna_retinanet_backbone.paramremap_tv_in1k', pretrained=True)" in str(e.value)
    assert '`fna-fetch seed`' in str(e.value)
    from fna_zoo.detection.backbones import resolve_seed

    with pytest.raises(FileNotFoundError, match=r"seed weights 'asset:mobilenetv2_100.tv_in1k'"):
        resolve_seed('timm')


def test_a_search_space_too_wide_is_refused_by_its_key_before_anything_is_built():
    from fna_zoo.nas.config import SEARCH_DEFAULTS
    from fna_zoo.nas import SearchSpace

    space = {**SEARCH_DEFAULTS['search']['space'], 'width_mults': [1000.0]}
    with pytest.raises(ValueError, match=r'config search.space.width_mults makes stage 1 24000 channels wide '
                                         r'\(its seed width is 24\)'):
        SearchSpace.from_config(space, 'retinanet')


def test_search_input_size_is_a_multiple_of_32():
    from fna_zoo.engine.config import load_config
    from fna_zoo.nas.config import SEARCH_DEFAULTS

    with pytest.raises(ValueError, match=r'input_size is \[33, 47\]; expected \[H, W\], two multiples of 32'):
        load_config(None, ['search.objective.input_size=[33, 47]'], defaults=SEARCH_DEFAULTS)
    with pytest.raises(IsADirectoryError, match='is a directory; expected a YAML config file'):
        load_config(ROOT / 'configs')
