"""Loader throughput: images per second of jaxnas' batch order and augmentation.

    python benchmarks/data_throughput.py

Rows: loading a data set into memory (the embedded digits; CIFAR-10 through
the real ``tfds.data_source`` path under ``tfds.testing.mock_data``), drawing
shuffled training batches from memory, and the jitted augmentation
(crop + flip + normalise + cutout) on the device. Compare the per-batch time
with a search step's (seconds, benchmarks/compile_time.py): the loader is not
the bottleneck when it is orders of magnitude smaller. Writes
benchmarks/results/data_throughput.json.
"""
from __future__ import annotations

import os
import sys
import tempfile
import time

import jax

import jaxnas.xla

jaxnas.xla.configure()  # jaxnas' CPU flags, before JAX starts its backend
from jaxnas import data

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import RESULTS, write_results  # noqa: E402


def _rate(fn, n_images, repeat=5):
  times = []
  for _ in range(repeat):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  t = sorted(times)[len(times) // 2]
  return n_images / t, t


def main():
  import tensorflow_datasets as tfds
  rows = []
  batch = 64

  t0 = time.perf_counter()
  digits = data.load('digits')
  rows.append(('load digits (1,797 images)', len(digits.x_train) + len(digits.x_test),
               time.perf_counter() - t0))
  n_mock = 5000
  with tfds.testing.mock_data(num_examples=n_mock):
    t0 = time.perf_counter()
    cifar = data.load('cifar10', data_dir=tempfile.mkdtemp())
    rows.append((f'load mock cifar10 via tfds.data_source ({2 * n_mock} images)', 2 * n_mock,
                 time.perf_counter() - t0))

  for name, ds in (('digits', digits), ('mock cifar10', cifar)):
    split = data.Split(ds.x_train, ds.y_train)
    steps = data.steps_per_epoch(len(split.x), batch)

    def one_epoch():
      for s in range(steps):
        idx = data.batch_indices(0, 0, s, len(split.x), batch)
        split.x[idx], split.y[idx]
    rate, t = _rate(one_epoch, steps * batch)
    rows.append((f'{name}: shuffled batches of {batch} from memory', steps * batch, t))

  aug = jax.jit(lambda k, x: data.CIFAR_AUGMENT(k, x, cifar.mean, cifar.std))
  xb = jax.numpy.asarray(cifar.x_train[:batch])
  jax.block_until_ready(aug(jax.random.key(0), xb))
  rate, t = _rate(lambda: jax.block_until_ready(aug(jax.random.key(1), xb)), batch, repeat=20)
  rows.append((f'augment crop+flip+cutout, batch {batch} of 32x32 (jit)', batch, t))

  print(f'{"what":62s} {"images":>8s} {"seconds":>9s} {"images/s":>12s} {"ms/batch64":>11s}')
  out = []
  for what, n, t in rows:
    print(f'{what:62s} {n:8d} {t:9.4f} {n / t:12,.0f} {1e3 * t * batch / n:11.3f}')
    out.append(dict(what=what, images=n, seconds=t, images_per_s=n / t))
  write_results(os.path.join(RESULTS, 'data_throughput.json'), out)


if __name__ == '__main__':
  main()
