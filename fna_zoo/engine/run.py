"""The scaffolding every training loop shares: the run folder and its bookkeeping, written once.

Retraining (`fna_zoo.engine.train.retrain`, FNA's parameter adaptation) and the architecture search
(`fna_zoo.nas.searcher.search`, FNA's architecture adaptation; Fang et al., ICLR 2020 -
https://arxiv.org/abs/2001.02525) both seed the process, check the class count, write config.yaml, plan their
steps, log metrics.csv, checkpoint to last.pth (resumable to the batch), show a progress bar and move batches to
the device. `TrainingRun` holds that bookkeeping (rank-aware: only the main process writes, every process
meets at the barriers), so the two loops read as their algorithms.

Below `fna_zoo.nas`: imports nothing of it.
"""
from __future__ import annotations

import contextlib
import csv
import itertools
import logging
import math
import random
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import torch
import yaml
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, Sampler
from tqdm import tqdm

from ..checkpoint import load_checkpoint, save_checkpoint
from ..data import collate
from ..fileio import atomic_write_text, lock_folder, unlock_folder
from .distributed import DistInfo, average_gradients, barrier

__all__ = ['seed_process', 'check_num_classes', 'check_categories', 'batches_per_epoch', 'total_steps', 'SkipSampler',
           'epoch_loader', 'optimizer_step', 'to_device', 'MetricsLog', 'TrainingRun']

Batch = tuple[list, list]
_logger = logging.getLogger(__name__)


def seed_process(seed: int, dist_info: DistInfo) -> None:
    """Seed torch's and Python's global RNGs with `seed` + this process's rank.

    Args:
        seed: The run's seed (`cfg['seed']`).
        dist_info: This process.
    """
    torch.manual_seed(seed + dist_info.rank)
    random.seed(seed + dist_info.rank)


def check_num_classes(cfg: dict[str, Any], train_ds: Any) -> int:
    """The run's object classes: `model.num_classes`, or (null) those of the training annotations.

    Args:
        cfg: The run config.
        train_ds: The training dataset (has `num_classes`).

    Raises:
        ValueError: The config and the annotations disagree.
    """
    num_classes = cfg['model']['num_classes'] or train_ds.num_classes
    if num_classes != train_ds.num_classes:
        raise ValueError(f'config model.num_classes is {num_classes}, the training annotations have '
                         f'{train_ds.num_classes} categories; expected them to agree')
    return num_classes


def check_categories(train_ds: Any, val_ds: Any) -> list[int]:
    """The COCO category ids the run's labels index, the same in both splits (else labels would silently mean
    other categories in evaluation).

    Args:
        train_ds: The training dataset (has `cat_ids`).
        val_ds: The validation dataset.

    Raises:
        ValueError: The splits' categories differ.
    """
    train_ids, val_ids = list(train_ds.cat_ids), list(val_ds.cat_ids)
    if train_ids != val_ids:
        raise ValueError(f'the training annotations have category ids {train_ids[:20]}, the validation annotations '
                         f'{val_ids[:20]}; expected the same categories in both splits')
    return train_ids


def batches_per_epoch(dataset: Any, sampler: Sampler | None, batch_size: int) -> int:
    """This process's batches in one pass over `dataset` (its `sampler`'s shard when distributed).

    Args:
        dataset: The dataset.
        sampler: Its `DistributedSampler`, or None in a single process.
        batch_size: Items per batch (the last batch may be short).
    """
    return math.ceil(len(sampler or dataset) / batch_size)


def total_steps(t: dict[str, Any], epoch_batches: int) -> int:
    """The run's steps: `train.epochs` epochs of `epoch_batches`, capped by `train.max_iters` when set.

    Args:
        t: The config's `train` section.
        epoch_batches: Steps in one epoch.
    """
    steps = t['epochs'] * epoch_batches
    return steps if t['max_iters'] is None else min(t['max_iters'], steps)


class SkipSampler(Sampler):
    """The indices of `sampler` after the first `skip`."""

    def __init__(self, sampler: Sampler, skip: int) -> None:
        self.sampler, self.skip = sampler, skip

    def __iter__(self) -> Iterator[int]:
        return itertools.islice(iter(self.sampler), self.skip, None)

    def __len__(self) -> int:
        return max(0, len(self.sampler) - self.skip)


def epoch_loader(dataset: Any, sampler: DistributedSampler | None, batch_size: int, workers: int, seed: int,
                 epoch: int, skip_batches: int = 0) -> DataLoader:
    """One epoch's batches of `dataset`, after the first `skip_batches` (a resumed epoch).

    NOTE: the epoch's order and the workers' seeds come from a generator seeded with `seed` alone (or, when
    distributed, from the sampler's seed and `epoch`), and the done batches are skipped in the sampler without
    being loaded, so a resumed run draws exactly the batches an uninterrupted one would.

    Args:
        dataset: The dataset.
        sampler: Its `DistributedSampler` (set to `epoch` here), or None for a random order from `seed`.
        batch_size: Items per batch.
        workers: Loader processes.
        seed: Seed of this epoch's generator.
        epoch: The epoch, for the distributed sampler's shuffle.
        skip_batches: Batches of the epoch already done.
    """
    if sampler is not None:
        sampler.set_epoch(epoch)
    gen = torch.Generator().manual_seed(seed)
    order = sampler or RandomSampler(dataset, generator=gen)
    return DataLoader(dataset, batch_size=batch_size, num_workers=workers,
                      sampler=SkipSampler(order, skip_batches * batch_size), collate_fn=collate, generator=gen)


def optimizer_step(opt: torch.optim.Optimizer, loss: torch.Tensor, params: Sequence[nn.Parameter],
                   grad_clip: float | None, average: bool = False,
                   scaler: torch.amp.GradScaler | None = None) -> None:
    """One gradient step on `loss`: zero the gradients, backpropagate, average them over the processes (when
    `average`: parameters outside DDP), clip their norm (when `grad_clip`), step.

    Args:
        opt: The optimizer of `params`.
        loss: The loss to minimise.
        params: The parameters whose gradients are averaged and clipped.
        grad_clip: Max gradient norm (falsy: no clipping).
        average: All-reduce the gradients by hand (`average_gradients`).
        scaler: fp16's gradient scaler (`fna_zoo.engine.precision.grad_scaler`), or None.
    """
    opt.zero_grad(set_to_none=True)
    (loss if scaler is None else scaler.scale(loss)).backward()
    if average:
        average_gradients(params)
    if scaler is not None:
        # NOTE: unscaled after the average (a linear map of the scaled gradients), so an overflow on one process
        # reaches every process's inf check and all skip the step together (unscaled first, a process whose own
        # gradients were finite would step on the inf it averaged in); before clipping, which needs the true norm
        scaler.unscale_(opt)
    if grad_clip:
        nn.utils.clip_grad_norm_(params, grad_clip)
    if scaler is None:
        opt.step()
    else:
        scaler.step(opt)  # skips the step when the gradients overflowed
        scaler.update()


def to_device(batch: Batch, device: torch.device) -> Batch:
    """(images, targets) of a detection batch on `device` (the targets' non-tensor entries as they are).

    Args:
        batch: A batch of `fna_zoo.data.collate`.
        device: Destination.
    """
    images, targets = batch
    return ([im.to(device) for im in images],
            [{k: v.to(device) if torch.is_tensor(v) else v for k, v in tt.items()} for tt in targets])


def _remove_stale_temp_files(folder: Path) -> None:
    """Remove the temp files of atomic writes (`.<name>.<random>.tmp*`) that a killed run left in its folder.

    NOTE: called with the folder's lock held, so no live writer owns them.

    Args:
        folder: The run folder.
    """
    for p in folder.iterdir():
        if p.is_file() and p.name.startswith('.') and '.tmp' in p.name:
            _logger.info('removing %s, left by a run that was killed while writing', p)
            p.unlink(missing_ok=True)


class MetricsLog:
    """A run's metrics.csv: the header once (a fresh run, or a resumed run whose log is gone), then rows appended.

    Writes only on the main process; the other processes' calls do nothing.

    Args:
        path: The CSV file.
        fields: Column names (the first is the step).
        enabled: Whether this process writes (the main process).
        fresh: Whether the run starts afresh.
        resume_rows: A resumed run's row count at its checkpoint: the log keeps that many rows and drops the
            later ones, which the resumed run logs again.
    """

    def __init__(self, path: Path, fields: Sequence[str], enabled: bool, fresh: bool,
                 resume_rows: int | None = None) -> None:
        self.path, self.enabled, self.rows = path, enabled, 0
        self.written = 0  # rows this process appended (a resumed log has `rows` from before)
        if not enabled:
            return
        if fresh or not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, ','.join(fields) + '\n')
            return
        lines = path.read_text().splitlines(keepends=True)
        self.rows = len(lines) - 1
        if resume_rows is not None and resume_rows < self.rows:
            atomic_write_text(path, ''.join(lines[:1 + resume_rows]))
            self.rows = resume_rows

    def write(self, row: Sequence[Any]) -> None:
        """Append one row (already formatted values).

        Args:
            row: One value per field.
        """
        if self.enabled:
            with self.path.open('a') as f:
                csv.writer(f).writerow(row)
            self.rows += 1
            self.written += 1


class TrainingRun:
    """One training run's folder and bookkeeping: resume state, config.yaml, last.pth, metrics.csv, progress bar.

    Created once the data is checked, as a context manager (a run that fails before its first checkpoint leaves the
    folder as it found it); it reads `<output>/last.pth` when resuming, checked to be this kind of run's. `begin`
    then either restores the training state into the model, optimizers and RNGs, or starts the folder; `save_last`
    checkpoints.

    Args:
        cfg: The run config (`output`, `seed`, `train`).
        dist_info: This process.
        resume: Continue from `<output>/last.pth` when it exists.
        num_classes: Object classes of the model (stored in every checkpoint).
    """

    def __init__(self, cfg: dict[str, Any], dist_info: DistInfo, resume: bool, num_classes: int) -> None:
        self.cfg, self.dist_info, self.num_classes = cfg, dist_info, num_classes
        self.out = Path(cfg['output'])
        self.last = self.out / 'last.pth'
        # what was there before this run (left alone if a fresh run fails before its first checkpoint)
        self._created = not self.out.exists()
        self._found = set() if self._created or not self.out.is_dir() else {p.name for p in self.out.iterdir()}
        self._written: set[str] = set()  # the files this run wrote (all through this class)
        self._checkpointed = False
        self.state: dict[str, Any] | None = None
        if self.is_main:  # one writer per run folder, before anything in it is read or written
            lock_folder(self.out)
        try:
            if self.is_main:
                _remove_stale_temp_files(self.out)
            if resume and self.last.is_file():
                self.state = load_checkpoint(self.last)
                self._check_resumable(('rng', 'optimizer'))
        except BaseException:
            # NOTE: no `with` block runs yet, so `__exit__` would not: the folder is left as found (lock file too)
            if self.is_main:
                self._discard()
                self.close()
            raise
        self.model: nn.Module | None = None
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.generator: torch.Generator | None = None
        self.logs: dict[str, MetricsLog] = {}

    def close(self) -> None:
        """Release the run folder (the end of a run; a process that dies releases it too)."""
        if self.is_main:
            unlock_folder(self.out)

    def __enter__(self) -> 'TrainingRun':
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        """Release the folder; a run that fails before its first checkpoint and its first logged step first
        removes what it wrote: a fresh run its files, a resumed run its lock file (the folder is left as found)."""
        if (exc_type is not None and self.is_main and not self._checkpointed
                and not any(log.written for log in self.logs.values())):
            if self.resumed:
                if '.lock' not in self._found:
                    (self.out / '.lock').unlink(missing_ok=True)
            else:
                self._discard()
        self.close()

    def _check_resumable(self, keys: Sequence[str]) -> None:
        """Refuse a checkpoint to resume from that is not this kind of run's last.pth (one line, naming it).

        NOTE: a finished run's final.pth copied to last.pth (weights and config, no optimizer or RNG state), or the
        last.pth of the other command (fna-search vs fna-retrain), would fail deep in the restore otherwise.

        Args:
            keys: The entries resuming reads ('optimizer', 'rng', ...).
        """
        assert self.state is not None
        where = f'checkpoint {str(self.last)!r}'
        have = 'fna-search' if 'search' in self.state['config'] else 'fna-retrain'
        want = 'fna-search' if 'search' in self.cfg else 'fna-retrain'
        if have != want:
            raise ValueError(f'{where} is the last.pth of a {have} run; expected one of {want} to resume (drop '
                             '--resume to start afresh, or pass another --output)')
        missing = [k for k in keys if k not in self.state]
        if missing:
            hint = " (a finished run's final.pth?)" if 'rng' not in self.state else ''
            raise ValueError(f"{where} holds no {', '.join(missing)} state to resume from{hint}; expected the last.pth "
                             f'an interrupted {want} run wrote (drop --resume to start afresh, or pass another '
                             '--output)')

    def _discard(self) -> None:
        """Remove the files this fresh run wrote (config.yaml, arch.yaml, log headers), and the folder when it made
        it; then release the folder.

        NOTE: such a run has nothing to resume from or read, and its stubs (a config.yaml and a metrics.csv header
        beside no weights) read like a run. Only the names it wrote that were not there before go (its lock file
        too): anything else in the folder, there before or written meanwhile by someone else, stays. (A fresh run
        into an old run's folder has overwritten that run's config.yaml by then; `--resume` continues a run.)
        Released after, so no other run can take the folder in between.
        """
        for name in (self._written | {'.lock'}) - self._found:
            (self.out / name).unlink(missing_ok=True)
        if self._created:
            with contextlib.suppress(OSError):  # not empty: something else wrote into it meanwhile
                self.out.rmdir()

    @property
    def resumed(self) -> bool:
        """Whether the run continues from a checkpoint."""
        return self.state is not None

    @property
    def is_main(self) -> bool:
        """Whether this process writes the run's files."""
        return self.dist_info.is_main

    @property
    def device(self) -> torch.device:
        """This process's device."""
        return self.dist_info.device

    def _model_state(self) -> dict[str, Any]:
        if self.model is None:
            raise RuntimeError('TrainingRun.begin must be called before a checkpoint is written')
        return self.model.state_dict()

    def begin(self, model: nn.Module, optimizers: Mapping[str, torch.optim.Optimizer],
              generator: torch.Generator | None = None) -> dict[str, Any] | None:
        """Track what the checkpoints hold; restore it from last.pth, or (a fresh run) write config.yaml.

        NOTE: the RNG states are restored last, once every model and optimizer is built (building draws from
        torch's RNG), so a resumed run goes on drawing where the interrupted one stopped.

        Args:
            model: The model (not its DDP wrapper), on its device.
            optimizers: The optimizers by their checkpoint key ('optimizer', 'arch_optimizer').
            generator: A generator of the run's own draws (saved as 'generator'), if any.

        Returns:
            The checkpoint when resumed (for the loop's position), else None.
        """
        self.model, self.optimizers, self.generator = model, dict(optimizers), generator
        if self.state is None:
            if self.is_main:
                self.out.mkdir(parents=True, exist_ok=True)
                self.write_text('config.yaml', yaml.safe_dump(self.cfg, sort_keys=False))
            return None
        self._check_resumable(['rng', *self.optimizers, *(['generator'] if generator is not None else [])])
        model.load_state_dict(self.state['model'])
        for key, opt in self.optimizers.items():
            opt.load_state_dict(self.state[key])
        torch.set_rng_state(self.state['rng'])
        if generator is not None:
            generator.set_state(self.state['generator'])
        return self.state

    def save_last(self, **position: Any) -> None:
        """Checkpoint to last.pth (main process), then wait for every process.

        Holds the model, the optimizers, `position`, torch's RNG state (and the generator's), the config and the
        class count.

        NOTE: the RNG states are taken now, after the step's draws: called at the same point of the loop on the
        interrupted and the resumed run, the resumed run draws what the uninterrupted one would.

        Args:
            **position: The loop's position and whatever else resuming needs (step, epoch, history, arch, ...).
        """
        if self.is_main:
            state = {'model': self._model_state(), **{k: o.state_dict() for k, o in self.optimizers.items()},
                     **position, 'rng': torch.get_rng_state()}
            if self.generator is not None:
                state['generator'] = self.generator.get_state()
            if self.logs:
                state['log_rows'] = {name: log.rows for name, log in self.logs.items()}
            save_checkpoint({**state, 'config': self.cfg, 'num_classes': self.num_classes}, self.last)
            self._checkpointed = True
        barrier()

    def save_final(self, **extra: Any) -> None:
        """Write final.pth (main process): the model, the config, the class count and `extra`.

        Args:
            **extra: More entries (step, arch, ...).
        """
        if self.is_main:
            save_checkpoint({'model': self._model_state(), 'config': self.cfg, 'num_classes': self.num_classes,
                             **extra}, self.out / 'final.pth')
            self._checkpointed = True

    def metrics_log(self, fields: Sequence[str], name: str = 'metrics.csv') -> MetricsLog:
        """A CSV log of the run (header written now on a fresh run): metrics.csv, eval.csv, ...

        Args:
            fields: Column names.
            name: File name in the run folder.
        """
        # NOTE: every checkpoint records how many rows each log had (`log_rows`), so a resumed run drops the
        # rows logged after it (they are logged again) instead of holding them twice
        rows = None
        if self.resumed:
            rows = self.state.get('log_rows', {}).get(name)
            if rows is None and name == 'metrics.csv':  # checkpoints before eval.csv existed
                rows = self.state.get('metrics_rows')
        log = MetricsLog(self.out / name, fields, self.is_main, fresh=not self.resumed, resume_rows=rows)
        self.logs[name] = log
        if self.is_main:
            self._written.add(name)
        return log

    def progress(self, total: int, initial: int, desc: str) -> tqdm:
        """A progress bar over the run's steps, shown by the main process only.

        Args:
            total: The run's steps.
            initial: Steps already done (a resumed run).
            desc: Its label.
        """
        return tqdm(total=total, initial=initial, desc=desc, disable=not self.is_main)

    def write_text(self, name: str, text: str) -> None:
        """Write `<output>/<name>` atomically (main process).

        Args:
            name: File name in the run folder.
            text: Its content.
        """
        if self.is_main:
            atomic_write_text(self.out / name, text)
            self._written.add(name)

    @contextlib.contextmanager
    def log_file(self, name: str) -> Iterator[None]:
        """The run's own log while the block runs: the package's INFO records go to `<output>/<name>` (main
        process), whatever the console shows.

        Args:
            name: File name in the run folder.
        """
        if not self.is_main:
            yield
            return
        self.out.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(self.out / name)
        self._written.add(name)
        handler.setFormatter(logging.Formatter('%(asctime)s %(levelname)s %(name)s: %(message)s'))
        pkg_logger = logging.getLogger('fna_zoo')
        level = pkg_logger.level
        pkg_logger.addHandler(handler)
        pkg_logger.setLevel(logging.INFO)
        try:
            yield
        finally:
            pkg_logger.removeHandler(handler)
            pkg_logger.setLevel(level)
            handler.close()
