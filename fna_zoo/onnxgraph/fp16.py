"""Mixed-precision (fp16) ONNX models from the fp32 exports: the network in fp16, what needs fp32 around it kept.

TensorRT 11 builds only strongly typed networks (every tensor has the type the ONNX file gives it; no
`--fp16` builder flag), so a fp16 engine needs a fp16 ONNX file. `convert_fp16` writes one from a fp32 model:

* **fp16**: every node under one of `fp16_scopes` (the TorchScript exporter names nodes by module scope:
  `/body/...` is a backbone export's network, `/core/...` a detector's backbone, neck and head), and every
  node of a latency-table part (`fp16_scopes=None`: all of it);
* **fp32**: everything else: the input normalisation (`/normalize/`), the anchors (top level) and the whole
  postprocess (`/postprocess/`: score activations, box decoding against the anchors, the NMS coordinate
  offsets, `NonMaxSuppression`, which ONNX defines for float32 only); inputs and outputs stay float32
  (`keep_io_types`), so a caller feeds and reads the same arrays as for the fp32 file;
* **Casts** only where a tensor crosses between the two; a weight (or constant) read by both sides is
  stored in both types; fp16 nodes' `Cast(to=float)` / `ConstantOfShape` produce fp16.

Values outside the fp16 range are clipped to +-65504 (counted in the returned info), and the result is
checked with `onnx.checker` (full check: strict type and shape inference), so a type mismatch fails here with
the node named, never in TensorRT. The steps are named passes (`fna_zoo.onnxgraph.fp16_passes`).

Used by the fp16 export (`fna_zoo.export.fp16`, parity-gated) and by the runtimes that convert a float32 file
beside its engine (`fna_zoo.runtime.runners.tensorrt_runner`, `fna_zoo.bench.pipelines`).

NOTE: onnxconverter-common's `convert_float_to_float16(keep_io_types=True)` was tried first (1.16.0): on the
zoo backbones it leaves the next stage's Conv reading a graph output (`feat_s4`, re-typed to float32 by its
output Cast) with fp16 weights, so `onnx.checker` rejects the file; it also blocks by op type and node name,
not by module scope. NVIDIA ModelOpt's AutoCast (`nvidia-modelopt[onnx]` 0.47) pins onnx~=1.21 and
onnxruntime-gpu~=1.24 (plus cupy), which would replace this project's onnx and onnxruntime. Hence this pass,
whose rule (scope in, scope out) is the one the INT8 quantizer already uses (`fna_zoo.export.quantize`).
"""
from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Sequence

from ..fileio import atomic_path
from .fp16_info import DEFAULT_FP16_SCOPES, Fp16Info
from .fp16_passes import FP16_MAX, FP32_OPS, PASSES, refuse_unconvertible, start
from .load import check_onnx

if TYPE_CHECKING:
    import onnx

__all__ = ['DEFAULT_FP16_SCOPES', 'FP16_MAX', 'FP32_OPS', 'Fp16Info', 'convert_fp16', 'convert_fp16_file',
           'stamp_fp16']

_logger = logging.getLogger(__name__)


def convert_fp16(model: 'onnx.ModelProto', fp16_scopes: Sequence[str] | None = DEFAULT_FP16_SCOPES,
                 check: bool = True) -> tuple['onnx.ModelProto', Fp16Info]:
    """A mixed-precision copy of a float32 ONNX model (see the module docstring); inputs and outputs stay float32.

    Args:
        model: The float32 model (e.g. `fna-export`'s file; not modified).
        fp16_scopes: Node-name prefixes of the nodes to run in fp16 (default: `/body/` and `/core/`, the
            network of fna_zoo's exports); None: every node (a latency-table part: all network).
        check: Run `onnx.checker` (full check) on the result.

    Returns:
        (the converted model, what was converted).

    Raises:
        ValueError: The model is already fp16 or quantized, has subgraphs, has no node under `fp16_scopes`, or
            the result fails the checker (one line naming the first problem).
    """
    refuse_unconvertible(model)
    work = start(model, tuple(fp16_scopes) if fp16_scopes is not None else None)
    for step in PASSES:
        step(work)
    if check:
        check_onnx(work.model, 'the fp16 model')
    _logger.info('fp16: %s', work.info.summary())
    return work.model, work.info


def stamp_fp16(model: 'onnx.ModelProto', info: Fp16Info, **extra: str) -> None:
    """Record in a converted model's `metadata_props` that it is fp16 and what runs in fp16 (the other entries
    kept, `extra` added).

    Args:
        model: The converted model (changed in place).
        info: What `convert_fp16` converted.
        **extra: More entries (strings).
    """
    meta = {p.key: p.value for p in model.metadata_props}
    meta.update(precision='fp16', fp16=info.metadata(), **extra)
    del model.metadata_props[:]
    for k, v in meta.items():
        model.metadata_props.add(key=k, value=v)


def convert_fp16_file(src: str | os.PathLike, dst: str | os.PathLike,
                      fp16_scopes: Sequence[str] | None | str = 'auto') -> Fp16Info:
    """`convert_fp16` of an ONNX file into another (written atomically), its metadata kept plus a `precision`
    and an `fp16` entry saying what runs in fp16.

    Args:
        src: The float32 ONNX file.
        dst: The fp16 file to write.
        fp16_scopes: See `convert_fp16`; 'auto': the default scopes when the model has nodes under them (an
            fna_zoo export), else every node (a latency-table part or another exporter's file).
    """
    import onnx

    model = onnx.load(str(src))
    if fp16_scopes == 'auto':
        names = [n.name for n in model.graph.node]
        fp16_scopes = DEFAULT_FP16_SCOPES if any(x.startswith(DEFAULT_FP16_SCOPES) for x in names) else None
    m16, info = convert_fp16(model, fp16_scopes)  # type: ignore[arg-type]
    stamp_fp16(m16, info)
    with atomic_path(dst, suffix='.tmp.onnx') as tmp:
        onnx.save(m16, str(tmp))
    return info
