"""COCO files are checked when a dataset is opened (issue 21): the first bad entry is named with its index, and an
image that cannot be decoded is one line naming its path."""
import json

import numpy as np
import pytest
from PIL import Image

from fna_zoo.data import CocoDetection


def _write(tmp_path, images=None, annotations=None, categories=None):
    (tmp_path / 'img').mkdir(exist_ok=True)
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / 'img' / 'a.png')
    data = {'images': images if images is not None else [{'id': 1, 'file_name': 'a.png', 'width': 16, 'height': 16}],
            'annotations': annotations if annotations is not None else
            [{'id': 1, 'image_id': 1, 'category_id': 3, 'bbox': [1, 1, 8, 8], 'iscrowd': 0}],
            'categories': categories if categories is not None else [{'id': 3, 'name': 'tree'}]}
    (tmp_path / 'ann.json').write_text(json.dumps(data))
    return tmp_path / 'ann.json', tmp_path / 'img'


OK_ANN = {'id': 1, 'image_id': 1, 'category_id': 3, 'bbox': [1, 1, 8, 8]}
BAD = [
    (dict(annotations=[OK_ANN, {'id': 2, 'image_id': 1, 'category_id': 3}]),
     r"annotations\[1\] has bbox None; expected \[x, y, width, height\], four finite numbers"),
    (dict(annotations=[{**OK_ANN, 'bbox': ['1', '1', '8', '8']}]), r"annotations\[0\] has bbox \['1', '1', '8', '8'\]"),
    (dict(annotations=[{**OK_ANN, 'bbox': [1, 1, 8]}]), r'annotations\[0\] has bbox \[1, 1, 8\]'),
    (dict(annotations=[{**OK_ANN, 'category_id': 7}]), r'annotations\[0\] has category_id 7; expected one of the '
                                                       r'categories \[3\]'),
    (dict(annotations=['x']), r"annotations\[0\] is x; expected an object with image_id"),
    (dict(images=[{'id': 1, 'width': 16}]), r"images\[0\] is .*; expected \{\"id\": <int>, \"file_name\": <str>\}"),
    (dict(categories=[{'name': 'tree'}]), r'categories\[0\] is .*; expected \{"id": <int>'),
    (dict(annotations={'a': 1}), 'annotations is dict; expected a list'),
    # entries the detector used to drop or mis-use silently
    (dict(annotations=[{**OK_ANN, 'bbox': [0, 0, -5, -5]}]),
     r'annotations\[0\] has bbox \[0, 0, -5, -5\]; .*width and height >= 0'),
    (dict(annotations=[{**OK_ANN, 'bbox': [float('nan'), 0, 5, 5]}]),
     r'annotations\[0\] has bbox \[nan, 0, 5, 5\]; .*finite'),
    (dict(annotations=[{**OK_ANN, 'image_id': 9}]), r'annotations\[0\] has image_id 9; expected the id of one of'),
    (dict(annotations=[{**OK_ANN, 'bbox': [100, 100, 5, 5]}]),
     r'annotations\[0\] has bbox \[100, 100, 5, 5\], outside its image 1 \(16 x 16\)'),
    (dict(images=[{'id': 1, 'file_name': 'a.png'}, {'id': 1, 'file_name': 'a.png'}]),
     r'images\[1\] has id 1, as an earlier image; expected unique image ids'),
    (dict(images=[{'id': 1, 'file_name': 'a.png', 'width': 0, 'height': 16}]),
     r'images\[0\] has width 0; expected a positive number of pixels'),
]


@pytest.mark.parametrize('entries, message', BAD)
def test_malformed_entries_are_named(tmp_path, entries, message):
    ann, img = _write(tmp_path, **entries)
    with pytest.raises(ValueError, match=rf"^annotation file '.*ann.json': {message}"):
        CocoDetection(ann, img)


def test_undecodable_images_are_one_line(tmp_path, monkeypatch):
    ann, img = _write(tmp_path)
    ds = CocoDetection(ann, img)
    assert ds[0][1]['labels'].tolist() == [0]
    monkeypatch.setattr(Image, 'MAX_IMAGE_PIXELS', 64)  # 16 x 16 = 256 > 2 x 64: a decompression bomb
    with pytest.raises(ValueError, match=r"image '.*a.png' \(image id 1\) cannot be decoded \(DecompressionBombError"):
        ds[0]
    monkeypatch.undo()
    (img / 'a.png').write_bytes(b'not a png')
    with pytest.raises(ValueError, match=r"image '.*a.png' \(image id 1\) cannot be decoded .*expected a readable"):
        ds[0]
