"""FreeDARTS: training-free search from pruning-at-initialisation saliencies of α.

The supernet runs with the raw α as op weights (relaxation ``raw``: the
output of an edge is ``Σ_o α_{e,o} op_o(x)``), at initialisation, with
``α = a·N(0, 1)`` (a = 1e-3 by default, FreeDARTS uses 1e-5..1e-2). The
saliency of each (edge, op) is read off the derivative with respect to α:

* ``snip``:    ``S = |α ⊙ ∂L/∂α|``, L the cross-entropy of a real batch;
* ``synflow``: ``S = |α| ⊙ ∂R/∂|α|`` with ``R = 1ᵀ f(1; |θ|, |α|)``: every weight
  and α replaced by its absolute value, an all-ones input, BatchNorm off,
  float64 — SynFlow's data-free convention (:func:`jaxnas.proxies.saliency.synflow_inputs`);
* ``grasp``:   ``S = −α ⊙ (H g)``, ``g = ∂L/∂α`` and ``H = ∂²L/∂α²``, the
  Hessian-gradient product exact: forward over reverse where the supernet
  admits it (DARTS: ``jax.jvp`` of ``∂L/∂α`` along g, g from a first program;
  see :func:`saliency_stages`), else reverse over reverse (NAS-Bench-201: the
  pullback of ``∂L/∂α`` applied to g).

These are the paper's formulas (``--convention paper``, the default). The
authors' notebooks (anonymous-submission1991/FreeDARTS) compute them otherwise,
and ``--convention code`` follows them (:func:`convention`):

* DARTS space (``DARTS_CNN/FreeDARTS_{SNIP,SynFlow,GraSP}_oneshot.ipynb``): every
  weight replaced by its absolute value first (``param.abs_()`` over the
  ``state_dict``); ``snip`` as above at ``|θ|``; ``synflow`` with α signed,
  BatchNorm in training mode and one all-ones image, ``S = |α ⊙ ∂R/∂α|``;
  ``grasp`` at α' = α after one step of DARTS' α optimiser (Adam 3e-4, betas
  (0.5, 0.999), weight decay 1e-3) on ``∂L/∂α``, ``S = |α ⊙ ∂(g(α')·α')/∂α'|``
  ``= |α ⊙ (H(α') α' + g(α'))|`` (the notebook's vector is α' itself, not detached).
* NAS-Bench-201 (``NAS_Bench201/exps/algos/FreeDARTS_*_oneshot.ipynb``): ``snip``
  as the paper's; ``synflow`` at ``|θ|`` and ``|α|`` with BatchNorm in training
  mode and one all-ones image; ``grasp`` at θ as initialised, α' after one Adam
  step of 3e-2 (the notebook's ``--arch_learning_rate``), ``S = α ⊙ H(α') g(α)``,
  signed (no minus, no absolute value).

The genotype is the space's derive rule applied to the saliencies in place
of mixing weights (``none`` has zero saliency: it contributes nothing).
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import time
from typing import Annotated, Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxnas import benchmark_table
from jaxnas import config as config_lib
from jaxnas import data as data_lib
from jaxnas import kernels, optim, outputs, proxies, relax, sharding, spaces, xla
from jaxnas.config import Limits
from jaxnas.hypergrad.base import grad_and_hvp
from jaxnas.proxies import saliency
from jaxnas.proxies.saliency import SaliencyConvention
from jaxnas.spaces import get_space
from jaxnas.spaces.base import forward_over_reverse, init_variables

SALIENCIES = proxies.names(of_alpha=True)   # synflow, snip, grasp
CONVENTIONS = ('paper', 'code')

# How FreeDARTS' notebooks compute the saliencies, by space (the 'code' convention).
CODE_CONVENTIONS = {
    # anonymous-submission1991/FreeDARTS DARTS_CNN/FreeDARTS_{SNIP,SynFlow,GraSP}_oneshot.ipynb:
    # param.abs_() for every saliency, SynFlow with α signed, GraSP's vector α' itself,
    # args.arch_learning_rate 3e-4
    'darts': SaliencyConvention(('snip', 'synflow', 'grasp'), True, False, 'vector_alpha', 3e-4),
    # anonymous-submission1991/FreeDARTS NAS_Bench201/exps/algos/FreeDARTS_*_oneshot.ipynb: SNIP
    # as the paper's, SynFlow at |θ| and |α|, GraSP at θ with the vector g(α),
    # args.arch_learning_rate 3e-2
    'nb201': SaliencyConvention(('synflow',), True, True, 'vector_grad', 3e-2),
}


def convention(name: str, space: str) -> SaliencyConvention:
  """The saliency convention ``name`` on the space named ``space``: 'paper' (the
  paper's formulas) or 'code' (the space's notebooks, :data:`CODE_CONVENTIONS`)."""
  if name not in CONVENTIONS:
    raise ValueError(f'unknown convention {name!r}; known conventions: {", ".join(CONVENTIONS)}')
  if name == 'paper':
    return SaliencyConvention()
  if space not in CODE_CONVENTIONS:
    raise ValueError(f"--convention code: FreeDARTS' notebooks do not cover the {space} space; "
                     'use --convention paper')
  return CODE_CONVENTIONS[space]


@dataclasses.dataclass(frozen=True)
class FreeConfig:
  space: Annotated[str, Limits(choices=lambda: spaces.SPACES)] = 'darts'
  """search space"""
  saliency: Annotated[str, Limits(choices=SALIENCIES)] = 'synflow'
  """saliency of α"""
  dataset: Annotated[str, Limits(check=data_lib.check_name)] = 'digits'
  """digits, a tensorflow-datasets name, or npz:PATH"""
  data_dir: str | None = None
  """tensorflow-datasets directory"""
  channels: Annotated[int | None, Limits(min=1)] = None
  """initial channels C (None: the space's search size, 16)"""
  layers: Annotated[int | None, Limits(min=1)] = None
  """cells (None: the space's search size: DARTS 8, NAS-Bench-201 5 per stage)"""
  batch_size: Annotated[int, Limits(min=1)] = 64
  """images in the batch the saliency reads"""
  convention: Annotated[str, Limits(choices=CONVENTIONS)] = 'paper'
  """paper: the paper's formulas; code: the authors' notebooks (jaxnas.free docstring)"""
  # FreeDARTS draws α = a·N(0, 1) with a in 1e-5..1e-2 (Zhang et al., arXiv 2106.11542)
  alpha_scale: Annotated[float, Limits(gt=0)] = 1e-3
  """α = scale · N(0, 1)"""
  seed: int = 0
  """random seed"""
  devices: config_lib.Devices = None
  """'all' or N: the batch split over a mesh (None: $JAXNAS_DEVICES, else all)"""
  workdir: str | None = None
  """if given: genotype.json, genotype.txt, saliency.npz there"""
  benchmark_table: str | None = None
  """a tabular benchmark's real accuracies (nb201: benchmarks/nb201_test_acc_200ep.json): the
  derived cell looked up there"""

  @config_lib.checked
  def __post_init__(self):
    config_lib.validate(self)
    convention(self.convention, self.space)
    if self.benchmark_table is not None:
      benchmark_table.check_space(self.space)
    # the space's search sizes (on any data set), the devices
    sp = get_space(self.space)
    config_lib.complete(self, {'channels': sp.defaults['channels'], 'layers': sp.defaults['layers'],
                               'devices': sharding.default_devices()})


@dataclasses.dataclass
class FreeResult:
  genotype: Any
  saliency: dict[str, np.ndarray]
  seconds: float            # wall time, compile included
  seconds_compiled: float   # the compiled programs' runs alone (compile excluded)
  benchmark: dict[str, float] | None = None   # the genotype's row of --benchmark-table


def _losses(model, variables, batch):
  """``α -> mean cross-entropy`` of the batch, BatchNorm in training mode."""
  def ce(a):
    logits, _ = model.apply(variables, batch[0], a, train=True, mutable=['batch_stats'])
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch[1]).mean()
  return ce


def check_saliency(name: str) -> None:
  if name not in SALIENCIES:
    raise ValueError(f'unknown saliency {name!r}; known saliencies: {", ".join(SALIENCIES)}')


def _abs_params(variables):
  return {**variables, 'params': jax.tree_util.tree_map(jnp.abs, variables['params'])}


def saliency_stages(model, name: str, forward_over_reverse: bool = False,
                    conv: SaliencyConvention = SaliencyConvention()) -> list:
  """One saliency as a chain of programs ``stage(variables, alpha, batch, prev) -> out``:
  each stage's output is the next one's ``prev`` (None for the first), the last
  one's the saliencies ``{cell: (edges, ops)}``; ``conv`` the convention (module
  docstring). The saliencies themselves are :mod:`jaxnas.proxies.saliency`'s, of α.

  GraSP by forward over reverse is two stages, ``g = ∂L/∂α`` (with the code's
  convention: α' and g) and then the Hessian product: XLA's compile time grows
  faster than the program, so two halves compile sooner than the whole (DARTS
  supernet, C=16, 8 cells, 8x8 digits: 22 s -> 5.5 + 10.7 s). Every other
  saliency is one stage.
  """
  check_saliency(name)
  prepare = _abs_params if name in conv.abs_weights else (lambda v: v)

  def loss(variables, batch):
    return _losses(model, prepare(variables), batch)

  def grad(variables, alpha, batch, prev):
    return jax.grad(loss(variables, batch))(alpha)

  def snip(variables, alpha, batch, prev):
    return saliency.snip_saliency(loss(variables, batch), alpha)

  def grasp(variables, alpha, batch, prev):   # prev: g from `grad`, or None (one program)
    return saliency.grasp_saliency(loss(variables, batch), alpha, prev, forward_over_reverse)

  def alpha_step(variables, alpha, batch, prev):
    # the notebooks' a_optimizer.step(): DARTS' Adam (betas (0.5, 0.999), decay 1e-3), once
    g = grad(variables, alpha, batch, None)
    tx = optim.alpha_optimizer('adam', conv.grasp_alpha_lr, 0.5, 0.999, 1e-3)
    updates, _ = tx.update(g, tx.init(alpha), alpha)
    return optax.apply_updates(alpha, updates), g

  def grasp_code_hg(variables, alpha, batch, prev):
    moved, g = prev
    f = loss(variables, batch)
    if conv.grasp == 'vector_alpha':   # ∂(g(α')·α')/∂α' = H(α') α' + g(α')
      g_moved, h = grad_and_hvp(f, moved, moved, forward_over_reverse, kernels.forward_over_reverse)
      return jax.tree_util.tree_map(lambda a, h, g: jnp.abs(a * (h + g)), alpha, h, g_moved)
    _, h = grad_and_hvp(f, moved, g, forward_over_reverse,
                        kernels.forward_over_reverse)   # H(α') g(α)
    return jax.tree_util.tree_map(lambda a, h: a * h, alpha, h)

  def grasp_code(variables, alpha, batch, prev):
    return grasp_code_hg(variables, alpha, batch, alpha_step(variables, alpha, batch, None))

  def synflow(variables, alpha, batch, prev):
    if conv.synflow_train_bn:   # the notebooks: |θ|, training-mode BatchNorm, one image of ones
      v = prepare(variables)
      a = jax.tree_util.tree_map(jnp.abs, alpha) if conv.synflow_abs_alpha else alpha
      ones = jnp.ones((1,) + batch[0].shape[1:], batch[0].dtype)

      def r(a):
        logits, _ = model.apply(v, ones, a, train=True, mutable=['batch_stats'])
        return jnp.sum(logits)
      return jax.tree_util.tree_map(jnp.abs, saliency.synflow_saliency(r, a))
    with jax.enable_x64():
      v, ones = saliency.synflow_inputs(variables, batch[0].shape)
      a_abs = jax.tree_util.tree_map(lambda a: jnp.abs(a.astype(jnp.float64)), alpha)

      def r(a):
        return jnp.sum(model.apply(v, ones, a, train=False))
      return jax.tree_util.tree_map(lambda s: s.astype(jnp.float32),
                                    saliency.synflow_saliency(r, a_abs))
  if name == 'grasp' and conv.grasp != 'paper':
    return [alpha_step, grasp_code_hg] if forward_over_reverse else [grasp_code]
  if name == 'grasp' and forward_over_reverse:
    return [grad, grasp]
  return [{'snip': snip, 'grasp': grasp, 'synflow': synflow}[name]]


def free(config: FreeConfig, dataset: data_lib.Dataset | None = None,
         programs: str | None = None) -> FreeResult:
  """Builds the raw-α supernet at initialisation, scores every (edge, op), derives a
  genotype. With a folder ``programs`` (:func:`jaxnas.xla.program_dir`) the traced
  saliency is kept there, and a second run loads it."""
  t0 = time.perf_counter()
  cfg = config
  if cfg.benchmark_table:
    benchmark_table.load(cfg.benchmark_table)   # a bad file stops before the work
  space = get_space(cfg.space)
  conv = convention(cfg.convention, cfg.space)
  ds = dataset or data_lib.load(cfg.dataset, cfg.data_dir)
  raw = relax.make('raw')
  model = space.supernet(cfg.channels, cfg.layers, ds.num_classes, raw)
  k_alpha, k_w, k_batch = jax.random.split(jax.random.key(cfg.seed), 3)
  alpha = space.init_alpha(k_alpha, cfg.alpha_scale, raw)
  x0 = jnp.zeros((1,) + ds.image_shape, jnp.float32)
  variables = init_variables(model, k_w, x0, alpha, programs=programs)
  idx = np.asarray(jax.random.choice(k_batch, len(ds.x_train), (min(cfg.batch_size, len(ds.x_train)),),
                                     replace=False))
  x = data_lib.NO_AUGMENT(k_batch, ds.x_train[idx], ds.mean, ds.std)
  # data parallel: the batch split over the mesh, α and the weights replicated
  mesh = sharding.make_mesh(cfg.devices)
  batch = sharding.put_batch((x, ds.y_train[idx]), mesh)
  variables, alpha = sharding.put((variables, alpha), sharding.replicated(mesh))
  # SNIP and GraSP on images above 8x8 run longer than they compile: XLA's default
  # options (DARTS, 32x32, batch 64, cold / the run alone: SNIP 76.6 / 54.7 s at
  # level 0, 61.6 / 14.2 s at the default; GraSP 194.6 / 147.7 s, 142.5 / 42.8 s);
  # SynFlow's run stays short (25.2 / 2.4 s, at the default 40.5 / 1.4 s)
  heavy = cfg.saliency != 'synflow' and ds.image_shape[0] * ds.image_shape[1] > 64
  fns = [xla.persistent_jit(stage, ['free', cfg.saliency, k, repr(conv), type(model).__module__,
                                    repr(model)], programs,
                            out_shardings=sharding.replicated(mesh),
                            compiler_options={} if heavy else xla.run_once_options(space.name))
         for k, stage in enumerate(saliency_stages(model, cfg.saliency, forward_over_reverse(space),
                                                   conv))]
  # each stage is lowered while XLA compiles the one before (outside the GIL); then
  # they run in turn, alone on the cores: the compiled time is their runs
  with concurrent.futures.ThreadPoolExecutor(1) as pool:
    compiling, prev = [], None
    for fn in fns:
      lowered = fn.lower(variables, alpha, batch, prev)
      compiling.append(pool.submit(lowered.compile))
      prev = lowered.out_info
    compiled = [c.result() for c in compiling]
  t1 = time.perf_counter()
  scores = None
  for c in compiled:
    scores = c(variables, alpha, batch, scores)
  scores = jax.block_until_ready(scores)
  seconds_compiled = time.perf_counter() - t1
  scores = {k: np.asarray(v) for k, v in jax.device_get(scores).items()}
  genotype = space.derive(scores)
  result = FreeResult(genotype, scores, time.perf_counter() - t0, seconds_compiled,
                      benchmark_table.lookup(cfg.benchmark_table, cfg.space, genotype))
  if cfg.workdir:
    outputs.write_genotype(cfg.workdir, genotype, result.benchmark)
    np.savez(os.path.join(cfg.workdir, 'saliency.npz'), **result.saliency)
  return result
