"""jaxnas: differentiable neural architecture search in JAX."""
from jaxnas import xla as _xla

_xla.configure()  # before any JAX backend starts

from jaxnas import data, hypergrad, ops, relax, spaces
from jaxnas.spaces import get_space
from jaxnas.search import SearchConfig, SearchResult
from jaxnas.search import search  # noqa: E402  (the function; the module stays importable by name)

__version__ = '0.1.0'
__all__ = ['SearchConfig', 'SearchResult', 'data', 'get_space', 'hypergrad', 'ops', 'relax',
           'search', 'spaces']
