"""XLA settings for the CPU (applied on the CPU backend only), and the program cache.

:func:`configure` adds jaxnas' XLA flags to ``XLA_FLAGS``. The command line
calls it first thing; importing jaxnas does not, so a library user who wants
them calls ``jaxnas.xla.configure()`` before JAX starts its backend. The flag:
XLA's newer CPU fusion emitters compile the many small kernels of a supernet
2-3x more slowly than the classic ones, for no faster steps (one DARTS mixed
op forward+backward: 8.1 s -> 2.8 s compile; docs/performance.md). A flag the
user has set in ``XLA_FLAGS`` keeps the user's value.
"""
import functools
import hashlib
import json
import os
import pickle
import warnings
from typing import Any, Callable

CPU_FLAGS = ('--xla_cpu_use_fusion_emitters=false',)
# jaxlib's accelerator plugins: where one is installed, JAX starts on that accelerator
ACCELERATOR_MODULES = {'jax_cuda12_plugin': 'gpu', 'jax_cuda13_plugin': 'gpu',
                       'jax_rocm60_plugin': 'gpu', 'jax_rocm7_plugin': 'gpu', 'libtpu': 'tpu'}


def expected_backend() -> str:
  """The backend JAX will start ('cpu', 'gpu' or 'tpu'), told without starting it: the
  first of ``JAX_PLATFORMS`` if set, else 'gpu' or 'tpu' where an accelerator
  plugin is installed, else 'cpu'."""
  import importlib.util
  platforms = os.environ.get('JAX_PLATFORMS', '').strip()
  if platforms:
    first = platforms.split(',')[0].strip().lower()
    return {'cuda': 'gpu', 'rocm': 'gpu'}.get(first, first)
  for module, backend in ACCELERATOR_MODULES.items():
    if importlib.util.find_spec(module) is not None:
      return backend
  return 'cpu'


# XLA CPU compile options for a program a supernet of the space runs once (FreeDARTS'
# saliency, a zero-cost proxy of one network): on small images LLVM's optimisation
# passes cost more than they save. DARTS supernet, SynFlow saliency on 8x8 digits:
# cold start 25.7 s -> 16.8 s at level 0, the run itself 0.016 s -> 0.053 s; GraSP:
# compile 43.5 -> 18.4 s, run 1.6 -> 5.3 s. NAS-Bench-201 at level 1, not 0: C=16, 5
# cells per stage, 8x8 digits, batch 64, compile + run: GraSP 3.4 + 11.1 s at level 0,
# 7.5 + 1.0 s at level 1, 11.4 + 0.8 s at the default; SNIP 0.9 + 3.0, 2.0 + 0.2 s;
# SynFlow 0.7 + 0.2, 2.1 + 0.02 s.
RUN_ONCE_OPTIONS = {'darts': {'xla_backend_optimization_level': 0},
                    'nb201': {'xla_backend_optimization_level': 1}}


def _user_sets(flag: str) -> bool:
  """Whether ``XLA_FLAGS`` sets ``flag`` (its name, without a value)."""
  return flag in os.environ.get('XLA_FLAGS', '')


def run_once_options(space: str) -> dict:
  """The compile options of a program the supernet of the space named ``space`` runs
  once (:data:`RUN_ONCE_OPTIONS`, level 0 for a space it lacks) on the CPU backend;
  none elsewhere, and none where ``XLA_FLAGS`` sets the optimisation level: the
  user's level is kept (as :func:`configure` keeps the user's flags)."""
  import jax
  if jax.default_backend() != 'cpu' or _user_sets('--xla_backend_optimization_level'):
    return {}
  return dict(RUN_ONCE_OPTIONS.get(space, {'xla_backend_optimization_level': 0}))


def configure() -> None:
  """Adds :data:`CPU_FLAGS` to ``XLA_FLAGS`` (those the user has not set) where JAX
  will run on the CPU (:func:`expected_backend`); on an accelerator it adds
  nothing. It takes effect only if called before JAX starts its backend."""
  if expected_backend() != 'cpu':
    return
  flags = os.environ.get('XLA_FLAGS', '')
  extra = [f for f in CPU_FLAGS if not _user_sets(f.split('=')[0])]
  if extra:
    os.environ['XLA_FLAGS'] = ' '.join([flags, *extra]).strip()


def enable_compilation_cache(path: str | None = None) -> str:
  """Turns on JAX's persistent compilation cache in ``path`` (default
  ``$JAXNAS_CACHE_DIR``, else ``~/.cache/jaxnas/xla``), so that a second run's
  compiles are hits; returns the path. (A setting of JAX's, for the whole process.)

  The traced programs themselves are kept only where a caller passes a folder
  for them (``programs=``, :class:`persistent_jit`; the command line passes
  :func:`program_dir` of this path): a second run then skips tracing and
  lowering too. Their key holds jaxnas' own sources, not yours: while you change
  code of your own that a search calls (a relaxation or space added to jaxnas'
  registries), pass no folder.
  """
  import jax
  path = path or os.environ.get('JAXNAS_CACHE_DIR') or os.path.join(
      os.path.expanduser('~'), '.cache', 'jaxnas', 'xla')
  os.makedirs(path, exist_ok=True)
  jax.config.update('jax_compilation_cache_dir', path)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)
  jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)
  return path


def program_dir(cache: str) -> str:
  """The folder of traced programs beside the compilation cache ``cache``."""
  return os.path.join(cache, 'programs')


def program_fingerprint() -> str:
  """What every traced program depends on besides its own arguments: jaxnas'
  sources, the versions of the libraries that trace it, XLA's flags, JAX's
  numerics switches, the backend and the kernel path."""
  import jax
  from jaxnas import kernels
  devices = jax.devices()
  h = hashlib.sha256(_installation_fingerprint().encode())
  h.update(json.dumps({
      'XLA_FLAGS': os.environ.get('XLA_FLAGS', ''), 'x64': jax.config.jax_enable_x64,
      'matmul_precision': str(jax.config.jax_default_matmul_precision),
      'backend': jax.default_backend(), 'devices': [len(devices), devices[0].device_kind],
      'kernels': kernels.kernel_path(),
  }, sort_keys=True).encode())
  return h.hexdigest()


@functools.lru_cache(maxsize=None)
def _installation_fingerprint() -> str:
  """jaxnas' sources and the versions of the libraries that trace its programs."""
  h = hashlib.sha256()
  root = os.path.dirname(os.path.abspath(__file__))
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames.sort()
    for name in sorted(filenames):
      if name.endswith('.py'):
        path = os.path.join(dirpath, name)
        h.update(os.path.relpath(path, root).encode())
        with open(path, 'rb') as f:
          h.update(f.read())
  from importlib import metadata
  versions = {}
  for dist in ('jax', 'jaxlib', 'flax', 'optax', 'chex', 'numpy'):
    try:
      versions[dist] = metadata.version(dist)
    except metadata.PackageNotFoundError:
      versions[dist] = None
  h.update(json.dumps(versions, sort_keys=True).encode())
  return h.hexdigest()


def _cache_path(programs: str, key: str, in_tree, specs, suffix: str) -> str:
  digest = hashlib.sha256('|'.join(
      [program_fingerprint(), key, str(in_tree),
       repr([(s.shape, str(s.dtype), str(s.sharding)) for s in specs])]).encode()).hexdigest()
  return os.path.join(programs, digest[:32] + suffix)


def _write(path: str, data: bytes) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = f'{path}.{os.getpid()}.tmp'
  with open(tmp, 'wb') as f:
    f.write(data)
  os.replace(tmp, path)  # whole or not at all, if two runs write at once


def _read(path: str, what: str):
  """The object pickled at ``path``, or None (absent; unreadable, with a warning)."""
  if not os.path.exists(path):
    return None
  try:
    with open(path, 'rb') as f:
      return pickle.load(f)
  except Exception as e:  # noqa: BLE001  (a corrupt or foreign file: trace afresh over it)
    warnings.warn(f'ignoring the unreadable cached {what} {path} ({e}); tracing again')
    return None


_SHAPES: dict = {}   # persistent_eval_shape's results in this process


def persistent_eval_shape(fun: Callable, key: Any, *args, programs: str | None = None):
  """``jax.eval_shape(fun, *args)``, kept in memory for the process (a search and its
  evaluation, or a test suite, init the same model many times) and, with a folder
  ``programs``, on disk beside :class:`persistent_jit`'s programs (the DARTS
  supernet's ``init`` takes 1.5 s to trace). ``key`` names ``fun`` completely (its
  module and configuration); the arguments' shapes, dtypes and shardings, the kernel
  path and JAX's x64 switch complete it."""
  import jax
  from jaxnas import kernels
  leaves, in_tree = jax.tree_util.tree_flatten(args)
  specs = [_leaf_spec(x) for x in leaves]
  name = json.dumps(key, sort_keys=True, default=str)
  memo = (name, str(in_tree), repr([(s.shape, str(s.dtype), str(s.sharding)) for s in specs]),
          kernels.kernel_path(), bool(jax.config.jax_enable_x64))
  path = None if programs is None else _cache_path(programs, name, in_tree, specs, '.shapes')
  out = _SHAPES.get(memo)
  if out is None and path is not None:
    out = _read(path, 'shapes')
  if out is None:
    out = jax.eval_shape(fun, *args)
  if path is not None and not os.path.exists(path):
    _write(path, pickle.dumps(out))
  _SHAPES[memo] = out
  return out


def _leaf_spec(x, sharding=None):
  """``x``'s shape, dtype and ``sharding`` (None: its own, where it is committed)."""
  import jax
  import numpy as np
  if sharding is None and getattr(x, 'committed', True):
    sharding = getattr(x, 'sharding', None)
  return jax.ShapeDtypeStruct(np.shape(x), getattr(x, 'dtype', None) or np.result_type(x),
                              sharding=sharding)


class persistent_jit:
  """``jax.jit(fun, **jit_kwargs)`` whose traced program outlives the process.

  With a folder ``programs`` (:func:`program_dir`), the first call
  for a signature exports ``fun`` (``jax.export``: one trace and lowering, as
  ``jax.jit`` does) and writes it to disk; a later process with the same
  ``key`` and signature reads it back and jits its ``call``, which neither
  traces ``fun`` nor lowers it, and whose XLA compile is a hit in the
  compilation cache. ``key`` must name everything ``fun`` closes over that
  shapes its program (a config, a data set's statistics);
  :func:`program_fingerprint` adds jaxnas' sources and library versions.
  Without a folder (None), or where export fails, it is plain ``jax.jit``.
  """

  def __init__(self, fun: Callable, key: Any, programs: str | None = None, **jit_kwargs):
    import jax
    self._fun, self._key, self._kwargs = fun, json.dumps(key, sort_keys=True, default=str), jit_kwargs
    self._dir = programs
    self._jit = jax.jit(fun, **jit_kwargs)
    self._programs: dict[Any, Any] = {}  # signature -> jitted call of the exported program

  def _signature(self, args):
    """The arguments' tree and leaf specs, each leaf at its declared ``in_shardings``
    where there is one: NumPy arrays and arrays already placed there run one program."""
    import jax
    leaves, tree = jax.tree_util.tree_flatten(args)
    declared = self._kwargs.get('in_shardings')
    if declared is None:
      shardings = [None] * len(leaves)
    else:
      is_none = lambda x: x is None  # noqa: E731  (None: no declared sharding, a leaf here)
      shardings = jax.tree_util.tree_leaves(jax.tree.broadcast(declared, args, is_leaf=is_none),
                                            is_leaf=is_none)
    return tree, tuple(_leaf_spec(x, sh) for x, sh in zip(leaves, shardings, strict=True))

  def _jitted(self, args):
    if self._dir is None:
      return self._jit
    sig = self._signature(args)
    if sig not in self._programs:
      self._programs[sig] = self._load_or_export(*sig)
    return self._programs[sig]

  def _load_or_export(self, in_tree, specs):
    import jax
    path = _cache_path(self._dir, self._key, in_tree, specs, '.jaxprogram')
    exported = out_tree = None
    saved = _read(path, 'program')
    if saved is not None:
      try:
        exported, out_tree = jax.export.deserialize(saved['exported']), saved['out_tree']
      except Exception as e:  # noqa: BLE001  (pickled, but not a program of this jax)
        warnings.warn(f'ignoring the unreadable cached program {path} ({e}); tracing again')
        exported = None
    if exported is None:
      box = []

      def flat(*leaves):  # export serialises flat lists only (optax states are NamedTuples)
        out = self._fun(*jax.tree_util.tree_unflatten(in_tree, leaves))
        out_leaves, tree = jax.tree_util.tree_flatten(out)
        box.append(tree)
        return out_leaves
      out_sh = self._kwargs.get('out_shardings')
      try:
        exported = jax.export.export(jax.jit(flat, out_shardings=(
            out_sh if isinstance(out_sh, jax.sharding.Sharding) else None)))(*specs)
        data = pickle.dumps({'exported': exported.serialize(), 'out_tree': box[0]})
      except Exception as e:  # noqa: BLE001  (a program export cannot hold: plain jit)
        warnings.warn(f'persistent_jit: cannot export {getattr(self._fun, "__name__", self._fun)} '
                      f'({type(e).__name__}: {e}); it will be traced in every process')
        return self._jit
      out_tree = box[0]
      _write(path, data)

    def call(*args):
      return jax.tree_util.tree_unflatten(out_tree, exported.call(*jax.tree_util.tree_leaves(args)))
    return jax.jit(call, **self._kwargs)

  def __call__(self, *args):
    return self._jitted(args)(*args)

  def lower(self, *args):
    return self._jitted(args).lower(*args)
