"""Moved: `python examples/predict_onnx.py ...` (the torch-free prediction example; this root folder held no export
code, which is `fna_zoo/export/`). This old path still runs it, with a DeprecationWarning, for one release."""
import runpy
import warnings
from pathlib import Path

if __name__ == '__main__':
    warnings.warn('export/predict_onnx.py moved to examples/predict_onnx.py; run it from there (the old path is kept '
                  'for one release)', DeprecationWarning, stacklevel=1)
    runpy.run_path(str(Path(__file__).resolve().parents[1] / 'examples' / 'predict_onnx.py'), run_name='__main__')
