"""One typed check of the config (issue 21): wrong types and out-of-range counts fail in one line naming the
dotted key, before any work; values that are not YAML (an FNA net_config string) stay text."""
import copy

import pytest

from fna_zoo.engine.config import load_config
from fna_zoo.nas.config import SEARCH_DEFAULTS

BAD = [
    ('train.lr=abc', "config train.lr is 'abc'; expected a number"),
    ('train.lr=0', 'config train.lr is 0; expected a positive number'),
    ('train.ckpt_interval=0', 'config train.ckpt_interval is 0; expected an integer >= 1'),
    ('train.epochs=0', 'config train.epochs is 0; expected an integer >= 1'),
    ('train.batch_size=-1', 'config train.batch_size is -1; expected an integer >= 1'),
    ('train.log_interval=2.5', 'config train.log_interval is 2.5; expected an integer'),
    ('train.max_iters=0', 'config train.max_iters is 0; expected an integer >= 1 or null'),
    ('train.sync_bn=3', 'config train.sync_bn is 3; expected true or false'),
    ('train.lr_steps=8', 'config train.lr_steps is 8; expected a list'),
    ('eval.batch_size=0', 'config eval.batch_size is 0; expected an integer >= 1'),
    ('eval=3', 'config eval is 3; expected a mapping'),
    ('data.workers=-1', 'config data.workers is -1; expected an integer >= 0'),
    ('data.synthetic.image_size=8', 'config data.synthetic.image_size is 8; expected an integer >= 32'),
    ('model.num_classes=0', 'config model.num_classes is 0; expected an integer >= 1 or null'),
    ('seed=x', "config seed is 'x'; expected an integer"),
    # found by scripts/bad_input_sweep.py
    ('train.lr=.inf', 'config train.lr is inf; expected a finite number'),
    ('train.lr=.nan', 'config train.lr is nan; expected a finite number'),
    ('train.lr=1e400', "config train.lr is '1e400'; expected a number"),
    ('train.momentum=-1', 'config train.momentum is -1; expected a number in [0, 1)'),
    ('train.grad_clip=-1', 'config train.grad_clip is -1; expected a number >= 0 (0: no clipping)'),
    ('train.warmup_ratio=0', 'config train.warmup_ratio is 0; expected a number in (0, 1]'),
    ('train=5', 'config train is 5; expected a mapping'),
    ('data=null', 'config data is None; expected a mapping'),
    ('output=', 'config output is None; expected a string'),
    ("output=''", "config output is ''; expected a run folder path"),
    ('train.lr=' + '[' * 5000 + ']' * 5000, "override 'train.lr' has a value nested too deeply to parse"),
]


@pytest.mark.parametrize('override, message', BAD)
def test_bad_values_name_the_key(override, message):
    with pytest.raises(ValueError) as e:
        load_config(None, [override])
    assert str(e.value).startswith(message)


def test_a_section_replaced_by_a_scalar_is_named_even_with_later_overrides():
    # the later override used to turn into "unknown config key 'train.lr'; expected one of max_iters"
    with pytest.raises(ValueError, match='^config train is 5; expected a mapping$'):
        load_config(None, ['train=5', 'train.lr=0.1'])


@pytest.mark.parametrize('content, message', [
    ('', 'is empty; expected a YAML mapping of config sections'),
    (b'\xff\xfe\x00garbage', 'is not text; expected a YAML config'),
    ('[' * 10000 + ']' * 10000, 'is nested too deeply to parse'),
    ('train: 5\n', 'config train is 5; expected a mapping'),
])
def test_bad_config_files(tmp_path, content, message):
    path = tmp_path / 'cfg.yaml'
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(ValueError, match=message):
        load_config(path, ['train.lr=0.1'])


def test_check_config_holds_a_checkpoints_config_to_its_own_types():
    from fna_zoo.engine.config import apply_overrides, check_config

    reference = load_config(None, [])
    cfg = apply_overrides(copy.deepcopy(reference), ['data.workers=abc'])
    with pytest.raises(ValueError, match="config data.workers is 'abc'; expected an integer"):
        check_config(cfg, reference)
    old = copy.deepcopy(reference)
    del old['train']['eval_interval']  # a key older configs lack is not required
    assert check_config(apply_overrides(old, ['eval.batch_size=2']), old)['eval']['batch_size'] == 2


@pytest.mark.parametrize('override, message', [
    ('search.objective.input_size=[0,0]', r'config search.objective.input_size is \[0, 0\]; expected \[H, W\]'),
    ('search.arch_steps=0', 'config search.arch_steps is 0; expected an integer >= 1'),
    ('search.arch_optimizer.lr=-1', 'config search.arch_optimizer.lr is -1; expected a positive number'),
    ('search.space.temperature=hot', "config search.space.temperature is 'hot'; expected a number"),
])
def test_bad_search_values(override, message):
    with pytest.raises(ValueError, match=message):
        load_config(None, [override], defaults=SEARCH_DEFAULTS)


def test_numbers_and_text_that_are_not_yaml():
    cfg = load_config(None, ['train.lr=1e-3', 'train.max_iters=null', 'model.num_classes=3'])
    assert cfg['train']['lr'] == 0.001 and cfg['train']['max_iters'] is None and cfg['model']['num_classes'] == 3
    fna = "[[32, 16], ['k3_e1'], 1]|[[16, 24], ['k3_e6', 'skip'], 2]"
    assert load_config(None, [f'model.backbone={fna}'])['model']['backbone'] == fna


@pytest.mark.parametrize('override, message', [
    ('model.kwargs.max_size=100000', 'config model.kwargs.max_size is 100000; expected an image side up to 4096'),
    ('model.kwargs.anchor_size=0', 'config model.kwargs.anchor_size is 0; expected a positive integer'),
    ('data.synthetic.image_size=100000', 'config data.synthetic.image_size is 100000; expected an image side up to'),
    ('data.train_crop.size=100000', 'config data.train_crop.size is 100000; expected a positive integer'),
])
def test_sizes_are_bounded_before_allocating(override, message):
    from fna_zoo.detection import build_retinanet
    from fna_zoo.detection import model_kwargs

    with pytest.raises(ValueError, match=message):
        model_kwargs(load_config(None, [override]), build_retinanet)


def test_channel_widths_and_input_sizes_are_bounded():
    from fna_zoo import Arch, load_arch
    from fna_zoo.checks import check_input_size

    d = load_arch('fna_retinanet_backbone').to_dict()
    d['stages'][2]['out_chs'] = 10 ** 9
    with pytest.raises(ValueError, match='stage out_chs is 1000000000; expected a positive integer up to 8192'):
        Arch.from_dict(d)
    with pytest.raises(ValueError, match='input size 100000 x 100000 for the model is invalid; expected H W, two '
                                         'positive multiples of 32 up to 4096'):
        check_input_size([100000, 100000])


@pytest.mark.parametrize('override, message', [
    ('search.weight_ratio=1.0', r'config search.weight_ratio is 1.0; expected a share in \(0, 1\)'),
    ('search.relaxation=random', "config search.relaxation is 'random'; expected one of darts, gumbel, pairs"),
    ('search.objective.lambda=-1', 'config search.objective.lambda is -1; expected a number >= 0'),
])
def test_search_values_are_checked_once_when_loaded(override, message):
    with pytest.raises(ValueError, match=f'^{message}$'):
        load_config(None, [override], defaults=SEARCH_DEFAULTS)


def test_the_package_and_the_retrain_config_do_not_import_the_search():
    import subprocess
    import sys

    code = ('import sys, fna_zoo, fna_zoo.engine, fna_zoo.detection\n'
            'from fna_zoo.engine.config import load_config\n'
            'load_config(None, ["train.lr=0.01"])\n'
            'print(sorted(m for m in sys.modules if m.startswith("fna_zoo.nas")))\n')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == '[]'


def test_old_config_names_warn_once_and_still_work():
    import subprocess
    import sys

    # NOTE: in a fresh process, as the once-per-name record lives as long as the module
    code = ('import warnings\n'
            'warnings.simplefilter("always")\n'
            'with warnings.catch_warnings(record=True) as caught:\n'
            '    import fna_zoo.engine.config as old\n'
            '    from fna_zoo import detection\n'
            '    from fna_zoo.nas import config\n'
            '    assert old.SEARCH_DEFAULTS is config.SEARCH_DEFAULTS\n'
            '    assert old.build_model is detection.build_model and old.build_model is detection.build_model\n'
            '    assert old.model_kwargs is detection.model_kwargs\n'
            '    assert not hasattr(old, "NOT_A_NAME")\n'
            'for w in caught:\n'
            '    if issubclass(w.category, DeprecationWarning) and "fna_zoo.engine.config." in str(w.message):\n'
            '        print(w.message)\n')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 3, out.stdout
    assert lines[0].startswith('fna_zoo.engine.config.SEARCH_DEFAULTS moved to fna_zoo.nas.config.SEARCH_DEFAULTS')
