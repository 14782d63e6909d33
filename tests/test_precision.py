"""Mixed precision (issue 31): `train.amp` (off / bf16 / fp16) and `train.channels_last` in retraining and search:
config checks, one-line refusals, bf16 and channels_last runs on this CPU, exact resume with the same setting and a
refused resume with another, and fp16's gradient scaler in `optimizer_step` (the scaler runs on the CPU too)."""
import csv
import fcntl
import json
import math
import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from fna_zoo.checkpoint import load_checkpoint
from fna_zoo.cli.retrain import main as retrain_cli
from fna_zoo.cli.retrain import retrain_main
from fna_zoo.engine.config import AMP_MODES, load_config
from fna_zoo.engine.precision import (apply_memory_format, autocast, check_precision, check_resume_precision,
                                      forward_losses, grad_scaler, restore_scalers, scaler_states)
from fna_zoo.engine.run import optimizer_step
from fna_zoo.nas.config import SEARCH_DEFAULTS
from test_engine import tiny_overrides
from test_search import run_search, tiny

CPU = torch.device('cpu')
# NOTE: bf16 runs use 96-px inputs, not the 64 px of the fp32 tests: at 64 px RetinaNet's P6 is 1x1, and torch
# 2.14's CPU bf16 convolution backward gives P7's 3x3 stride-2 weight gradient non-finite values now and then for a
# 1x1 input (a NaN step; fp32 is not affected, nor are inputs of 2x2 and more, i.e. images over 64 px)
RETINA_96 = 'model.kwargs={min_size: 96, max_size: 96, head_width: 16, score_thresh: 0.0}'


def _released(folder: Path) -> bool:
    """Whether no one holds the run folder's lock (a second open file takes it only then, in this process too)."""
    fd = os.open(folder / '.lock', os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


# ------------------------------------------------------------------------------------------- config and refusals
@pytest.mark.parametrize('defaults', [None, SEARCH_DEFAULTS])
def test_config_defaults_and_bad_values(defaults):
    kw = {} if defaults is None else {'defaults': defaults}
    cfg = load_config(None, [], **kw)
    assert (cfg['train']['amp'], cfg['train']['channels_last']) == ('off', False)  # fp32 stays the default
    assert load_config(None, ['train.amp=bf16', 'train.channels_last=true'], **kw)['train']['amp'] == 'bf16'
    with pytest.raises(ValueError, match=r"^config train.amp is 'fp8'; expected one of off, bf16, fp16$"):
        load_config(None, ['train.amp=fp8'], **kw)
    with pytest.raises(ValueError, match=r'^config train.amp is True; expected a string$'):
        load_config(None, ['train.amp=on'], **kw)  # YAML's `on`: a bool, not a mode
    with pytest.raises(ValueError, match=r'^config train.channels_last is 3; expected true or false$'):
        load_config(None, ['train.channels_last=3'], **kw)


def test_precision_checks():
    assert AMP_MODES == ('off', 'bf16', 'fp16')
    check_precision('off', CPU)
    check_precision('bf16', CPU)
    with pytest.raises(ValueError) as e:
        check_precision('fp16', CPU)
    assert str(e.value) == "config train.amp is 'fp16' on cpu; fp16 needs a CUDA device (use 'bf16' on CPU)"
    with pytest.raises(ValueError, match="config train.amp is 'half'; expected one of off, bf16, fp16"):
        check_precision('half', CPU)
    assert grad_scaler('bf16', CPU) is None and grad_scaler('off', CPU) is None  # bf16 needs no scaler
    conv = nn.Conv2d(3, 4, 3)
    x = torch.rand(1, 3, 8, 8)
    with autocast('off', CPU):
        assert conv(x).dtype == torch.float32
    with autocast('bf16', CPU):
        assert conv(x).dtype == torch.bfloat16
    apply_memory_format(conv, True)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) and conv.weight.dtype == torch.float32
    # a run from before these keys resumes as fp32 and NCHW
    check_resume_precision({}, {'amp': 'off', 'channels_last': False})
    with pytest.raises(ValueError, match=r"^config train.amp is 'bf16' but the run started with 'off'; resume with "
                                         r'--set train.amp=off or start a new run$'):
        check_resume_precision({}, {'amp': 'bf16', 'channels_last': False})


def test_fp16_on_cpu_is_refused_in_one_line_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / 'fp16'
    code = retrain_cli(['--output', str(out), '--set', *tiny_overrides(tmp_path, 'train.amp=fp16')])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == ["error: config train.amp is 'fp16' on cpu; fp16 needs a CUDA device (use 'bf16' on "
                                 "CPU)"]
    assert not out.exists() and not (tmp_path / 'data').exists()  # refused before the data is built
    with pytest.raises(ValueError, match="config train.amp is 'fp16' on cpu; fp16 needs a CUDA device"):
        run_search(tmp_path, 'search_fp16', 'train.amp=fp16')
    assert not (tmp_path / 'search_fp16').exists()


# ------------------------------------------------------------------------------------------- retraining
def _losses(run) -> list[float]:
    with open(run / 'metrics.csv') as f:
        return [float(r['loss']) for r in csv.DictReader(f)]


def test_bf16_retrain_runs_and_resumes_exactly(tmp_path):
    bf16 = ('train.amp=bf16', 'train.eval_at_end=false')
    full = retrain_main(['--output', str(tmp_path / 'full'), '--set', *tiny_overrides(tmp_path, 'train.max_iters=4',
                                                                                        *bf16, kwargs=RETINA_96)])
    losses = _losses(tmp_path / 'full')
    assert full['step'] == 4 and len(losses) == 4 and all(math.isfinite(v) and v > 0 for v in losses)
    state = load_checkpoint(tmp_path / 'full' / 'final.pth')
    assert state['config']['train']['amp'] == 'bf16' and 'scaler' not in load_checkpoint(tmp_path / 'full' / 'last.pth')
    assert all(v.dtype in (torch.float32, torch.int64) for v in state['model'].values())  # fp32 master weights
    # stopped after 2 steps and resumed with the same setting: the same weights as the uninterrupted run
    retrain_main(['--output', str(tmp_path / 'part'), '--set',
                  *tiny_overrides(tmp_path, 'train.max_iters=2', *bf16, kwargs=RETINA_96)])
    retrain_main(['--output', str(tmp_path / 'part'), '--resume', '--set',
                  *tiny_overrides(tmp_path, 'train.max_iters=4', *bf16, kwargs=RETINA_96)])
    a, b = state['model'], load_checkpoint(tmp_path / 'part' / 'final.pth')['model']
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert _losses(tmp_path / 'part') == losses


def test_channels_last_retrain_and_a_resume_with_another_setting_is_refused(tmp_path, capsys):
    run = tmp_path / 'cl'
    result = retrain_main(['--output', str(run), '--set', *tiny_overrides(
        tmp_path, 'train.max_iters=2', 'train.channels_last=true', 'train.eval_at_end=false')])
    assert result['step'] == 2 and all(math.isfinite(v) for v in _losses(run))
    state = load_checkpoint(run / 'last.pth')
    assert state['config']['train']['channels_last'] is True and state['config']['train']['amp'] == 'off'
    assert state['model']['backbone.body.conv_stem.weight'].is_contiguous(memory_format=torch.channels_last)
    before = sorted(p.name for p in run.iterdir())
    for setting, message in (
            ('train.channels_last=false', "config train.channels_last is False but the run started with True; "
                                          "resume with --set train.channels_last=True or start a new run"),
            ('train.amp=bf16', "config train.amp is 'bf16' but the run started with 'off'; resume with --set "
                               "train.amp=off or start a new run")):
        capsys.readouterr()
        code = retrain_cli(['--output', str(run), '--resume', '--set', *tiny_overrides(
            tmp_path, 'train.max_iters=4', 'train.channels_last=true', 'train.eval_at_end=false', setting)])
        assert code == 2 and capsys.readouterr().err.strip().splitlines() == [f'error: {message}']
        assert sorted(p.name for p in run.iterdir()) == before and _released(run)  # the folder as found
    assert load_checkpoint(run / 'last.pth')['step'] == 2  # untouched


# ------------------------------------------------------------------------------------------- fp16's scaler
def _toy(seed: int = 0) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = nn.Linear(4, 3)
    return model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)


def _toy_loss(model: nn.Module, scale: float = 1.0) -> torch.Tensor:
    x = torch.linspace(-1, 1, 8).view(2, 4)
    return model(x).square().sum() * scale


@pytest.mark.parametrize('clip', [None, 0.5])
def test_grad_scaler_steps_as_fp32_and_skips_an_overflow(clip):
    ref, ref_opt = _toy()
    optimizer_step(ref_opt, _toy_loss(ref), list(ref.parameters()), clip)
    model, opt = _toy()
    scaler = torch.amp.GradScaler('cpu', init_scale=2.0 ** 10, growth_interval=1)
    optimizer_step(opt, _toy_loss(model), list(model.parameters()), clip, scaler=scaler)
    # unscaled before clipping and stepping: the same step as without a scaler (a power-of-two scale is exact)
    for p, q in zip(model.parameters(), ref.parameters()):
        assert torch.allclose(p, q, atol=1e-7)
    assert scaler.get_scale() == 2.0 ** 11  # a good step grows the scale (growth_interval 1)
    kept = [p.detach().clone() for p in model.parameters()]
    optimizer_step(opt, _toy_loss(model, float('inf')), list(model.parameters()), clip, scaler=scaler)
    assert all(torch.equal(p, k) for p, k in zip(model.parameters(), kept))  # the overflowed step is skipped
    assert scaler.get_scale() == 2.0 ** 10  # and the scale halves
    # the scale an fp16 run reached is in its checkpoint and comes back on resume
    states = scaler_states({'scaler': scaler, 'arch_scaler': None})
    assert list(states) == ['scaler']
    again = torch.amp.GradScaler('cpu')
    restore_scalers(states, {'scaler': again, 'arch_scaler': None})
    assert again.get_scale() == 2.0 ** 10
    with pytest.raises(ValueError, match='checkpoint holds no arch_scaler state'):
        restore_scalers(states, {'arch_scaler': torch.amp.GradScaler('cpu')})


def _ddp_overflow_worker(rank: int, store: str, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group('gloo', init_method=f'file://{store}', rank=rank, world_size=2)
    model, opt = _toy()
    scaler = torch.amp.GradScaler('cpu', init_scale=2.0 ** 8)
    kept = [p.detach().clone() for p in model.parameters()]
    # only rank 1 overflows: averaged in, rank 0 must skip the step as well (the ranks stay in step)
    optimizer_step(opt, _toy_loss(model, float('inf') if rank else 1.0), list(model.parameters()), 1.0,
                   average=True, scaler=scaler)
    same = all(torch.equal(p, k) for p, k in zip(model.parameters(), kept))
    torch.save({'skipped': same, 'scale': scaler.get_scale()}, f'{out}.{rank}')
    dist.destroy_process_group()


def test_an_overflow_on_one_process_skips_the_step_on_every_process(tmp_path):
    ctx = multiprocessing.get_context('spawn')
    procs = [ctx.Process(target=_ddp_overflow_worker, args=(r, str(tmp_path / 'store'), str(tmp_path / 'res')))
             for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(300)
    assert [p.exitcode for p in procs] == [0, 0]
    for r in range(2):
        res = torch.load(tmp_path / f'res.{r}', weights_only=True)
        assert res == {'skipped': True, 'scale': 2.0 ** 7}, r


def test_forward_losses_are_fp32():
    class Det(nn.Module):
        def forward(self, images, targets):
            y = nn.functional.linear(images[0].flatten()[None], torch.ones(1, images[0].numel()))
            return {'cls': y.sum(), 'box': y.mean()}

    losses = forward_losses(Det(), [torch.rand(3, 4, 4)], [{}], 'bf16')
    assert all(v.dtype == torch.float32 for v in losses.values())


# ------------------------------------------------------------------------------------------- search
def test_bf16_channels_last_search_runs_resumes_and_refuses_another_setting(tmp_path, capsys):
    # NOTE: 2 epochs, not the 3 of the fp32 search tests: CPU bf16 is slow where the CPU has no bf16 instructions
    mixed = ('train.amp=bf16', 'train.channels_last=true', 'search.eval_derived=false', 'train.epochs=2')
    full = run_search(tmp_path, 'full', *mixed, kwargs=RETINA_96)  # 4 weight steps, 2 architecture steps from step 2
    assert full['steps'] == 4 and full['arch_steps'] == 2 and math.isfinite(full['expected_cost'])
    with open(tmp_path / 'full' / 'metrics.csv') as f:
        rows = list(csv.DictReader(f))
    assert {r['phase'] for r in rows} == {'weight', 'arch'}
    assert all(math.isfinite(float(r[k])) for r in rows for k in ('loss', 'detection', 'cost_loss'))
    state = load_checkpoint(tmp_path / 'full' / 'last.pth')
    assert (state['config']['train']['amp'], state['config']['train']['channels_last']) == ('bf16', True)
    assert not {'scaler', 'arch_scaler'} & set(state)  # bf16: no scaler
    assert all(a.dtype == torch.float32 for a in state['model'].values() if a.is_floating_point())
    # stopped at step 3 and resumed with the same setting: the same architecture logits
    run_search(tmp_path, 'part', *mixed, 'train.max_iters=3', kwargs=RETINA_96)  # one architecture step left
    with pytest.raises(ValueError, match="config train.amp is 'off' but the run started with 'bf16'"):
        run_search(tmp_path, 'part', 'train.channels_last=true', 'search.eval_derived=false', 'train.epochs=2',
                   resume=True, kwargs=RETINA_96)
    assert _released(tmp_path / 'part') and load_checkpoint(tmp_path / 'part' / 'last.pth')['step'] == 3
    resumed = run_search(tmp_path, 'part', *mixed, resume=True, kwargs=RETINA_96)
    a, b = state['model'], load_checkpoint(tmp_path / 'part' / 'last.pth')['model']
    alphas = [k for k in a if 'alphas' in k]
    assert alphas and resumed['arch'] == full['arch'] and all(torch.equal(a[k], b[k]) for k in alphas)


def test_fp16_search_keeps_a_scaler_per_optimizer_and_resumes_exactly(tmp_path, monkeypatch):
    """The fp16 path of the search (CUDA only in use) on this CPU: the refusal is lifted for the test."""
    import fna_zoo.nas.searcher as searcher

    monkeypatch.setattr(searcher, 'check_precision', lambda amp, device: None)
    fp16 = ('train.amp=fp16', 'search.eval_derived=false', 'train.epochs=2')  # emulated on the CPU: slow
    full = run_search(tmp_path, 'full', *fp16)
    state = load_checkpoint(tmp_path / 'full' / 'last.pth')
    assert full['steps'] == 4 and {'scaler', 'arch_scaler'} <= set(state)
    # each optimizer's own scaler: 4 weight steps and 2 architecture steps (a step that overflowed resets its count)
    assert 0 < state['scaler']['_growth_tracker'] <= 4 and 0 < state['arch_scaler']['_growth_tracker'] <= 2
    run_search(tmp_path, 'part', *fp16, 'train.max_iters=3')
    resumed = run_search(tmp_path, 'part', *fp16, resume=True)
    again = load_checkpoint(tmp_path / 'part' / 'last.pth')
    assert resumed['arch'] == full['arch'] and again['scaler'] == state['scaler']
    assert again['arch_scaler'] == state['arch_scaler']
    assert all(torch.equal(state['model'][k], again['model'][k]) for k in state['model'] if 'alphas' in k)


def test_bf16_channels_last_search_under_torchrun(tmp_path):
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, HF_HUB_OFFLINE='1', OMP_NUM_THREADS='1')
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2',
           str(root / 'search' / 'run.py'), '--output', str(tmp_path / 'ddp'), '--set',
           *tiny(tmp_path, 'train.batch_size=2', 'train.max_iters=3', 'search.eval_derived=false', 'train.amp=bf16',
                 'train.channels_last=true', kwargs=RETINA_96)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / 'ddp' / 'summary.json').read_text())
    assert summary['processes'] == 2 and summary['steps'] == 3 and summary['arch_steps'] == 1  # from step 2
    assert load_checkpoint(tmp_path / 'ddp' / 'last.pth')['config']['train']['amp'] == 'bf16'


if __name__ == '__main__':
    sys.exit(pytest.main([__file__, '-q']))
