"""Search spaces by name: ``get_space('darts')``, ``get_space('nb201')``."""
from jaxnas.spaces import darts, nb201
from jaxnas.spaces.base import SearchSpace, count_params

SPACES: dict[str, SearchSpace] = {'darts': darts.SPACE, 'nb201': nb201.SPACE}


def get_space(name: str) -> SearchSpace:
  try:
    return SPACES[name]
  except KeyError:
    raise ValueError(f'unknown search space {name!r}; known spaces: {", ".join(SPACES)}') from None


__all__ = ['SPACES', 'SearchSpace', 'count_params', 'darts', 'get_space', 'nb201']
