"""Deployment export: `export(model, formats=[...])`, one call for every format of the table (`FORMATS`) with its
gate (`fna_zoo.export.exporter`); ONNX (backbone, raw detector, detector with in-graph NMS) with a parity gate, its
mixed-precision fp16 copy (`export_fp16`), onnxruntime INT8 and strongly typed TensorRT engines. Needs the
`export` extra (onnx, onnxruntime); not imported by `import fna_zoo`. The command line is `fna-export`
(`python -m fna_zoo.export`).
"""
from .onnx_export import (DEFAULT_OPSET, ExportTarget, backbone_target, detector_target, export_onnx,
                          export_with_gate, load_detector, metadata_of)
from .fp16 import Fp16Export, export_fp16, fp16_output_path
from .parity import ParityReport, compare_arrays, compare_arrays_scaled, compare_detections, run_onnx
from .postprocess import DetectionPostprocess, NonMaxSuppression, postprocess_for
from .results import ExportGateError, ExportResult, FileResult, FormatUnavailable, GateResult
from .formats import FORMATS, Format, format_table, get_format
from .exporter import ExportSettings, export

__all__ = ['DEFAULT_OPSET', 'ExportTarget', 'backbone_target', 'detector_target', 'export_onnx', 'export_with_gate',
           'load_detector', 'metadata_of', 'Fp16Export', 'export_fp16', 'fp16_output_path', 'ParityReport',
           'compare_arrays', 'compare_arrays_scaled', 'compare_detections', 'run_onnx',
           'DetectionPostprocess', 'NonMaxSuppression', 'postprocess_for', 'export', 'ExportSettings', 'ExportResult',
           'FileResult', 'GateResult', 'ExportGateError', 'FormatUnavailable', 'FORMATS', 'Format', 'format_table',
           'get_format']
