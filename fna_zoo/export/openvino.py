"""OpenVINO IR (.xml + .bin) from an ONNX file: fp32, or INT8 by NNCF post-training quantization.

`export_openvino(onnx_path, out_xml, precision='fp32' | 'int8', calibration=...)` converts the file with
`openvino.convert_model` (float weights stay fp32: no fp16 compression; the ONNX file's metadata kept in the IR's
rt_info, `fna_zoo.runtime.openvino.set_metadata`, so fna-predict reads its input size and classes) and, for INT8,
quantizes it with NNCF (`nncf.quantize`, mixed preset: symmetric weights, asymmetric activations, as onnxruntime's
default QDQ; or `nncf.quantize_with_accuracy_control` when given `accuracy`) from the calibration inputs, the
in-graph NMS left in float. The IR is written atomically (both files under temporary
names, then renamed). The recipe (conversion, quantization, the IR writer) is the runtime's
(`fna_zoo.runtime.openvino`), which the deployment table uses too; `openvino` and `nncf` are imported only here
and there, inside functions (`pip install 'fna-zoo[openvino]'`).
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    import numpy as np

    from ..runtime.openvino import AccuracyControl

__all__ = ['export_openvino', 'PRECISIONS']

_logger = logging.getLogger(__name__)

PRECISIONS = ('fp32', 'int8')


def export_openvino(onnx_path: str | os.PathLike, out_xml: str | os.PathLike, *, precision: str = 'fp32',
                    calibration: Sequence['np.ndarray'] | None = None, preset: str = 'mixed',
                    accuracy: 'AccuracyControl | None' = None) -> Path:
    """Convert an ONNX file to an OpenVINO IR; for 'int8', quantize it with NNCF from `calibration`.

    Args:
        onnx_path: A float32 ONNX file (e.g. fna-export's detector with NMS, or its raw export).
        out_xml: The IR to write (`.xml`; the `.bin` gets the same stem).
        precision: 'fp32' or 'int8'.
        calibration: INT8 only: input arrays of the first graph input, one batch each (e.g.
            `fna_zoo.export.quantize.calibration_batches` of the calibration images).
        preset: INT8 only: NNCF's preset, 'mixed' or 'performance'.
        accuracy: INT8 only: quantize with NNCF's accuracy control (`fna_zoo.runtime.openvino.AccuracyControl`).

    Returns:
        The .xml written.

    Raises:
        ValueError: An unknown precision, a path without .xml, a non-float32 ONNX file, or INT8 without
            calibration inputs (one line each).
        RuntimeError: openvino (or nncf, for INT8) is not installed.
    """
    from ..checks import check_input_file
    from ..onnxgraph.precision import onnx_precision
    import onnx

    from ..runtime.openvino import ir_precision, nncf_quantize, quantizer_names, read_model, save_ir, set_metadata

    if precision not in PRECISIONS:
        raise ValueError(f'OpenVINO precision {precision!r} is unknown; expected one of {", ".join(PRECISIONS)}')
    out_xml = Path(out_xml)
    if out_xml.suffix != '.xml':
        raise ValueError(f'OpenVINO IR path {str(out_xml)!r} has no .xml suffix; expected NAME.xml (NAME.bin '
                         'beside it)')
    src = check_input_file(onnx_path, 'ONNX file', 'an .onnx file written by fna-export')
    found = onnx_precision(src)
    if found != 'fp32':
        raise ValueError(f'{str(src)!r} holds a {found} model; expected a float32 ONNX file (OpenVINO runs a QDQ '
                         'INT8 file as it is: --runtime openvino on the .onnx)')
    if precision == 'int8' and not calibration:
        raise ValueError('OpenVINO INT8 needs calibration inputs; expected calibration=[arrays] (e.g. '
                         'fna_zoo.export.quantize.calibration_batches of the calibration images)')
    model = read_model(src)
    if precision == 'int8':
        model = nncf_quantize(model, list(calibration or ()), preset=preset, accuracy=accuracy)
        if ir_precision(model) != 'int8':
            raise RuntimeError(f'NNCF left {str(src)!r} without quantized nodes; expected FakeQuantize in the IR')
    meta = {p.key: p.value for p in onnx.load(str(src), load_external_data=False).metadata_props}
    if accuracy is not None and accuracy.plain_quantizers:
        # NOTE: as quantize_int8 records the onnxruntime fallback's float layers: the quantizers NNCF's accuracy
        # control reverted, by name (`fna_zoo.export.int8_fallback.kept_float_of` reads either file)
        meta['int8_kept_float'] = json.dumps(sorted(set(accuracy.plain_quantizers) - quantizer_names(model)))
    set_metadata(model, meta)
    save_ir(model, out_xml, compress_to_fp16=False)
    _logger.info('OpenVINO %s IR of %s written to %s', precision, src, out_xml)
    return out_xml
