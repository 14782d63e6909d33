"""The runtime layer: one runtime vocabulary, one onnxruntime session recipe, the runners and the timing core.

Shared by `fna-bench` (`fna_zoo.bench`), the latency tables of the search (`fna_zoo.nas.latency`) and the
export (`fna_zoo.export`: parity, INT8 latency, TensorRT engines); it imports none of them. What an ONNX file
is (loading, precision, the quantized-op set, the fp16 conversion) is the floor below: `fna_zoo.onnxgraph`.

* `plugin`, `registry`: one `RuntimePlugin` per runtime (`torch_runtime`, `ort_runtime`, `tensorrt_runtime`,
  `openvino`) in one registry, `PLUGINS`: availability, version, precisions, options, runners, deployment cells;
* `names`: canonical runtime names (`torch`, `torch-fp16`, `torch-compile`, `onnxruntime`, `tensorrt`,
  `tensorrt-fp16`, `openvino`; read from the registry) with a separate device (`devices`: `cpu` / `cuda`), and
  the old names as aliases (`canonical_runtime`); `select`: the plugin of a name, `check_runtime`, `module_runner`;
* `timing`: the timing core (`time_callable`, `time_interleaved`, `paired_ratio`, `time_stages`, `LatencyStats`);
* `preprocess`: the deployment pre-processing of the exported detectors (decode, resize, [0, 1]; PIL and numpy,
  with pyspng / simplejpeg / OpenCV where installed, same numerics);
* `machine`: what a measurement ran on (`machine_info`);
* `ort`: the onnxruntime session recipe (`ort_session`), its record (`session_record`) and I/O binding;
* `runners`: (module or ONNX model + inputs) -> `Runner`, one timed inference per runtime;
* `fp16`: deprecated alias (one release) of the fp16 conversion, now `fna_zoo.onnxgraph.fp16`;
* `tensorrt`: strongly typed engine building and running (only where `tensorrt` is installed).

Importing this package loads only the standard library, numpy, `names` (and through it the plugin classes) and
`timing`; torch, onnx, onnxruntime, tensorrt and openvino are imported by the modules that need them.
"""
from .names import ALIASES, RUNTIMES, canonical_runtime, runtime_label, runtime_precision
from .timing import (LatencyStats, cuda_sync, paired_ratio, stats_from_times, time_callable, time_interleaved,
                     time_stages)

__all__ = ['RUNTIMES', 'ALIASES', 'canonical_runtime', 'runtime_label', 'runtime_precision', 'LatencyStats',
           'cuda_sync', 'paired_ratio', 'stats_from_times', 'time_callable', 'time_interleaved', 'time_stages']
