import os

# Eight CPU devices for the sharding tests, and XLA's backend optimisation off:
# tests run tiny programs a few steps, where LLVM's optimisation passes cost
# far more than they save (a tiny supernet's search step compiles in ~6 s
# instead of ~35 s). Both must be set before JAX starts.
_FLAGS = ('--xla_force_host_platform_device_count=8', '--xla_backend_optimization_level=0')
for flag in _FLAGS:
  if flag.split('=')[0] not in os.environ.get('XLA_FLAGS', ''):
    os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') + ' ' + flag).strip()

# Runs use one device unless a test asks for more (tests/test_sharding.py): the
# other tests' batches need not split over 8, and they compile without SPMD.
os.environ.setdefault('JAXNAS_DEVICES', '1')

from jaxnas import xla  # noqa: E402

xla.configure()  # jaxnas' XLA flags, as the command line applies them


import pytest  # noqa: E402


@pytest.fixture(scope='session', autouse=True)
def compilation_cache(tmp_path_factory):
  # Each search() and train() builds its own jitted step; the persistent cache makes
  # the repeats cheap. One directory for all pytest-xdist workers (getbasetemp() is
  # per worker, its parent shared).
  path = tmp_path_factory.getbasetemp().parent / 'xla-cache'
  path.mkdir(exist_ok=True)
  # Programs are not kept across tests: each test traces what it runs (tests count traces;
  # tests/test_search.py tests the program cache in a directory of its own).
  xla.enable_compilation_cache(str(path), programs=False)
  return path


@pytest.fixture
def cli_caches(monkeypatch, compilation_cache):
  """For tests that run the command line, which turns on the compilation and program
  caches: in the tests' shared directory, and the program cache off again afterwards
  for the other tests of this worker."""
  monkeypatch.setenv('JAXNAS_CACHE_DIR', str(compilation_cache))
  monkeypatch.setattr(xla, '_program_dir', xla._program_dir)
