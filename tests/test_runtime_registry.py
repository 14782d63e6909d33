"""The runtime registry: one plugin per runtime, the vocabulary and every consumer read it, and no consumer
dispatches on a runtime's name (fast: no model is run)."""
import re
import sys
from pathlib import Path

import pytest

from fna_zoo.runtime.names import ALIASES, CUDA_ONLY, RUNTIMES, canonical_runtime
from fna_zoo.runtime.plugin import DEVICES, RuntimePlugin
from fna_zoo.runtime.registry import PLUGINS, runtime_packages, runtime_table
from fna_zoo.runtime.select import get_plugin

ROOT = Path(__file__).resolve().parents[1]
NAMES = ['torch', 'torch-fp16', 'torch-compile', 'onnxruntime', 'tensorrt', 'tensorrt-fp16', 'openvino']


def test_the_registry_lists_every_runtime_and_the_vocabulary_is_read_from_it():
    assert list(PLUGINS) == NAMES and list(RUNTIMES) == NAMES
    assert [r['name'] for r in runtime_table()] == NAMES
    for name, p in PLUGINS.items():
        assert isinstance(p, RuntimePlugin) and p.name == name and RUNTIMES[name] == p.precision
        assert p.precision in p.precisions and set(p.devices) <= set(DEVICES) and p.default_device in p.devices
        assert all(c.precision in p.precisions for c in p.deploy_cells)
    assert CUDA_ONLY == ('torch-fp16', 'tensorrt', 'tensorrt-fp16')
    assert runtime_packages() == ['torch', 'onnxruntime', 'tensorrt', 'openvino']


def test_old_names_still_resolve_through_the_plugins():
    assert {a: canonical_runtime(a) for a in ALIASES} == {
        'eager': ('torch', 'cpu'), 'eager-fp16': ('torch-fp16', 'cuda'), 'compile': ('torch-compile', 'cpu'),
        'ort': ('onnxruntime', 'cpu'), 'trt': ('tensorrt', 'cuda'), 'trt-fp16': ('tensorrt-fp16', 'cuda'),
        'onnxruntime-cpu': ('onnxruntime', 'cpu'), 'torch-cpu': ('torch', 'cpu'), 'torch-cuda': ('torch', 'cuda'),
        'torch-cuda-fp16': ('torch-fp16', 'cuda')}
    assert get_plugin('ort') is PLUGINS['onnxruntime'] and get_plugin('trt-fp16') is PLUGINS['tensorrt-fp16']
    assert canonical_runtime('openvino') == ('openvino', 'cpu')
    with pytest.raises(ValueError, match="runtime 'warp' is unknown; expected one of torch, .*openvino"):
        get_plugin('warp')


@pytest.mark.parametrize('name, device, missing, reason', [
    ('openvino', 'cpu', 'openvino', "openvino is not installed (pip install 'fna-zoo[openvino]')"),
    ('openvino', 'cuda', None, "runtime 'openvino' runs on CPU only, not on device 'cuda'; expected --device cpu"),
    ('onnxruntime', 'cpu', 'onnxruntime', "runtime 'onnxruntime' needs the onnxruntime package, which is not "
     'installed here (pip install onnxruntime); expected it, or --runtime torch'),
    ('tensorrt', 'cuda', 'tensorrt', "runtime 'tensorrt' needs the tensorrt Python package, which is not installed "
     'here (pip install tensorrt on a machine with an NVIDIA GPU); use --runtime onnxruntime or torch on this machine'),
    ('torch-fp16', 'cpu', None, "runtime 'torch-fp16' runs on CUDA only, not on device 'cpu'; expected --device cuda"),
    ('torch', 'cpu', None, ''),
])
def test_each_plugin_says_in_one_line_why_it_cannot_run(name, device, missing, reason, monkeypatch):
    from fna_zoo.runtime.select import check_runtime

    if missing:
        monkeypatch.setitem(sys.modules, missing, None)  # as on a machine without the package
    elif name == 'openvino':
        pytest.importorskip('openvino')
    plugin = PLUGINS[name]
    assert plugin.unavailable(device) == reason and '\n' not in reason
    if reason:
        assert plugin.describe(device)['available'] is False and plugin.describe(device)['why_not'] == reason
        with pytest.raises(ValueError) as e:
            check_runtime(name, device)
        assert str(e.value) == reason
    else:
        assert check_runtime(name, device) == (name, device) and plugin.version()


def test_short_skip_reasons_of_the_rows():
    assert PLUGINS['torch-fp16'].skip_reason('cpu') == 'fp16 eager PyTorch runs on CUDA only (pass --device cuda)'
    if 'tensorrt' not in sys.modules:
        import importlib.util

        if importlib.util.find_spec('tensorrt') is None:
            assert PLUGINS['tensorrt'].skip_reason('cpu') == 'tensorrt not installed'


def test_consumers_read_the_registry():
    from fna_zoo.bench import deploy, grid
    from fna_zoo.bench.pipelines import CELLS
    from fna_zoo.runtime.machine import machine_fields

    for fields in (grid.FIELDS, deploy.FIELDS, machine_fields()):
        assert all(p in fields for p in runtime_packages())
    assert [(c.runtime, c.precision, c.quantize) for c in CELLS] == [
        (name, c.precision, c.quantize) for name, p in PLUGINS.items() for c in p.deploy_cells]
    assert ('openvino', 'int8', True) in [(c.runtime, c.precision, c.quantize) for c in CELLS]


# a runtime name (canonical or alias) in quotes, read off a string's start or a split: name-prefix dispatch
_RUNTIME_WORDS = '|'.join(sorted({n.split('-')[0] for n in list(RUNTIMES) + list(ALIASES)}))
_PREFIX = re.compile(r"\.startswith\(\s*\(?\s*['\"](" + _RUNTIME_WORDS + r")|runtime\.split\(['\"]-['\"]\)\[0\]")


def test_no_runtime_name_prefix_dispatch_creeps_back():
    """Runtimes are told apart by their plugin, never by a name prefix (`name.startswith('tensorrt')`)."""
    hits = []
    files = [p for folder in ('runtime', 'bench', 'nas') for p in sorted((ROOT / 'fna_zoo' / folder).glob('*.py'))]
    for path in files + [ROOT / 'fna_zoo' / 'cli' / 'bench.py', ROOT / 'fna_zoo' / 'cli' / 'latency_table.py']:
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if _PREFIX.search(line):
                hits.append(f'{path.relative_to(ROOT)}:{i}: {line.strip()}')
    assert not hits, 'name-prefix dispatch on runtimes (ask fna_zoo.runtime.registry instead):\n' + '\n'.join(hits)
