"""The search loop: one trace, outputs, resume equals uninterrupted, refusals, NaN stop."""
import dataclasses
import functools
import json
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnas import config as config_lib, sharding, xla
from jaxnas import data
from jaxnas.checkpoint import Checkpointer
from jaxnas.loop import Interrupted
from jaxnas.search import Search, SearchConfig, search
from jaxnas.spaces import get_space


@pytest.fixture(scope='module')
def tiny():
  ds = data.load('digits')
  return data.from_arrays(ds.x_train[:256], ds.y_train[:256], ds.x_test[:64], ds.y_test[:64],
                          name='digits', num_classes=10)


def config(tmp_path, **kw):
  """A tiny search, its settings spelt as on the command line (``sge_q`` is ``--sge-q``)."""
  base = dict(space='nb201', channels=4, layers=1, epochs=2, batch_size=32,
              workdir=str(tmp_path / 'run'))
  return config_lib.build(SearchConfig, **{**base, **kw})


@pytest.mark.parametrize('method,weight_steps', [('darts1', 1), ('sge', 2)])
def test_step_traces_once(tmp_path, tiny, method, weight_steps):
  # sge: two inner steps per α step (sge_n = 2), Q = 2 directions (chunks: test_hypergrad)
  kw = dict(sge_n=2, sge_q=2) if method == 'sge' else {}
  run = Search(config(tmp_path, method=method, **kw), tiny)
  state = run.init_state()
  alpha0 = np.asarray(state.alpha['cell'])
  steps = [divmod(i, run.steps_per_epoch) for i in range(3)]
  for epoch, step in steps:
    state, metrics = run.step_fn(state, run.batch(epoch, step), run.epochs)
    assert np.isfinite(float(metrics['train_loss'])) and np.isfinite(float(metrics['val_loss']))
  assert run.traces == 1
  assert int(state.wstep) == 3 * weight_steps
  assert not np.allclose(np.asarray(state.alpha['cell']), alpha0)
  S = run.steps_per_epoch
  with pytest.raises(IndexError, match=f'step {S} of epoch 0: an epoch has {S} steps'):
    run.batch(0, S)


def test_each_method_gets_its_options_batches_and_alpha_optimizer(tmp_path, tiny):
  # (the estimators themselves are tested in test_hypergrad.py)
  want = {'darts1': ({}, 1, 'adam', 3e-4),
          'darts2': ({'xi': None}, 1, 'adam', 3e-4),
          'darts2-fd': ({'xi': None, 'r': 1e-2}, 1, 'adam', 3e-4),
          'multistep': ({'n': 3}, 3, 'adam', 3e-4),
          'sge': ({'n': 2, 'p': 0.02, 'q': 5, 'mu': 1e-3, 'chunk': None}, 2, 'sgd', 0.01),
          'esj': ({'n': 2, 'p': 0.02, 'mu': 1e-2}, 2, 'sgd', 0.01),
          'unroll': ({'n': 2, 'p': 0.01, 'remat': True}, 2, 'adam', 3e-4),
          'implicit': ({'solver': 'neumann', 'k': 4, 'eta': 0.01, 'damping': 0.1}, 1, 'adam', 3e-4)}
  given = {'multistep': dict(multistep_n=3), 'sge': dict(sge_n=2, sge_p=0.02, sge_q=5, sge_mu=1e-3),
           'esj': dict(esj_n=2, esj_p=0.02), 'unroll': dict(unroll_n=2, unroll_remat=True),
           'implicit': dict(implicit_solver='neumann', implicit_k=4, implicit_damping=0.1)}
  for method, (options, n_train, alpha_opt, alpha_lr) in want.items():
    run = Search(config(tmp_path, method=method, **given.get(method, {})), tiny)
    assert run.config.method_options == options, method  # every option resolved, in config.json
    assert run.estimator.options == options, method
    assert run.n_train == n_train and run.steps_per_epoch == 4 // n_train, method
    assert (run.config.optim.alpha_optimizer, run.config.optim.alpha_lr) == (alpha_opt, alpha_lr), method
  # an option of another method would do nothing: refused; so is an unknown or bad one
  with pytest.raises(ValueError, match='--sge-q is an option of method sge, but the method is darts1'):
    config(tmp_path, method='darts1', sge_q=3)
  with pytest.raises(ValueError, match='q \\(--sge-q\\) must be >= 1, got 0'):
    config(tmp_path, method='sge', sge_q=0)
  with pytest.raises(ValueError, match='sge has no option qq; its options: n, q, mu, p, chunk'):
    SearchConfig(method='sge', method_options={'qq': 1})
  sgd_run = Search(config(tmp_path, method='darts1', alpha_optimizer='sgd', alpha_lr=0.1), tiny)
  alpha = {'cell': np.ones((6, 5), np.float32)}
  grad = {'cell': np.full((6, 5), 2.0, np.float32)}
  aopt = sgd_run.spec.alpha_opt()
  updates, _ = aopt.update(grad, aopt.init(alpha), alpha)
  # SGD with L2 1e-3: −0.1 (2 + 1e-3 · 1)
  np.testing.assert_allclose(updates['cell'], -0.1 * (2 + 1e-3), rtol=1e-6)


def test_search_writes_its_outputs(tmp_path, tiny, programs):
  cfg = config(tmp_path)
  result = search(cfg, progress=False, dataset=tiny, programs=programs)
  wd = cfg.workdir
  for name in ('config.json', 'metrics.jsonl', 'genotype.json', 'genotype.txt', 'alpha.npz',
               'cell.png', 'alpha_cell.png', 'curves.png'):
    assert os.path.getsize(os.path.join(wd, name)) > 0, name
  with open(os.path.join(wd, 'metrics.jsonl')) as f:
    records = [json.loads(line) for line in f]
  assert [r['epoch'] for r in records] == [0, 1]
  for key in ('train_loss', 'train_acc', 'val_loss', 'val_acc', 'seconds_per_step', 'weights', 'genotype'):
    assert key in records[-1]
  # the written genotype is the derive rule applied to the final α
  w = jax.nn.softmax(result.alpha['cell'], axis=-1)
  assert result.genotype == run_space_derive(w)
  assert open(os.path.join(wd, 'genotype.txt')).read().strip() == str(result.genotype)
  assert json.load(open(os.path.join(wd, 'config.json')))['size']['channels'] == 4
  traj = np.load(os.path.join(wd, 'alpha.npz'))['weights_cell']
  assert traj.shape == (2, 6, 5)


def run_space_derive(w):
  from jaxnas.spaces import nb201
  return nb201.derive({'cell': np.asarray(w)})


# 2 steps per epoch: a stop in the middle of epoch 1, and one on the last step of epoch 0
# (whose checkpoint is the epoch end's)
@pytest.mark.parametrize('stop_after', [3, 2])
def test_resume_equals_uninterrupted(tmp_path, tiny, stop_after, programs):
  full = search(config(tmp_path / 'a', method='multistep', multistep_n=2), progress=False,
                dataset=tiny, programs=programs)
  cfg = config(tmp_path / 'b', method='multistep', multistep_n=2)
  with pytest.raises(Interrupted, match='--resume'):
    search(cfg, progress=False, dataset=tiny, programs=programs, stop_after_steps=stop_after)
  resumed = search(cfg, resume=True, progress=False, dataset=tiny, programs=programs)
  np.testing.assert_allclose(resumed.alpha['cell'], full.alpha['cell'], rtol=0, atol=1e-6)
  assert resumed.genotype == full.genotype
  assert [r['epoch'] for r in resumed.history] == [0, 1]
  np.testing.assert_allclose(resumed.history[-1]['train_loss'], full.history[-1]['train_loss'],
                             rtol=1e-5)


def test_resume_refuses_a_changed_config_and_a_fresh_start_refuses_a_used_workdir(tmp_path, tiny,
                                                                                 programs):
  cfg = config(tmp_path)  # as test_search_writes_its_outputs: its compiled step is cached
  with pytest.raises(Interrupted):
    search(cfg, progress=False, dataset=tiny, programs=programs, stop_after_steps=1)
  with pytest.raises(ValueError, match=r"config differs in optim.lr: 0.025 -> 0.1, seed: 2 -> 3"):
    search(config_lib.replace(cfg, lr=0.1, seed=3), resume=True, progress=False, dataset=tiny,
           programs=programs)
  with pytest.raises(ValueError, match='pass --resume'):
    search(cfg, progress=False, dataset=tiny, programs=programs)
  # the length of the run may change
  result = search(config_lib.replace(cfg, epochs=3), resume=True, progress=False, dataset=tiny,
                  programs=programs)
  assert [r['epoch'] for r in result.history] == [0, 1, 2]


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path, tiny, programs):
  cfg = config(tmp_path, checkpoint_every=1)
  train, _ = data.search_split(tiny, cfg.data.train_portion)
  bad = data.batch_indices(cfg.seed, 0, 2, len(train.x), cfg.size.batch_size)[0]
  x = tiny.x_train.copy()
  x[bad] = np.nan
  poisoned = dataclasses.replace(tiny, x_train=x)
  with pytest.raises(FloatingPointError, match=r'non-finite train_loss at epoch 0 step 2 .*step 2 in'):
    search(cfg, progress=False, dataset=poisoned, programs=programs)
  run = Search(cfg, poisoned, programs)
  ckpt = Checkpointer(cfg.workdir)
  assert ckpt.latest_step() == 2
  state, meta = ckpt.restore(run.init_state())
  assert (meta['epoch'], meta['step']) == (0, 2)
  assert all(np.isfinite(np.asarray(a)).all() for a in jax.tree_util.tree_leaves(state.params))
  ckpt.close()


def test_unknown_names_and_bad_values_are_refused_when_the_config_is_built(tmp_path):
  for kw, message in [
      (dict(method='foo'), r"method \(--method\) must be one of darts1, .*got 'foo'"),
      (dict(relaxation='foo'), r'relaxation \(--relaxation\) must be one of softmax'),
      (dict(method='implicit', implicit_solver='lu'),
       r"solver \(--implicit-solver\) must be one of cg, neumann"),
      (dict(pc_k=2), r'--pc-k is an option of relaxation pc, but the relaxation is softmax'),
      (dict(alpha_optimizer='rmsprop'), r"alpha_optimizer .* must be one of adam, sgd, got 'rmsprop'"),
      (dict(batch_size=0), r'batch_size \(--batch-size\) must be >= 1, got 0'),
      (dict(lr=-1.0), r'lr \(--lr\) must be > 0, got -1.0'),
      (dict(epochs=0), r'epochs \(--epochs\) must be >= 1'),
      (dict(channels=-1), r'channels \(--channels\) must be >= 1'),
      (dict(train_portion=1.0), r'train_portion .* must be < 1'),
      (dict(lr=float('nan')), r'lr \(--lr\) must be a finite number'),
      (dict(dataset='cifar11'), r'dataset \(--dataset\) must be one of digits, cifar10'),
      (dict(devices='two'), r"devices \(--devices\) must be 'all' or a number"),
      ({'zen_warmup.epochs': 1}, 'belongs to method multistep'),
      ({'method': 'multistep', 'zen_warmup.beta1': 2.0}, r'--zen-warmup.beta1 sets the Zen\(F\) warm-up, '
                                                       'but it has no epochs')]:
    with pytest.raises(ValueError, match=message):
      config(tmp_path, **kw)
  # limits that depend on the recipes and sizes, checked as the config completes itself
  for kw, message in [
      ({'method': 'multistep', 'zen_warmup.epochs': 1, 'alpha_warmup_epochs': 1},
       r'the warm-ups \(--zen-warmup.epochs 1, --alpha-warmup-epochs 1\) must leave epochs that move '
       r'α: at most epochs - 1 = 1 together'),
      (dict(lr_min=0.1), r'lr_min \(--lr-min\) 0.1 is above lr \(--lr\) 0.025'),
      (dict(method='sge', lr=0.0005), r'lr_min \(--lr-min\) 0.001 is above lr \(--lr\) 0.0005'),
      (dict(method='sge', alpha_beta1=0.9), r'--alpha-beta1 sets Adam, but the α optimiser is sgd'),
      (dict(momentum=0.0, nesterov=True), r'--nesterov needs momentum'),
      (dict(alpha_optimizer='sgd'), r'--alpha-optimizer sgd is not the one darts1 ran with: give '
                                    r'its learning rate \(--alpha-lr\)')]:
    with pytest.raises(ValueError, match=message):
      config(tmp_path, **kw)
  with pytest.raises(ValueError, match='the batch size 30 does not split over 8 devices'):
    config(tmp_path, batch_size=30, devices='8')
  with pytest.raises(ValueError, match=r'6 channels \(--channels\) do not split into the 4 groups'):
    config(tmp_path, relaxation='pc', channels=6)


def test_a_config_is_complete_when_built(tmp_path):
  # every recipe leaf, size and option set where the config is built, from the command
  # line's spelling or the constructor alike; a complete config rebuilt is itself
  from jaxnas.checkpoint import flatten
  from jaxnas.search_config import DataConfig, OptimConfig, SizeConfig
  assert not config(tmp_path, momentum=0.0).optim.nesterov   # NAS-Bench-201's Nesterov needs momentum
  for kw in (dict(method='sge'), dict(relaxation='pc', channels=8), dict(momentum=0.0),
             {'method': 'multistep', 'zen_warmup.epochs': 1}, dict(space='darts')):
    cfg = config(tmp_path, **kw)
    flat = flatten(cfg.to_json())
    # (None is a value of its own for benchmark_table, data_dir, and options such as sge's chunk)
    assert not [k for k, v in flat.items() if v is None and k not in ('benchmark_table', 'data.data_dir')
                and not k.endswith('_options.chunk')], flat
    assert dataclasses.replace(cfg) == cfg
    assert config_lib.from_json(SearchConfig, json.loads(json.dumps(cfg.to_json()))) == cfg
  pc = SearchConfig(space='nb201', relaxation='pc', data=DataConfig(dataset='cifar10'),
                    size=SizeConfig(epochs=50), optim=OptimConfig(lr=0.05), devices='1')
  assert (pc.size.batch_size, pc.optim.lr, pc.optim.lr_min, pc.optim.alpha_warmup_epochs) == \
      (256, 0.05, 0.0, 15)   # PC-DARTS' recipe but the given lr
  assert (pc.size.channels, pc.size.layers, pc.optim.nesterov) == (16, 5, True)   # nb201's
  assert pc.relaxation_options == {'k': 4}
  # the recipe is applied when a config is built: what chooses one cannot be replaced
  assert config_lib.replace(pc, lr=0.1).optim.lr == 0.1
  with pytest.raises(ValueError, match='method chooses a recipe, applied when the config was built'):
    config_lib.replace(pc, method='sge')


# Every relaxation with darts1, every estimator with softmax and with pc. Fair and β
# change only the mixing function and add an α-only regulariser (whose gradient
# joins any estimator's: the test below); pc also changes the structure of α (an
# edge-normalisation leaf), which is what an estimator could trip on; GDAS and DrNAS
# thread a key through the relaxation (and search end to end below). darts1 and sge
# with softmax run their steps in test_step_traces_once, darts2 with softmax in
# tests/test_sharding.py.
@pytest.mark.parametrize('method,relaxation', [
    (m, r) for r in ('softmax', 'pc', 'fair', 'beta') for m in ('darts1', 'darts2', 'multistep', 'sge')
    if (r in ('softmax', 'pc') or m == 'darts1') and (r, m) not in {
        ('softmax', 'darts1'), ('softmax', 'darts2'), ('softmax', 'sge')}])
def test_every_estimator_with_every_relaxation(tmp_path, tiny, method, relaxation):
  # two search steps; channels 8 so that PC-DARTS' quarter is two channels; sge with Q = 2
  from jaxnas.spaces import nb201
  kw = {**({'sge_q': 2} if method == 'sge' else {}),
        **({'beta_weight_start': 1.0, 'beta_weight_per_epoch': 0.0} if relaxation == 'beta' else {}),
        **({'fair_threshold': 0.0} if relaxation == 'fair' else {})}   # (σ ≈ 0.5 after two steps)
  run = Search(config(tmp_path, method=method, relaxation=relaxation, channels=8, **kw), tiny)
  state = run.init_state()
  assert set(state.alpha) == ({'cell', 'cell_edges'} if relaxation == 'pc' else {'cell'})
  for step in range(2):
    state, metrics = run.step_fn(state, run.batch(0, step), run.epochs)
    metrics = jax.device_get(metrics)
    assert np.isfinite(metrics['train_loss']) and np.isfinite(metrics['val_loss'])
    assert all(np.isfinite(np.asarray(a)).all() for a in jax.tree_util.tree_leaves(state.alpha))
  genotype = run.genotype(state.alpha)
  assert isinstance(genotype, nb201.Genotype) and len(genotype.nodes) == 3
  assert nb201.Genotype.from_text(str(genotype)) == genotype
  # the regulariser enters with its weight: fair 10, beta 1 (set above), none otherwise
  assert metrics['regularizer_weight'] == pytest.approx({'fair': 10.0, 'beta': 1.0}.get(relaxation, 0.0))
  if relaxation == 'fair':
    assert metrics['regularizer'] < 0


@pytest.mark.parametrize('space', ['nb201', 'darts'])
@pytest.mark.parametrize('relaxation', ['gdas', 'drnas'])
def test_stochastic_relaxations_search_end_to_end(tmp_path, tiny, space, relaxation):
  # one epoch each: darts1 on both spaces (DARTS: 3 cells, normal and reduction), and once
  # sge (Q = 2, the key split over the perturbed runs: both relaxations draw from it alike);
  # the stochastic mixing draws from the step's key, so runs differ by seed only
  for method in ('darts1', 'sge') if (space, relaxation) == ('nb201', 'gdas') else ('darts1',):
    kw = {**({'sge_q': 2} if method == 'sge' else {}),
          **({'drnas_kl_weight': 1e-3} if relaxation == 'drnas' else {})}   # --reg_type kl
    cfg = config(tmp_path / method, space=space, method=method, relaxation=relaxation, epochs=1,
                 layers=3 if space == 'darts' else 1, **kw)
    result = search(cfg, progress=False, dataset=tiny)
    record = result.history[-1]
    assert np.isfinite(record['train_loss']) and np.isfinite(record['val_loss'])
    assert all(np.isfinite(a).all() for a in result.alpha.values())
    sp = get_space(space)
    assert sp.load_genotype(os.path.join(cfg.workdir, 'genotype.json')) == result.genotype
    # the derive rule reads softmax(α) (AutoDL's and DrNAS' genotype())
    soft = {k: np.asarray(jax.nn.softmax(jax.numpy.asarray(a), -1)) for k, a in result.alpha.items()}
    assert result.genotype == sp.derive(soft)
    if relaxation == 'drnas':  # the KL to Dir(1) enters with weight 1e-3
      assert record['regularizer_weight'] == pytest.approx(1e-3) and record['regularizer'] >= 0


def test_the_regulariser_gradient_joins_the_hypergradient(tmp_path, tiny):
  # plain SGD on α without decay: the β-DARTS step differs from the DARTS step by exactly
  # −lr·λ·∇R(α) = −lr·λ·softmax(α)/n_edges (the cross-entropy part is the same)
  alphas = {}
  for relaxation in ('softmax', 'beta'):
    weights = {'beta_weight_start': 5.0, 'beta_weight_per_epoch': 0.0} if relaxation == 'beta' else {}
    run = Search(config(tmp_path, relaxation=relaxation, alpha_optimizer='sgd', alpha_lr=0.1,
                        alpha_weight_decay=0.0, **weights), tiny)
    state = run.init_state()
    alpha0 = np.asarray(state.alpha['cell'])
    state, _ = run.step_fn(state, run.batch(0, 0), run.epochs)
    alphas[relaxation] = np.asarray(state.alpha['cell'])
  soft = np.exp(alpha0) / np.exp(alpha0).sum(1, keepdims=True)
  np.testing.assert_allclose(alphas['beta'] - alphas['softmax'], -0.1 * 5.0 * soft / 6,
                             rtol=1e-4, atol=1e-7)


def test_zen_warmup_reads_no_labels(tmp_path, tiny, programs):
  # Data that differ in every label: the searches are identical through the warm-up
  # epoch (its checkpoint), and differ after a labelled epoch.
  rng = np.random.default_rng(0)
  corrupted = data.from_arrays(tiny.x_train, rng.permutation((tiny.y_train + 3) % 10),
                               tiny.x_test, tiny.y_test, name='digits', num_classes=10)
  kw = {'method': 'multistep', 'multistep_n': 2, 'zen_warmup.epochs': 1, 'epochs': 2,
        'zen_warmup.batch_size': 8}
  clean = search(config(tmp_path / 'clean', **kw), progress=False, dataset=tiny,
                 programs=programs)
  assert 'zen_f' in clean.history[0] and 'train_loss' not in clean.history[0]
  cfg = config(tmp_path / 'corrupted', **kw)
  run = Search(cfg, corrupted, programs)
  S = run.steps_per_epoch
  with pytest.raises(Interrupted):
    search(cfg, progress=False, dataset=corrupted, programs=programs, stop_after_steps=S + 1)
  like = run.init_state()
  states = [Checkpointer(str(tmp_path / name / 'run')).restore(like, step=S)[0]
            for name in ('clean', 'corrupted')]
  chex.assert_trees_all_equal(states[0], states[1])
  # one labelled step later they differ
  after = Checkpointer(str(tmp_path / 'corrupted' / 'run')).restore(like)[0]
  assert not np.array_equal(after.params['classifier']['weight'],
                            states[0].params['classifier']['weight'])
  # the warm-up ascends Zen(F)
  run = Search(config(tmp_path / 'w', **kw), tiny)
  state = run.init_state()
  values = []
  for _ in range(4):
    state, m = run.warmup_fn(state, run.epochs)
    values.append(float(m['zen_f']))
  assert values[-1] > values[0] and run.traces == 1
  with pytest.raises(ValueError, match='must be one of w, alpha, both'):
    config(tmp_path, **{**kw, 'zen_warmup.moves': 'beta'})


def test_program_cache_skips_the_trace_and_keeps_the_numbers(tmp_path, tiny):
  def run_steps(cfg, n=2, programs=None):
    run = Search(cfg, tiny, programs)
    state = run.init_state()
    for i in range(n):
      state, _ = run.step_fn(state, run.batch(0, i), run.epochs)
    return run, np.asarray(state.alpha['cell']), np.asarray(jax.tree_util.tree_leaves(state.params)[0])

  cfg = config(tmp_path)
  plain, alpha, w = run_steps(cfg)  # no folder of programs: plain jax.jit
  programs = tmp_path / 'programs'
  cached = functools.partial(run_steps, programs=str(programs))
  first, alpha1, w1 = cached(cfg)
  assert first.traces == 1 and len(list(programs.glob('*.jaxprogram'))) == 1
  assert len(list(programs.glob('*.shapes'))) == 1  # the supernet's init, traced once
  # a batch placed on its declared shardings runs the program of the NumPy batch
  first.step_fn(first.init_state(), sharding.put(first.batch(0, 0), first.batch_shardings),
                first.epochs)
  assert first.traces == 1 and len(list(programs.glob('*.jaxprogram'))) == 1
  # a later run of the same program (another workdir, seed and length do not change it:
  # a run resumed for more epochs runs the program it ran) reads it back
  again, alpha2, w2 = cached(config_lib.replace(cfg, workdir=str(tmp_path / 'other'), seed=5,
                                                epochs=cfg.size.epochs + 3))
  assert again.traces == 0 and len(list(programs.glob('*.jaxprogram'))) == 1
  np.testing.assert_allclose(alpha1, alpha, rtol=1e-6, atol=1e-9)
  np.testing.assert_allclose(w1, w, rtol=1e-6, atol=1e-9)
  assert not np.allclose(alpha2, alpha1)  # its own seed: its own α
  # anything that shapes the program makes a new one
  other, _, _ = cached(config_lib.replace(cfg, lr=0.05))
  assert other.traces == 1 and len(list(programs.glob('*.jaxprogram'))) == 2
  # a corrupt file is traced afresh, with a warning, and rewritten (by a new process: this
  # one keeps the shapes it traced in memory)
  xla._SHAPES.clear()
  for f in programs.iterdir():
    f.write_bytes(b'not a program')
  with pytest.warns(UserWarning, match='unreadable cached') as caught:
    fresh, alpha3, _ = cached(cfg)
  assert {str(w.message).split()[4] for w in caught} >= {'program', 'shapes'}
  assert fresh.traces == 1
  np.testing.assert_allclose(alpha3, alpha, rtol=1e-6, atol=1e-9)
  assert cached(cfg)[0].traces == 0


def test_darts_moves_alpha_first_then_the_weights_at_the_new_alpha(tmp_path, tiny):
  # quark0/darts train_search.py: architect.step(...), then a fresh ∇w L_train at the new α
  import optax
  from jaxnas import search as search_lib
  run = Search(config(tmp_path, alpha_lr=0.5), tiny)   # a large α step, so that the order shows
  state = run.init_state()
  batch = run.batch(0, 0)
  spec = run.spec
  problem = search_lib.make_problem(spec, jax.random.key(0), 0.0)
  normalise = lambda x: spec.augment(jax.random.key(0), x, spec.mean, spec.std)  # digits: no crop
  train = (normalise(batch['train_x'][0]), batch['train_y'][0])
  val = (normalise(batch['val_x']), batch['val_y'])
  # jitted, here and below: op by op the supernet's gradients compile every primitive
  ga = jax.jit(jax.grad(lambda a: problem.val_loss(state.params, a, val, state.batch_stats)[0]))(
      state.alpha)
  updates, _ = spec.alpha_opt().update(ga, state.a_opt, state.alpha)
  alpha = optax.apply_updates(state.alpha, updates)

  @jax.jit
  def weights_after_a_step_at(a):
    gw = jax.grad(lambda w: problem.train_loss(w, a, train, state.batch_stats)[0])(state.params)
    updates, _ = spec.weight_opt(run.epochs).tx.update(gw, state.w_opt, state.params)
    return optax.apply_updates(state.params, updates)
  want, at_old_alpha = weights_after_a_step_at(alpha), weights_after_a_step_at(state.alpha)
  new, _ = run.step_fn(jax.tree_util.tree_map(lambda x: x.copy(), state), batch, run.epochs)
  np.testing.assert_allclose(new.alpha['cell'], alpha['cell'], rtol=1e-5, atol=1e-7)
  got, want, old = (np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(t)])
                    for t in (new.params, want, at_old_alpha))
  assert np.abs(want - old).max() > 100 * np.abs(got - want).max()
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_pc_darts_freezes_alpha_during_its_warmup_while_the_weights_train(tmp_path, tiny):
  # PC-DARTS train_search.py: architect.step only from epoch 15 of 50; a 4-epoch run: epoch 0
  cfg = config(tmp_path, relaxation='pc', pc_k=2, epochs=4, batch_size=32)
  assert cfg.optim.alpha_warmup_epochs == 1 and cfg.optim.lr == 0.1 and cfg.optim.alpha_lr == 6e-4
  run = Search(cfg, tiny)
  state = run.init_state()
  alpha0 = jax.tree_util.tree_map(np.asarray, state.alpha)
  params0 = np.asarray(jax.tree_util.tree_leaves(state.params)[0])
  for step in range(2):
    state, metrics, fn = run.step(state, 0, step)
    assert fn is run.weights_fn and np.isfinite(float(metrics['train_loss']))
  for k in alpha0:
    np.testing.assert_array_equal(np.asarray(state.alpha[k]), alpha0[k])
  assert not np.allclose(np.asarray(jax.tree_util.tree_leaves(state.params)[0]), params0)
  assert int(state.wstep) == 2
  state, _, fn = run.step(state, 1, 0)
  assert fn is run.step_fn
  assert not np.allclose(np.asarray(state.alpha['cell']), alpha0['cell'])


# The α gradient of a small supernet at its start is sensitive to any rounding: rounding
# the images alone to bfloat16, all else float32, moves its cosine with the float32 one to
# 0.987-0.991 here (NAS-Bench-201). bfloat16 activations round every layer's output:
# 0.967-0.991, mean 0.979. The bounds: the mean above 0.97, and within 3 times the
# effect of rounding the images once. (DARTS' supernet: `bash benchmarks/device_check.sh
# --smoke --parts bf16`, mean 0.991 on its normal cells and 0.997 on its reduction cells.)
def test_bfloat16_step_keeps_float32_state_and_the_float32_alpha_gradient(tmp_path, programs):
  # α by SGD at lr 1 without decay: one step from the initial state moves α by minus its
  # gradient; 4 batches, since rounding moves each batch's cosine by ~0.01
  rng = np.random.default_rng(0)
  y = rng.integers(0, 10, 320)
  # a pattern per class under noise: labels the network can learn
  x = (rng.random((10, 16, 16, 3))[y] * 0.5 + rng.random((320, 16, 16, 3)) * 0.5).astype(np.float32)
  rounded = np.asarray(jnp.asarray(x, jnp.bfloat16).astype(jnp.float32))
  grads, stats = {}, {}
  for name, dtype, images in (('float32', 'float32', x), ('bfloat16', 'bfloat16', x),
                              ('rounded images', 'float32', rounded)):
    # one normalisation for all three (the statistics are constants of the program: float32's
    # step serves the rounded images)
    ds = data.from_arrays(images[:256], y[:256], images[256:], y[256:], name='digits',
                          num_classes=10, **stats)
    stats = {'mean': ds.mean, 'std': ds.std}
    run = Search(config(tmp_path, channels=8, compute_dtype=dtype, alpha_optimizer='sgd',
                        alpha_lr=1.0, alpha_weight_decay=0.0), ds, programs)  # (float32's: one)
    if name == 'bfloat16':  # the convolutions and matrix products do run in bfloat16
      hlo = run.step_fn.lower(run.init_state(), run.batch(0, 0), run.epochs).as_text()
      assert 'convolution' in hlo and 'bf16' in hlo
    grads[name] = []
    for step in range(4):
      state = run.init_state()
      alpha0 = np.asarray(state.alpha['cell'])
      state, metrics = run.step_fn(state, run.batch(0, step), run.epochs)
      assert ({str(a.dtype) for a in jax.tree_util.tree_leaves(state)}
              <= {'float32', 'int32', 'uint32'})
      assert np.isfinite(float(metrics['val_loss']))
      grads[name].append((alpha0 - np.asarray(state.alpha['cell'])).ravel())

  def cosines(name):
    return [a @ b / np.linalg.norm(a) / np.linalg.norm(b)
            for a, b in zip(grads['float32'], grads[name])]
  bf16, rounding = cosines('bfloat16'), cosines('rounded images')
  assert max(bf16) < 1 - 1e-6, bf16
  assert np.mean(bf16) > 0.97 and 1 - np.mean(bf16) < 3 * (1 - np.mean(rounding)), (bf16, rounding)
