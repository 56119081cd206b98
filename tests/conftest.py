import os

# Eight CPU devices for the sharding tests, and XLA's backend optimisation off:
# tests run tiny programs a few steps, where LLVM's optimisation passes cost
# far more than they save (a tiny supernet's search step compiles in ~6 s
# instead of ~35 s). Code generation in one piece: the two pytest-xdist workers
# already keep both cores busy, and splitting a program's kernels into modules
# compiled in parallel only adds work (test_hypergrad + test_relax + test_proxies:
# 81.8 / 73.3 s -> 74.2 / 68.8 s, alternating). All must be set before JAX starts.
_FLAGS = ('--xla_force_host_platform_device_count=8', '--xla_backend_optimization_level=0',
          '--xla_cpu_parallel_codegen_split_count=1')
for flag in _FLAGS:
  if flag.split('=')[0] not in os.environ.get('XLA_FLAGS', ''):
    os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') + ' ' + flag).strip()

# Runs use one device unless a test asks for more (tests/test_sharding.py): the
# other tests' batches need not split over 8, and they compile without SPMD.
os.environ.setdefault('JAXNAS_DEVICES', '1')

import jax  # noqa: E402

from jaxnas import xla  # noqa: E402

xla.configure()  # jaxnas' XLA flags, as the command line applies them
# no Python tracebacks in the lowered programs' locations: less to lower, same numbers
jax.config.update('jax_include_full_tracebacks_in_locations', False)
jax.config.update('jax_traceback_in_locations_limit', 0)


import pytest  # noqa: E402


@pytest.fixture(scope='session', autouse=True)
def compilation_cache(tmp_path_factory):
  # Each search() and train() builds its own jitted step; the persistent cache makes
  # the repeats cheap. One directory for all pytest-xdist workers (getbasetemp() is
  # per worker, its parent shared).
  path = tmp_path_factory.getbasetemp().parent / 'xla-cache'
  path.mkdir(exist_ok=True)
  # Traced programs are kept only where a test passes a folder for them (the command
  # line does: cli_caches): each test traces what it runs, and tests count traces.
  xla.enable_compilation_cache(str(path))
  return path


@pytest.fixture(scope='session')
def programs(tmp_path_factory):
  """A folder of traced programs (jaxnas.xla.persistent_jit) shared by all workers: tests
  that run the same tiny search again (resumes) load its steps instead of tracing them.
  A test that counts traces passes none."""
  return str(tmp_path_factory.getbasetemp().parent / 'programs')


@pytest.fixture
def cli_caches(monkeypatch, compilation_cache):
  """For tests that run the command line, which keeps its compiles and traced
  programs in $JAXNAS_CACHE_DIR: the tests' shared directory."""
  monkeypatch.setenv('JAXNAS_CACHE_DIR', str(compilation_cache))


NB201_OPS = ('none', 'skip_connect', 'nor_conv_1x1', 'nor_conv_3x3', 'avg_pool_3x3')


def table_row(arch: str) -> list[float]:
  """The made-up accuracies of a NAS-Bench-201 cell in :func:`nb201_table`: each edge's
  op index (``NB201_OPS``) times the edge's position + 1, summed; and that sum plus 0.5."""
  import re
  ops = re.findall(r'(\w+)~\d', arch)
  score = float(sum(NB201_OPS.index(op) * (e + 1) for e, op in enumerate(ops)))
  return [score, score + 0.5]


@pytest.fixture(scope='session')
def nb201_table(tmp_path_factory):
  """A benchmark table of every NAS-Bench-201 cell (jaxnas.benchmark_table's format)
  with the accuracies of :func:`table_row`."""
  import itertools
  import json
  archs = {}
  for e in itertools.product(NB201_OPS, repeat=6):
    arch = f'|{e[0]}~0|+|{e[1]}~0|{e[2]}~1|+|{e[3]}~0|{e[4]}~1|{e[5]}~2|'
    archs[arch] = table_row(arch)
  path = tmp_path_factory.mktemp('table') / 'nb201_table.json'
  path.write_text(json.dumps({'source': 'made up by tests/conftest.py', 'columns': ['a', 'b'],
                              'archs': archs}))
  return path
