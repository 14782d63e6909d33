"""The runtime layer: one runtime vocabulary, one onnxruntime session recipe, the runners and the timing core.

Shared by `fna-bench` (`fna_zoo.bench`), the latency tables of the search (`fna_zoo.nas.latency`) and the
export (`fna_zoo.export`: parity, INT8 latency, TensorRT engines); it imports none of them. What an ONNX file
is (loading, precision, the quantized-op set, the fp16 conversion) is the floor below: `fna_zoo.onnxgraph`.

* `names`: canonical runtime names (`torch`, `torch-fp16`, `torch-compile`, `onnxruntime`, `tensorrt`,
  `tensorrt-fp16`) with a separate device (`cpu` / `cuda`), and the old names as aliases (`canonical_runtime`);
* `timing`: the timing core (`time_callable`, `time_interleaved`, `paired_ratio`, `time_stages`, `LatencyStats`);
* `preprocess`: the deployment pre-processing of the exported detectors (decode, resize, [0, 1]; numpy and PIL);
* `machine`: what a measurement ran on (`machine_info`);
* `ort`: the onnxruntime session recipe (`ort_session`), its record (`session_record`) and I/O binding;
* `runners`: (module or ONNX model + inputs) -> `Runner`, one timed inference per runtime;
* `fp16`: deprecated alias (one release) of the fp16 conversion, now `fna_zoo.onnxgraph.fp16`;
* `tensorrt`: strongly typed engine building and running (only where `tensorrt` is installed).

Importing this package loads only the standard library, numpy and `names` / `timing`; torch, onnx,
onnxruntime and tensorrt are imported by the modules that need them.
"""
from .names import ALIASES, RUNTIMES, canonical_runtime, runtime_label, runtime_precision
from .timing import (LatencyStats, cuda_sync, paired_ratio, stats_from_times, time_callable, time_interleaved,
                     time_stages)

__all__ = ['RUNTIMES', 'ALIASES', 'canonical_runtime', 'runtime_label', 'runtime_precision', 'LatencyStats',
           'cuda_sync', 'paired_ratio', 'stats_from_times', 'time_callable', 'time_interleaved', 'time_stages']
