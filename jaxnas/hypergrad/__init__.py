"""Hypergradient estimators by name; all share :class:`~jaxnas.hypergrad.base.Estimator`'s signature."""
from jaxnas.hypergrad import darts, implicit, ridge, unrolled
from jaxnas.hypergrad.base import (Batches, Estimate, Estimator, Problem, WeightOpt, Weights,
                                   weight_step)

ESTIMATORS: dict[str, Estimator] = {
    'darts1': darts.darts1,
    'darts2': darts.darts2,
    'darts2-fd': darts.darts2_fd,
    'multistep': darts.multistep,
    'unroll': unrolled.unroll,
    'sge': unrolled.sge,
    'esj': unrolled.esj,
    'implicit': implicit.implicit,
}

def get_estimator(name: str) -> Estimator:
  try:
    return ESTIMATORS[name]
  except KeyError:
    raise ValueError(f'unknown method {name!r}; known methods: {", ".join(ESTIMATORS)}') from None


def train_batches_per_step(name: str, options: dict) -> int:
  """Training batches one step of an estimator reads: its option ``n`` (multistep's
  weight steps, the inner steps of unroll / sge / esj), else 1. The estimators
  themselves read n off the stacked batches."""
  get_estimator(name)
  return int(options.get('n', 1))


__all__ = ['Batches', 'ESTIMATORS', 'Estimate', 'Estimator', 'Problem', 'WeightOpt', 'Weights',
           'darts', 'get_estimator', 'implicit', 'ridge', 'train_batches_per_step', 'unrolled', 'weight_step']
