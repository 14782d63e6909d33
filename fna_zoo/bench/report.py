"""The latency-vs-AP report: a markdown table and a PNG plot joining measured latency with AP.

Rows are the published architectures (MobileNetV2 and FNA backbones in RetinaNet and SSDLite) with the
paper's COCO AP (marked 'paper') and any retrained run folders given (AP from their metrics.json, measured
here, on the data named). Latency comes from a `fna-bench` results file: the backbone alone, batch 1, at the
detector's input size, matched by architecture (`arch_id`), one column per runtime (canonical names; files
written before the runtime names were unified say e.g. `eager` / `ort` in a `backend` column, read as their
aliases). Params / MAdds are `count_arch` of the backbone at that size.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ..fileio import portable_path, save_figure
from ..runtime.machine import cpu_label
from ..runtime.names import canonical_runtime

__all__ = ['PUBLISHED', 'ReportEntry', 'published_entries', 'run_entry', 'build_report', 'write_report', 'row_runtime']

_logger = logging.getLogger(__name__)

# The paper's COCO AP (FNA, ICLR 2020, Tables 1-2; /work/shared/reference/method.md §6.1).
PUBLISHED = [
    ('RetinaNet', 'MobileNetV2', 'mobilenetv2_100', 32.8, (800, 1088)),
    ('RetinaNet', 'FNA', 'fna_retinanet_backbone', 33.9, (800, 1088)),
    ('SSDLite', 'MobileNetV2', 'mobilenetv2_100', 22.1, (320, 320)),
    ('SSDLite', 'FNA', 'fna_ssdlite_backbone', 23.3, (320, 320)),
]


def row_runtime(row: dict[str, Any]) -> str:
    """The canonical runtime name of a result row, old (`backend`: `eager`, `ort`, ...) or new (`runtime`).

    Args:
        row: A row of a fna-bench results file.
    """
    name = row.get('runtime') or row.get('backend')
    if not name:
        raise ValueError(f"result row of {row.get('model')!r} names no runtime; expected a fna-bench results row")
    return canonical_runtime(str(name))[0]


@dataclass
class ReportEntry:
    """One row of the report.

    Args:
        detector: 'RetinaNet' or 'SSDLite'.
        backbone: Display name.
        spec: The backbone arch (zoo name or arch file).
        ap: COCO-style AP in points (0-100), or None.
        source: 'paper' or 'measured here'.
        dataset: What the AP was measured on.
        size: (H, W) input size for latency and MAdds.
    """

    detector: str
    backbone: str
    spec: str
    ap: float | None
    source: str
    dataset: str
    size: tuple[int, int]


def published_entries() -> list[ReportEntry]:
    """The paper's four detector / backbone pairs."""
    return [ReportEntry(d, b, s, ap, 'paper', 'COCO val (paper)', size) for d, b, s, ap, size in PUBLISHED]


def run_entry(run_dir: str | os.PathLike) -> ReportEntry:
    """A retrained run folder (config.yaml + metrics.json of `fna-retrain`) as a report row.

    The backbone is the run's own arch.yaml snapshot when it has one (so a moved run folder reports the same),
    else the config's spec (a timm model, or the detector's default).

    Args:
        run_dir: The run folder.
    """
    import yaml

    from ..checks import check_input_folder
    from ..detection import DEFAULT_DETECTOR, get_detector

    run_dir = check_input_folder(run_dir, 'run folder', 'a retrain run folder')
    cfg_path, met_path = run_dir / 'config.yaml', run_dir / 'metrics.json'
    for p in (cfg_path, met_path):
        if not p.is_file():
            raise FileNotFoundError(f'run folder {str(run_dir)!r} has no {p.name}; expected a retrain run folder')
    try:
        cfg = yaml.safe_load(cfg_path.read_text()) or {}
        metrics = json.loads(met_path.read_text())
    except (ValueError, yaml.YAMLError, RecursionError):  # NOTE: UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise ValueError(f'run folder {str(run_dir)!r} has an unreadable config.yaml or metrics.json; expected the '
                         'files of a retrain run') from None
    if not isinstance(cfg, dict) or not isinstance(metrics, dict) or 'AP' not in metrics:
        raise ValueError(f'{str(met_path)!r} has no AP; expected the metrics of a test run')
    if isinstance(metrics['AP'], bool) or not isinstance(metrics['AP'], (int, float)):
        raise ValueError(f"{str(met_path)!r} has AP {metrics['AP']!r}; expected a number")
    try:
        det = get_detector(str(cfg.get('detector', DEFAULT_DETECTOR)))
    except ValueError as e:
        raise ValueError(f'{str(cfg_path)!r}: {e}') from None
    model = cfg.get('model') or {}
    kwargs = model.get('kwargs') or {}
    configured = str(model.get('backbone') or det.default_backbone)
    snapshot = run_dir / 'arch.yaml'
    spec = str(snapshot) if snapshot.is_file() else configured
    size = det.export_size(kwargs)
    data = cfg.get('data') or {}
    if data.get('path'):
        dataset = f"{portable_path(str(data['path']))} ({data.get('val_split', 'val2017')})"  # NOTE: for the table
    else:
        syn = data.get('synthetic') or {}
        dataset = f"built-in synthetic set ({syn.get('num_classes', '?')} classes, {syn.get('num_val', '?')} val images)"
    return ReportEntry(det.label, f'{Path(configured).name} ({run_dir.name})', spec, 100.0 * float(metrics['AP']),
                       'measured here', dataset, size)


def _complexity(spec: str, size: tuple[int, int], label: str) -> tuple[float | None, float | None]:
    """(M params, G MAdds) of the backbone of a report row (None, None for a timm model).

    Args:
        spec: The backbone arch (zoo name or arch file).
        size: (H, W).
        label: The row's detector (`DetectorSpec.label`).
    """
    from ..arch import is_arch_spec, load_arch
    from ..complexity import count_arch
    from ..detection import DETECTORS

    if not is_arch_spec(spec):
        return None, None
    arch = load_arch(spec)
    # NOTE: RetinaNet takes the stage ends (no 1x1 head conv, as the paper's 4.85B / 1.81M MobileNetV2
    # backbone); SSDLite keeps the head conv to 1280, one of its feature maps (`DetectorSpec.head_conv`).
    head_conv = next((d.head_conv for d in DETECTORS.values() if d.label == label), True)
    c = count_arch(arch if head_conv else arch.replace(head_chs=None), size)
    return c.mparams, c.gmadds


def build_report(results: Sequence[dict[str, Any]], entries: Sequence[ReportEntry]) -> list[dict[str, Any]]:
    """Join entries with latency rows (backbone, batch 1, same input size, same arch).

    Args:
        results: `fna-bench` rows (old ones with a `backend` column too).
        entries: Report entries.

    Returns:
        One dict per entry: the entry fields, params_m, gmadds and `latency` {'<runtime> <precision>[ cuda]': p50
        ms}.
    """
    from ..runtime.names import device_kind
    from ..specs import arch_id, resolve_model

    out = []
    for e in entries:
        aid = arch_id(resolve_model(e.spec))
        lat = {}
        for r in results:
            if (r.get('arch_id') == aid and r.get('what') == 'backbone' and int(r.get('batch') or 0) == 1
                    and (int(r['input_h']), int(r['input_w'])) == tuple(e.size) and r.get('p50_ms') is not None):
                where = ' cuda' if device_kind(r.get('device') or 'cpu') == 'cuda' else ''
                lat[f"{row_runtime(r)} {r['precision']}{where}"] = float(r['p50_ms'])
        params, gmadds = _complexity(e.spec, e.size, e.detector)
        out.append({**e.__dict__, 'params_m': params, 'gmadds': gmadds, 'latency': lat})
    return out


def _fmt(v: float | None, nd: int = 1) -> str:
    return '—' if v is None else f'{v:.{nd}f}'


def write_report(joined: Sequence[dict[str, Any]], outdir: str | os.PathLike, machine: dict[str, Any] | None = None,
                 stem: str = 'latency_vs_ap') -> tuple[Path, Path]:
    """Write `<stem>.md` (table) and `<stem>.png` (latency vs AP), atomically.

    Args:
        joined: `build_report` output.
        outdir: Output folder.
        machine: The machine record of the latency rows (named in the table's caption).
        stem: File name stem.
    """
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    from ..fileio import atomic_write_text

    outdir = Path(outdir)
    keys = sorted({k for j in joined for k in j['latency']})
    head = ['detector', 'backbone', 'AP', 'AP source', 'AP data', 'input', 'params (M)', 'MAdds (G)'] + \
        [f'{k} p50 ms' for k in keys]
    lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    for j in joined:
        cells = [j['detector'], f"`{j['backbone']}`", _fmt(j['ap']), j['source'], j['dataset'],
                 f"{j['size'][0]}×{j['size'][1]}", _fmt(j['params_m'], 2), _fmt(j['gmadds'], 2)]
        cells += [_fmt(j['latency'].get(k)) for k in keys]
        lines.append('| ' + ' | '.join(cells) + ' |')
    m = machine or {}
    caption = (f"Latency: backbone only (features_only, normalisation included), batch 1, median (p50) in ms, "
               f"on {cpu_label(m)} ({m.get('cores', '?')} cores, {m.get('threads', '?')} threads; "
               f"torch {m.get('torch', '?')}, onnxruntime {m.get('onnxruntime', '?')}; random-init weights). "
               "AP 'paper' is the FNA paper's COCO AP of the whole detector, not measured here; Params / MAdds are "
               "`count_arch` of the backbone at that input size. '—': not measured.")
    text = '\n'.join(['# Latency vs AP', '', caption, ''] + lines) + '\n'
    md = outdir / f'{stem}.md'
    atomic_write_text(md, text)

    panels: list[tuple[str | None, str]] = [(d, 'paper') for d in dict.fromkeys(row[0] for row in PUBLISHED)]
    if any(j['source'] != 'paper' and j['ap'] is not None and j['latency'] for j in joined):
        panels.append((None, 'measured here'))
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    colors = {k: f'C{i}' for i, k in enumerate(keys)}
    for ax, (det, source) in zip(axes[0], panels):
        rows = [j for j in joined if j['ap'] is not None and j['latency'] and j['source'] == source
                and (det is None or j['detector'] == det)]
        for n, j in enumerate(rows):
            marker = 'os^Dv<>'[n % 7]
            pts = sorted(j['latency'].items(), key=lambda kv: kv[1])
            ax.plot([ms for _, ms in pts], [j['ap']] * len(pts), color='0.8', zorder=1)
            for k, ms in pts:
                ax.scatter(ms, j['ap'], marker=marker, color=colors[k], zorder=2, s=40)
            ax.annotate(j['backbone'], (pts[0][1], j['ap']), fontsize=8, xytext=(0, 6), textcoords='offset points')
        title = f'{det}: AP from the paper' if det else 'retrained here: AP measured here'
        ax.set_title(title, fontsize=9)
        ax.set_xlabel('backbone latency p50 (ms, batch 1)')
        ax.set_ylabel('AP')
        ax.margins(x=0.15, y=0.25)
        ax.grid(alpha=0.3)
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], marker='o', ls='', color=c, label=k) for k, c in colors.items()]
    fig.legend(handles=handles, loc='lower center', ncol=max(1, len(handles)), fontsize=8, frameon=False)
    fig.suptitle(f"{cpu_label(m)} · {m.get('threads', '?')} threads", fontsize=9)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    png = outdir / f'{stem}.png'
    save_figure(fig, png)
    return md, png
