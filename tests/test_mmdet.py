"""Optional mmdet 3.x integration (runs when the extra is installed: scripts/install_mmdet.sh)."""
from pathlib import Path

import pytest
import timm
import torch

pytest.importorskip('mmdet')
pytest.importorskip('mmcv.ops')

from mmengine.config import Config  # noqa: E402
from mmengine.runner import Runner, load_checkpoint  # noqa: E402

from fna_zoo.data import CLASSES, make_synthetic_coco  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _synthetic_cfg(tmp_path: Path, seed_file: str) -> Config:
    data = make_synthetic_coco(tmp_path / 'coco', num_train=8, num_val=2, image_size=96)
    cfg = Config.fromfile(str(ROOT / 'configs' / 'mmdet' / 'fna_retinanet_fpn_1x_coco.py'))
    cfg.model.backbone.seed_weights = seed_file
    cfg.work_dir = str(tmp_path / 'work')
    metainfo = dict(classes=tuple(c[0] for c in CLASSES))
    cfg.model.bbox_head.num_classes = len(CLASSES)
    cfg.train_dataloader.batch_size = 2
    cfg.train_dataloader.num_workers = 0
    cfg.train_dataloader.persistent_workers = False
    cfg.train_dataloader.dataset.update(data_root=str(data), ann_file='annotations/instances_train2017.json',
                                        data_prefix=dict(img='train2017/'), metainfo=metainfo)
    cfg.train_dataloader.dataset.pipeline[2].scale = (96, 96)  # Resize in mmdet's base RetinaNet pipeline
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=1, val_interval=100)
    cfg.param_scheduler = []
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=1, by_epoch=False)
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    cfg.test_cfg = cfg.test_dataloader = cfg.test_evaluator = None
    return cfg, data


def test_mmdet_train_step_inference_and_features(tmp_path, seed_file, seed_state_dict):
    cfg, data = _synthetic_cfg(tmp_path, seed_file)
    runner = Runner.from_cfg(cfg)
    runner.train()  # one training iteration on the built-in dataset, then a checkpoint
    ckpt = Path(cfg.work_dir) / 'iter_1.pth'
    assert ckpt.is_file()

    model = runner.model.eval()
    # weights-only loading of an mmengine Runner checkpoint (numpy values, HistoryBuffer) works
    state = load_checkpoint(model, str(ckpt), map_location='cpu')
    assert 'message_hub' in state and 'state_dict' in state

    # the mmdet backbone's feature maps equal timm's features_only model on the same weights
    timm_feats = timm.create_model('fna_retinanet_backbone', features_only=True, out_indices=(2, 3, 4)).eval()
    timm_feats.load_state_dict(model.backbone.model.state_dict())
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        ours, ref = model.backbone(x), timm_feats(x)
    assert [o.shape[1] for o in ours] == [32, 96, 320]
    assert all(torch.equal(a, b) for a, b in zip(ours, ref))

    from mmdet.apis import inference_detector
    model.cfg = cfg
    model.cfg.test_dataloader = dict(dataset=dict(pipeline=[
        dict(type='LoadImageFromFile'), dict(type='Resize', scale=(96, 96), keep_ratio=True),
        dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))]))
    model.bbox_head.test_cfg.score_thr = 0.0
    result = inference_detector(model, str(data / 'val2017' / '000001.png'))
    assert len(result.pred_instances.bboxes) > 0


def test_seed_weights_reach_mmdet_backbone(tmp_path, seed_file, seed_state_dict):
    from mmdet.registry import MODELS

    backbone = MODELS.build(dict(type='FNABackbone', arch='fna_retinanet_backbone', seed_weights=seed_file))
    assert backbone.out_channels == [32, 96, 320]
    assert torch.equal(backbone.model.conv_stem.weight, seed_state_dict['conv_stem.weight'])
    backbone.init_weights()  # mmengine init must not overwrite the remapped seed
    assert torch.equal(backbone.model.conv_stem.weight, seed_state_dict['conv_stem.weight'])


class _Sneaky:
    """Pickles as getattr(HistoryBuffer, '__init__'): a getattr that is not a statistics method."""

    def __reduce__(self):
        from mmengine.logging import HistoryBuffer
        return getattr, (HistoryBuffer, '__init__')


def test_weights_only_getattr_stays_restricted(tmp_path):
    import fna_zoo.mmdet  # noqa: F401  (installs the restricted getattr)

    path = tmp_path / 'sneaky.pth'
    torch.save({'x': _Sneaky()}, path)
    with pytest.raises(Exception, match='only HistoryBuffer statistics methods are allowed'):
        torch.load(path, weights_only=True)


def test_mmdet_config_matches_paper_params():
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    import fna_zoo.mmdet  # noqa: F401

    register_all_modules()
    cfg = Config.fromfile(str(ROOT / 'configs' / 'mmdet' / 'fna_retinanet_fpn_1x_coco.py'))
    cfg.model.backbone.seed_weights = None
    model = MODELS.build(cfg.model)
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 2) == 11.73  # FNA-RetinaNet, 80 classes
