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

# How many training batches one search step of each estimator consumes
# (a function of its options).
TRAIN_BATCHES = {
    'multistep': lambda options: int(options.get('n', 2)),
    'unroll': lambda options: int(options.get('n', 1)),
    'sge': lambda options: int(options.get('n', 1)),
    'esj': lambda options: int(options.get('n', 1)),
}


def get_estimator(name: str) -> Estimator:
  try:
    return ESTIMATORS[name]
  except KeyError:
    raise ValueError(f'unknown method {name!r}; known methods: {", ".join(ESTIMATORS)}') from None


def train_batches_per_step(name: str, options: dict) -> int:
  get_estimator(name)
  return TRAIN_BATCHES.get(name, lambda o: 1)(options)


__all__ = ['Batches', 'ESTIMATORS', 'Estimate', 'Estimator', 'Problem', 'WeightOpt', 'Weights',
           'darts', 'get_estimator', 'implicit', 'ridge', 'train_batches_per_step', 'unrolled', 'weight_step']
