"""Hypergradient estimators: ``make(name, **options) -> Estimator``, optax-style.

Each estimator is a pure function ``fn(problem, opt, weights, alpha, batches, key,
*, options...) -> Estimate`` (:class:`~jaxnas.hypergrad.base.EstimatorFn`, its
equation in its docstring); its options are keyword-only, their defaults in its
signature and their limits in ``Annotated[..., Limits(...)]``. :func:`make` checks
options against that signature once and binds them; what the search needs to
know of an estimator (training batches per step, whether it reads its key, its
α optimiser) comes with the object. Adding an estimator is its function, one
line in :data:`ESTIMATORS` and its test.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple

from jaxnas import config as config_lib
from jaxnas.hypergrad import darts, implicit, ridge, unrolled
from jaxnas.hypergrad.base import (Batches, Estimate, EstimatorFn, Problem, WeightOpt, Weights,
                                   weight_step)


class AlphaOptimizer(NamedTuple):
  """A method's default α optimiser: ``kind`` 'adam' or 'sgd', its learning rate, and
  where the recipe comes from."""
  kind: str
  lr: float
  source: str


# quark0/darts train_search.py: Adam(arch_learning_rate=3e-4, betas=(0.5, 0.999), wd 1e-3)
DARTS_ALPHA = AlphaOptimizer('adam', 3e-4, 'quark0/darts train_search.py')
# SGE-NAS Algorithm 1: α moves by plain gradient steps of size q = 0.01
SGE_ALPHA = AlphaOptimizer('sgd', 0.01, 'SGE-NAS Algorithm 1 (q = 0.01)')
# what an α optimiser of each kind starts from when a method's own is of the other kind
ALPHA_DEFAULTS = {'adam': DARTS_ALPHA, 'sgd': SGE_ALPHA}


class EstimatorSpec(NamedTuple):
  """A registered estimator: its function and what the search needs to know of it."""
  fn: EstimatorFn
  alpha_optimizer: AlphaOptimizer = DARTS_ALPHA
  needs_key: bool = False   # reads its PRNG key (random directions)

  @property
  def options(self) -> dict[str, config_lib.Param]:
    return config_lib.signature_options(self.fn)


ESTIMATORS: dict[str, EstimatorSpec] = {
    'darts1': EstimatorSpec(darts.darts1),
    'darts2': EstimatorSpec(darts.darts2),
    'darts2-fd': EstimatorSpec(darts.darts2_fd),
    'multistep': EstimatorSpec(darts.multistep),
    'unroll': EstimatorSpec(unrolled.unroll),
    'sge': EstimatorSpec(unrolled.sge, SGE_ALPHA, needs_key=True),
    'esj': EstimatorSpec(unrolled.esj, SGE_ALPHA, needs_key=True),
    'implicit': EstimatorSpec(implicit.implicit),
}


class Estimator(NamedTuple):
  """An estimator with its options bound: ``est(problem, opt, weights, alpha, batches, key)``."""
  name: str
  options: Mapping[str, Any]
  spec: EstimatorSpec

  def __call__(self, problem: Problem, opt: WeightOpt, weights: Weights, alpha, batches: Batches,
               key) -> Estimate:
    return self.spec.fn(problem, opt, weights, alpha, batches, key, **self.options)

  @property
  def train_batches(self) -> int:
    """Training batches one step reads (stacked on a leading axis): option ``n``, else 1."""
    return int(self.options.get('n', 1))

  @property
  def fn(self) -> Callable:
    return self.spec.fn

  def __repr__(self) -> str:  # stable across processes: a program-cache key
    return f'Estimator({self.name}, {dict(sorted(self.options.items()))})'


def make(name: str, **options) -> Estimator:
  """The estimator ``name`` with ``options`` checked against its signature and bound;
  an unknown name or option (or a value out of its limits) is a ValueError naming the
  known ones."""
  return Estimator(name, config_lib.bind_options(ESTIMATORS, name, options, 'method'),
                   ESTIMATORS[name])


__all__ = ['ALPHA_DEFAULTS', 'AlphaOptimizer', 'Batches', 'ESTIMATORS', 'Estimate', 'Estimator', 'EstimatorFn',
           'EstimatorSpec', 'Problem', 'WeightOpt', 'Weights', 'darts', 'implicit', 'make', 'ridge',
           'unrolled', 'weight_step']
