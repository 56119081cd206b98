"""Data parallelism on JAX's SPMD machinery: a mesh with one axis, ``data``.

The batch is split along ``data``; weights, α, BatchNorm statistics,
optimiser states and the PRNG key are replicated. Replication is the right
layout at jaxnas' sizes: the largest state (the DARTS search supernet, 1.9 M
weights, with momentum and Adam moments) is a few tens of MB, far below one
device's memory, and a replicated update needs no gather before the next
forward pass; sharding it (ZeRO-style) would only trade memory we do not lack
for communication. The steps are ``jax.jit`` with ``in_shardings`` /
``out_shardings``: XLA partitions them, inserting the all-reduces of the
gradients and of every BatchNorm mean and variance, so that BatchNorm
normalises by the statistics of the global batch and a sharded step computes
what the one-device step computes on the same global batch.

Random numbers (augmentation, drop-path, SGE's directions) come from
``jax.random`` with the partitionable Threefry (JAX's default), so they do not
depend on the number of devices either.

Across hosts (:func:`initialize_distributed`), each process builds the global
batch's indices (a pure function of seed, epoch and step), gathers only its own
rows (:func:`process_rows`) and hands them to
``jax.make_array_from_process_local_data``.
"""
from __future__ import annotations

import os
from typing import Any, NamedTuple

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

DATA = 'data'


# How long the other processes wait for a silent one before they stop: JAX's own
# default (jax.distributed.initialize, heartbeat_timeout_seconds), which a run may
# shorten with $JAXNAS_HEARTBEAT_TIMEOUT.
HEARTBEAT_TIMEOUT_S = 100


def initialize_distributed() -> None:
  """``jax.distributed.initialize`` from the environment: ``JAX_COORDINATOR_ADDRESS``
  (host:port of process 0), ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID``; on a
  Cloud TPU slice, under SLURM or Open MPI all three may be left unset (JAX
  detects them). Call it before anything else touches JAX.

  A process that dies (killed, out of memory, its host lost) stops sending
  heartbeats; after ``$JAXNAS_HEARTBEAT_TIMEOUT`` seconds (default
  :data:`HEARTBEAT_TIMEOUT_S`) the JAX runtime ends every other process with
  "another task died" instead of leaving it waiting in a collective. The
  checkpoints in the workdir are whole (orbax commits a step atomically):
  start every process again with ``--resume``."""
  env = {'num_processes': os.environ.get('JAX_NUM_PROCESSES'),
         'process_id': os.environ.get('JAX_PROCESS_ID')}
  kw = {k: int(v) for k, v in env.items() if v is not None}
  heartbeat = os.environ.get('JAXNAS_HEARTBEAT_TIMEOUT', str(HEARTBEAT_TIMEOUT_S))
  if not heartbeat.isdigit() or int(heartbeat) < 1:
    raise ValueError(f'JAXNAS_HEARTBEAT_TIMEOUT must be a whole number of seconds >= 1, '
                     f'got {heartbeat!r}')
  jax.distributed.initialize(heartbeat_timeout_seconds=int(heartbeat), **kw)


def any_process(flag: bool) -> bool:
  """Whether ``flag`` is true in any process (every process must call it, at the same
  point): a signal that reaches one host stops all of them at the same step."""
  if jax.process_count() == 1:
    return bool(flag)
  from jax.experimental import multihost_utils
  return bool(np.asarray(multihost_utils.process_allgather(np.int32(flag))).any())


def default_devices() -> str:
  """What ``devices=None`` means: ``$JAXNAS_DEVICES``, else ``'all'``."""
  return os.environ.get('JAXNAS_DEVICES', 'all')


def check_devices(value: str) -> str | None:
  """None if ``value`` is a valid ``devices`` setting ('all' or N >= 1), else what is wrong."""
  if value == 'all' or (value.isdigit() and int(value) >= 1):
    return None
  return "must be 'all' or a number of devices >= 1"


def resolve_devices(devices: str | int | None = None) -> list:
  """The devices a run uses: ``'all'`` (every device of every process), or the
  first N. None: :func:`default_devices`."""
  if devices is None:
    devices = default_devices()
  available = jax.devices()
  if str(devices) == 'all':
    return available
  try:
    n = int(devices)
  except ValueError:
    raise ValueError(f"devices must be 'all' or a positive number, got {devices!r}") from None
  if not 1 <= n <= len(available):
    raise ValueError(f'asked for {n} devices; this process sees {len(available)} '
                     f'({available[0].platform}): use --devices all or a number up to {len(available)}')
  if n < len(available) and jax.process_count() > 1:
    raise ValueError('across hosts use every device (--devices all)')
  return available[:n]


def make_mesh(devices: str | int | None = None) -> Mesh:
  """A one-axis mesh (``data``) over :func:`resolve_devices`."""
  devs = resolve_devices(devices)
  # Auto: XLA propagates the shardings from the jit boundaries (jax.make_mesh's
  # default, Explicit, makes sharding part of every intermediate's type)
  return jax.make_mesh((len(devs),), (DATA,), axis_types=(AxisType.Auto,), devices=devs)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh, axis: int = 0) -> NamedSharding:
  """Split along ``axis`` (the example axis) over the ``data`` devices."""
  return NamedSharding(mesh, P(*([None] * axis), DATA))


def check_batch(global_batch: int, mesh: Mesh, what: str = 'batch size') -> int:
  """The per-device batch; raises unless the devices divide the global batch."""
  n = mesh.devices.size
  if global_batch % n:
    raise ValueError(f'the {what} {global_batch} does not split over {n} devices: choose a '
                     f'multiple of {n}, or fewer devices (--devices)')
  return global_batch // n


def process_rows(n: int) -> slice:
  """This process' rows of a global batch of ``n`` (all of them on one host)."""
  count, index = jax.process_count(), jax.process_index()
  if n % count:
    raise ValueError(f'a global batch of {n} does not split over {count} processes')
  per = n // count
  return slice(index * per, (index + 1) * per)


def put(tree: Any, shardings: Any) -> Any:
  """Host arrays -> global arrays with ``shardings`` (a matching pytree or one
  sharding). On one host ``tree`` is the global data; across hosts it is this
  process' rows (:func:`process_rows`) of every sharded leaf."""
  if jax.process_count() == 1:
    return jax.device_put(tree, shardings)
  if isinstance(shardings, NamedSharding):
    shardings = jax.tree_util.tree_map(lambda _: shardings, tree)
  return jax.tree_util.tree_map(
      lambda x, s: jax.make_array_from_process_local_data(s, np.asarray(x)), tree, shardings)


def put_batch(arrays: tuple, mesh: Mesh) -> tuple:
  """A global batch that every process holds whole (host arrays, examples first)
  -> global arrays split over ``mesh``; raises unless the devices divide it."""
  n = len(arrays[0])
  check_batch(n, mesh)
  rows = process_rows(n)
  return put(tuple(np.asarray(a)[rows] for a in arrays), batch_sharding(mesh))


def is_main_process() -> bool:
  """Only process 0 writes logs, pictures and reports."""
  return jax.process_index() == 0


def describe(mesh: Mesh, global_batch: int) -> dict:
  """What a run reports about its layout; raises unless the devices divide the batch."""
  per_device = check_batch(global_batch, mesh)
  return {'devices': mesh.devices.size, 'platform': mesh.devices.flat[0].platform,
          'processes': jax.process_count(), 'global_batch': global_batch,
          'per_device_batch': per_device}


class DataParallel(NamedTuple):
  """A data-parallel job's layout: the batch split over ``mesh``, everything else
  ``replicated``; ``layout`` is what the run reports (:func:`describe`)."""
  mesh: Mesh
  layout: dict
  replicated: NamedSharding


def data_parallel(devices: str | int | None, global_batch: int) -> DataParallel:
  """The layout of a job over ``devices`` (:func:`make_mesh`) with batches of
  ``global_batch`` examples; raises unless the devices divide the batch."""
  mesh = make_mesh(devices)
  return DataParallel(mesh, describe(mesh, global_batch), replicated(mesh))
