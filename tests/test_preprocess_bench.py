"""benchmarks/preprocess_bench.py: every timed path on small real files, and the optional PNG decoders' pixels."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fna_zoo.runtime import preprocess as pp

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'benchmarks'))

import preprocess_bench as bench  # noqa: E402


@pytest.fixture
def pngs(tmp_path):
    rng = np.random.default_rng(0)
    files = []
    for i, (h, w) in enumerate(((40, 52), (33, 30))):
        files.append(str(tmp_path / f'{i}.png'))
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(files[-1])
    return files


def test_every_path_is_timed_and_the_inputs_match_the_reference(pngs):
    spec = pp.InputSpec((24, 24), 'letterbox', bench.MEAN)
    rows = bench.measure(pngs, spec, jpeg=False, rounds=2, warmup=0)
    names = [r['path'] for r in rows]
    assert names[0].startswith('reference') and 'decode only: PIL' in names and 'resize + scale only: opencv' in names
    assert all(r['samples'] == 4 and r['p50_ms'] > 0 and r['vs_reference'] > 0 for r in rows)
    full = {r['path']: r for r in rows if 'max_abs_diff' in r}
    assert all(r['same_geometry'] for r in full.values()) and rows[0]['max_abs_diff'] == 0
    # the full-size decodes give the reference's input within float rounding; a reduce before the resize does not
    exact = [n for n in full if 'reduce' not in n and '(option)' not in n]
    assert len(exact) >= 3 and all(full[n]['max_abs_diff'] < 1e-4 for n in exact)
    assert full['PIL reduce + OpenCV resize (not offered)']['max_abs_diff'] > 1e-3


@pytest.mark.parametrize('module, name', [('imagecodecs', 'imagecodecs libpng'), ('pywuffs', 'wuffs')])
def test_an_installed_png_decoder_not_offered_gives_pil_pixels(pngs, module, name):
    pytest.importorskip(module)
    decode = bench._other_png_decoders()[name]
    for f in pngs:
        assert np.array_equal(np.asarray(decode(f)), np.asarray(Image.open(f).convert('RGB')))
