"""Pascal-VOC -> COCO conversion with tiles, the cut-box rule, and random training windows."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import OBJ, VOC, write_voc
from fna_zoo.data import CocoDetection, RandomCrops, coco_split_paths, crop_boxes, tile_windows, train_transforms
from fna_zoo.data.voc import read_voc, voc_to_coco


def test_crop_boxes_rule():
    boxes = torch.tensor([[10., 10., 30., 30.],    # inside
                          [90., 0., 110., 10.],    # exactly half inside: kept, clipped
                          [95., 0., 115., 10.],    # a quarter inside: dropped
                          [200., 200., 210., 210.]])  # outside
    kept, keep = crop_boxes(boxes, (0, 0, 100, 100))
    assert keep.tolist() == [0, 1]
    assert kept.tolist() == [[10, 10, 30, 30], [90, 0, 100, 10]]
    kept, keep = crop_boxes(boxes, (20, 5, 120, 105))  # shifted into window coordinates
    assert keep.tolist() == [0, 1, 2] and kept[0].tolist() == [0, 5, 10, 25] and kept[2].tolist() == [75, 0, 95, 5]
    with pytest.raises(ValueError, match='min_visible is 0; expected a share in'):
        crop_boxes(boxes, (0, 0, 100, 100), min_visible=0)


def test_tile_windows_cover_the_image_evenly():
    wins = tile_windows(2299, 2472, 400)
    assert len(wins) == 6 * 7
    assert all(x1 - x0 == 400 and y1 - y0 == 400 for x0, y0, x1, y1 in wins)
    assert max(w[2] for w in wins) == 2299 and max(w[3] for w in wins) == 2472 and min(w[0] for w in wins) == 0
    assert tile_windows(400, 400, 400) == [(0, 0, 400, 400)]
    assert tile_windows(300, 500, 400) == [(0, 0, 300, 400), (0, 100, 300, 500)]
    with pytest.raises(ValueError, match='tile size is 0'):
        tile_windows(10, 10, 0)


def test_read_voc_and_errors(tmp_path):
    _, xml = write_voc(tmp_path, 'a', (60, 40), [(1, 2, 11, 12), (20, 5, 50, 35)], ['Alive', 'Dead'])
    ann = read_voc(xml)
    assert (ann.filename, ann.width, ann.height) == ('a.png', 60, 40)
    assert ann.boxes == ((1, 2, 11, 12), (20, 5, 50, 35)) and ann.names == ('Alive', 'Dead')
    bad = tmp_path / 'bad.xml'
    bad.write_text('<annotation><size><width>3</width>')
    with pytest.raises(ValueError, match=r"malformed VOC annotation file .*bad.xml"):
        read_voc(bad)
    bad.write_text(VOC.format(name='x.png', w=10, h=10, objects=OBJ.format(1, 2, 'x', 4, cls='t')))
    with pytest.raises(ValueError, match=r"<xmax> is 'x'; expected a number"):
        read_voc(bad)
    bad.write_text(VOC.format(name='x.png', w=10, h=10, objects=OBJ.format(5, 2, 5, 4, cls='t')))
    with pytest.raises(ValueError, match='empty box'):
        read_voc(bad)
    with pytest.raises(FileNotFoundError, match='does not exist'):
        read_voc(tmp_path / 'none.xml')


def test_voc_to_coco_whole_and_tiled(tmp_path):
    src = tmp_path / 'src'
    src.mkdir()
    big = write_voc(src, 'big', (180, 100), [(10, 10, 40, 40), (90, 50, 130, 90), (170, 0, 180, 10)])
    small = write_voc(src, 'small', (100, 60), [(95, 10, 125, 20)])  # reaches past the image edge
    root = tmp_path / 'coco'
    items = [(p, read_voc(x)) for p, x in (big, small)]
    assert voc_to_coco(items[:1], root, 'train2017', category='tree') == {'images': 1, 'boxes': 3}
    counts = voc_to_coco(items, root, 'val2017', tile=100, category='tree', first_image_id=101)
    ann, img_dir = coco_split_paths(root, 'val2017')
    data = json.loads(ann.read_text())
    assert data['categories'] == [{'id': 1, 'name': 'tree', 'supercategory': 'object'}]
    # big: 2 tiles (x 0 and 80); small: 1 tile of 100x60
    assert [im['window'] for im in data['images']] == [[0, 0, 100, 100], [80, 0, 180, 100], [0, 0, 100, 60]]
    assert [im['id'] for im in data['images']] == [101, 102, 103] and counts['images'] == 3
    by_image = {}
    for a in data['annotations']:
        by_image.setdefault(a['image_id'], []).append(a['bbox'])
    # tile 1: the first box, and the second only as its 10 of 40 px (a quarter) inside -> dropped
    assert by_image[101] == [[10, 10, 30, 30]]
    # tile 2 (x from 80): the second box whole, the corner box whole
    assert by_image[102] == [[10, 50, 40, 40], [90, 0, 10, 10]]
    assert 103 not in by_image  # a box reaching past the image: a sixth of it visible, dropped by the same rule
    for im in data['images']:
        with Image.open(img_dir / im['file_name']) as f:
            assert f.size == (im['width'], im['height'])
    ds = CocoDetection(ann, img_dir)
    assert len(ds) == 3 and ds.num_classes == 1
    image, target = ds[1]
    assert image.shape == (3, 100, 100) and target['boxes'].tolist() == [[10, 50, 50, 90], [90, 0, 100, 10]]
    # the tiles are the image's own pixels
    with Image.open(big[0]) as f:
        tile = np.asarray(Image.open(img_dir / data['images'][1]['file_name']))
        assert np.array_equal(np.asarray(f)[:, 80:180], tile)


def test_random_crops(tmp_path):
    src = tmp_path / 'src'
    src.mkdir()
    boxes = [(x, y, x + 20, y + 20) for x in range(0, 300, 40) for y in range(0, 200, 40)]
    png, xml = write_voc(src, 'big', (300, 200), boxes)
    # each pixel tells where it is: R = x mod 256, B = x div 256, G = y
    yy, xx = np.mgrid[0:200, 0:300]
    Image.fromarray(np.stack([xx % 256, yy, xx // 256], -1).astype(np.uint8)).save(png)
    voc_to_coco([(png, read_voc(xml))], tmp_path / 'coco', 'train2017', category='tree')
    base = CocoDetection(*coco_split_paths(tmp_path / 'coco', 'train2017'), train=True)
    crops = RandomCrops(base, 64, crops_per_image=5)
    assert len(crops) == 5 and crops.num_classes == 1
    torch.manual_seed(0)
    first = [crops[i] for i in range(5)]
    all_boxes = torch.tensor(boxes, dtype=torch.float32)
    origins = set()
    for image, target in first:
        assert image.shape == (3, 64, 64) and image.dtype == torch.float32
        px = (image * 255).round().long()
        x0, y0 = int(px[0, 0, 0] + 256 * px[2, 0, 0]), int(px[1, 0, 0])
        # the window is the image's own pixels at (x0, y0), and its boxes follow the cut-box rule there
        assert torch.equal(px[0], ((torch.arange(64) + x0) % 256).expand(64, 64))
        assert torch.equal(px[1], (torch.arange(64) + y0)[:, None].expand(64, 64))
        want, keep = crop_boxes(all_boxes, (x0, y0, x0 + 64, y0 + 64))
        assert torch.equal(target['boxes'], want) and len(target['labels']) == len(keep)
        origins.add((x0, y0))
    assert len(origins) > 1  # windows differ
    torch.manual_seed(0)
    again = [crops[i] for i in range(5)]
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1]['boxes'], b[1]['boxes']) for a, b in zip(first, again))
    # with the flip: boxes stay inside the window and match their labels
    flipped = RandomCrops(base, 64, crops_per_image=5, transforms=train_transforms('plain'))
    for image, target in (flipped[i] for i in range(5)):
        b = target['boxes']
        assert len(b) == len(target['labels']) and (b[:, 2] > b[:, 0]).all() and (b[:, :2] >= 0).all()
        assert (b[:, 2:] <= 64).all()
    # a window larger than the image takes it whole
    image, target = RandomCrops(base, 1000)[0]
    assert image.shape == (3, 200, 300) and len(target['boxes']) == len(boxes)
    with pytest.raises(ValueError, match='expected positive integers'):
        RandomCrops(base, 0)
    with pytest.raises(ValueError, match='min_visible is 1.5'):
        RandomCrops(base, 64, min_visible=1.5)
