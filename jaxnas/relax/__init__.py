"""Relaxations by name: ``make(name, **options) -> Relaxation`` (:mod:`jaxnas.relax.base`).

Each relaxation is a factory whose options are keyword-only, their defaults in
its signature and their limits in ``Annotated[..., Limits(...)]``; :func:`make`
checks the options once and calls it. Adding a relaxation is its module, one
line in :data:`RELAXATIONS` (with its recipe) and its test.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

from jaxnas import options as options_lib
from jaxnas.relax import drnas, gdas, standard
from jaxnas.relax.base import (EDGES_SUFFIX, Relaxation, cell_keys, edge_groups, edge_weights,
                               linear_ramp)


class RelaxationSpec(NamedTuple):
  """A registered relaxation: its factory and its recipe (the settings its paper ran
  with, where not DARTS', :class:`jaxnas.options.Setting`)."""
  factory: Callable[..., Relaxation]
  recipe: options_lib.Recipe = {}

  @property
  def options(self) -> dict[str, options_lib.Param]:
    return options_lib.signature_options(self.factory)


RELAXATIONS: dict[str, RelaxationSpec] = {
    'softmax': RelaxationSpec(standard.softmax),
    'raw': RelaxationSpec(standard.raw),
    'pc': RelaxationSpec(standard.pc, standard.PC_RECIPE),
    'fair': RelaxationSpec(standard.fair, standard.FAIR_RECIPE),
    'beta': RelaxationSpec(standard.beta),
    'gdas': RelaxationSpec(gdas.gdas),
    'drnas': RelaxationSpec(drnas.drnas, drnas.RECIPE),
}


def make(name: str | Relaxation, **options: Any) -> Relaxation:
  """The relaxation ``name`` with ``options`` checked against its factory's signature
  (a Relaxation passes through unchanged)."""
  if isinstance(name, Relaxation):
    return name
  bound = options_lib.bind_options(RELAXATIONS, name, options, 'relaxation')
  return RELAXATIONS[name].factory(**bound)


__all__ = ['EDGES_SUFFIX', 'RELAXATIONS', 'Relaxation', 'RelaxationSpec', 'cell_keys', 'edge_groups',
           'edge_weights', 'linear_ramp', 'make']
