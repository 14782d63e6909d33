"""TensorRT engines from ONNX files, strongly typed, and a runner timing one (only where `tensorrt` is installed).

TensorRT 11 removed weak typing (`BuilderFlag.FP16` / `INT8`, the INT8 calibrators, trtexec's `--fp16`,
`--int8` and `--best`): every network is strongly typed, each tensor has the type the ONNX file gives it. So
the precision of an engine is the precision of its ONNX file, for TensorRT 10 and 11 alike (`engine_plan`):

| engine | ONNX file | builder settings | trtexec |
|---|---|---|---|
| fp32 | the float32 export (`fna-export`) | strongly typed network, no precision flag | no precision flag |
| fp16 | the mixed-precision export (`fna-export --fp16`, `<stem>.fp16.onnx`) | the same | the same |
| int8 | the QDQ export (`fna-export --int8 --format engine`: symmetric int8 Q/DQ) | the same | the same |

TensorRT 10 needs the `STRONGLY_TYPED` network creation flag (trtexec `--stronglyTyped`); TensorRT 11 is always
strongly typed (the flag is deprecated and ignored there, so it is not set). A precision the file cannot
give is refused before TensorRT is touched (`engine_plan`: a fp16 engine from a float32 file, an int8 one from
a file without Q/DQ, or from Q/DQ that TensorRT cannot run: uint8 or non-zero zero points, int32 biases).

The `tensorrt` / `tensorrt-fp16` runtimes of fna-bench and the latency tables, and `fna-export --format
engine` (`fna_zoo.export.tensorrt`), build and run engines with this module. Engines are tied to the GPU
model and the TensorRT version that built them, so the build records both in `<engine>.json` beside the
engine; ship the ONNX file and rebuild on the target. Where `tensorrt` is missing, `build_engine` raises
`TensorRTUnavailable` with the `trtexec` command that builds the same engine (TensorRT 11's form).
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Sequence

import numpy as np

from ..fileio import atomic_path, atomic_write_text
from ..onnxgraph.load import load_onnx
from ..onnxgraph.precision import onnx_precision
from ..onnxgraph.quant import QDQ_OPS, QOPERATOR_OPS

if TYPE_CHECKING:
    import onnx
    import torch

__all__ = ['TensorRTUnavailable', 'Precision', 'PRECISIONS', 'DEFAULT_TRT_MAJOR', 'EnginePlan', 'engine_plan',
           'qdq_problems', 'tensorrt_major', 'trtexec_command', 'build_engine', 'tensorrt_missing',
           'import_tensorrt', 'EngineRunner']

_logger = logging.getLogger(__name__)

Precision = Literal['fp32', 'fp16', 'int8']
PRECISIONS: tuple[str, ...] = ('fp32', 'fp16', 'int8')
# the TensorRT a trtexec hint is written for when none is installed (the registry's current major)
DEFAULT_TRT_MAJOR = 11
# where each precision's ONNX file comes from (for error messages)
_SOURCE = {'fp32': 'the float32 export (fna-export without --fp16 / --int8)',
           'fp16': 'the fp16 export (fna-export --fp16 writes <stem>.fp16.onnx)',
           'int8': 'the QDQ export (fna-export --int8 --format engine writes <stem>.int8.onnx)'}


class TensorRTUnavailable(ImportError):
    """The `tensorrt` Python package is not importable."""


def tensorrt_missing(why: str, commands: Sequence[str] = (), written: bool = False) -> TensorRTUnavailable:
    """The one error for a missing `tensorrt`: what needs it, what to install, and the `trtexec` command(s) that
    build the same engine(s).

    Args:
        why: What needs TensorRT (starts the message).
        commands: `trtexec_command`s of the engines asked for.
        written: Whether their ONNX files are written (fna-export) rather than to build elsewhere.
    """
    text = f"{why} needs the tensorrt Python package (pip install 'tensorrt' on a machine with an NVIDIA GPU and CUDA)"
    if commands:
        many = len(commands) > 1
        what = f'the engine{"s" if many else ""}'
        text += (f'; the ONNX file{"s are" if many else " is"} written, build {what} with: ' if written
                 else f'; build {what} elsewhere with: ') + ' ; '.join(commands)
    return TensorRTUnavailable(text)


def import_tensorrt(why: str):
    """`import tensorrt`, or `TensorRTUnavailable` saying what needs it and what to install.

    Args:
        why: What needs TensorRT (starts the error message).
    """
    try:
        import tensorrt as trt
    except ImportError:
        raise tensorrt_missing(why) from None
    return trt


def tensorrt_major(trt: Any = None) -> int | None:
    """The major version of the installed TensorRT (of the `trt` module when given), None when not installed.

    Args:
        trt: An imported `tensorrt` module (or anything with a `__version__`).
    """
    if trt is None:
        try:
            import tensorrt as trt
        except ImportError:
            return None
    try:
        return int(str(trt.__version__).split('.')[0])
    except (AttributeError, ValueError):
        return None


def _major_or_default(trt_major: int | None) -> int:
    major = trt_major if trt_major is not None else (tensorrt_major() or DEFAULT_TRT_MAJOR)
    if major < 10:
        raise ValueError(f'TensorRT {major} is too old; expected TensorRT 10 or 11 (strongly typed networks)')
    return major


def qdq_problems(model: 'str | os.PathLike | onnx.ModelProto') -> list[str]:
    """Why TensorRT cannot build the Q/DQ of a quantized ONNX model (empty when it can): TensorRT takes symmetric
    int8 Q/DQ only (int8 zero points, all 0) and no integer-operator (QOperator) nodes; an int32
    `DequantizeLinear` (onnxruntime's quantized Conv bias) has no TensorRT layer.

    Args:
        model: An ONNX file or model.
    """
    from onnx import TensorProto, numpy_helper

    m = load_onnx(model)
    inits = {i.name: i for i in m.graph.initializer}
    consts = {n.output[0]: a.t for n in m.graph.node if n.op_type == 'Constant' for a in n.attribute if a.name == 'value'}
    problems: list[str] = []
    qop = sorted({n.op_type for n in m.graph.node if n.op_type in QOPERATOR_OPS})
    if qop:
        problems.append(f'integer-operator nodes ({", ".join(qop)}; TensorRT takes the QDQ format)')
    uint8 = nonzero = int32 = 0
    for n in m.graph.node:
        if n.op_type not in QDQ_OPS:
            continue
        if n.op_type == 'DequantizeLinear' and n.input[0] in inits and inits[n.input[0]].data_type == TensorProto.INT32:
            int32 += 1
            continue
        if len(n.input) < 3 or not n.input[2]:
            continue
        zp = inits.get(n.input[2], consts.get(n.input[2]))
        if zp is None:
            continue
        if zp.data_type == TensorProto.UINT8:
            uint8 += 1
        if np.any(numpy_helper.to_array(zp) != 0):
            nonzero += 1
    if uint8:
        problems.append(f'{uint8} Q/DQ nodes with uint8 zero points (asymmetric activations; TensorRT takes int8)')
    if nonzero:
        problems.append(f'{nonzero} Q/DQ nodes with non-zero zero points (TensorRT takes symmetric quantization)')
    if int32:
        problems.append(f'{int32} int32 DequantizeLinear nodes (quantized biases; TensorRT takes float biases)')
    return problems


@dataclass(frozen=True)
class EnginePlan:
    """How one engine is built: which ONNX file, which network creation flags, and no precision flag.

    Args:
        precision: 'fp32', 'fp16' or 'int8' (what the ONNX file holds).
        onnx_path: The ONNX file the engine is built from.
        trt_major: The TensorRT major version the plan is for (10 or 11).
        network_flags: Network creation flags to set (`STRONGLY_TYPED` on TensorRT 10; none on 11).
        builder_flags: Builder precision flags (always empty: strong typing; TensorRT 11 has none).
        trtexec_flags: trtexec flags beyond shapes and files (`--stronglyTyped` on TensorRT 10).
    """

    precision: str
    onnx_path: Path
    trt_major: int
    network_flags: tuple[str, ...]
    builder_flags: tuple[str, ...] = ()
    trtexec_flags: tuple[str, ...] = ()

    def network_flag_bits(self, trt: Any) -> int:
        """The `create_network` argument for these flags on the imported `tensorrt` module."""
        bits = 0
        for name in self.network_flags:
            bits |= 1 << int(getattr(trt.NetworkDefinitionCreationFlag, name))
        return bits


def engine_plan(onnx_path: str | os.PathLike, precision: str, trt_major: int | None = None,
                model: 'onnx.ModelProto | None' = None) -> EnginePlan:
    """The strongly typed build of a `precision` engine from `onnx_path`, or a one-line refusal.

    Args:
        onnx_path: The ONNX file.
        precision: 'fp32', 'fp16' or 'int8'.
        trt_major: TensorRT major version (default: the installed one, else `DEFAULT_TRT_MAJOR`).
        model: The loaded model of `onnx_path` (default: read the file).

    Raises:
        ValueError: An unknown precision, TensorRT older than 10, or a file that cannot give `precision`.
    """
    if precision not in PRECISIONS:
        raise ValueError(f'engine precision {precision!r} is unknown; expected one of {", ".join(PRECISIONS)}')
    major = _major_or_default(trt_major)
    m = model if model is not None else load_onnx(onnx_path)
    have = onnx_precision(m)
    if have != precision:
        raise ValueError(f'a {precision} engine needs {_SOURCE[precision]}; {str(onnx_path)!r} is a {have} ONNX file '
                         f'(TensorRT {major} builds strongly typed networks: the file sets the precision, no '
                         'builder flag does)')
    if precision == 'int8':
        problems = qdq_problems(m)
        if problems:
            raise ValueError(f'TensorRT cannot build the Q/DQ of {str(onnx_path)!r}: {"; ".join(problems)}; expected '
                             'symmetric int8 Q/DQ with float biases (fna-export --int8 --format engine writes it)')
    strongly = ('STRONGLY_TYPED',) if major < 11 else ()
    return EnginePlan(precision, Path(onnx_path), major, strongly, (),
                      ('--stronglyTyped',) if major < 11 else ())


def _shapes(input_size: tuple[int, int], batch: int, max_batch: int, dynamic: bool) -> tuple[str, str, str]:
    h, w = input_size
    lo, hi = (1, max_batch) if dynamic else (batch, batch)
    return (f'images:{lo}x3x{h}x{w}', f'images:{batch}x3x{h}x{w}', f'images:{hi}x3x{h}x{w}')


def trtexec_command(onnx_path: str | os.PathLike, engine_path: str | os.PathLike, input_size: tuple[int, int],
                    batch: int = 1, max_batch: int = 32, dynamic: bool = True, trt_major: int | None = None) -> str:
    """The `trtexec` command line that builds the engine `build_engine` would (strongly typed: the ONNX file
    sets the precision; no `--fp16` / `--int8`, which TensorRT 11 removed).

    Args:
        onnx_path: The ONNX file (float32, fp16 or QDQ: the engine's precision).
        engine_path: Engine to write.
        input_size: (H, W).
        batch: Optimal batch.
        max_batch: Largest batch of the optimisation profile.
        dynamic: Whether the batch dimension is dynamic (a static file takes no shape flags).
        trt_major: TensorRT major version (default: the installed one, else `DEFAULT_TRT_MAJOR`): 10 adds
            `--stronglyTyped`.
    """
    major = _major_or_default(trt_major)
    cmd = f'trtexec --onnx={onnx_path} --saveEngine={engine_path}'
    if dynamic:
        lo, opt, hi = _shapes(input_size, batch, max_batch, dynamic)
        cmd += f' --minShapes={lo} --optShapes={opt} --maxShapes={hi}'
    cmd += f' --timingCacheFile={Path(engine_path).with_suffix(".timing.cache")}'
    return cmd + (' --stronglyTyped' if major < 11 else '')


def build_engine(onnx_path: str | os.PathLike, engine_path: str | os.PathLike, input_size: tuple[int, int],
                 precision: Precision = 'fp32', batch: int = 1, max_batch: int = 32, dynamic: bool = True,
                 timing_cache: str | os.PathLike | None = None, workspace_gib: float = 4.0,
                 why: str = 'building a TensorRT engine') -> Path:
    """Build a strongly typed serialized TensorRT engine from an ONNX file (atomic write), plus `<engine>.json`
    with the TensorRT version, GPU name, precision, plan and shapes.

    Args:
        onnx_path: The ONNX file (input `images`) whose precision is `precision` (see `engine_plan`).
        engine_path: Engine to write.
        input_size: (H, W).
        precision: 'fp32', 'fp16' or 'int8': checked against the file, never a builder flag.
        batch: Optimal batch of the optimisation profile.
        max_batch: Largest batch (dynamic batch only).
        dynamic: Whether the batch dimension is dynamic.
        timing_cache: Timing cache file, read when present and written back (default: beside the engine).
        workspace_gib: Builder workspace limit.
        why: What needs TensorRT (starts the error message when it is missing).

    Raises:
        ValueError: The file cannot give `precision` (before TensorRT is imported), or TensorRT cannot parse it.
        TensorRTUnavailable: `tensorrt` is missing; the message holds the equivalent `trtexec` command.
    """
    engine_path = Path(engine_path)
    plan = engine_plan(onnx_path, precision, tensorrt_major())
    try:
        import tensorrt as trt
    except ImportError:
        raise tensorrt_missing(why, [trtexec_command(onnx_path, engine_path, input_size, batch, max_batch,
                                                     dynamic)]) from None

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(plan.network_flag_bits(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = '; '.join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ValueError(f'TensorRT cannot parse {str(onnx_path)!r}: {errors}')
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    lo, opt, hi = (tuple(int(v) for v in s.split(':')[1].split('x')) for s in _shapes(input_size, batch, max_batch,
                                                                                      dynamic))
    inp = network.get_input(0)
    if any(d < 0 for d in tuple(inp.shape)):  # a static graph (e.g. a latency-table part) needs no profile
        profile = builder.create_optimization_profile()
        profile.set_shape(inp.name, lo, opt, hi)
        config.add_optimization_profile(profile)
    cache_path = Path(timing_cache) if timing_cache else engine_path.with_suffix('.timing.cache')
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b'')
    config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f'TensorRT failed to build an engine from {str(onnx_path)!r} (see its log above)')
    with atomic_path(engine_path) as tmp:
        tmp.write_bytes(bytes(serialized))
    with atomic_path(cache_path) as tmp:
        tmp.write_bytes(bytes(config.get_timing_cache().serialize()))
    info = {'tensorrt': trt.__version__, 'gpu': _gpu_name(), 'precision': precision, 'onnx': str(onnx_path),
            'network_flags': list(plan.network_flags), 'builder_flags': list(plan.builder_flags),
            'min_shape': list(lo), 'opt_shape': list(opt), 'max_shape': list(hi), 'timing_cache': str(cache_path)}
    atomic_write_text(engine_path.with_suffix(engine_path.suffix + '.json'), json.dumps(info, indent=2))
    _logger.info('TensorRT %s %s engine for %s written to %s', trt.__version__, precision, info['gpu'], engine_path)
    return engine_path


def _gpu_name() -> str:
    try:
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'unknown'
    except Exception:  # noqa: BLE001  (only informative)
        return 'unknown'


# TensorRT data type names -> torch dtype names (by name: no `trt.nptype`, whose numpy types vary by version)
_TORCH_DTYPES = {'FLOAT': 'float32', 'HALF': 'float16', 'BF16': 'bfloat16', 'INT8': 'int8', 'UINT8': 'uint8',
                 'INT32': 'int32', 'INT64': 'int64', 'BOOL': 'bool'}


def _torch_dtype(trt_dtype: Any) -> 'torch.dtype':
    import torch

    name = getattr(trt_dtype, 'name', str(trt_dtype).rsplit('.', 1)[-1])
    if name not in _TORCH_DTYPES:
        raise ValueError(f'engine tensor type {name} has no torch buffer here; expected one of {", ".join(_TORCH_DTYPES)}')
    return getattr(torch, _TORCH_DTYPES[name])


class EngineRunner:
    """Runs a serialized TensorRT engine on CUDA tensors (TensorRT 10 / 11 named-tensor API, torch buffers).

    Every input and output lives in a torch CUDA tensor allocated once, so a call is one
    `execute_async_v3` on torch's current stream (time it with a CUDA synchronisation, as fna-bench does).

    Args:
        engine_path: The engine file (`build_engine` or `trtexec --saveEngine`).
        inputs: The CUDA input tensor(s), in the engine's input order (their shapes set the dynamic dimensions).
    """

    def __init__(self, engine_path: str | os.PathLike, inputs: 'torch.Tensor | Sequence[torch.Tensor]') -> None:
        import torch

        trt = import_tensorrt('timing a TensorRT engine')
        from ..checks import check_input_file

        path = check_input_file(engine_path, 'TensorRT engine', 'an .engine file built by fna-export --format engine')
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise ValueError(f'TensorRT cannot load {str(path)!r}: built by another TensorRT version or GPU, or corrupt')
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        in_names = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        tensors = [inputs] if isinstance(inputs, torch.Tensor) else list(inputs)
        if len(tensors) != len(in_names):
            raise ValueError(f'engine has inputs {in_names}; got {len(tensors)} input tensors')
        self.inputs = {n: t.contiguous() for n, t in zip(in_names, tensors)}
        for n, t in self.inputs.items():
            self.context.set_input_shape(n, tuple(t.shape))
            self.context.set_tensor_address(n, t.data_ptr())
        self.outputs: dict[str, torch.Tensor] = {}
        for n in names:
            if n in self.inputs:
                continue
            shape = tuple(self.context.get_tensor_shape(n))
            if any(d < 0 for d in shape):
                # NOTE: NonMaxSuppression outputs are data-dependent; their size is known only after a run.
                raise ValueError(f'engine output {n!r} has a data-dependent shape {shape}; time the raw export '
                                 '(fna-export --what raw) instead of the one with in-graph NMS')
            self.outputs[n] = torch.empty(shape, dtype=_torch_dtype(self.engine.get_tensor_dtype(n)), device='cuda')
            self.context.set_tensor_address(n, self.outputs[n].data_ptr())

    def __call__(self) -> dict[str, 'torch.Tensor']:
        """One inference on the bound inputs; returns the output tensors (filled once the stream is synced)."""
        import torch

        if not self.context.execute_async_v3(torch.cuda.current_stream().cuda_stream):
            raise RuntimeError('TensorRT execute_async_v3 failed (see its log above)')
        return self.outputs
