"""Search steps per second against the number of devices, per-device batch fixed.

    python benchmarks/scaling.py                          # CPU: 1, 2, 4, 8 fake devices
    python benchmarks/scaling.py --devices 1,2,4,8 --per-device-batch 32 --size darts

Each device count runs in its own process (on CPU with
``--xla_force_host_platform_device_count`` set to the largest count, so that
the fake devices exist). Printed: devices, global batch, compile seconds of the
search step on that mesh and of the same program (same global batch) on one
device without partitioning, median seconds per step, examples per second.
Writes benchmarks/results/scaling.json.

On a CPU the fake devices share the same cores: the numbers only show that
the machinery works (the step compiles, runs and scales its batch), not a
speed-up. On a multi-GPU host or a TPU slice the same command measures the
real scaling.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import RESULTS, time_search_step, write_results  # noqa: E402

SIZES = {'tiny': dict(space='nb201', channels=8, layers=1, image=16),
         'small': dict(space='darts', channels=8, layers=5, image=32),
         'darts': dict(space='darts', channels=16, layers=8, image=32)}


def measure(size: str, devices: int, per_device_batch: int, method: str, steps: int) -> dict:
  shape = dict(SIZES[size], batch=devices * per_device_batch)
  r = time_search_step(shape, steps, method=method, devices=str(devices))
  # the same global batch on one device: what SPMD partitioning adds to the compile
  plain = r if devices == 1 else time_search_step(shape, 1, method=method, devices='1')
  return dict(size=size, method=method, devices=devices, global_batch=shape['batch'],
              per_device_batch=per_device_batch, compile_s=r['compile_s'],
              compile_no_mesh_s=plain['compile_s'], step_s=r['step_s'],
              examples_per_s=shape['batch'] / r['step_s'])


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--devices', default='1,2,4,8')
  p.add_argument('--per-device-batch', type=int, default=8)
  p.add_argument('--size', default='tiny', choices=sorted(SIZES))
  p.add_argument('--method', default='darts1')
  p.add_argument('--steps', type=int, default=5)
  p.add_argument('--one', type=int, help=argparse.SUPPRESS)
  args = p.parse_args()
  if args.one:
    print(json.dumps(measure(args.size, args.one, args.per_device_batch, args.method, args.steps)))
    return
  counts = [int(c) for c in args.devices.split(',')]
  import jax  # noqa: F401  (only to learn the platform)
  env = dict(os.environ)
  if jax.default_backend() == 'cpu':
    env['XLA_FLAGS'] = (env.get('XLA_FLAGS', '') +
                        f' --xla_force_host_platform_device_count={max(counts)}').strip()
    print('CPU: the devices are fake and share the same cores; the figures only show that '
          'the sharded step works, not a speed-up.')
  rows = []
  print(f"{'devices':>7} {'global batch':>12} {'compile s':>9} {'no mesh':>8} {'s/step':>8} "
        f"{'examples/s':>10}")
  for n in counts:
    out = subprocess.run([sys.executable, __file__, '--one', str(n), '--size', args.size,
                          '--per-device-batch', str(args.per_device_batch), '--method', args.method,
                          '--steps', str(args.steps)], env=env, capture_output=True, text=True)
    if out.returncode:
      sys.exit(f'{n} devices failed:\n{out.stderr[-2000:]}')
    row = json.loads(out.stdout.strip().splitlines()[-1])
    rows.append(row)
    print(f"{n:7d} {row['global_batch']:12d} {row['compile_s']:9.1f} "
          f"{row['compile_no_mesh_s']:8.1f} {row['step_s']:8.3f} {row['examples_per_s']:10.1f}",
          flush=True)
  write_results(os.path.join(RESULTS, 'scaling.json'), rows, key=('size', 'method', 'devices'))


if __name__ == '__main__':
  main()
