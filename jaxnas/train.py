"""Evaluation training: the discrete network of a genotype, trained from scratch.

Its configuration and the spaces' evaluation recipes: :mod:`jaxnas.train_config`.

Order of the data: step s of epoch e reads training batch ``s`` of the
permutation drawn from ``(seed, e)`` (:func:`jaxnas.data.batch_indices`), so a
resumed run equals an uninterrupted one (:mod:`jaxnas.loop`). Evaluation reads
the whole test split in order; the last, partial batch is padded and masked.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxnas import benchmark_table
from jaxnas import data as data_lib
from jaxnas import loop, optim, plot, sharding, xla
from jaxnas.spaces import get_space
from jaxnas.spaces.base import count_params, init_variables
from jaxnas.train_config import TrainConfig


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


class TrainHyper(NamedTuple):
  """The training settings the step reads (of a resolved :class:`TrainConfig`)."""
  lr: float
  lr_min: float
  momentum: float
  weight_decay: float
  grad_clip: float
  nesterov: bool
  drop_path: float
  auxiliary_weight: float

  @classmethod
  def of(cls, config: TrainConfig) -> 'TrainHyper':
    return cls(*(getattr(config, name) for name in cls._fields))


class TrainSpec(NamedTuple):
  """What the training step's program depends on besides its arguments, and its key in
  the program cache (its ``repr``). Not the run's length: ``epochs`` is an argument of
  the step, so a run resumed for more epochs runs the program it compiled."""
  model: Any
  hyper: TrainHyper
  steps_per_epoch: int
  augment: data_lib.Augment
  mean: tuple[float, ...]
  std: tuple[float, ...]

  def schedule(self, epochs):
    h = self.hyper
    return optim.cosine_per_epoch(h.lr, h.lr_min, epochs, self.steps_per_epoch)

  def tx(self, epochs) -> optax.GradientTransformation:
    h = self.hyper
    return optim.sgd(self.schedule(epochs), h.momentum, h.weight_decay, h.grad_clip, h.nesterov)

  def drop_prob(self, step, epochs):
    """Drop-path probability, rising linearly per epoch: ``p · epoch / epochs``."""
    return self.hyper.drop_path * (step // self.steps_per_epoch) / epochs


def loss_fn(logits, aux_logits, labels, aux_weight: float):
  """Cross-entropy, plus ``aux_weight`` times the auxiliary head's where it is given."""
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
  if aux_logits is not None:
    loss = loss + aux_weight * optax.softmax_cross_entropy_with_integer_labels(aux_logits, labels).mean()
  return loss


def train_step(spec: TrainSpec, state: TrainState, x, y, epochs):
  """One SGD step on a training batch (augmented on the device) of a run of ``epochs``
  epochs; returns the new state and metrics."""
  key = jax.random.wrap_key_data(state.key)
  key, k_aug, k_drop = jax.random.split(key, 3)
  x = spec.augment(k_aug, x, spec.mean, spec.std)
  drop = spec.drop_prob(state.step, epochs) if spec.hyper.drop_path else None

  def loss(params):
    (logits, aux), new = spec.model.apply(
        {'params': params, 'batch_stats': state.batch_stats}, x, train=True, drop_prob=drop,
        mutable=['batch_stats'], rngs={'dropout': k_drop})
    return loss_fn(logits, aux, y, spec.hyper.auxiliary_weight), (new['batch_stats'], logits)
  (value, (stats, logits)), grads = jax.value_and_grad(loss, has_aux=True)(state.params)
  updates, opt = spec.tx(epochs).update(grads, state.opt, state.params)
  metrics = {'train_loss': value, 'train_acc': jnp.mean(jnp.argmax(logits, -1) == y),
             'lr': spec.schedule(epochs)(state.step)}
  return TrainState(optax.apply_updates(state.params, updates), stats, opt, state.step + 1,
                    jax.random.key_data(key)), metrics


def eval_step(spec: TrainSpec, params, batch_stats, x, y, n_valid):
  """Summed loss and top-1 / top-5 hits of the first ``n_valid`` rows of a test batch."""
  x = (x - jnp.asarray(spec.mean, x.dtype)) / jnp.asarray(spec.std, x.dtype)
  logits, _ = spec.model.apply({'params': params, 'batch_stats': batch_stats}, x, train=False)
  valid = jnp.arange(x.shape[0]) < n_valid
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, y)
  top5 = jnp.any(jax.lax.top_k(logits, min(5, logits.shape[-1]))[1] == y[:, None], axis=-1)
  return {'loss': jnp.sum(jnp.where(valid, ce, 0)),
          'top1': jnp.sum(valid & (jnp.argmax(logits, -1) == y)),
          'top5': jnp.sum(valid & top5)}


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
  """One training run, the :class:`jaxnas.loop.Job` of :func:`train`: data, network, the
  jitted steps, the batches and the outputs."""

  def __init__(self, config: TrainConfig, dataset: data_lib.Dataset | None = None,
               programs: str | None = None):
    cfg = self.config = config
    self.programs = programs   # the folder of traced programs (jaxnas.xla.persistent_jit)
    self.space = get_space(cfg.space)
    self.genotype = self.space.load_genotype(cfg.genotype_or_error())
    self.data = dataset or data_lib.load(cfg.dataset, cfg.data_dir, cfg.download)
    self.test_split = data_lib.Split(self.data.x_test, self.data.y_test)
    self.steps_per_epoch = data_lib.steps_per_epoch(len(self.data.x_train), cfg.batch_size)
    options = {k: getattr(cfg, k) for k in self.space.network_options}
    model = self.space.network(self.genotype, cfg.channels, cfg.layers, self.data.num_classes,
                               **options)
    base = data_lib.default_train_augment(cfg.dataset) if cfg.augment else data_lib.NO_AUGMENT
    self.spec = TrainSpec(model, TrainHyper.of(cfg), self.steps_per_epoch,
                          dataclasses.replace(base, cutout=cfg.cutout), tuple(self.data.mean),
                          tuple(self.data.std))
    # data parallel: the batch split over the mesh, everything else replicated
    self.mesh, self.layout, repl = sharding.data_parallel(cfg.devices, cfg.batch_size)
    batch = sharding.batch_sharding(self.mesh)
    self.replicated, self.batch_sharding = repl, batch
    key = repr(self.spec)
    self.train_step = xla.persistent_jit(functools.partial(train_step, self.spec),
                                         ['train_step', key], programs, donate_argnums=0,
                                         in_shardings=(repl, batch, batch, repl),
                                         out_shardings=repl)
    self.epochs = sharding.put(np.int32(cfg.epochs), repl)
    self.eval_step = xla.persistent_jit(functools.partial(eval_step, self.spec),
                                        ['eval_step', key], programs,
                                        in_shardings=(repl, repl, batch, batch, repl),
                                        out_shardings=repl)
    self._redraw = plot.Redraw()

  def init_state(self) -> TrainState:
    k_w, k_run = jax.random.split(jax.random.key(self.config.seed))
    x = jnp.zeros((1,) + self.data.image_shape, jnp.float32)
    v = init_variables(self.spec.model, k_w, x, programs=self.programs)
    state = TrainState(v['params'], v.get('batch_stats', {}),
                       self.spec.tx(self.config.epochs).init(v['params']),
                       jnp.zeros((), jnp.int32), jax.random.key_data(k_run))
    return sharding.put(state, self.replicated)

  def batch(self, epoch: int, step: int) -> tuple[np.ndarray, np.ndarray]:
    """This process' rows of the batch of step ``step`` (on one host: all of them)."""
    idx = data_lib.batch_indices(self.config.seed, epoch, step, len(self.data.x_train),
                                 self.config.batch_size)[sharding.process_rows(self.config.batch_size)]
    return self.data.x_train[idx], self.data.y_train[idx]

  def step(self, state, epoch: int, step: int):
    x, y = sharding.put(self.batch(epoch, step), self.batch_sharding)
    return (*self.train_step(state, x, y, self.epochs), self.train_step)

  def end_epoch(self, state, epoch: int) -> dict:
    drop = (float(self.spec.drop_prob(epoch * self.steps_per_epoch, self.config.epochs))
            if self.config.drop_path else 0.0)
    return {'drop_prob': drop, **self.evaluate(state)}

  def write_outputs(self, state, history: list[dict], final: bool) -> None:
    if self._redraw(final):
      cfg = self.config
      plot.draw_curves(history, ('train_loss', 'test_loss', 'train_acc', 'test_acc'),
                       os.path.join(cfg.workdir, 'curves.png'),
                       f'{cfg.space} {self.genotype} on {cfg.dataset}'[:90])

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
          stop_after_steps: int | None = None, dataset: data_lib.Dataset | None = None,
          programs: str | None = None) -> TrainResult:
  """Trains (or resumes training) the genotype's network; writes to ``config.workdir``:
  ``config.json``, ``metrics.jsonl`` (per epoch: train and test loss and
  accuracy, lr, drop-path, seconds per step), ``curves.png``, ``report.json``, and
  checkpoints every epoch, every ``checkpoint_every`` steps and on
  SIGINT/SIGTERM (then raises :class:`jaxnas.loop.Interrupted`). With a folder
  ``programs`` (:func:`jaxnas.xla.program_dir`) its traced steps are kept there."""
  job = Trainer(config, dataset, programs)
  cfg, lay = job.config, job.layout
  opts = loop.Options(cfg.workdir, cfg.epochs, cfg.to_json(), TrainConfig.RESUMABLE_CHANGES,
                      cfg.checkpoint_every,
                      f"train {cfg.space}, batch {lay['global_batch']} = {lay['devices']} "
                      f"{lay['platform']} x {lay['per_device_batch']}")
  state, history = loop.run_job(job, opts, resume, progress, stop_after_steps)
  report = make_report(job, state, history)
  if sharding.is_main_process():
    with open(os.path.join(cfg.workdir, 'report.json'), 'w') as f:
      json.dump(report, f, indent=1)
  return TrainResult(report, history, cfg.workdir, cfg)


def make_report(run: Trainer, state: TrainState, history: list[dict]) -> dict:
  aux = count_params(state.params.get('auxiliary_head', {}))
  final = history[-1] if history else run.evaluate(state)
  per_step = [h['seconds_per_step'] for h in history if h.get('seconds_per_step') is not None]
  report = {'space': run.config.space, 'genotype': str(run.genotype), 'dataset': run.config.dataset,
            'epochs': run.config.epochs, 'params': count_params(state.params) - aux,
            'auxiliary_params': aux,
            'multiply_adds': multiply_adds(run.spec.model, run.data.image_shape),
            'test_acc': final['test_acc'], 'test_loss': final['test_loss'],
            'seconds_per_epoch': float(np.mean(per_step)) * run.steps_per_epoch if per_step else None,
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
  if report.get('benchmark'):
    lines.append(f"benchmark table: {benchmark_table.format_row(report['benchmark'])}")
  return '\n'.join(lines)
