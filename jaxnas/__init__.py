"""jaxnas: differentiable neural architecture search in JAX."""
from jaxnas import xla as _xla

_xla.configure()  # before any JAX backend starts

from jaxnas import ops, relax, spaces
from jaxnas.spaces import get_space

__version__ = '0.1.0'
__all__ = ['get_space', 'ops', 'relax', 'spaces']
