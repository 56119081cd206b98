"""The architecture search loop: one jitted step, schedules, checkpoints, logs, pictures.

A search step moves α once, by Adam on the estimator's hypergradient (on a
validation batch), and the weights as the estimator says (DARTS: one SGD step
on a training batch). The step is one ``jax.jit`` with the state donated;
it is traced once per run, and with the program cache on (the CLI's default)
not at all in a later run of the same configuration
(:class:`jaxnas.xla.persistent_jit`).

Order of the data: in epoch e, search step s reads training batches
``s·n .. s·n + n − 1`` of the epoch's permutation (n = training batches per
step: 1, or multistep's n) and the k-th validation batch of an endless
validation stream, k = e·S + s (S search steps per epoch). Every batch is a
pure function of (seed, e, s) (:func:`jaxnas.data.batch_indices`), and the
checkpoint holds every other piece of state, so a resumed run equals an
uninterrupted one.
"""
from __future__ import annotations

import dataclasses
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
from jaxnas import hypergrad, plot, proxies, relax, sharding, spaces, xla
from jaxnas.config import option
from jaxnas.checkpoint import Checkpointer, Interrupted, StopSignals, check_resume_config
from jaxnas.spaces import get_space
from jaxnas.spaces.base import init_variables


ALPHA_OPTIMIZERS = ('adam', 'sgd')
WARMUP_MOVES = ('w', 'alpha', 'both')


@dataclasses.dataclass(frozen=True)
class SearchConfig:
  """Search settings; the defaults are DARTS' (Liu et al. 2019) for CIFAR-10.

  ``channels``, ``layers`` and ``epochs`` left as None are resolved by
  :meth:`resolved`: for the embedded 8x8 digits a small supernet that searches
  in minutes on a CPU, otherwise the space's search size (DARTS: C=16, 8
  cells, 50 epochs; NAS-Bench-201: C=16, 5 cells per stage, 50 epochs).
  Every field is checked when the config is built (:func:`jaxnas.config.validate`).
  """
  space: str = option('darts', 'search space', choices=lambda: spaces.SPACES)
  method: str = option('darts1', 'hypergradient estimator', choices=lambda: hypergrad.ESTIMATORS)
  relaxation: str = option('softmax', 'α -> mixing weights', choices=lambda: relax.RELAXATIONS)
  dataset: str = option('digits', 'digits, a tensorflow-datasets name, or npz:PATH',
                        check=data_lib.check_name)
  data_dir: str | None = option(None, 'tensorflow-datasets directory')
  download: bool = option(False, 'let tensorflow-datasets download (needs TensorFlow and a connection)')
  train_portion: float = option(0.5, 'share of the training set that trains the weights', gt=0, lt=1)
  augment: bool = option(False, "the data set's crop and flip on the search batches")
  epochs: int | None = option(None, 'epochs (None: 10 on digits, else 50)', min=1)
  batch_size: int = option(64, 'images per batch', min=1)
  channels: int | None = option(None, 'initial channels C (None: 8 on digits, else 16)', min=1)
  layers: int | None = option(None, 'cells (darts) or cells per stage (nb201)', min=1)
  remat: bool = option(True, 'recompute each mixed op in the backward pass (less memory)')
  # weights: SGD with momentum, cosine schedule per epoch, gradient clipping
  lr: float = option(0.025, 'weight learning rate (cosine per epoch)', gt=0)
  lr_min: float = option(0.001, 'the cosine schedule\'s final learning rate', min=0)
  momentum: float = option(0.9, 'weight SGD momentum', min=0, lt=1)
  weight_decay: float = option(3e-4, 'weight decay (L2 added to the gradient)', min=0)
  grad_clip: float = option(5.0, 'global gradient-norm clip', gt=0)
  # architecture: Adam (DARTS), or plain SGD with step q (SGE-NAS); None: by method
  alpha_optimizer: str | None = option(None, 'adam or sgd (None: by method)', choices=ALPHA_OPTIMIZERS)
  alpha_lr: float | None = option(None, 'α learning rate (None: 3e-4 for adam, 0.01 for sgd)', gt=0)
  alpha_beta1: float = option(0.5, 'α Adam β1', min=0, lt=1)
  alpha_beta2: float = option(0.999, 'α Adam β2', min=0, lt=1)
  alpha_weight_decay: float = option(1e-3, 'α weight decay', min=0)
  alpha_init_scale: float = option(1e-3, 'α = scale · N(0, 1) at the start', min=0)
  # relaxations (the weights are the authors' defaults)
  pc_k: int = option(4, 'pc: 1/K of the channels through the mixed ops', min=1)
  fair_weight: float = option(10.0, 'fair: weight of the zero-one loss', min=0)
  fair_threshold: float | None = option(0.85, "fair: threshold derive rule (None: the space's rule)")
  beta_weight_start: float = option(0.0, 'beta: β-decay weight at the first epoch', min=0)
  beta_weight_end: float = option(50.0, 'beta: β-decay weight at the last epoch', min=0)
  # estimators
  xi: float | None = option(None, 'darts2: virtual step size (None: the current weight lr)', min=0)
  fd_r: float = option(1e-2, 'darts2-fd: ε = fd_r / ‖v‖', gt=0)
  multistep_n: int = option(2, 'multistep: weight steps per α step', min=1)
  # multistep: label-free warm-up. The first m epochs maximise Zen(F) =
  # β1·log tr NTK + β2·BN on Gaussian inputs (no data is read). By default it
  # moves the weights only: a label-free score that rewards NTK trace and BN
  # variance favours ops by their gain, not by the task, so α is left to the
  # labelled search (as DARTS-style warm-ups train w alone before moving α).
  zen_warmup_epochs: int = option(0, 'multistep: label-free Zen(F) warm-up epochs', min=0)
  zen_warmup_moves: str = option('w', 'what the warm-up moves: w, alpha or both',
                                 choices=WARMUP_MOVES)
  zen_beta1: float = option(1.0, 'Zen(F) weight of log tr NTK')
  zen_beta2: float = option(1.0, 'Zen(F) weight of the BN term')
  zen_batch_size: int = option(16, 'Gaussian inputs per warm-up weight step', min=1)
  # sge, esj, unroll: N inner SGD steps of size p (unroll is the exact
  # hypergradient through the same steps); sge: Q directions, smoothing μ
  sge_q: int = option(10, 'sge: Gaussian directions Q', min=1)
  sge_n: int = option(1, 'sge, esj, unroll: inner SGD steps N', min=1)
  sge_mu: float = option(1e-2, 'sge, esj: smoothing μ', gt=0)
  sge_p: float = option(0.01, 'sge, esj, unroll: inner step size p', gt=0)
  sge_chunk: int | None = option(None, 'sge: perturbed runs vmapped at once (None: all Q)', min=1)
  unroll_remat: bool = option(False, 'unroll: rematerialise each inner step (memory O(1) in N)')
  implicit_solver: str = option('cg', 'implicit: cg or neumann', choices=('cg', 'neumann'))
  implicit_k: int = option(10, 'implicit: solver iterations', min=1)
  implicit_eta: float = option(0.01, 'implicit: Neumann step', gt=0)
  implicit_damping: float = option(0.0, 'implicit: solve (H + δI) z = ∇w L_val', min=0)
  seed: int = option(2, 'random seed (α, weights, batches)')
  devices: str | None = option(None, "'all' or N: the data-parallel mesh (None: $JAXNAS_DEVICES, else all)",
                               check=sharding.check_devices)
  workdir: str = option('runs/search', 'output directory')
  checkpoint_every: int = option(0, 'also checkpoint every this many steps (0: at epoch ends only)',
                                 min=0)

  # Fields that may change when a run is resumed: the length of the run and
  # where and how often it is saved.
  RESUMABLE_CHANGES = ('epochs', 'checkpoint_every', 'workdir', 'data_dir', 'download', 'devices')

  def __post_init__(self):
    config_lib.validate(self)
    if self.zen_warmup_epochs and self.method != 'multistep':
      raise ValueError(f'the Zen(F) warm-up (zen_warmup_epochs) belongs to method multistep, '
                       f'not {self.method}')
    if self.lr_min > self.lr:
      raise ValueError(f'lr_min (--lr-min) {self.lr_min} is above lr (--lr) {self.lr}')

  def resolved(self) -> 'SearchConfig':
    """The config with every None resolved by data set, space and method, and the
    batch checked against the devices."""
    space = get_space(self.space)
    small = self.dataset == 'digits'
    # SGE-NAS moves α by plain gradient steps of size q = 0.01 (its Algorithm 1)
    alpha_opt = self.alpha_optimizer or ('sgd' if self.method in ('sge', 'esj') else 'adam')
    defaults = {'channels': 8 if small else space.defaults['channels'],
                'layers': (5 if self.space == 'darts' else 1) if small else space.defaults['layers'],
                'epochs': 10 if small else 50,
                'alpha_optimizer': alpha_opt,
                'alpha_lr': 3e-4 if alpha_opt == 'adam' else 0.01,
                'devices': sharding.default_devices()}
    cfg = dataclasses.replace(self, **{k: v for k, v in defaults.items() if getattr(self, k) is None})
    if cfg.zen_warmup_epochs >= cfg.epochs:
      raise ValueError(f'zen_warmup_epochs must lie in 1..epochs-1 = {cfg.epochs - 1}, got '
                       f'{cfg.zen_warmup_epochs}')
    sharding.check_batch(cfg.batch_size, sharding.make_mesh(cfg.devices))
    return cfg

  def estimator_options(self) -> dict[str, Any]:
    unrolled = {'n': self.sge_n, 'p': self.sge_p}
    return {'darts2': {'xi': self.xi}, 'darts2-fd': {'xi': self.xi, 'fd_r': self.fd_r},
            'multistep': {'n': self.multistep_n},
            'unroll': {**unrolled, 'remat': self.unroll_remat},
            'sge': {**unrolled, 'q': self.sge_q, 'mu': self.sge_mu, 'chunk': self.sge_chunk},
            'esj': {**unrolled, 'mu': self.sge_mu},
            'implicit': {'solver': self.implicit_solver, 'k': self.implicit_k,
                         'eta': self.implicit_eta, 'damping': self.implicit_damping},
            }.get(self.method, {})

  def regularizer_weights(self) -> tuple[float, float]:
    """The relaxation regulariser's weight at the first and at the last epoch."""
    return {'fair': (self.fair_weight, self.fair_weight),
            'beta': (self.beta_weight_start, self.beta_weight_end)}.get(self.relaxation, (0.0, 0.0))

  def to_json(self) -> dict[str, Any]:
    return config_lib.to_json(self)


# Config fields that do not reach the jitted step's program.
NOT_IN_PROGRAM = ('workdir', 'checkpoint_every', 'data_dir', 'download', 'seed')


class SearchState(NamedTuple):
  params: Any
  batch_stats: Any
  w_opt: Any
  alpha: Any
  a_opt: Any
  wstep: jax.Array      # weight updates so far (the schedule's step)
  key: jax.Array        # raw uint32 key data (checkpointable)


@dataclasses.dataclass
class SearchResult:
  genotype: Any
  alpha: dict[str, np.ndarray]
  weights: dict[str, np.ndarray]   # mixing weights of the relaxation
  history: list[dict]
  workdir: str
  config: SearchConfig


class SearchInterrupted(Interrupted):
  """The search stopped on a signal (or on request) after saving a checkpoint."""


# ----------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------

def cosine_per_epoch(lr: float, lr_min: float, epochs: int, steps_per_epoch: int):
  """DARTS' CosineAnnealingLR stepped per epoch: epoch e uses
  ``lr_min + (lr − lr_min)(1 + cos(π e / epochs)) / 2``."""
  def schedule(count):
    epoch = jnp.minimum(count // steps_per_epoch, epochs)
    return lr_min + 0.5 * (lr - lr_min) * (1 + jnp.cos(jnp.pi * epoch / epochs))
  return schedule


def weight_optimizer(cfg: SearchConfig, weight_steps_per_epoch: int) -> hypergrad.WeightOpt:
  """PyTorch's SGD(momentum, weight_decay) after clip_grad_norm_, as optax."""
  lr = cosine_per_epoch(cfg.lr, cfg.lr_min, cfg.epochs, weight_steps_per_epoch)
  tx = optax.chain(optax.clip_by_global_norm(cfg.grad_clip),
                   optax.add_decayed_weights(cfg.weight_decay),
                   optax.trace(decay=cfg.momentum),
                   optax.scale_by_schedule(lambda c: -lr(c)))
  return hypergrad.WeightOpt(tx, lr, cfg.momentum, cfg.weight_decay)


def alpha_optimizer(cfg: SearchConfig) -> optax.GradientTransformation:
  """PyTorch's Adam(lr, betas, weight_decay) or SGD(lr, weight_decay): L2 added
  to the gradient. ``cfg`` must be resolved."""
  scale = (optax.scale_by_adam(b1=cfg.alpha_beta1, b2=cfg.alpha_beta2, eps=1e-8)
           if cfg.alpha_optimizer == 'adam' else optax.identity())
  return optax.chain(optax.add_decayed_weights(cfg.alpha_weight_decay), scale,
                     optax.scale(-cfg.alpha_lr))


def make_problem(model) -> hypergrad.Problem:
  """Cross-entropy of the supernet, on training and on validation batches. (The
  relaxation's regulariser depends on α alone: the search step adds its
  gradient to the estimator's hypergradient.)"""
  def loss(params, alpha, batch, bn):
    x, y = batch
    logits, new = model.apply({'params': params, 'batch_stats': bn}, x, alpha, train=True,
                              mutable=['batch_stats'])
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    acc = jnp.mean(jnp.argmax(logits, -1) == y)
    return ce, (new['batch_stats'], {'loss': ce, 'acc': acc})
  return hypergrad.Problem(loss, loss, getattr(model, 'forward_over_reverse', False))


class Search:
  """One search run: data, model, the jitted step and the loop (see :func:`search`)."""

  def __init__(self, config: SearchConfig, dataset: data_lib.Dataset | None = None):
    cfg = config.resolved()
    self.config = cfg
    self.space = get_space(cfg.space)
    self.estimator = hypergrad.get_estimator(cfg.method)
    self.options = cfg.estimator_options()
    self.n_train = hypergrad.train_batches_per_step(cfg.method, self.options)
    self.data = dataset or data_lib.load(cfg.dataset, cfg.data_dir, cfg.download)
    self.train, self.val = data_lib.search_split(self.data, cfg.train_portion)
    self.train_spe = data_lib.steps_per_epoch(len(self.train.x), cfg.batch_size)
    self.val_spe = data_lib.steps_per_epoch(len(self.val.x), cfg.batch_size)
    self.steps_per_epoch = self.train_spe // self.n_train
    if self.steps_per_epoch == 0:
      raise ValueError(f'{cfg.method} takes {self.n_train} training batches per step but an epoch '
                       f'has only {self.train_spe}: lower the batch size or multistep_n')
    extra = {'remat': cfg.remat, **({'partial_channels': cfg.pc_k} if cfg.relaxation == 'pc' else {})}
    self.model = self.space.supernet(cfg.channels, cfg.layers, self.data.num_classes,
                                     cfg.relaxation, **extra)
    self.problem = make_problem(self.model)
    self.weight_steps_per_epoch = self.steps_per_epoch * self.n_train
    self.wopt = weight_optimizer(cfg, self.weight_steps_per_epoch)
    self.aopt = alpha_optimizer(cfg)
    self.augment = data_lib.default_train_augment(cfg.dataset) if cfg.augment else data_lib.NO_AUGMENT
    # data parallel: the batch split over the mesh, everything else replicated
    self.mesh = sharding.make_mesh(cfg.devices)
    self.layout = sharding.describe(self.mesh, cfg.batch_size)
    self.replicated = sharding.replicated(self.mesh)
    train_sh, val_sh = sharding.batch_sharding(self.mesh, 1), sharding.batch_sharding(self.mesh, 0)
    self.batch_shardings = {'train_x': train_sh, 'train_y': train_sh, 'val_x': val_sh,
                            'val_y': val_sh}
    self.traces = 0
    # what the step closes over besides its arguments, for the program cache
    key = {**{k: v for k, v in cfg.to_json().items() if k not in NOT_IN_PROGRAM},
           'data': [self.data.image_shape, self.data.num_classes, np.asarray(self.data.mean).tolist(),
                    np.asarray(self.data.std).tolist(), len(self.train.x), len(self.val.x)]}
    self.step_fn = xla.persistent_jit(self._step, ['step', key], donate_argnums=0,
                                      in_shardings=(self.replicated, self.batch_shardings),
                                      out_shardings=self.replicated)
    self.warmup_fn = xla.persistent_jit(self._warmup_step, ['warmup', key], donate_argnums=0,
                                        in_shardings=(self.replicated,),
                                        out_shardings=self.replicated)

  # -- state ------------------------------------------------------------------

  def init_state(self) -> SearchState:
    cfg = self.config
    key = jax.random.key(cfg.seed)
    k_alpha, k_w, k_run = jax.random.split(key, 3)
    alpha = self.space.init_alpha(k_alpha, cfg.alpha_init_scale, cfg.relaxation)
    x = jnp.zeros((1,) + self.data.image_shape, jnp.float32)
    v = init_variables(self.model, k_w, x, alpha)
    state = SearchState(v['params'], v.get('batch_stats', {}), self.wopt.tx.init(v['params']),
                        alpha, self.aopt.init(alpha), jnp.zeros((), jnp.int32),
                        jax.random.key_data(k_run))
    return sharding.put(state, self.replicated)

  def batch(self, epoch: int, step: int) -> dict[str, np.ndarray]:
    """This process' rows of step ``step``'s batches (on one host: all of them)."""
    cfg, n = self.config, self.n_train
    if not 0 <= step < self.steps_per_epoch:
      raise IndexError(f'step {step} of epoch {epoch}: an epoch has {self.steps_per_epoch} steps')
    tr = [data_lib.batch_indices(cfg.seed, epoch, step * n + i, len(self.train.x), cfg.batch_size)
          for i in range(n)]
    k = epoch * self.steps_per_epoch + step
    va = data_lib.batch_indices(cfg.seed + 1, k // self.val_spe, k % self.val_spe,
                                len(self.val.x), cfg.batch_size)
    rows = sharding.process_rows(cfg.batch_size)
    tr, va = np.stack(tr)[:, rows], va[rows]
    return {'train_x': self.train.x[tr], 'train_y': self.train.y[tr],
            'val_x': self.val.x[va], 'val_y': self.val.y[va]}

  # -- the jitted step ----------------------------------------------------------

  def _step(self, state: SearchState, batch: dict):
    self.traces += 1  # runs at trace time only
    key = jax.random.wrap_key_data(state.key)
    key, k_train, k_val, k_est = jax.random.split(key, 4)
    mean, std = self.data.mean, self.data.std
    n = batch['train_x'].shape[0]
    train_x = jax.vmap(lambda k, x: self.augment(k, x, mean, std))(jax.random.split(k_train, n),
                                                                   batch['train_x'])
    val_x = self.augment(k_val, batch['val_x'], mean, std)
    weights = hypergrad.Weights(state.params, state.batch_stats, state.w_opt, state.wstep)
    batches = hypergrad.Batches((train_x, batch['train_y']), (val_x, batch['val_y']))
    est = self.estimator(self.problem, self.wopt, weights, state.alpha, batches, k_est,
                         **self.options)
    # the relaxation's regulariser λ_e R(α), epoch e of the weight-step count
    epoch = state.wstep // self.weight_steps_per_epoch
    reg_weight = relax.regularizer_weight(*self.config.regularizer_weights(), epoch,
                                          self.config.epochs)
    reg, reg_grad = jax.value_and_grad(lambda a: relax.regularizer(self.config.relaxation, a))(
        state.alpha)
    alpha_grad = jax.tree_util.tree_map(lambda g, r: g + reg_weight * r, est.alpha_grad, reg_grad)
    updates, a_opt = self.aopt.update(alpha_grad, state.a_opt, state.alpha)
    alpha = optax.apply_updates(state.alpha, updates)
    new = SearchState(est.weights.w, est.weights.state, est.weights.opt_state, alpha, a_opt,
                      est.weights.step, jax.random.key_data(key))
    metrics = dict(est.metrics, lr=self.wopt.lr(state.wstep), regularizer=reg,
                   regularizer_weight=jnp.asarray(reg_weight, jnp.float32))
    return new, metrics

  def _warmup_step(self, state: SearchState):
    """One label-free warm-up step: ascend Zen(F) on Gaussian inputs (no data).

    Moving w: n weight steps (multistep's n), each on its own Gaussian batch, by
    the weight optimiser on −∇w Zen(F), so that the schedule counts them as the
    labelled steps. Moving α: one α step on −∇α Zen(F) at the step's start
    weights. Zen(F)'s NTK trace is the two-pass estimate
    (:func:`jaxnas.proxies.kernels.ntk_trace_estimate`): one backward pass per
    gradient. BatchNorm statistics are left as they are.
    """
    self.traces += 1  # trace time only
    cfg = self.config
    key = jax.random.wrap_key_data(state.key)
    key, k_alpha, k_w = jax.random.split(key, 3)
    shape = jax.ShapeDtypeStruct((cfg.zen_batch_size,) + self.data.image_shape, jnp.float32)

    def zen_f(params, alpha, k):
      return proxies.expressivity.zen_f(
          proxies.supernet_apply(self.model, alpha),
          {'params': params, 'batch_stats': state.batch_stats}, (shape, None), k,
          cfg.zen_beta1, cfg.zen_beta2, estimate=True)
    params, w_opt, wstep, alpha, a_opt = (state.params, state.w_opt, state.wstep, state.alpha,
                                          state.a_opt)
    values = []
    if cfg.zen_warmup_moves in ('alpha', 'both'):
      value, ga = jax.value_and_grad(zen_f, argnums=1)(params, alpha, k_alpha)
      updates, a_opt = self.aopt.update(jax.tree_util.tree_map(jnp.negative, ga), a_opt, alpha)
      alpha = optax.apply_updates(alpha, updates)
      values.append(value)
    if cfg.zen_warmup_moves in ('w', 'both'):
      def body(carry, k):
        params, w_opt = carry
        value, g = jax.value_and_grad(zen_f)(params, state.alpha, k)
        updates, w_opt = self.wopt.tx.update(jax.tree_util.tree_map(jnp.negative, g), w_opt, params)
        return (optax.apply_updates(params, updates), w_opt), value
      (params, w_opt), vals = jax.lax.scan(body, (params, w_opt), jax.random.split(k_w, self.n_train))
      wstep = wstep + self.n_train
      values.append(jnp.mean(vals))
    new = SearchState(params, state.batch_stats, w_opt, alpha, a_opt, wstep, jax.random.key_data(key))
    return new, {'zen_f': values[-1], 'lr': self.wopt.lr(state.wstep)}

  # -- derived views ------------------------------------------------------------

  def mixing_weights(self, alpha) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in relax.mix(self.config.relaxation, alpha).items()}

  def genotype(self, alpha):
    cfg = self.config
    strength = relax.edge_strength(cfg.relaxation, alpha, self.space.cell_inputs)
    threshold = cfg.fair_threshold if cfg.relaxation == 'fair' else None
    return self.space.derive(self.mixing_weights(alpha), strength, threshold)


# ----------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------

def _edge_names(space: str) -> list[str]:
  from jaxnas.spaces import darts, nb201
  if space == 'darts':
    names = ['c_{k-2}', 'c_{k-1}', '0', '1', '2', '3']
    return [f'{names[i]}→{j}' for i, j in darts.EDGES]
  return [f'{j + 1}←{i}' for i, j in nb201.EDGES]


def _write_outputs(run: Search, workdir: str, history: list[dict], alpha, pictures: bool = True
                   ) -> Any:
  """genotype.json/.txt, alpha.npz, and (if ``pictures``) the pictures; returns the genotype."""
  cfg = run.config
  genotype = run.genotype(alpha)
  if not sharding.is_main_process():
    return genotype
  with open(os.path.join(workdir, 'genotype.json'), 'w') as f:
    json.dump(genotype.to_json(), f, indent=1)
  with open(os.path.join(workdir, 'genotype.txt'), 'w') as f:
    f.write(str(genotype) + '\n')
  if not history:
    return genotype
  traj = {k: np.stack([np.asarray(h['weights'][k]) for h in history]) for k in history[0]['weights']}
  np.savez(os.path.join(workdir, 'alpha.npz'), epochs=np.array([h['epoch'] for h in history]),
           **{f'weights_{k}': v for k, v in traj.items()},
           **{f'alpha_{k}': np.asarray(v) for k, v in alpha.items()})
  if not pictures:
    return genotype
  cells = ('normal', 'reduce') if cfg.space == 'darts' else ('cell',)
  for cell in cells:
    plot.draw_cell(cfg.space, genotype, os.path.join(workdir, f'{cell}.png'), cell)
    plot.draw_alpha_trajectory(traj[cell], run.space.primitives, _edge_names(cfg.space),
                               os.path.join(workdir, f'alpha_{cell}.png'),
                               f'{cfg.space} {cell}: mixing weights per edge ({cfg.relaxation})')
  plot.draw_curves(history, ('train_loss', 'val_loss', 'train_acc', 'val_acc', 'zen_f'),
                   os.path.join(workdir, 'curves.png'), f'{cfg.method} search on {cfg.dataset}')
  return genotype


def search(config: SearchConfig, resume: bool = False, progress: bool = True,
           stop_after_steps: int | None = None, dataset: data_lib.Dataset | None = None
           ) -> SearchResult:
  """Runs (or resumes) a search and writes its outputs to ``config.workdir``.

  Writes ``config.json``, ``metrics.jsonl`` (one record per epoch: losses,
  accuracies, mixing weights, genotype, seconds per step), ``genotype.json``
  and ``genotype.txt``, ``alpha.npz`` (the trajectory) and PNG pictures.
  Checkpoints every epoch, every ``checkpoint_every`` steps, and on
  SIGINT/SIGTERM (then raises :class:`SearchInterrupted`).
  ``stop_after_steps`` stops the same way after that many steps of this call.
  """
  run = Search(config, dataset)
  cfg = run.config
  workdir = cfg.workdir
  os.makedirs(workdir, exist_ok=True)
  ckpt = Checkpointer(workdir)
  S = run.steps_per_epoch
  history: list[dict] = []
  state = run.init_state()
  # running sums of this epoch's metrics; seconds and steps timed (the first
  # call of each step function in a process includes compilation and is not timed)
  epoch, step, sums, count, seconds, timed = 0, 0, {}, 0, 0.0, 0
  if resume:
    check_resume_config(workdir, cfg.to_json(), SearchConfig.RESUMABLE_CHANGES)
    if ckpt.latest_step() is not None:
      state, meta = ckpt.restore(state)
      epoch, step = meta['epoch'], meta['step']
      sums, count, seconds, timed = meta['sums'], meta['count'], meta['seconds'], meta['timed']
      with open(os.path.join(workdir, 'metrics.jsonl')) as f:
        history = [r for r in map(json.loads, f) if r['epoch'] < epoch]
  elif ckpt.latest_step() is not None:
    raise ValueError(f'{workdir} already holds a search (checkpoint step {ckpt.latest_step()}): '
                     f'pass --resume to continue it, or choose another --workdir')
  main = sharding.is_main_process()  # only process 0 writes logs and pictures
  if main:
    with open(os.path.join(workdir, 'config.json'), 'w') as f:
      json.dump(cfg.to_json(), f, indent=1)
    with open(os.path.join(workdir, 'metrics.jsonl'), 'w') as f:
      f.writelines(json.dumps(r) + '\n' for r in history)

  def save(epoch, step):
    meta = {'epoch': epoch, 'step': step, 'sums': sums, 'count': count, 'seconds': seconds,
            'timed': timed}
    ckpt.save(epoch * S + step, state, meta)

  bar = None
  if progress and main:
    from tqdm.auto import tqdm
    lay = run.layout
    bar = tqdm(total=cfg.epochs * S, initial=epoch * S + step, unit='step', mininterval=1.0,
               desc=f"{cfg.method} search, batch {lay['global_batch']} = {lay['devices']} "
                    f"{lay['platform']} x {lay['per_device_batch']}", dynamic_ncols=True)
  done_this_call = 0
  called = set()
  redraw = plot.Redraw()
  stop = StopSignals().__enter__()
  try:
    while epoch < cfg.epochs:
      while step < S:
        t0 = time.perf_counter()
        if epoch < cfg.zen_warmup_epochs:  # label-free: reads no batch
          fn, args = run.warmup_fn, ()
        else:
          fn, args = run.step_fn, (sharding.put(run.batch(epoch, step), run.batch_shardings),)
        state, metrics = fn(state, *args)
        metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
        dt = time.perf_counter() - t0
        bad = [k for k in ('train_loss', 'val_loss', 'zen_f') if k in metrics and not math.isfinite(metrics[k])]
        if bad:
          last = ckpt.latest_step()
          raise FloatingPointError(
              f'non-finite {", ".join(bad)} at epoch {epoch} step {step} (global step '
              f'{epoch * S + step}); the search stopped. The last good checkpoint is '
              f'{"step " + str(last) if last is not None else "none"} in {ckpt.directory}.')
        for k, v in metrics.items():
          sums[k] = sums.get(k, 0.0) + v
        count += 1
        if fn in called:  # a function's first call in this process compiles: not timed
          seconds, timed = seconds + dt, timed + 1
        called.add(fn)
        step += 1
        done_this_call += 1
        if bar is not None:
          bar.update(1)
          bar.set_postfix(epoch=epoch, loss=f"{metrics.get('train_loss', 0):.3f}",
                          acc=f"{metrics.get('train_acc', 0):.3f}",
                          val_acc=f"{metrics.get('val_acc', 0):.3f}", refresh=False)
        if stop.signal is not None or (stop_after_steps and done_this_call >= stop_after_steps):
          save(epoch, step)
          raise SearchInterrupted(
              f'search stopped at epoch {epoch} step {step}; checkpoint saved in {ckpt.directory}. '
              f'Continue with --resume.')
        if cfg.checkpoint_every and (epoch * S + step) % cfg.checkpoint_every == 0 and step < S:
          save(epoch, step)
      record = {'epoch': epoch, **{k: v / max(count, 1) for k, v in sums.items()},
                'steps': count, 'seconds_per_step': seconds / timed if timed else None,
                **{k: run.layout[k] for k in ('devices', 'global_batch', 'per_device_batch')},
                'weights': {k: v.tolist() for k, v in run.mixing_weights(state.alpha).items()},
                'genotype': str(run.genotype(state.alpha))}
      history.append(record)
      if main:
        with open(os.path.join(workdir, 'metrics.jsonl'), 'a') as f:
          f.write(json.dumps(record) + '\n')
      epoch, step, sums, count, seconds, timed = epoch + 1, 0, {}, 0, 0.0, 0
      save(epoch, step)
      _write_outputs(run, workdir, history, state.alpha, pictures=epoch < cfg.epochs and redraw())
  finally:
    if bar is not None:
      bar.close()
    stop.__exit__()
    ckpt.close()
  alpha = {k: np.asarray(v) for k, v in state.alpha.items()}
  genotype = _write_outputs(run, workdir, history, state.alpha)
  return SearchResult(genotype, alpha, run.mixing_weights(state.alpha), history, workdir, cfg)
