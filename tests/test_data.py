"""Data layer: the built-in synthetic COCO set, the COCO dataset and its errors, augmentations."""
import json

import pytest
import torch

from fna_zoo.data import CLASSES, CocoDetection, coco_split_paths, make_synthetic_coco, train_transforms
from fna_zoo.detection import DETECTORS


@pytest.fixture(scope='module')
def syn(tmp_path_factory):
    return make_synthetic_coco(tmp_path_factory.mktemp('syn') / 'coco', num_train=24, num_val=8, image_size=96)


def test_synthetic_is_coco(syn):
    ann, img_dir = coco_split_paths(syn, 'train2017')
    data = json.loads(ann.read_text())
    assert len(data['images']) == 24 and [c['name'] for c in data['categories']] == [c[0] for c in CLASSES]
    assert len(data['annotations']) >= 24
    for a in data['annotations']:
        x, y, w, h = a['bbox']
        assert 0 <= x and 0 <= y and x + w <= 96 and y + h <= 96 and w >= 12 and h >= 12
    stamp = (syn / '.done').stat().st_mtime_ns
    make_synthetic_coco(syn, num_train=24, num_val=8, image_size=96)  # same settings: reused, not rewritten
    assert (syn / '.done').stat().st_mtime_ns == stamp


def test_synthetic_boxes_are_exact(syn):
    ds = CocoDetection(*coco_split_paths(syn, 'val2017'))
    for i in range(len(ds)):
        image, target = ds[i]
        for box, label in zip(target['boxes'], target['labels']):
            x0, y0, x1, y1 = box.round().int().tolist()
            colour = torch.tensor(CLASSES[label][2]) / 255
            patch = image[:, y0:y1, x0:x1]
            # an object pixel of its colour family lies inside its box, none on the row just outside for squares
            close = ((patch - colour[:, None, None]).abs() < 0.2).all(0)
            assert close.any()


def test_dataset_items(syn):
    ds = CocoDetection(*coco_split_paths(syn, 'train2017'), train=True)
    image, target = ds[0]
    assert image.dtype == torch.float32 and image.shape == (3, 96, 96) and 0 <= image.min() and image.max() <= 1
    assert target['boxes'].shape[1] == 4 and target['labels'].dtype == torch.int64
    assert ds.num_classes == len(CLASSES) and ds.label_to_cat[0] == 1


@pytest.mark.parametrize('detector', list(DETECTORS))
def test_train_transforms_keep_boxes_valid(syn, detector):
    recipe = DETECTORS[detector].train_recipe
    ds = CocoDetection(*coco_split_paths(syn, 'train2017'), transforms=train_transforms(recipe), train=True)
    torch.manual_seed(0)
    for i in range(len(ds)):
        image, target = ds[i]
        b = target['boxes']
        h, w = image.shape[-2:]
        assert len(b) == len(target['labels'])
        assert (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all()
        assert (b[:, :2] >= 0).all() and (b[:, 2] <= w).all() and (b[:, 3] <= h).all()


def test_errors(syn, tmp_path):
    with pytest.raises(FileNotFoundError, match="data folder '.*nowhere' does not exist; expected a COCO tree"):
        coco_split_paths(tmp_path / 'nowhere', 'train2017')
    ann, img_dir = coco_split_paths(syn, 'val2017')
    with pytest.raises(FileNotFoundError, match='annotation file .* does not exist'):
        CocoDetection(tmp_path / 'instances_x.json', img_dir)
    with pytest.raises(FileNotFoundError, match='image folder .* does not exist'):
        CocoDetection(ann, tmp_path / 'noimages')
    bad = tmp_path / 'bad.json'
    bad.write_text('{"images": [')
    with pytest.raises(ValueError, match='malformed annotation file'):
        CocoDetection(bad, img_dir)
    bad.write_text('{"images": []}')
    with pytest.raises(ValueError, match=r"missing \['annotations', 'categories'\]"):
        CocoDetection(bad, img_dir)
    bad.write_text(json.dumps({'images': [], 'annotations': [], 'categories': [{'id': 1}]}))
    with pytest.raises(ValueError, match='has no images or no categories'):
        CocoDetection(bad, img_dir)
    data = json.loads(ann.read_text())
    data['images'][0]['file_name'] = 'gone.png'
    bad.write_text(json.dumps(data))
    with pytest.raises(FileNotFoundError, match=r"1 images of .* are missing from .*'gone.png'"):
        CocoDetection(bad, img_dir)
