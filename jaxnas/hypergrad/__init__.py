"""Hypergradient estimators: ``make(name, **options) -> Estimator``, optax-style.

Each estimator is a pure function ``fn(problem, opt, weights, alpha, batches, key,
*, options...) -> Estimate`` (:class:`~jaxnas.hypergrad.base.EstimatorFn`, its
equation in its docstring); its options are keyword-only, their defaults in its
signature and their limits in ``Annotated[..., Limits(...)]``. :func:`make` checks
options against that signature once and binds them; what the search needs to
know of an estimator (training batches per step, whether it reads its key, the
order of its updates) comes with the object. Adding an estimator is its function, one
line in :data:`ESTIMATORS` (with its recipe, where its paper's settings differ
from DARTS') and its test.
"""
from __future__ import annotations

from typing import Any, Mapping, NamedTuple

from jaxnas import options as options_lib
from jaxnas.hypergrad import darts, implicit, ridge, unrolled
from jaxnas.hypergrad.base import (Batches, Estimate, EstimatorFn, Problem, WeightOpt, Weights,
                                   weight_step, weight_steps)


class EstimatorSpec(NamedTuple):
  """A registered estimator: its function, what the search needs to know of it, and
  its recipe (:class:`jaxnas.options.Setting`).
  ``weights_after_alpha``: the estimator leaves the weights alone and the search
  takes one weight step at the new α after the α step (quark0/darts
  ``train_search.py`` ``train``: ``architect.step`` before ``optimizer.step``)."""
  fn: EstimatorFn
  weights_after_alpha: bool = False
  recipe: options_lib.Recipe = {}   # the settings its paper ran with, where not DARTS'

  @property
  def options(self) -> dict[str, options_lib.Param]:
    return options_lib.signature_options(self.fn)


ESTIMATORS: dict[str, EstimatorSpec] = {
    'darts1': EstimatorSpec(darts.darts1, weights_after_alpha=True),
    'darts2': EstimatorSpec(darts.darts2, weights_after_alpha=True),
    'darts2-fd': EstimatorSpec(darts.darts2_fd, weights_after_alpha=True),
    'multistep': EstimatorSpec(darts.multistep),
    'unroll': EstimatorSpec(unrolled.unroll),
    'sge': EstimatorSpec(unrolled.sge, recipe=unrolled.SGE_RECIPE),
    'esj': EstimatorSpec(unrolled.esj, recipe=unrolled.ESJ_RECIPE),
    'implicit': EstimatorSpec(implicit.implicit, weights_after_alpha=True),
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

  def __repr__(self) -> str:  # stable across processes: a program-cache key
    return f'Estimator({self.name}, {dict(sorted(self.options.items()))})'


def make(name: str, **options) -> Estimator:
  """The estimator ``name`` with ``options`` checked against its signature and bound;
  an unknown name or option (or a value out of its limits) is a ValueError naming the
  known ones."""
  return Estimator(name, options_lib.bind_options(ESTIMATORS, name, options, 'method'),
                   ESTIMATORS[name])


__all__ = ['Batches', 'ESTIMATORS', 'Estimate', 'Estimator', 'EstimatorFn',
           'EstimatorSpec', 'Problem', 'WeightOpt', 'Weights', 'darts', 'implicit', 'make', 'ridge',
           'unrolled', 'weight_step', 'weight_steps']
