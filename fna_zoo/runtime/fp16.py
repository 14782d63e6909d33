"""Deprecated: the fp16 conversion moved to `fna_zoo.onnxgraph` (the ONNX graph helpers below the runtimes and
the export). The old names still import from here, with a `DeprecationWarning`, for one release:
`convert_fp16`, `convert_fp16_file`, `stamp_fp16`, `Fp16Info`, `DEFAULT_FP16_SCOPES`, `FP32_OPS`, `FP16_MAX`
(`fna_zoo.onnxgraph.fp16`), `is_fp16_model`, `tensor_types` (`fna_zoo.onnxgraph.precision`).
"""
from __future__ import annotations

from ..deprecation import moved_names
from ..onnxgraph import fp16 as _fp16
from ..onnxgraph import precision as _precision

__all__ = ['DEFAULT_FP16_SCOPES', 'FP32_OPS', 'Fp16Info', 'convert_fp16', 'convert_fp16_file', 'stamp_fp16',
           'is_fp16_model', 'tensor_types']

__getattr__ = moved_names(__name__, {
    **{name: _fp16 for name in ('DEFAULT_FP16_SCOPES', 'FP32_OPS', 'FP16_MAX', 'Fp16Info', 'convert_fp16',
                                'convert_fp16_file', 'stamp_fp16')},
    **{name: _precision for name in ('is_fp16_model', 'tensor_types')}})
