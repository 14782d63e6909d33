"""Latency benchmarks (`fna-bench`): the grid of models x runtimes x batch sizes, comparisons and the report.

Not imported by `import fna_zoo`. The runtimes, their runners, the timing core and the machine record are the
runtime layer's (`fna_zoo.runtime`), shared with the latency tables of the search; this package resolves
models into modules and ONNX files (`backends`), runs the grid and comparisons (`grid`; `runner` is its old
name, a deprecated alias), writes the latency-vs-AP report (`report`), and makes the deployment table of a
detector (`--ap`: the cells and their end-to-end pipelines in `pipelines`, AP and latency per cell in `deploy`).
"""
