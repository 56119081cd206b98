"""Data parallelism on 8 fake CPU devices (conftest): a sharded step computes the
one-device step on the same global batch; checkpoints move between meshes."""
import chex
import jax
import numpy as np
import pytest

from jaxnas import config as config_lib
from jaxnas import data, free, sharding
from jaxnas.checkpoint import Checkpointer
from jaxnas.search import Search, SearchConfig
from jaxnas.train import TrainConfig, Trainer


@pytest.fixture(scope='module')
def tiny():
  # Continuous random pixels, not the digits: the digits' blank background ties many
  # activations exactly, and a ReLU can then sit on its kink, decided by the rounding
  # of a BatchNorm mean. There the step is not differentiable, and any change of
  # summation order flips it: permuting the batch rows on one device moves the α
  # gradient by 1% just as a mesh does. (Integer pixels 0..16 tie too: with them,
  # permuting the rows moved darts1's α by 1e-4 after two steps; with these, 1e-8.)
  # Away from ties the sharded step must equal the one-device step to float precision.
  rng = np.random.default_rng(0)
  x = rng.random((168, 8, 8, 1)).astype(np.float32)
  y = rng.integers(0, 10, 168)
  return data.from_arrays(x[:128], y[:128], x[128:], y[128:], name='digits', num_classes=10)


def search_config(tmp_path, **kw):
  # α by plain SGD: Adam's first steps divide by |g| and would magnify the float
  # noise of near-zero hypergradient entries into visible differences
  return config_lib.build(SearchConfig, **{
      **dict(space='nb201', channels=4, layers=1, epochs=2, batch_size=16, augment=True,
             alpha_optimizer='sgd', alpha_lr=0.1, workdir=str(tmp_path / 'run')), **kw})


def test_mesh_and_layout_errors():
  assert len(jax.devices()) == 8
  mesh = sharding.make_mesh(4)
  assert mesh.devices.size == 4 and mesh.axis_names == (sharding.DATA,)
  assert sharding.describe(mesh, 16)['per_device_batch'] == 4
  with pytest.raises(ValueError, match='does not split over 4 devices: choose a multiple of 4'):
    sharding.check_batch(18, mesh)
  with pytest.raises(ValueError, match='asked for 9 devices; this process sees 8'):
    sharding.make_mesh(9)
  with pytest.raises(ValueError, match="'all' or a positive number"):
    sharding.make_mesh('many')
  assert sharding.process_rows(16) == slice(0, 16)


@pytest.mark.parametrize('method', ['darts1', 'darts2', 'sge'])
def test_sharded_search_step_equals_one_device(tmp_path, tiny, method):
  # two steps, so that the second starts from sharded-step outputs (BN statistics,
  # momentum, Adam moments); augmentation on, so its random numbers are compared too
  states, metrics = {}, {}
  for devices in ('1', '8'):
    kw = {'sge_q': 2} if method == 'sge' else {}
    run = Search(search_config(tmp_path, method=method, devices=devices, **kw), tiny)
    assert run.mesh.devices.size == int(devices)
    state = run.init_state()
    for step in range(2):
      batch = sharding.put(run.batch(0, step), run.batch_shardings)
      state, m = run.step_fn(state, batch, run.epochs)
    if devices == '8':
      for leaf in jax.tree_util.tree_leaves(state):
        assert leaf.sharding.is_fully_replicated and len(leaf.sharding.device_set) == 8
    states[devices], metrics[devices] = jax.device_get((state, m))
    assert np.isfinite(metrics[devices]['train_loss']) and np.isfinite(metrics[devices]['val_loss'])
    assert all(np.isfinite(a).all() for a in jax.tree_util.tree_leaves(states[devices].alpha))
  chex.assert_trees_all_close(metrics['8'], metrics['1'], rtol=1e-4, atol=1e-6)
  chex.assert_trees_all_close(states['8'], states['1'], rtol=1e-4, atol=1e-6)


def test_sharded_train_step_equals_one_device(tmp_path, tiny):
  out = {}
  for devices in ('1', '8'):
    run = Trainer(TrainConfig(space='nb201', genotype='NB201_BEST', channels=4, layers=1,
                              batch_size=16, epochs=1, devices=devices,
                              workdir=str(tmp_path / devices)), tiny)
    state = run.init_state()
    state, m = run.train_step(state, *sharding.put(run.batch(0, 0), run.batch_sharding), run.epochs)
    out[devices] = jax.device_get((state, m, run.evaluate(state)))
  chex.assert_trees_all_close(out['8'], out['1'], rtol=1e-4, atol=1e-6)


def test_sharded_freedarts_saliency_equals_one_device(tiny):
  # SNIP of α with the batch split over 8 (GraSP's second derivative on the mesh is
  # darts2's, tested above; it agrees too, ~20 s more)
  out = {devices: free.free(free.FreeConfig(space='nb201', saliency='snip', channels=4, layers=1,
                                            batch_size=32, devices=devices), tiny)
         for devices in ('1', '8')}
  a, b = out['1'].saliency['cell'], out['8'].saliency['cell']
  assert np.abs(a - b).max() <= 1e-4 * np.abs(a).max()
  assert out['8'].genotype == out['1'].genotype


def test_checkpoint_written_on_8_devices_restores_on_1_and_4(tmp_path, tiny):
  run = Search(search_config(tmp_path, devices='8'), tiny)
  state, _ = run.step_fn(run.init_state(), sharding.put(run.batch(0, 0), run.batch_shardings),
                        run.epochs)
  saved = jax.device_get(state)
  ckpt = Checkpointer(str(tmp_path / 'ck'))
  ckpt.save(1, state, {'epoch': 0, 'step': 1})
  ckpt.close()
  for devices in ('4', '1'):
    other = Search(search_config(tmp_path, devices=devices), tiny)
    ckpt = Checkpointer(str(tmp_path / 'ck'))
    restored, meta = ckpt.restore(other.init_state())
    ckpt.close()
    assert meta == {'epoch': 0, 'step': 1}
    for leaf in jax.tree_util.tree_leaves(restored):
      assert leaf.sharding == other.replicated
    chex.assert_trees_all_equal(jax.device_get(restored), saved)
  # and the restored state steps on its new mesh (one device: the step of the test above)
  state, metrics = other.step_fn(restored, sharding.put(other.batch(0, 1), other.batch_shardings),
                                 other.epochs)
  assert np.isfinite(float(metrics['val_loss']))

