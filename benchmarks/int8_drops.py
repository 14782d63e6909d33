"""The INT8 AP drop of the EfficientNet-Lite0 detector against the MobileNetV2 one (issue 32).

EfficientNet-Lite (Tan & Le, EfficientNet, ICML 2019 - https://arxiv.org/abs/1905.11946; the Lite variants drop
squeeze-excite and use ReLU6 for integer hardware) should keep its AP in INT8 at least as well as MobileNetV2.
Each detector is the seed of its study (RetinaNet, the 400-step tree recipe: `configs/trees_retinanet.yaml` and
`configs/trees_retinanet_lite0.yaml`), retrain seeds 0 and 1 (run folders `runs/study/seed_r<k>` and
`runs/study_lite0/seed_r<k>` of `benchmarks/adaptation_study.py`). Each is exported through
`fna_zoo.export.export` to fp32 ONNX and to the two INT8 forms (onnxruntime's static QDQ, OpenVINO's NNCF IR), from
the same 32 calibration images, and scored on the 14 validation tiles; the fallback is off, so the drop is plain
INT8's. Writes `benchmarks/results/<machine>/int8_drops.{md,json}`.

    python benchmarks/int8_drops.py [--runs-root runs]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from fna_zoo.fileio import atomic_write_text  # noqa: E402

FAMILIES = (('mobilenetv2', 'study'), ('lite0', 'study_lite0'))
FORMATS = ('onnx-int8', 'openvino-int8')


def main(argv: list[str] | None = None) -> int:
    from fna_zoo.export import export
    from fna_zoo.runtime.machine import machine_slug

    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--runs-root', default='runs', help='where the study run folders are (default runs)')
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1], help='retrain seeds (default 0 1)')
    args = p.parse_args(argv)
    rows = []
    for family, study in FAMILIES:
        for k in args.seeds:
            ckpt = Path(args.runs_root) / study / f'seed_r{k}' / 'final.pth'
            if not ckpt.is_file():
                p.error(f'{ckpt} does not exist; expected the study retrain (benchmarks/adaptation_study.py)')
            res = export(str(ckpt), formats=['onnx', *FORMATS], output=f'runs/int8_drops/{family}_r{k}.onnx',
                         data_path='asset:neon_trees', int8_fallback=False, strict=False, ap_drop_max=1.0)
            print(res.summary(), flush=True)
            for f in FORMATS:
                g = res[f].gate('ap')
                ok = g.ap_after is not None
                rows.append({'family': family, 'checkpoint': str(ckpt), 'format': f,
                             'AP_fp32': round(100 * g.ap_before['AP'], 2),
                             'AP_int8': round(100 * g.ap_after['AP'], 2) if ok else None,
                             'AP50_fp32': round(100 * g.ap_before['AP50'], 2),
                             'AP50_int8': round(100 * g.ap_after['AP50'], 2) if ok else None,
                             'drop_AP': round(100 * g.value, 2) if g.value is not None else None,
                             'mb_int8': round(res[f].size_mb, 2) if res[f].path else None, 'note': g.note})
    lines = ['# INT8 AP drop: EfficientNet-Lite0 against MobileNetV2 (RetinaNet, tree recipe)', '',
             f'`python benchmarks/int8_drops.py`; 14 validation tiles of asset:neon_trees, 32 calibration images, no '
             'fallback. AP in %; drop = fp32 AP - INT8 AP (negative: INT8 scored higher).', '',
             '| seed family | checkpoint | INT8 form | AP fp32 | AP INT8 | drop | AP50 fp32 | AP50 INT8 | MB |',
             '|---|---|---|---|---|---|---|---|---|']
    for r in rows:
        lines.append(f"| {r['family']} | {r['checkpoint']} | {r['format']} | {r['AP_fp32']} | {r['AP_int8']} | "
                     f"{r['drop_AP']} | {r['AP50_fp32']} | {r['AP50_int8']} | {r['mb_int8']} |")
    out = ROOT / 'benchmarks' / 'results' / machine_slug()
    atomic_write_text(out / 'int8_drops.md', '\n'.join(lines) + '\n')
    atomic_write_text(out / 'int8_drops.json', json.dumps({'rows': rows}, indent=1) + '\n')
    print('\n'.join(lines))
    return 0


if __name__ == '__main__':
    sys.exit(main())
