"""The one training loop that search and evaluation training share.

:func:`run_job` owns what every long run needs: the work directory and its
``config.json``, checkpoint and resume (a resumed run equals an uninterrupted
one), ``metrics.jsonl`` (one record per epoch), the progress bar, SIGINT /
SIGTERM (save, then raise :class:`Interrupted`; across hosts a signal to any
process stops all of them after the same step), the stop on a non-finite
metric (the last good checkpoint kept), and periodic checkpoints. What a run
does is a :class:`Job`: its state, its step and what it adds at each epoch's end.
"""
from __future__ import annotations

import json
import math
import os
import time
from typing import Any, Callable, NamedTuple, Protocol

import jax

from jaxnas import sharding
from jaxnas.checkpoint import Checkpointer, Interrupted, StopSignals, check_resume_config


class Job(Protocol):
  steps_per_epoch: int

  def init_state(self) -> Any:
    """The state at step 0 (a pytree of arrays, replicated over the mesh)."""

  def step(self, state, epoch: int, step: int) -> tuple[Any, dict, Callable]:
    """One step: the new state, its metrics (arrays), and the jitted function it
    called (a function's first call in a process compiles and is not timed)."""

  def end_epoch(self, state, epoch: int) -> dict:
    """What the epoch's record adds to the mean metrics (an evaluation, a genotype)."""

  def write_outputs(self, state, history: list[dict], final: bool) -> None:
    """Writes the run's readable outputs (process 0 only; ``final`` at the end)."""


class Options(NamedTuple):
  """How :func:`run_job` runs a job."""
  workdir: str
  epochs: int
  config: dict                       # the resolved config, written as config.json
  resumable: tuple[str, ...]         # config fields (dotted paths) that may change on resume
  checkpoint_every: int = 0          # also every this many steps (0: at epoch ends only)
  description: str = 'run'           # the progress bar's label


def _load_history(workdir: str, epoch: int) -> list[dict]:
  path = os.path.join(workdir, 'metrics.jsonl')
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [r for r in map(json.loads, f) if r['epoch'] < epoch]


def run_job(job: Job, opts: Options, resume: bool = False, progress: bool = True,
        stop_after_steps: int | None = None) -> tuple[Any, list[dict]]:
  """Runs (or resumes) ``job`` for ``opts.epochs`` epochs; returns the final state and the
  per-epoch records. ``stop_after_steps`` stops as a signal does, after that many
  steps of this call (for tests)."""
  workdir, S = opts.workdir, job.steps_per_epoch
  os.makedirs(workdir, exist_ok=True)
  ckpt = Checkpointer(workdir)
  state, history = job.init_state(), []
  pos = {'epoch': 0, 'step': 0, 'sums': {}, 'count': 0, 'seconds': 0.0, 'timed': 0}
  if resume:
    check_resume_config(workdir, opts.config, opts.resumable)
    if ckpt.latest_step() is not None:
      state, pos = ckpt.restore(state)
      history = _load_history(workdir, pos['epoch'])
  elif ckpt.latest_step() is not None:
    raise ValueError(f'{workdir} already holds a run (checkpoint step {ckpt.latest_step()}): '
                     f'pass --resume to continue it, or choose another --workdir')
  main = sharding.is_main_process()  # only process 0 writes logs and pictures
  if main:
    with open(os.path.join(workdir, 'config.json'), 'w') as f:
      json.dump(opts.config, f, indent=1)
    with open(os.path.join(workdir, 'metrics.jsonl'), 'w') as f:
      f.writelines(json.dumps(r) + '\n' for r in history)
  bar = None
  if progress and main:
    from tqdm.auto import tqdm
    bar = tqdm(total=opts.epochs * S, initial=pos['epoch'] * S + pos['step'], unit='step',
               mininterval=1.0, desc=opts.description, dynamic_ncols=True)
  called, done = set(), 0
  try:
    with StopSignals() as stop:
      while pos['epoch'] < opts.epochs:
        stopping = False
        while pos['step'] < S and not stopping:
          state = _one_step(job, state, pos, called, ckpt, bar)
          done += 1
          stopping = sharding.any_process(stop.signal is not None
                                          or bool(stop_after_steps and done >= stop_after_steps))
          if pos['step'] < S and (stopping or (opts.checkpoint_every and (
              pos['epoch'] * S + pos['step']) % opts.checkpoint_every == 0)):
            ckpt.save(pos['epoch'] * S + pos['step'], state, pos)
        if pos['step'] == S:  # the epoch's end saves its own checkpoint
          history.append(_end_epoch(job, state, pos, workdir, main))
          pos = {'epoch': pos['epoch'] + 1, 'step': 0, 'sums': {}, 'count': 0, 'seconds': 0.0,
                 'timed': 0}
          ckpt.save(pos['epoch'] * S, state, pos)
          if main:
            job.write_outputs(state, history, final=pos['epoch'] == opts.epochs)
        if stopping:
          raise Interrupted(f'stopped at epoch {pos["epoch"]} step {pos["step"]}; checkpoint '
                            f'saved in {ckpt.directory}. Continue with --resume.')
  finally:
    if bar is not None:
      bar.close()
    ckpt.close()
  return state, history


def _one_step(job: Job, state, pos: dict, called: set, ckpt: Checkpointer, bar):
  """One step of ``job`` at ``pos``, accumulated into ``pos``; stops on a non-finite metric."""
  t0 = time.perf_counter()
  state, metrics, fn = job.step(state, pos['epoch'], pos['step'])
  metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
  dt = time.perf_counter() - t0
  bad = sorted(k for k, v in metrics.items() if not math.isfinite(v))
  if bad:
    last = ckpt.latest_step()
    raise FloatingPointError(
        f'non-finite {", ".join(bad)} at epoch {pos["epoch"]} step {pos["step"]} (global step '
        f'{pos["epoch"] * job.steps_per_epoch + pos["step"]}); the run stopped. The last good '
        f'checkpoint is {"step " + str(last) if last is not None else "none"} in {ckpt.directory}.')
  for k, v in metrics.items():
    pos['sums'][k] = pos['sums'].get(k, 0.0) + v
  pos['count'] += 1
  if fn in called:  # a function's first call in this process compiles: not timed
    pos['seconds'], pos['timed'] = pos['seconds'] + dt, pos['timed'] + 1
  called.add(fn)
  pos['step'] += 1
  if bar is not None:
    bar.update(1)
    bar.set_postfix(epoch=pos['epoch'], **{k: f'{metrics[k]:.3f}' for k in
                                           ('train_loss', 'train_acc', 'val_acc') if k in metrics},
                    refresh=False)
  return state


def _end_epoch(job: Job, state, pos: dict, workdir: str, main: bool) -> dict:
  record = {'epoch': pos['epoch'], **{k: v / max(pos['count'], 1) for k, v in pos['sums'].items()},
            'steps': pos['count'],
            'seconds_per_step': pos['seconds'] / pos['timed'] if pos['timed'] else None,
            **job.end_epoch(state, pos['epoch'])}
  if main:
    with open(os.path.join(workdir, 'metrics.jsonl'), 'a') as f:
      f.write(json.dumps(record) + '\n')
  return record
