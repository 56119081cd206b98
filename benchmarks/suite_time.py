"""Where the test suite's time goes: each test's wall time and JAX's own measure of it
(tracing to a jaxpr, lowering to MLIR, XLA's compile, persistent-cache loads), summed
per test file, printed as a table and written as JSON.

    python benchmarks/suite_time.py                         # the whole suite, as .ci/run runs it
    python benchmarks/suite_time.py tests/test_free.py -n 0 # any pytest arguments

Run it on a quiet machine: the figures are seconds of this machine, and with pytest-xdist
two workers' seconds add up to about twice the wall time. The same module is the pytest
plugin that records the tests (``-p suite_time``; JAX's duration events, per test, into
the file ``$SUITE_TIME_OUT``).
"""
import collections
import json
import os
import subprocess
import sys
import tempfile
import time

import pytest

EVENTS = {'trace': '/jax/core/compile/jaxpr_trace_duration',
          'lower': '/jax/core/compile/jaxpr_to_mlir_module_duration',
          'compile': '/jax/core/compile/backend_compile_duration',
          'cache_load': '/jax/compilation_cache/cache_retrieval_time_sec'}

# -- the plugin (in each pytest process) ------------------------------------------

_seconds = collections.defaultdict(float)


def _listen(event, duration, **kwargs):
  _seconds[event] += duration


def pytest_configure(config):
  import jax
  jax.monitoring.register_event_duration_secs_listener(_listen)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
  # (where the test runs: under pytest-xdist a worker, not the controller)
  _seconds.clear()
  yield
  out = os.environ.get('SUITE_TIME_OUT')
  if out:
    record = {'test': item.nodeid, **{k: round(_seconds.get(e, 0.0), 3) for k, e in EVENTS.items()}}
    with open(out, 'a') as f:
      f.write(json.dumps(record) + '\n')


# -- the runner --------------------------------------------------------------------

def main(argv):
  here = os.path.dirname(os.path.abspath(__file__))
  root = os.path.dirname(here)
  with tempfile.TemporaryDirectory() as tmp:
    records = os.path.join(tmp, 'tests.jsonl')
    env = {**os.environ, 'SUITE_TIME_OUT': records,
           'PYTHONPATH': os.pathsep.join([here, os.environ.get('PYTHONPATH', '')]).strip(os.pathsep)}
    durations = os.path.join(tmp, 'durations.txt')
    t0 = time.perf_counter()
    with open(durations, 'w') as f:
      status = subprocess.call([sys.executable, '-m', 'pytest', '-q', '-p', 'suite_time',
                                '--durations=0', '--durations-min=0', *argv],
                               cwd=root, env=env, stdout=f, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - t0
    tests = [json.loads(line) for line in open(records)] if os.path.exists(records) else []
    # pytest's own per-test wall times (setup + call + teardown)
    seconds = collections.defaultdict(float)
    for line in open(durations):
      parts = line.split()
      if len(parts) == 3 and parts[0].endswith('s') and parts[1] in ('setup', 'call', 'teardown'):
        seconds[parts[2]] += float(parts[0][:-1])
    summary = open(durations).read().strip().splitlines()[-1:]
  for t in tests:
    t['wall'] = round(seconds.get(t['test'], 0.0), 3)
  files = collections.defaultdict(lambda: collections.Counter())
  for t in tests:
    c = files[t['test'].split('::')[0]]
    c['tests'] += 1
    for k in ('wall', *EVENTS):
      c[k] += t[k]
  keys = ('wall', *EVENTS)
  print(f'pytest {" ".join(argv)}: {summary[0] if summary else "no summary"} '
        f'(exit {status}), {wall:.0f} s wall')
  print(f'{"file":<34} {"tests":>5} ' + ' '.join(f'{k:>10}' for k in keys))
  for name, c in sorted(files.items(), key=lambda kv: -kv[1]['wall']):
    print(f'{name:<34} {c["tests"]:>5} ' + ' '.join(f'{c[k]:>10.1f}' for k in keys))
  total = {k: round(sum(c[k] for c in files.values()), 1) for k in keys}
  print(f'{"all":<34} {len(tests):>5} ' + ' '.join(f'{total[k]:>10.1f}' for k in keys))
  print('slowest tests:')
  for t in sorted(tests, key=lambda t: -t['wall'])[:15]:
    print(f'  {t["wall"]:7.1f} s  (trace {t["trace"]:.1f}, lower {t["lower"]:.1f}, '
          f'compile {t["compile"]:.1f})  {t["test"]}')
  import common
  common.write_results(os.path.join(common.RESULTS, 'suite_time.json'),
                       [{'file': name, **c} for name, c in files.items()] + tests)
  return status


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
