# mmdetection 3.x: RetinaNet with the FNA RetinaNet backbone, the paper's retrain settings
# (JaminFong/FNA fna_det/configs/fna_retinanet_fpn_retrain.py): 12 epochs, SGD lr 0.05 momentum 0.9 wd 5e-5,
# steps at epochs 8 and 11, 500-iteration linear warm-up from 1/3, grad clip 35, 4 images/GPU x 8 GPUs.
#   python -m mmdet... / mmdet tools/train.py configs/mmdet/fna_retinanet_fpn_1x_coco.py
# Needs the mmdet extra (scripts/install_mmdet.sh). Seed weights: 'timm' (hub) or a mobilenetv2_100 file.
_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['fna_zoo.mmdet'], allow_failed_imports=False)

model = dict(
    # NOTE: the timm seed was trained on RGB images normalised with ImageNet mean/std
    data_preprocessor=dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], bgr_to_rgb=True),
    backbone=dict(_delete_=True, type='FNABackbone', arch='fna_retinanet_backbone', out_indices=(2, 3, 4),
                  seed_weights='timm'),
    # C3-C5 = 32/96/320 channels; P6 from C5 ('on_input'), P7 from P6: 5 levels as in FNA
    neck=dict(in_channels=[32, 96, 320], start_level=0, add_extra_convs='on_input', num_outs=5),
    bbox_head=dict(loss_bbox=dict(type='SmoothL1Loss', beta=0.11, loss_weight=1.0)),
)

train_dataloader = dict(batch_size=4)
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.05, momentum=0.9, weight_decay=5e-5),
                     clip_grad=dict(max_norm=35, norm_type=2))
param_scheduler = [
    dict(type='LinearLR', start_factor=1.0 / 3, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=12, by_epoch=True, milestones=[8, 11], gamma=0.1),
]
train_cfg = dict(max_epochs=12)
# The paper trains with SyncBN on 8 GPUs: launch with `--launcher pytorch` and set sync_bn = 'torch'.
