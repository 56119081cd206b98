"""Evaluation training: the discrete network of a genotype, trained from scratch.

The recipes (fields left None are resolved by space and data set):

* DARTS (quark0/darts ``train.py``): SGD momentum 0.9, lr 0.025 cosine to 0
  per epoch, weight decay 3e-4, gradient clipping 5, auxiliary head weight
  0.4, drop-path 0.2 · epoch/epochs, cutout 16 (CIFAR), batch 96, 600 epochs,
  C = 36, 20 cells.
* NAS-Bench-201: SGD 0.1 Nesterov momentum 0.9, weight decay 5e-4, cosine to
  0, no clipping, no auxiliary head, no drop-path, batch 256, 200 epochs,
  C = 16, 5 cells per stage.

On the embedded 8x8 digits the networks and runs are scaled down so that a
training finishes in a minute or two on a CPU.

Order of the data: step s of epoch e reads training batch ``s`` of the
permutation drawn from ``(seed, e)`` (:func:`jaxnas.data.batch_indices`), so a
resumed run equals an uninterrupted one. Evaluation reads the whole test
split in order; the last, partial batch is padded and masked.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxnas import config as config_lib
from jaxnas import data as data_lib
from jaxnas import plot, sharding, spaces
from jaxnas.config import option
from jaxnas.checkpoint import Checkpointer, Interrupted, StopSignals, check_resume_config
from jaxnas.spaces import get_space
from jaxnas.search import cosine_per_epoch
from jaxnas.spaces.base import count_params, init_variables


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Evaluation-training settings; fields left None are resolved by space and data
  set (:meth:`resolved`, the recipes of the module docstring)."""
  space: str = option('darts', 'search space of the genotype', choices=lambda: spaces.SPACES)
  genotype: str | None = option(None, 'published name, genotype.json file or genotype string')
  dataset: str = option('digits', 'digits, a tensorflow-datasets name, or npz:PATH',
                        check=data_lib.check_name)
  data_dir: str | None = option(None, 'tensorflow-datasets directory')
  download: bool = option(False, 'let tensorflow-datasets download (needs TensorFlow and a connection)')
  epochs: int | None = option(None, 'epochs', min=1)
  batch_size: int | None = option(None, 'images per batch', min=1)
  channels: int | None = option(None, 'initial channels C', min=1)
  layers: int | None = option(None, 'cells (darts) or cells per stage (nb201)', min=1)
  lr: float | None = option(None, 'learning rate (cosine per epoch)', gt=0)
  lr_min: float = option(0.0, "the cosine schedule's final learning rate", min=0)
  momentum: float = option(0.9, 'SGD momentum', min=0, lt=1)
  nesterov: bool | None = option(None, 'Nesterov momentum')
  weight_decay: float | None = option(None, 'weight decay (L2 added to the gradient)', min=0)
  grad_clip: float | None = option(None, 'global gradient-norm clip (0: none)', min=0)
  auxiliary: bool | None = option(None, 'darts: auxiliary head')
  auxiliary_weight: float = option(0.4, 'darts: weight of the auxiliary loss', min=0)
  drop_path: float | None = option(None, 'darts: final drop-path probability', min=0, lt=1)
  cutout: int | None = option(None, "cutout length (0: none; None: the data set's recipe)", min=0)
  augment: bool = option(True, "the data set's crop and flip")
  seed: int = option(0, 'random seed')
  devices: str | None = option(None, "'all' or N: the data-parallel mesh (None: $JAXNAS_DEVICES, else all)",
                               check=sharding.check_devices)
  workdir: str = option('runs/train', 'output directory')
  checkpoint_every: int = option(0, 'also checkpoint every this many steps (0: at epoch ends only)',
                                 min=0)

  def __post_init__(self):
    config_lib.validate(self)

  RESUMABLE_CHANGES = ('epochs', 'checkpoint_every', 'workdir', 'data_dir', 'download', 'devices')

  def resolved(self) -> 'TrainConfig':
    space = get_space(self.space)
    if self.genotype is None:
      raise ValueError('give --genotype: a published name '
                       f'({", ".join(space.genotypes)}), a genotype.json file or a genotype string')
    small = self.dataset == 'digits'
    darts = self.space == 'darts'
    recipe = {
        'epochs': (20 if small else 600) if darts else (20 if small else 200),
        'batch_size': 64 if small else (96 if darts else 256),
        'channels': (8 if small else space.defaults['eval_channels']),
        'layers': (5 if darts else 1) if small else space.defaults['eval_layers'],
        'lr': 0.025 if darts else 0.1,
        'nesterov': not darts,
        'weight_decay': 3e-4 if darts else 5e-4,
        'grad_clip': 5.0 if darts else 0.0,
        'auxiliary': darts,
        'drop_path': 0.2 if darts else 0.0,
        'cutout': data_lib.default_train_augment(self.dataset).cutout if darts else 0,
        'devices': sharding.default_devices(),
    }
    out = dataclasses.replace(self, **{k: v for k, v in recipe.items() if getattr(self, k) is None})
    if not darts and (out.auxiliary or out.drop_path):
      raise ValueError('the NAS-Bench-201 network has no auxiliary head and no drop-path: '
                       'leave --auxiliary and --drop-path unset')
    if out.lr_min > out.lr:
      raise ValueError(f'lr_min (--lr-min) {out.lr_min} is above lr (--lr) {out.lr}')
    sharding.check_batch(out.batch_size, sharding.make_mesh(out.devices))
    return out

  def to_json(self) -> dict[str, Any]:
    return config_lib.to_json(self)


class TrainState(NamedTuple):
  params: Any
  batch_stats: Any
  opt: Any
  step: jax.Array
  key: jax.Array     # raw uint32 key data


@dataclasses.dataclass
class TrainResult:
  report: dict
  history: list[dict]
  workdir: str
  config: TrainConfig


class TrainInterrupted(Interrupted):
  """Training stopped on a signal (or on request) after saving a checkpoint."""


def optimizer(cfg: TrainConfig, steps_per_epoch: int) -> tuple[optax.GradientTransformation, Any]:
  """PyTorch's SGD(momentum, nesterov, weight_decay) after clip_grad_norm_ (if any)."""
  lr = cosine_per_epoch(cfg.lr, cfg.lr_min, cfg.epochs, steps_per_epoch)
  tx = optax.chain(optax.clip_by_global_norm(cfg.grad_clip) if cfg.grad_clip else optax.identity(),
                   optax.add_decayed_weights(cfg.weight_decay),
                   optax.trace(decay=cfg.momentum, nesterov=cfg.nesterov),
                   optax.scale_by_schedule(lambda c: -lr(c)))
  return tx, lr


def loss_fn(logits, aux_logits, labels, aux_weight: float):
  """Cross-entropy, plus ``aux_weight`` times the auxiliary head's where it is given."""
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
  if aux_logits is not None:
    loss = loss + aux_weight * optax.softmax_cross_entropy_with_integer_labels(aux_logits, labels).mean()
  return loss


def multiply_adds(model, image_shape) -> int:
  """Multiply-adds of one inference on one image: half XLA's flop count of the
  compiled forward pass (a count from the program, not a formula per op)."""
  x = jax.ShapeDtypeStruct((1,) + tuple(image_shape), jnp.float32)
  shapes = jax.eval_shape(functools.partial(model.init, train=False),
                          {'params': jax.random.key(0), 'dropout': jax.random.key(0)}, x)
  v = {k: shapes[k] for k in ('params', 'batch_stats') if k in shapes}
  cost = jax.jit(lambda v, x: model.apply(v, x, train=False)[0]).lower(v, x).cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return int((cost or {}).get('flops', 0) // 2)


class Trainer:
  """One training run: data, network, the jitted steps (see :func:`train`)."""

  def __init__(self, config: TrainConfig, dataset: data_lib.Dataset | None = None):
    cfg = config.resolved()
    self.config = cfg
    self.space = get_space(cfg.space)
    self.genotype = self.space.load_genotype(cfg.genotype)
    self.data = dataset or data_lib.load(cfg.dataset, cfg.data_dir, cfg.download)
    self.train_split = data_lib.Split(self.data.x_train, self.data.y_train)
    self.test_split = data_lib.Split(self.data.x_test, self.data.y_test)
    self.steps_per_epoch = data_lib.steps_per_epoch(len(self.data.x_train), cfg.batch_size)
    kw = {'auxiliary': cfg.auxiliary} if cfg.space == 'darts' else {}
    self.model = self.space.network(self.genotype, cfg.channels, cfg.layers, self.data.num_classes, **kw)
    self.tx, self.lr = optimizer(cfg, self.steps_per_epoch)
    base = data_lib.default_train_augment(cfg.dataset) if cfg.augment else data_lib.NO_AUGMENT
    self.augment = dataclasses.replace(base, cutout=cfg.cutout)
    # data parallel: the batch split over the mesh, everything else replicated
    self.mesh = sharding.make_mesh(cfg.devices)
    self.layout = sharding.describe(self.mesh, cfg.batch_size)
    self.replicated = sharding.replicated(self.mesh)
    self.batch_sharding = sharding.batch_sharding(self.mesh)
    self.traces = 0
    repl, batch = self.replicated, self.batch_sharding
    self.train_step = jax.jit(self._train_step, donate_argnums=0,
                              in_shardings=(repl, batch, batch), out_shardings=repl)
    self.eval_step = jax.jit(self._eval_step, in_shardings=(repl, repl, batch, batch, repl),
                             out_shardings=repl)

  def init_state(self) -> TrainState:
    k_w, k_run = jax.random.split(jax.random.key(self.config.seed))
    x = jnp.zeros((1,) + self.data.image_shape, jnp.float32)
    v = init_variables(self.model, k_w, x)
    state = TrainState(v['params'], v.get('batch_stats', {}), self.tx.init(v['params']),
                       jnp.zeros((), jnp.int32), jax.random.key_data(k_run))
    return sharding.put(state, self.replicated)

  def batch(self, epoch: int, step: int) -> tuple[np.ndarray, np.ndarray]:
    """This process' rows of the batch of step ``step`` (on one host: all of them)."""
    idx = data_lib.batch_indices(self.config.seed, epoch, step, len(self.data.x_train),
                                 self.config.batch_size)[sharding.process_rows(self.config.batch_size)]
    return self.data.x_train[idx], self.data.y_train[idx]

  def drop_prob(self, step):
    """Drop-path probability, rising linearly per epoch: ``p · epoch / epochs``."""
    epoch = step // self.steps_per_epoch
    return self.config.drop_path * epoch / self.config.epochs

  def _train_step(self, state: TrainState, x, y):
    self.traces += 1  # trace time only
    cfg = self.config
    key = jax.random.wrap_key_data(state.key)
    key, k_aug, k_drop = jax.random.split(key, 3)
    x = self.augment(k_aug, x, self.data.mean, self.data.std)
    drop = self.drop_prob(state.step) if cfg.drop_path else None

    def loss(params):
      (logits, aux), new = self.model.apply(
          {'params': params, 'batch_stats': state.batch_stats}, x, train=True, drop_prob=drop,
          mutable=['batch_stats'], rngs={'dropout': k_drop})
      return loss_fn(logits, aux, y, cfg.auxiliary_weight), (new['batch_stats'], logits)
    (value, (stats, logits)), grads = jax.value_and_grad(loss, has_aux=True)(state.params)
    updates, opt = self.tx.update(grads, state.opt, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {'train_loss': value, 'train_acc': jnp.mean(jnp.argmax(logits, -1) == y),
               'lr': self.lr(state.step)}
    return TrainState(params, stats, opt, state.step + 1, jax.random.key_data(key)), metrics

  def _eval_step(self, params, batch_stats, x, y, n_valid):
    x = self.data.normalize(x)
    logits, _ = self.model.apply({'params': params, 'batch_stats': batch_stats}, x, train=False)
    valid = jnp.arange(x.shape[0]) < n_valid
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, y)
    top5 = jnp.any(jax.lax.top_k(logits, min(5, logits.shape[-1]))[1] == y[:, None], axis=-1)
    return {'loss': jnp.sum(jnp.where(valid, ce, 0)),
            'top1': jnp.sum(valid & (jnp.argmax(logits, -1) == y)),
            'top5': jnp.sum(valid & top5)}

  def evaluate(self, state: TrainState) -> dict[str, float]:
    """Loss and top-1 / top-5 accuracy over the whole test split."""
    totals = {'loss': 0.0, 'top1': 0, 'top5': 0}
    rows = sharding.process_rows(self.config.batch_size)
    for x, y, n in data_lib.eval_batches(self.test_split, self.config.batch_size):
      x, y = sharding.put((x[rows], y[rows]), self.batch_sharding)
      out = jax.device_get(self.eval_step(state.params, state.batch_stats, x, y,
                                          sharding.put(np.int32(n), self.replicated)))
      totals = {k: totals[k] + out[k] for k in totals}
    n = len(self.test_split.x)
    result = {'test_loss': float(totals['loss']) / n, 'test_acc': float(totals['top1']) / n}
    if self.data.num_classes > 10:
      result['test_top5'] = float(totals['top5']) / n
    return result


def train(config: TrainConfig, resume: bool = False, progress: bool = True,
          stop_after_steps: int | None = None, dataset: data_lib.Dataset | None = None) -> TrainResult:
  """Trains (or resumes training) the genotype's network; writes to ``config.workdir``:
  ``config.json``, ``metrics.jsonl`` (per epoch: train and test loss and
  accuracy, lr, drop-path, seconds), ``curves.png``, ``report.json``, and
  checkpoints every epoch, every ``checkpoint_every`` steps and on
  SIGINT/SIGTERM (then raises :class:`TrainInterrupted`)."""
  run = Trainer(config, dataset)
  cfg = run.config
  workdir = cfg.workdir
  os.makedirs(workdir, exist_ok=True)
  ckpt = Checkpointer(workdir)
  S = run.steps_per_epoch
  state = run.init_state()
  history: list[dict] = []
  epoch, step, sums, count, seconds = 0, 0, {}, 0, 0.0
  if resume:
    check_resume_config(workdir, cfg.to_json(), TrainConfig.RESUMABLE_CHANGES)
    if ckpt.latest_step() is not None:
      state, meta = ckpt.restore(state)
      epoch, step, sums, count, seconds = (meta['epoch'], meta['step'], meta['sums'], meta['count'],
                                           meta['seconds'])
      with open(os.path.join(workdir, 'metrics.jsonl')) as f:
        history = [r for r in map(json.loads, f) if r['epoch'] < epoch]
  elif ckpt.latest_step() is not None:
    raise ValueError(f'{workdir} already holds a training run (checkpoint step {ckpt.latest_step()}): '
                     f'pass --resume to continue it, or choose another --workdir')
  main = sharding.is_main_process()  # only process 0 writes logs, pictures and the report
  if main:
    with open(os.path.join(workdir, 'config.json'), 'w') as f:
      json.dump(cfg.to_json(), f, indent=1)
    with open(os.path.join(workdir, 'metrics.jsonl'), 'w') as f:
      f.writelines(json.dumps(r) + '\n' for r in history)

  def save(epoch, step):
    ckpt.save(epoch * S + step, state, {'epoch': epoch, 'step': step, 'sums': sums,
                                        'count': count, 'seconds': seconds})

  bar = None
  if progress and main:
    from tqdm.auto import tqdm
    lay = run.layout
    bar = tqdm(total=cfg.epochs * S, initial=epoch * S + step, unit='step', mininterval=1.0,
               desc=f"train {cfg.space}, batch {lay['global_batch']} = {lay['devices']} "
                    f"{lay['platform']} x {lay['per_device_batch']}", dynamic_ncols=True)
  done = 0
  redraw = plot.Redraw()
  stop = StopSignals().__enter__()
  try:
    while epoch < cfg.epochs:
      t0 = time.perf_counter()
      while step < S:
        state, metrics = run.train_step(state, *sharding.put(run.batch(epoch, step),
                                                             run.batch_sharding))
        metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
        if not math.isfinite(metrics['train_loss']):
          raise FloatingPointError(f'non-finite training loss at epoch {epoch} step {step}; '
                                   f'the last good checkpoint is in {ckpt.directory}')
        for k, v in metrics.items():
          sums[k] = sums.get(k, 0.0) + v
        count, step, done = count + 1, step + 1, done + 1
        if bar is not None:
          bar.update(1)
          bar.set_postfix(epoch=epoch, loss=f"{metrics['train_loss']:.3f}",
                          acc=f"{metrics['train_acc']:.3f}", refresh=False)
        if stop.signal is not None or (stop_after_steps and done >= stop_after_steps):
          seconds += time.perf_counter() - t0
          save(epoch, step)
          raise TrainInterrupted(f'training stopped at epoch {epoch} step {step}; checkpoint saved '
                                 f'in {ckpt.directory}. Continue with --resume.')
        if cfg.checkpoint_every and (epoch * S + step) % cfg.checkpoint_every == 0 and step < S:
          save(epoch, step)
      seconds += time.perf_counter() - t0
      record = {'epoch': epoch, **{k: v / max(count, 1) for k, v in sums.items()},
                'drop_prob': float(run.drop_prob(epoch * S)) if cfg.drop_path else 0.0,
                **run.evaluate(state), 'seconds': seconds}
      history.append(record)
      if main:
        with open(os.path.join(workdir, 'metrics.jsonl'), 'a') as f:
          f.write(json.dumps(record) + '\n')
      epoch, step, sums, count, seconds = epoch + 1, 0, {}, 0, 0.0
      save(epoch, step)
      if main and redraw(final=epoch == cfg.epochs):
        plot.draw_curves(history, ('train_loss', 'test_loss', 'train_acc', 'test_acc'),
                         os.path.join(workdir, 'curves.png'),
                         f'{cfg.space} {run.genotype} on {cfg.dataset}'[:90])
  finally:
    if bar is not None:
      bar.close()
    stop.__exit__()
    ckpt.close()
  report = make_report(run, state, history)
  if main:
    with open(os.path.join(workdir, 'report.json'), 'w') as f:
      json.dump(report, f, indent=1)
  return TrainResult(report, history, workdir, cfg)


def make_report(run: Trainer, state: TrainState, history: list[dict]) -> dict:
  aux = count_params(state.params.get('auxiliary_head', {}))
  final = history[-1] if history else run.evaluate(state)
  # the first epoch of a process includes compilation: leave it out where there are others
  times = [h['seconds'] for h in history[1:]] or [h['seconds'] for h in history]
  report = {'space': run.config.space, 'genotype': str(run.genotype), 'dataset': run.config.dataset,
            'epochs': run.config.epochs, 'params': count_params(state.params) - aux,
            'auxiliary_params': aux,
            'multiply_adds': multiply_adds(run.model, run.data.image_shape),
            'test_acc': final['test_acc'], 'test_loss': final['test_loss'],
            'seconds_per_epoch': float(np.mean(times)) if times else None,
            **{k: run.layout[k] for k in ('devices', 'global_batch', 'per_device_batch')}}
  if 'test_top5' in final:
    report['test_top5'] = final['test_top5']
  return report


def format_report(report: dict) -> str:
  lines = [f"{report['space']} network of {report['genotype']}",
           f"parameters: {report['params']:,}" + (f" (+{report['auxiliary_params']:,} auxiliary head)"
                                                  if report['auxiliary_params'] else ''),
           f"multiply-adds: {report['multiply_adds']:,} per image",
           f"test accuracy on {report['dataset']}: {100 * report['test_acc']:.2f}%"
           + (f" (top-5 {100 * report['test_top5']:.2f}%)" if 'test_top5' in report else '')
           + f" after {report['epochs']} epochs"]
  if report['seconds_per_epoch'] is not None:
    lines.append(f"seconds per epoch: {report['seconds_per_epoch']:.2f}")
  return '\n'.join(lines)
