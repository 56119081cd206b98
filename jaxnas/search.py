"""The architecture search: its jitted step and the job the loop runs (its config:
:mod:`jaxnas.search_config`). One module, read top to bottom as big_vision's trainer:
the step's spec, the step, the job, the entry point.

A search step moves α once, by its optimiser on the estimator's hypergradient
plus the relaxation's regulariser (on a validation batch), and the weights as
the estimator says (DARTS: one step of the weight optimiser on a training batch,
after the α step, at the new α). During the α warm-up (PC-DARTS' first 15
epochs) :func:`weights_step` trains the weights alone. The step is
:func:`search_step`, a module-level pure function of a :class:`StepSpec` (what
the program depends on besides its arguments), the state, the batch and the run's
length in epochs (an argument, so that a run resumed for more epochs runs the same
program), jitted once with the state donated; with a folder of programs (the CLI's
default, ``programs``) a later run of the same spec neither traces nor lowers it
(:class:`jaxnas.xla.persistent_jit`, keyed by the spec's ``repr``).

Order of the data: in epoch e, search step s reads training batches
``s·n .. s·n + n − 1`` of the epoch's permutation (n = the estimator's training
batches per step) and the k-th validation batch of an endless validation
stream, k = e·S + s (S search steps per epoch). Every batch is a pure function
of (seed, e, s) (:func:`jaxnas.data.batch_indices`), and the checkpoint holds
every other piece of state, so a resumed run equals an uninterrupted one
(:mod:`jaxnas.loop`).
"""
from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxnas import benchmark_table
from jaxnas import data as data_lib
from jaxnas import hypergrad, kernels, loop, optim, outputs, plot, relax, sharding, warmup, xla
from jaxnas.search_config import SearchConfig
from jaxnas.spaces import cells, get_space
from jaxnas.spaces.base import forward_over_reverse, init_variables


class SearchState(NamedTuple):
  params: Any
  batch_stats: Any
  w_opt: Any
  alpha: Any
  a_opt: Any
  wstep: jax.Array      # weight updates so far (the schedule's step)
  key: jax.Array        # raw uint32 key data (checkpointable)


class StepSpec(NamedTuple):
  """What the search step's program depends on besides its arguments; its ``repr`` (every
  field's is stable across processes) keys the program cache."""
  model: nn.Module
  estimator: hypergrad.Estimator
  relaxation: relax.Relaxation
  forward_over_reverse: bool
  optim: Any                     # the resolved OptimConfig
  weight_steps_per_epoch: int
  augment: data_lib.Augment
  mean: tuple[float, ...]
  std: tuple[float, ...]
  warmup: Any                    # the WarmupConfig
  image_shape: tuple[int, ...]
  compute_dtype: str             # the activations' (SizeConfig.compute_dtype)

  def weight_schedule(self, epochs):
    o = self.optim
    return optim.cosine_per_epoch(o.lr, o.lr_min, epochs, self.weight_steps_per_epoch)

  def weight_opt(self, epochs) -> hypergrad.WeightOpt:
    """The weight optimiser of a run of ``epochs`` epochs (an array in the step: the
    program does not depend on the run's length)."""
    o = self.optim
    lr = self.weight_schedule(epochs)
    # the virtual step: learning rate 1 (ξ or η scales it), no clip
    return hypergrad.WeightOpt(optim.sgd(lr, o.momentum, o.weight_decay, o.grad_clip, o.nesterov), lr,
                               optim.sgd(lambda count: 1.0, o.momentum, o.weight_decay,
                                         nesterov=o.nesterov))

  def alpha_opt(self) -> optax.GradientTransformation:
    o = self.optim
    return optim.alpha_optimizer(o.alpha_optimizer, o.alpha_lr, o.alpha_beta1, o.alpha_beta2,
                                 o.alpha_weight_decay)


def make_problem(spec: StepSpec, key, progress) -> hypergrad.Problem:
  """Cross-entropy of the supernet on training and on validation batches. A stochastic
  relaxation draws one sample per loss and step (from ``key``); ``progress`` is the
  fraction of the search done (its schedules). The relaxation's regulariser depends on
  α alone: :func:`search_step` adds its gradient to the estimator's hypergradient."""
  def loss_on(stream):
    def loss(params, alpha, batch, bn):
      x, y = batch
      logits, new = spec.model.apply({'params': params, 'batch_stats': bn},
                                     x.astype(spec.compute_dtype), alpha, train=True,
                                     progress=progress, mutable=['batch_stats'],
                                     rngs={'relax': jax.random.fold_in(key, stream)})
      logits = logits.astype(jnp.float32)
      ce = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
      return ce, (new['batch_stats'], {'loss': ce, 'acc': jnp.mean(jnp.argmax(logits, -1) == y)})
    return loss
  return hypergrad.Problem(loss_on(0), loss_on(1), spec.forward_over_reverse,
                          kernels.forward_over_reverse)


def _prepare(spec: StepSpec, state: SearchState, batch: dict, epochs):
  """The step's keys, augmented batches, problem and weights."""
  key = jax.random.wrap_key_data(state.key)
  key, k_train, k_val, k_est, k_relax = jax.random.split(key, 5)
  n = batch['train_x'].shape[0]
  train_x = jax.vmap(lambda k, x: spec.augment(k, x, spec.mean, spec.std))(
      jax.random.split(k_train, n), batch['train_x'])
  val_x = spec.augment(k_val, batch['val_x'], spec.mean, spec.std)
  epoch = state.wstep // spec.weight_steps_per_epoch
  problem = make_problem(spec, k_relax, epoch / jnp.maximum(epochs - 1, 1))
  weights = hypergrad.Weights(state.params, state.batch_stats, state.w_opt, state.wstep)
  batches = hypergrad.Batches((train_x, batch['train_y']), (val_x, batch['val_y']))
  return key, k_est, epoch, problem, weights, batches


def _with_weights(state: SearchState, weights: hypergrad.Weights, **changes) -> SearchState:
  return state._replace(params=weights.w, batch_stats=weights.state, w_opt=weights.opt_state,
                        wstep=weights.step, **changes)


def search_step(spec: StepSpec, state: SearchState, batch: dict, epochs):
  """One search step (module docstring) of a search of ``epochs`` epochs (an array: the
  program does not depend on the run's length); returns the new state and the step's
  metrics."""
  key, k_est, epoch, problem, weights, batches = _prepare(spec, state, batch, epochs)
  wopt = spec.weight_opt(epochs)
  est = spec.estimator(problem, wopt, weights, state.alpha, batches, k_est)
  # the relaxation's regulariser λ_e R(α), e the epoch of the weight-step count
  reg_weight = jnp.asarray(spec.relaxation.weight(epoch, epochs), jnp.float32)
  reg, reg_grad = jax.value_and_grad(spec.relaxation.regularize)(state.alpha)
  alpha_grad = jax.tree_util.tree_map(lambda g, r: g + reg_weight * r, est.alpha_grad, reg_grad)
  updates, a_opt = spec.alpha_opt().update(alpha_grad, state.a_opt, state.alpha)
  alpha = optax.apply_updates(state.alpha, updates)
  weights, metrics = est.weights, est.metrics
  if spec.estimator.spec.weights_after_alpha:
    weights, train_metrics = hypergrad.weight_steps(problem, wopt, weights, alpha, batches.train)
    metrics = {**metrics, **train_metrics}
  new = _with_weights(state, weights, alpha=alpha, a_opt=a_opt, key=jax.random.key_data(key))
  return new, dict(metrics, lr=wopt.lr(state.wstep), regularizer=reg,
                   regularizer_weight=reg_weight)


def weights_step(spec: StepSpec, state: SearchState, batch: dict, epochs):
  """A step of the α warm-up (``optim.alpha_warmup_epochs``): α frozen, the weights
  trained on the step's training batches (PC-DARTS ``train_search.py``: the
  architect's step only from epoch 15)."""
  key, _, _, problem, weights, batches = _prepare(spec, state, batch, epochs)
  wopt = spec.weight_opt(epochs)
  weights, metrics = hypergrad.weight_steps(problem, wopt, weights, state.alpha, batches.train)
  return (_with_weights(state, weights, key=jax.random.key_data(key)),
          dict(metrics, lr=wopt.lr(state.wstep)))


@dataclasses.dataclass
class SearchResult:
  genotype: Any
  alpha: dict[str, np.ndarray]
  weights: dict[str, np.ndarray]   # mixing weights of the relaxation
  history: list[dict]
  workdir: str
  config: SearchConfig
  benchmark: dict[str, float] | None = None   # the genotype's row of --benchmark-table


def _counting(counter: list, fn):
  """``fn`` that counts its traces in ``counter[0]`` (a jitted function runs it at trace
  time only), each trace on fresh edge scans (:func:`jaxnas.spaces.cells.fresh_edge_scans`)."""
  def counted(*args):
    counter[0] += 1
    cells.fresh_edge_scans()
    return fn(*args)
  return counted


class Search:
  """One search run, the :class:`jaxnas.loop.Job` of :func:`search`: data, the step spec,
  the jitted steps, the batches, and the outputs."""

  def __init__(self, config: SearchConfig, dataset: data_lib.Dataset | None = None,
               programs: str | None = None):
    cfg = self.config = config
    self.programs = programs   # the folder of traced programs (jaxnas.xla.persistent_jit)
    self.space = get_space(cfg.space)
    if cfg.benchmark_table:
      benchmark_table.load(cfg.benchmark_table)   # a bad file stops the run before it starts
    self.estimator = hypergrad.make(cfg.method, **cfg.method_options)
    self.relaxation = relax.make(cfg.relaxation, **cfg.relaxation_options)
    self.data = dataset or data_lib.load(cfg.data.dataset, cfg.data.data_dir, cfg.data.download)
    self.train, self.val = data_lib.search_split(self.data, cfg.data.train_portion)
    self.n_train = self.estimator.train_batches
    self.train_spe = data_lib.steps_per_epoch(len(self.train.x), cfg.size.batch_size)
    self.val_spe = data_lib.steps_per_epoch(len(self.val.x), cfg.size.batch_size)
    self.steps_per_epoch = self.train_spe // self.n_train
    if self.steps_per_epoch == 0:
      raise ValueError(f'{cfg.method} takes {self.n_train} training batches per step but an epoch '
                       f'has only {self.train_spe}: lower the batch size or the method\'s n')
    model = self.space.supernet(cfg.size.channels, cfg.size.layers, self.data.num_classes,
                                self.relaxation, remat=cfg.size.remat)
    augment = (data_lib.search_augment(cfg.data.dataset) if cfg.data.augment
               else data_lib.NO_AUGMENT)
    self.spec = StepSpec(model, self.estimator, self.relaxation, forward_over_reverse(self.space),
                         cfg.optim, self.steps_per_epoch * self.n_train, augment,
                         tuple(self.data.mean), tuple(self.data.std), cfg.warmup,
                         self.data.image_shape, cfg.size.compute_dtype)
    # data parallel: the batch split over the mesh, everything else replicated
    self.mesh, self.layout, self.replicated = sharding.data_parallel(cfg.devices,
                                                                     cfg.size.batch_size)
    train_sh, val_sh = sharding.batch_sharding(self.mesh, 1), sharding.batch_sharding(self.mesh, 0)
    self.batch_shardings = {'train_x': train_sh, 'train_y': train_sh, 'val_x': val_sh,
                            'val_y': val_sh}
    # the run's length is an argument of the steps, not a constant of their programs: a
    # run resumed for more epochs (and a test of another length) runs the same programs
    self.epochs = sharding.put(np.int32(cfg.size.epochs), self.replicated)
    step_shardings = (self.replicated, self.batch_shardings, self.replicated)
    self._traces = [0]
    key = repr(self.spec)
    self.step_fn = xla.persistent_jit(
        _counting(self._traces, functools.partial(search_step, self.spec)), ['search_step', key],
        programs, donate_argnums=0, in_shardings=step_shardings,
        out_shardings=self.replicated)
    self.weights_fn = xla.persistent_jit(
        _counting(self._traces, functools.partial(weights_step, self.spec)), ['weights_step', key],
        programs, donate_argnums=0, in_shardings=step_shardings,
        out_shardings=self.replicated)
    self.warmup_fn = xla.persistent_jit(
        _counting(self._traces, functools.partial(warmup.warmup_step, self.spec)),
        ['warmup_step', key], programs, donate_argnums=0, in_shardings=(self.replicated, self.replicated),
        out_shardings=self.replicated)
    self._redraw = plot.Redraw()

  @property
  def traces(self) -> int:
    """How often the jitted steps have been traced (once each per process, at most)."""
    return self._traces[0]

  # -- the Job ------------------------------------------------------------------

  def init_state(self) -> SearchState:
    cfg = self.config
    k_alpha, k_w, k_run = jax.random.split(jax.random.key(cfg.seed), 3)
    alpha = self.space.init_alpha(k_alpha, cfg.optim.alpha_init_scale, self.relaxation)
    x = jnp.zeros((1,) + self.data.image_shape, jnp.float32)
    v = init_variables(self.spec.model, k_w, x, alpha, programs=self.programs)
    state = SearchState(v['params'], v.get('batch_stats', {}),
                        self.spec.weight_opt(cfg.size.epochs).tx.init(v['params']),
                        alpha, self.spec.alpha_opt().init(alpha), jnp.zeros((), jnp.int32),
                        jax.random.key_data(k_run))
    return sharding.put(state, self.replicated)

  def batch(self, epoch: int, step: int) -> dict[str, np.ndarray]:
    """This process' rows of step ``step``'s batches (on one host: all of them)."""
    cfg, n, bs = self.config, self.n_train, self.config.size.batch_size
    if not 0 <= step < self.steps_per_epoch:
      raise IndexError(f'step {step} of epoch {epoch}: an epoch has {self.steps_per_epoch} steps')
    tr = [data_lib.batch_indices(cfg.seed, epoch, step * n + i, len(self.train.x), bs)
          for i in range(n)]
    k = epoch * self.steps_per_epoch + step
    va = data_lib.batch_indices(cfg.seed + 1, k // self.val_spe, k % self.val_spe, len(self.val.x), bs)
    rows = sharding.process_rows(bs)
    tr, va = np.stack(tr)[:, rows], va[rows]
    return {'train_x': self.train.x[tr], 'train_y': self.train.y[tr],
            'val_x': self.val.x[va], 'val_y': self.val.y[va]}

  def step(self, state, epoch: int, step: int):
    if epoch < self.config.warmup.epochs:  # label-free: reads no batch
      return (*self.warmup_fn(state, self.epochs), self.warmup_fn)
    batch = sharding.put(self.batch(epoch, step), self.batch_shardings)
    alpha_frozen = epoch < self.config.warmup.epochs + self.config.optim.alpha_warmup_epochs
    fn = self.weights_fn if alpha_frozen else self.step_fn
    return (*fn(state, batch, self.epochs), fn)

  def end_epoch(self, state, epoch: int) -> dict:
    try:
      genotype = self.genotype(state.alpha)
      text, row = str(genotype), self.benchmark(genotype)
    except ValueError as e:   # a threshold no op reaches yet (Fair DARTS early on)
      text, row = f'none yet: {e}', None
    record = {**{k: self.layout[k] for k in ('devices', 'global_batch', 'per_device_batch')},
              'weights': {k: v.tolist() for k, v in self.mixing_weights(state.alpha).items()},
              'genotype': text}
    return record if self.config.benchmark_table is None else {**record, 'benchmark': row}

  def benchmark(self, genotype) -> dict[str, float] | None:
    """The genotype's real accuracies in ``--benchmark-table`` (None without one)."""
    return benchmark_table.lookup(self.config.benchmark_table, self.config.space, genotype)

  def write_outputs(self, state, history: list[dict], final: bool) -> None:
    """alpha.npz, genotype.json/.txt, and (at the end, or at most once a minute) the
    pictures. A genotype that cannot be derived yet (no op reaches Fair DARTS'
    threshold) is an error at the end only, after α is saved."""
    wd = self.config.workdir
    if history:
      traj = {k: np.stack([np.asarray(h['weights'][k]) for h in history]) for k in history[0]['weights']}
      np.savez(os.path.join(wd, 'alpha.npz'), epochs=np.array([h['epoch'] for h in history]),
               **{f'weights_{k}': v for k, v in traj.items()},
               **{f'alpha_{k}': np.asarray(v) for k, v in state.alpha.items()})
    try:
      genotype = self.genotype(state.alpha)
    except ValueError as e:
      if final:
        raise ValueError(f'{e} (α and its history are in {os.path.join(wd, "alpha.npz")}, the '
                         'checkpoint in the workdir)') from None
      return
    outputs.write_genotype(wd, genotype, self.benchmark(genotype))
    if not history or not self._redraw(final):
      return
    cfg = self.config
    for cell in self.space.cells:
      plot.draw_cell(self.space, genotype, os.path.join(wd, f'{cell}.png'), cell)
      plot.draw_alpha_trajectory(traj[cell], self.space.ops(self.relaxation), self.space.edge_labels,
                                 os.path.join(wd, f'alpha_{cell}.png'),
                                 f'{cfg.space} {cell}: mixing weights per edge ({cfg.relaxation})')
    columns = benchmark_table.load(cfg.benchmark_table).columns if cfg.benchmark_table else ()
    plot.draw_curves(history, ('train_loss', 'val_loss', 'train_acc', 'val_acc', 'zen_f'),
                     os.path.join(wd, 'curves.png'), f'{cfg.method} search on {cfg.data.dataset}',
                     benchmark_columns=columns)

  # -- derived views ------------------------------------------------------------

  def mixing_weights(self, alpha) -> dict[str, np.ndarray]:
    return self.relaxation.derive_weights(alpha)

  def genotype(self, alpha):
    return self.space.derive_genotype(alpha, self.relaxation)


def search(config: SearchConfig, resume: bool = False, progress: bool = True,
           stop_after_steps: int | None = None, dataset: data_lib.Dataset | None = None,
           programs: str | None = None) -> SearchResult:
  """Runs (or resumes) a search and writes its outputs to ``config.workdir``.

  Writes ``config.json`` (the resolved config), ``metrics.jsonl`` (one record per
  epoch: losses, accuracies, mixing weights, genotype, seconds per step),
  ``genotype.json`` and ``genotype.txt``, ``alpha.npz`` (the trajectory) and PNG
  pictures. Checkpoints every epoch, every ``checkpoint_every`` steps, and on
  SIGINT/SIGTERM (then raises :class:`jaxnas.loop.Interrupted`). With a folder
  ``programs`` (:func:`jaxnas.xla.program_dir`) its traced steps are kept there, and a
  later run of the same steps neither traces nor lowers them.
  """
  job = Search(config, dataset, programs)
  cfg, lay = job.config, job.layout
  opts = loop.Options(cfg.workdir, cfg.size.epochs, cfg.to_json(), SearchConfig.RESUMABLE_CHANGES,
                      cfg.checkpoint_every,
                      f"{cfg.method} search, batch {lay['global_batch']} = {lay['devices']} "
                      f"{lay['platform']} x {lay['per_device_batch']}")
  state, history = loop.run_job(job, opts, resume, progress, stop_after_steps)
  genotype = job.genotype(state.alpha)
  return SearchResult(genotype, {k: np.asarray(v) for k, v in state.alpha.items()},
                      job.mixing_weights(state.alpha), history, cfg.workdir, cfg,
                      job.benchmark(genotype))
