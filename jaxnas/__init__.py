"""jaxnas: differentiable neural architecture search in JAX.

Importing jaxnas changes nothing global: the XLA flags the command line uses on
a CPU are applied by ``jaxnas.xla.configure()`` (call it before JAX starts, if
you want them), and pictures are drawn without pyplot. The entry points live in
their modules: ``jaxnas.search.search``, ``jaxnas.train.train``,
``jaxnas.free.free``, ``jaxnas.zc.zc``, ``jaxnas.pipeline.run``.
"""
from jaxnas import data, hypergrad, ops, relax, spaces
from jaxnas.search import SearchConfig, SearchResult
from jaxnas.spaces import get_space

__version__ = '0.1.0'
__all__ = ['SearchConfig', 'SearchResult', 'data', 'get_space', 'hypergrad', 'ops', 'relax',
           'spaces']
