"""Several hosts for real on one machine: ``jaxnas --distributed`` as 2 processes of 2
CPU devices each, joined by JAX's coordination service and Gloo's collectives over
loopback, against this test process on as many of its devices (conftest gives it 8)."""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import chex
import jax
import numpy as np
import pytest

from jaxnas import cli, config as config_lib
from jaxnas.checkpoint import Checkpointer
from jaxnas.search import Search, SearchConfig
from jaxnas.train import TrainConfig, Trainer

# A process of the test's launcher: jaxnas' own entry point, with an audit hook that lists
# every file and folder the process creates or opens for writing under $WORKDIR.
CHILD = r'''
import json, os, sys
root, writes = os.path.realpath(os.environ['WORKDIR']), []
def hook(event, args):
  if event == 'open' and isinstance(args[0], str):
    mode, flags = args[1], args[2]
    if (mode and set(mode) & set('wax+')) or (not mode and flags & (os.O_WRONLY | os.O_RDWR)):
      writes.append(args[0])
  elif event in ('os.mkdir', 'os.rename', 'os.replace') and isinstance(args[0], (str, bytes)):
    writes.append(os.fsdecode(args[-3] if event != 'os.mkdir' else args[0]))
def report():
  mine = sorted({os.path.relpath(os.path.realpath(p), root) for p in writes
                 if os.path.realpath(p).startswith(root + os.sep)})
  with open(os.environ['WRITES'], 'w') as f:
    json.dump(mine, f)
sys.addaudithook(hook)
from jaxnas.cli import main
try:
  status = main(sys.argv[1:])
finally:
  report()
sys.exit(status)
'''
# 2 devices a process: a mesh with a local axis, the host-major layout of several
# accelerators per host. (Gloo's collectives slow as each process' device threads share the
# cores: a step of the test's search takes ~0.5 s with 1 device a process, ~1 s with 2 and
# ~2.7 s with 4, against 0.2 s in one process.)
PROCESSES, DEVICES = 2, 2
ALL = str(PROCESSES * DEVICES)  # the devices of one process that equal the processes' mesh
DATA = ['--space', 'nb201', '--channels', '4', '--layers', '1', '--batch-size', '16']
# α by plain SGD (tests/test_sharding.py says why)
SEARCH = ['search', *DATA, '--alpha-optimizer', 'sgd', '--alpha-lr', '0.1']
TIMEOUT_S = 240  # a run of a few steps takes ~20 s; a hang ends the test, not the suite


pytestmark = pytest.mark.usefixtures('cli_caches')  # conftest


@pytest.fixture(scope='module')
def npz(tmp_path_factory):
  # continuous pixels: no ties for a ReLU to sit on (tests/test_sharding.py); 32 training
  # rows and 32 validation rows, 2 steps per epoch at batch 16
  rng = np.random.default_rng(0)
  x, y = rng.random((96, 8, 8, 1)).astype(np.float32), rng.integers(0, 10, 96)
  path = tmp_path_factory.mktemp('data') / 'random.npz'
  np.savez(path, x_train=x[:64], y_train=y[:64], x_test=x[64:], y_test=y[64:])
  return str(path)


def launch(argv, workdir, env=None):
  """``jaxnas --distributed ARGV`` as PROCESSES processes; returns them (Popen, with the
  paths of their stdout, stderr and list of writes in ``.logs``)."""
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
  procs = []
  for i in range(PROCESSES):
    logs = {k: f'{workdir}.{i}.{k}' for k in ('out', 'err', 'writes')}
    child_env = {**os.environ, 'JAX_COORDINATOR_ADDRESS': f'127.0.0.1:{port}',
                 'JAX_NUM_PROCESSES': str(PROCESSES), 'JAX_PROCESS_ID': str(i),
                 'XLA_FLAGS': f'--xla_force_host_platform_device_count={DEVICES} '
                              '--xla_backend_optimization_level=0 '
                              '--xla_cpu_parallel_codegen_split_count=1',
                 'JAXNAS_DEVICES': 'all', 'WORKDIR': str(workdir), 'WRITES': logs['writes'],
                 **(env or {})}
    p = subprocess.Popen([sys.executable, '-c', CHILD, '--distributed', *map(str, argv),
                          '--workdir', str(workdir)], env=child_env,
                         stdout=open(logs['out'], 'w'), stderr=open(logs['err'], 'w'))
    p.logs = logs
    procs.append(p)
  return procs


def wait(procs, timeout=TIMEOUT_S):
  try:
    return [p.wait(timeout) for p in procs]
  except subprocess.TimeoutExpired:
    for p in procs:
      p.kill()
    raise AssertionError(f'the processes did not end within {timeout} s:\n' + tail(procs[0]))


def tail(proc, key='err'):
  return open(proc.logs[key]).read()[-3000:]


def run_here(capsys, *argv):
  status = cli.main([str(a) for a in argv])
  out, err = capsys.readouterr()
  assert status == 0, err
  return out


def assert_workdirs_equal(a, b, rtol=1e-4, atol=1e-6):
  """Same α trajectory, same metrics (but the timings) in two workdirs."""
  alpha_a, alpha_b = np.load(a / 'alpha.npz'), np.load(b / 'alpha.npz')
  assert sorted(alpha_a) == sorted(alpha_b)
  for k in alpha_a:
    np.testing.assert_allclose(alpha_a[k], alpha_b[k], rtol=rtol, atol=atol, err_msg=k)
  rec_a, rec_b = ([json.loads(line) for line in open(d / 'metrics.jsonl')] for d in (a, b))
  assert len(rec_a) == len(rec_b)
  for ra, rb in zip(rec_a, rec_b):
    assert ra.keys() == rb.keys()
    for k in ra:
      if k == 'seconds_per_step':
        continue
      if isinstance(ra[k], float):
        np.testing.assert_allclose(ra[k], rb[k], rtol=rtol, atol=atol, err_msg=k)
      elif k != 'weights':
        assert ra[k] == rb[k], k


def checkpointed_state(job, workdir):
  state, meta = Checkpointer(str(workdir)).restore(job.init_state())
  return jax.device_get(state), meta


def assert_only_process_0_writes(procs, outputs):
  """Process 0 wrote ``outputs`` (the logs, pictures and reports); the others wrote nothing
  but their part of orbax' protocol (a list of the arrays they hold: no array data, since
  the arrays are replicated and their one saved copy is process 0's)."""
  writes = [json.load(open(p.logs['writes'])) for p in procs]
  assert outputs <= set(writes[0]), writes[0]
  for i, w in enumerate(writes[1:], 1):  # (and each makes the stages' folders it runs in)
    assert w and all(re.fullmatch(f'(search|train)/checkpoints/.*array_metadatas/process_{i}', p)
                     or p in ('search', 'train') for p in w), w
  out1 = tail(procs[1], 'out')
  assert 'written to' not in out1 and 'genotype' not in out1, out1


def wait_for(path, procs):
  deadline = time.monotonic() + TIMEOUT_S
  while not path.exists():
    assert time.monotonic() < deadline and all(p.poll() is None for p in procs), (
        f'{path} was not written:\n' + tail(procs[0]))
    time.sleep(0.1)


def test_two_processes_preempted_in_training_resume_in_one_as_one_process_runs(
    tmp_path, capsys, npz):
  # jaxnas run as 2 processes: the search, then the training of the cell it derives, where a
  # preemption notice to one host stops both at the same step; resumed in this process on
  # as many devices, and run here uninterrupted: the same α trajectory, metrics, reports and
  # checkpoints. Then each search goes on in 1 process, alike.
  two, one = tmp_path / 'two', tmp_path / 'one'
  argv = ['run', *SEARCH[1:], '--dataset', f'npz:{npz}', '--epochs', 1, '--train.channels', 4,
          '--train.layers', 1, '--train.batch-size', 16, '--train.epochs', 2]
  procs = launch([*argv, '--no-progress'], two)
  wait_for(two / 'train' / 'checkpoints' / '4', procs)  # the training's first epoch (64 rows)
  procs[1].send_signal(signal.SIGTERM)
  assert wait(procs) == [130, 130], tail(procs[0]) + tail(procs[1])
  assert 'Continue with --resume' in tail(procs[0])
  assert_only_process_0_writes(procs, {
      *(f'search/{name}' for name in ('metrics.jsonl', 'config.json', 'curves.png', 'alpha.npz',
                                      'cell.png')),
      'train/metrics.jsonl', 'train/config.json'})
  run_here(capsys, *argv, '--devices', ALL, '--workdir', two, '--resume', '--no-progress')
  run_here(capsys, *argv, '--devices', ALL, '--workdir', one, '--no-progress')
  assert_workdirs_equal(two / 'search', one / 'search')
  reports = [json.load(open(d / 'report.json')) for d in (two, one)]
  assert reports[0]['genotype'] == reports[1]['genotype']
  for k, v in reports[1].items():
    if isinstance(v, float) and 'second' not in k and 'time' not in k:
      np.testing.assert_allclose(reports[0][k], v, rtol=1e-4, err_msg=k)
  search_job = Search(config_lib.build(
      SearchConfig, dataset=f'npz:{npz}', space='nb201', channels=4, layers=1, batch_size=16,
      alpha_optimizer='sgd', alpha_lr=0.1, epochs=1, devices=ALL))
  train_job = Trainer(config_lib.build(
      TrainConfig, space='nb201', genotype=reports[1]['genotype'], channels=4, layers=1,
      batch_size=16, dataset=f'npz:{npz}', epochs=2, devices=ALL))
  for job, stage in ((search_job, 'search'), (train_job, 'train')):
    (state_two, meta_two), (state_one, meta_one) = (checkpointed_state(job, d / stage)
                                                    for d in (two, one))
    assert meta_two == meta_one, stage
    chex.assert_trees_all_close(state_two, state_one, rtol=1e-4, atol=1e-6)
  for d in (two, one):
    run_here(capsys, *SEARCH, '--dataset', f'npz:{npz}', '--epochs', 2, '--devices', ALL,
             '--workdir', d / 'search', '--resume', '--no-progress')
  assert_workdirs_equal(two / 'search', one / 'search')


def test_killing_one_process_ends_the_other_with_a_message(tmp_path, npz):
  two = tmp_path / 'two'
  procs = launch([*SEARCH, '--dataset', f'npz:{npz}', '--epochs', 50, '--checkpoint-every', 1,
                  '--no-progress'], two, env={'JAXNAS_HEARTBEAT_TIMEOUT': '5'})
  wait_for(two / 'checkpoints' / '1', procs)
  procs[1].kill()
  t0 = time.monotonic()
  status = wait(procs[:1], timeout=60)[0]
  assert status != 0
  assert time.monotonic() - t0 < 60
  err = open(procs[0].logs['err']).read()
  # the runtime's message, after the heartbeats stop; where a collective noticed first
  # (Gloo: the peer's socket reset), jaxnas' message before it
  assert 'another task died' in err and 'stopped sending heartbeats' in err, err[-3000:]
  if 'Gloo' in err.split('Terminating process')[0]:
    assert 'a collective across the processes failed' in err and '--resume' in err, err[-3000:]
    assert 'inside jaxnas' not in err
  # what was saved is whole
  assert Checkpointer(str(two)).latest_step() >= 1


def test_a_bad_heartbeat_timeout_is_refused_before_jax_starts_its_service(monkeypatch):
  from jaxnas import sharding
  for bad in ('0', '-5', 'ten', '2.5'):
    monkeypatch.setenv('JAXNAS_HEARTBEAT_TIMEOUT', bad)
    with pytest.raises(ValueError, match=f"JAXNAS_HEARTBEAT_TIMEOUT must be a whole number of "
                                         f"seconds >= 1, got '{bad}'"):
      sharding.initialize_distributed()
