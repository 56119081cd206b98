"""Evaluation training: loss falls, drop-path, auxiliary loss, resume, whole-split evaluation."""
import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxnas import config as config_lib
from jaxnas import data as data_lib
from jaxnas.cli import main
from jaxnas.spaces import get_space
from jaxnas.spaces.base import init_variables
from jaxnas.loop import Interrupted
from jaxnas.train import TrainConfig, Trainer, loss_fn, train

NB201 = '|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|skip_connect~0|avg_pool_3x3~1|nor_conv_3x3~2|'


def _small_data(n_train=200, n_test=37):
  ds = data_lib.load('digits')
  return data_lib.from_arrays(ds.x_train[:n_train], ds.y_train[:n_train], ds.x_test[:n_test],
                              ds.y_test[:n_test], name='digits-small', num_classes=10)


def _config(tmp_path, **kw):
  return TrainConfig(**{'space': 'nb201', 'genotype': NB201, 'channels': 4, 'layers': 1,
                        'batch_size': 32, 'epochs': 3, 'workdir': str(tmp_path / 'run'), **kw})


def test_training_reduces_the_loss_and_reports(tmp_path):
  result = train(_config(tmp_path, epochs=4), progress=False, dataset=_small_data())
  losses = [h['train_loss'] for h in result.history]
  assert losses[-1] < 0.7 * losses[0]
  rep = result.report
  assert rep['params'] == sum(int(np.prod(a.shape)) for a in jax.tree_util.tree_leaves(
      Trainer(_config(tmp_path), _small_data()).init_state().params))
  assert rep['multiply_adds'] > 0 and 0 <= rep['test_acc'] <= 1
  for name in ('report.json', 'metrics.jsonl', 'curves.png', 'config.json'):
    assert os.path.exists(tmp_path / 'run' / name)


def test_evaluation_reads_the_whole_test_split(tmp_path):
  ds = _small_data(n_test=37)  # 37 = 32 + 5: the last batch is partial
  run = Trainer(_config(tmp_path), ds)
  state = run.init_state()
  for _ in range(3):  # move off the initial network so predictions vary
    state, _ = run.train_step(state, *run.batch(0, _), run.epochs)
  logits, _ = run.spec.model.apply({'params': state.params, 'batch_stats': state.batch_stats},
                              ds.normalize(ds.x_test), train=False)
  logits = np.asarray(logits)
  expected_acc = np.mean(np.argmax(logits, -1) == ds.y_test)
  ce = np.asarray(optax.softmax_cross_entropy_with_integer_labels(logits, ds.y_test))
  got = run.evaluate(state)
  assert got['test_acc'] == pytest.approx(expected_acc, abs=1e-9)
  assert got['test_loss'] == pytest.approx(ce.mean(), rel=1e-5)


def test_resume_equals_uninterrupted(tmp_path):
  # the three runs share a folder of programs: the training and evaluation steps are
  # traced once (another workdir does not change them), then loaded
  ds = _small_data()
  programs = tmp_path / 'programs'
  full = train(_config(tmp_path / 'a', checkpoint_every=2), progress=False, dataset=ds,
               programs=str(programs))
  assert len(list(programs.glob('*.jaxprogram'))) == 2
  cfg = _config(tmp_path / 'b', checkpoint_every=2)
  with pytest.raises(Interrupted):   # mid-epoch 1 (6 steps per epoch)
    train(cfg, progress=False, dataset=ds, stop_after_steps=9, programs=str(programs))
  resumed = train(cfg, resume=True, progress=False, dataset=ds, programs=str(programs))
  assert len(list(programs.glob('*.jaxprogram'))) == 2
  for a, b in zip(full.history, resumed.history):
    for k in ('train_loss', 'train_acc', 'test_loss', 'test_acc'):
      assert a[k] == pytest.approx(b[k], abs=1e-6), k
  with pytest.raises(ValueError, match='lr'):
    train(_config(tmp_path / 'b', lr=0.5, checkpoint_every=2), resume=True, progress=False, dataset=ds)


@pytest.fixture(scope='module')
def darts_net():
  sp = get_space('darts')
  net = sp.network(sp.genotypes['DARTS_V2'], 4, 3, 10, auxiliary=True)
  x = jax.random.uniform(jax.random.key(0), (4, 8, 8, 3))
  return net, init_variables(net, jax.random.key(1), x), x


def test_drop_path_is_identity_at_eval_and_at_zero(darts_net):
  net, v, x = darts_net
  rngs = {'dropout': jax.random.key(2)}

  def run(train, p):
    out = net.apply(v, x, train=train, drop_prob=p, rngs=rngs, mutable=['batch_stats'])[0]
    return np.asarray(out[0])
  np.testing.assert_array_equal(run(False, 0.5), run(False, None))
  np.testing.assert_allclose(run(True, 0.0), run(True, None), rtol=1e-6, atol=1e-6)
  assert np.abs(run(True, 0.5) - run(True, None)).max() > 1e-3


def test_auxiliary_loss_enters_only_when_enabled(darts_net):
  net, v, x = darts_net
  y = jnp.array([0, 1, 2, 3])
  (logits, aux), _ = net.apply(v, x, train=True, mutable=['batch_stats'])
  assert aux is not None
  assert net.apply(v, x, train=False)[1] is None  # no auxiliary logits at eval

  def ce(z):
    z = np.asarray(z, np.float64)
    z = z - z.max(1, keepdims=True)
    return np.mean(np.log(np.exp(z).sum(1)) - z[np.arange(4), np.asarray(y)])
  assert float(loss_fn(logits, None, y, 0.4)) == pytest.approx(ce(logits), rel=1e-5)
  assert float(loss_fn(logits, aux, y, 0.4)) == pytest.approx(ce(logits) + 0.4 * ce(aux), rel=1e-5)
  no_aux = get_space('darts').network(get_space('darts').genotypes['DARTS_V2'], 4, 3, 10,
                                      auxiliary=False)
  assert no_aux.apply({'params': {k: p for k, p in v['params'].items() if k != 'auxiliary_head'},
                       'batch_stats': v['batch_stats']}, x, train=True,
                      mutable=['batch_stats'])[0][1] is None


def test_recipes_and_errors(tmp_path):
  darts = TrainConfig(space='darts', genotype='DARTS_V2', dataset='cifar10')   # complete when built
  assert (darts.epochs, darts.batch_size, darts.channels, darts.layers, darts.lr) == (600, 96, 36, 20, 0.025)
  assert (darts.weight_decay, darts.grad_clip, darts.auxiliary, darts.drop_path, darts.cutout) == \
      (3e-4, 5.0, True, 0.2, 16)
  nb = TrainConfig(space='nb201', genotype='NB201_BEST', dataset='cifar10')
  assert (nb.epochs, nb.batch_size, nb.lr, nb.nesterov, nb.weight_decay, nb.grad_clip) == \
      (200, 256, 0.1, True, 5e-4, 0.0)
  assert (nb.channels, nb.layers) == (16, 5)
  small = TrainConfig(space='darts', genotype='DARTS_V2')   # the embedded digits
  assert (small.epochs, small.batch_size, small.channels, small.layers) == (20, 64, 8, 5)
  assert dataclasses.replace(nb) == nb and TrainConfig(**nb.to_json()) == nb
  with pytest.raises(ValueError, match='--genotype'):
    Trainer(TrainConfig(space='nb201'))
  with pytest.raises(ValueError, match='space chooses a recipe'):
    config_lib.replace(nb, space='darts')
  assert main(['train', '--space', 'nb201', '--genotype', 'nope', '--workdir',
               str(tmp_path / 'x')]) == 2


def test_pipeline_runs_and_resumes_as_a_whole(tmp_path):
  from jaxnas.pipeline import RunConfig, run
  ds = _small_data(n_train=256, n_test=64)
  # the search of test_search's config(): its compiled step is in the shared cache
  cfg = config_lib.build(RunConfig, space='nb201', channels=4, layers=1, epochs=2, batch_size=32,
                        **{'train.channels': 4, 'train.layers': 1, 'train.batch_size': 32, 'train.epochs': 1},
                        workdir=str(tmp_path / 'run'))
  # the training section is built for the search's space: NAS-Bench-201's recipe
  assert (cfg.train.space, cfg.train.nesterov, cfg.train.lr, cfg.train.channels) == ('nb201', True, 0.1, 4)
  with pytest.raises(ValueError, match="the training section's space is 'darts', the search's 'nb201'"):
    RunConfig(search=cfg.search, train=TrainConfig())
  report = run(cfg, progress=False, dataset=ds)
  for name in ('search/genotype.json', 'search/done.json', 'train/report.json', 'train/done.json',
               'report.json', 'report.md'):
    assert os.path.exists(tmp_path / 'run' / name), name
  with open(tmp_path / 'run' / 'search' / 'genotype.txt') as f:
    assert report['genotype'] == f.read().strip()
  with pytest.raises(ValueError, match='--resume'):
    run(cfg, progress=False, dataset=ds)
  # finished stages are not run again: a resumed run returns the same report at once
  os.remove(tmp_path / 'run' / 'report.json')
  again = run(cfg, resume=True, progress=False, dataset=ds)
  assert again == report
