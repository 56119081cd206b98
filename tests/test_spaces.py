"""Search spaces: parameter counts, derive rules, genotypes, the cell layout, forward passes."""
import functools
import json

import flax
import flax.linen as nn
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnas import cli, get_space, ops, spaces
from jaxnas.spaces import cells, darts, nb201
from jaxnas.spaces.base import count_params, init_variables

NB201_ARCH = '|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|'


# --- parameter counts (published figures, counted as quark0/darts and AutoDL do) ---

def test_darts_supernet_params():
  assert spaces.count_network_params('darts', supernet=True, channels=16, layers=8) == (1_930_618, 0)


def test_darts_v2_params_and_auxiliary_head():
  assert spaces.count_network_params('darts', 'DARTS_V2', 36, 20) == (3_349_342, 476_426)


def test_nb201_params():
  assert spaces.count_network_params('nb201', NB201_ARCH, 16, 5) == (1_288_506, 0)


def test_nb201_params_equal_nas_bench_201s_on_each_data_set():
  # NAS-Bench-201's own counts (benchmarks/nb201_ground_truth.json, in M to 6 decimals)
  # for 5 of its architectures on each data set: 10, 100 and 120 classes, 16x16 inputs on
  # ImageNet16-120
  import json
  import os
  path = os.path.join(os.path.dirname(__file__), '..', 'benchmarks', 'nb201_ground_truth.json')
  with open(path) as f:
    truth = json.load(f)['datasets']
  for dataset, classes, image in (('cifar10', 10, 32), ('cifar100', 100, 32),
                                  ('ImageNet16-120', 120, 16)):
    for arch in sorted(truth[dataset])[::150]:
      count, _ = spaces.count_network_params('nb201', arch, 16, 5, classes, image_size=image)
      assert round(count / 1e6, 6) == truth[dataset][arch]['params'], (dataset, arch, count)


def test_params_command_prints_count_last(capsys):
  assert cli.main(['params', '--space', 'darts', '--genotype', 'DARTS_V2', '--channels', '36',
                   '--layers', '20']) == 0
  assert capsys.readouterr().out.strip().splitlines()[-1] == '3349342'


def test_init_variables_distributions():
  model = darts.Supernet(channels=16, layers=3)
  v = init_variables(model, jax.random.key(0), jnp.zeros((1, 16, 16, 3)),
                     get_space('darts').init_alpha(jax.random.key(1)))
  pw = np.asarray(v['params']['cell0']['edges']['input_edges']['op']['sep_conv_3x3_pw0']['pointwise'])
  assert pw.shape == (8, 16, 16) and np.abs(pw).max() <= 0.25  # U(±1/sqrt(16))
  assert abs(pw.std() - 0.25 / np.sqrt(3)) < 0.01
  assert np.all(np.asarray(v['params']['stem_bn']['scale']) == 1)
  assert np.all(np.asarray(v['batch_stats']['stem_bn']['var']) == 1)
  assert count_params(v['params']) == count_params(
      jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)),
                                        get_space('darts').init_alpha(jax.random.key(1))))['params'])


# --- derive rules ---

def _cell(rows):
  """α of one DARTS cell: ``rows`` maps edge index -> {op: value}; the rest 0."""
  a = np.zeros((14, 8))
  for e, d in rows.items():
    for op, val in d.items():
      a[e, darts.PRIMITIVES.index(op)] = val
  return a


def test_darts_derive_hand_built():
  # node 0: edges 0,1; node 1: edges 2,3,4; node 2: 5..8; node 3: 9..13
  a = _cell({
      0: {'none': 9.0, 'sep_conv_3x3': 1.0},     # a dominant 'none' is ignored
      1: {'max_pool_3x3': 2.0},
      2: {'dil_conv_5x5': 0.5}, 3: {'skip_connect': 3.0}, 4: {'avg_pool_3x3': 1.0},
      5: {'sep_conv_5x5': 1.0}, 6: {'sep_conv_5x5': 1.0}, 7: {'sep_conv_5x5': 1.0},  # a tie
      8: {'none': 5.0},
      9: {'dil_conv_3x3': 1.0, 'sep_conv_3x3': 1.0},  # op tie: first op wins
      13: {'skip_connect': 4.0},
  })
  g = darts.derive({'normal': a, 'reduce': a})
  assert tuple(g.gene('normal')) == (('max_pool_3x3', 1), ('sep_conv_3x3', 0),
                      ('skip_connect', 1), ('avg_pool_3x3', 2),
                      ('sep_conv_5x5', 0), ('sep_conv_5x5', 1),
                      ('skip_connect', 4), ('sep_conv_3x3', 0))
  assert g.normal_concat == (2, 3, 4, 5)


def test_darts_derive_edge_strength_reorders():
  a = _cell({0: {'sep_conv_3x3': 2.0}, 1: {'sep_conv_3x3': 1.0}})
  strength = np.ones(14)
  strength[0] = 0.1
  gene = darts.derive_cell(a, edge_strength=strength)
  assert gene[:2] == [('sep_conv_3x3', 1, 0), ('sep_conv_3x3', 0, 0)]


def test_nb201_derive_includes_none():
  a = np.zeros((6, 5))
  a[0, nb201.PRIMITIVES.index('nor_conv_3x3')] = 1
  a[1, nb201.PRIMITIVES.index('none')] = 2
  a[2, :] = 1.0  # tie: first op ('none')
  a[3, nb201.PRIMITIVES.index('skip_connect')] = 1
  a[4, nb201.PRIMITIVES.index('avg_pool_3x3')] = 1
  a[5, nb201.PRIMITIVES.index('nor_conv_1x1')] = 1
  g = nb201.derive({'cell': a})
  assert str(g) == '|nor_conv_3x3~0|+|none~0|none~1|+|skip_connect~0|avg_pool_3x3~1|nor_conv_1x1~2|'


# --- genotypes ---

@pytest.mark.parametrize('name', ['DARTS_V1', 'DARTS_V2', 'PC_DARTS'])
def test_darts_genotype_round_trips(name, tmp_path):
  sp = get_space('darts')
  g = sp.genotypes[name]
  assert darts.Genotype.from_text(str(g)) == g
  assert darts.Genotype.from_json(json.loads(json.dumps(g.to_json()))) == g
  path = tmp_path / 'g.json'
  path.write_text(json.dumps(g.to_json()))
  assert sp.load_genotype(str(path)) == g
  assert sp.load_genotype(str(g)) == g


def test_darts_text_with_range():
  text = str(darts.GENOTYPES['DARTS_V2']).replace('[2, 3, 4, 5]', 'range(2, 6)')
  assert darts.Genotype.from_text(text) == darts.GENOTYPES['DARTS_V2']


def test_nb201_arch_string_round_trip():
  g = get_space('nb201').load_genotype(NB201_ARCH)
  assert str(g) == NB201_ARCH
  assert nb201.Genotype.from_json(g.to_json()) == g
  assert g.edge_ops() == ['nor_conv_3x3', 'nor_conv_3x3', 'nor_conv_3x3', 'skip_connect',
                          'nor_conv_3x3', 'nor_conv_3x3']


@pytest.mark.parametrize('bad,match', [
    ([('sep_conv_3x3', 0), ('sep_conv_3x3', 2)], 'input index 2 out of range'),
    ([('conv_9x9', 0), ('sep_conv_3x3', 1)], "operation 'conv_9x9' is not in the darts space"),
])
def test_darts_genotype_errors(bad, match):
  with pytest.raises(ValueError, match=match):
    darts.Genotype(bad, [2], [('skip_connect', 0), ('skip_connect', 1)], [2])


@pytest.mark.parametrize('arch,match', [
    ('|nor_conv_3x3~0|+|nor_conv_3x3~0|', 'has 3 nodes'),
    ('|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~5|+|skip_connect~0|none~1|none~2|', 'exactly one edge'),
    ('|nor_conv_3x3-0|+|a~0|b~1|+|c~0|d~1|e~2|', 'must be op~input'),
    ('nor_conv_3x3~0+x', "must be '|op~input|...|'"),
    ('|conv_7x7~0|+|none~0|none~1|+|none~0|none~1|none~2|', "'conv_7x7' is not in the nb201 space"),
])
def test_nb201_arch_string_errors(arch, match):
  with pytest.raises(ValueError, match=match):
    nb201.Genotype.from_text(arch)


def test_unknown_space_and_genotype_name():
  with pytest.raises(ValueError, match=r"unknown search space 'foo'.*darts, nb201"):
    get_space('foo')
  with pytest.raises(ValueError, match='not a known darts genotype name'):
    get_space('darts').load_genotype('DARTS_V9')


def test_alpha_shape_is_checked():
  sp = get_space('darts')
  with pytest.raises(ValueError, match=r"α\['normal'\] must have shape \(14, 8\)"):
    sp.check_alpha({'normal': np.zeros((14, 7)), 'reduce': np.zeros((14, 8))})
  with pytest.raises(ValueError, match='must be a dict with keys'):
    sp.check_alpha({'cell': np.zeros((6, 5))})
  model = darts.Supernet(channels=4, layers=3)
  with pytest.raises(ValueError, match=r'cell weights must have shape \(14, 8\)'):
    jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)),
                                      {'normal': jnp.zeros((14, 7)), 'reduce': jnp.zeros((14, 7))}))


def test_cells_of_one_shape_share_one_trace(monkeypatch):
  # 8 cells hold the same 5 kinds of input-edge group and 3 of inner-edge group as
  # 5 cells (normal C, reduce, normal 2C, reduce, normal 4C): with the edge scans
  # shared, an edge's op is traced as often for 8 cells as for 5. (Different channel
  # counts, so that the second model finds nothing in the first one's trace cache.)
  traced = []
  edge_op = cells.edge_op
  monkeypatch.setattr(cells, 'edge_op', lambda *a, **k: traced.append(1) or edge_op(*a, **k))
  counts = {}
  for layers, c in ((5, 2), (8, 3)):
    traced.clear()
    model = darts.Supernet(c, layers, 10)
    alpha = get_space('darts').init_alpha(jax.random.key(0))
    jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((2, 8, 8, 3)), alpha)
    counts[layers] = len(traced)
  assert counts[8] == counts[5] > 0


# --- the cell layout equals a plain loop over edges ---

def _per_op_variables(v, name, bn):
  """The fused MixedOp's variables of op ``name`` in the layout of its own module
  (ops.get_op / ops.Pool); ``bn`` maps the op's BatchNorms to (fused BN, group)."""
  p, s = v['params'], v['batch_stats']
  stats = {path: {'mean': s[fused]['mean'][g], 'var': s[fused]['var'][g]} for path, (fused, g) in bn.items()}

  def dil(block):
    return {'DepthwiseConv_0': {'depthwise': p[f'{name}_dw{block}']['depthwise']},
            'Conv_0': {'pointwise': p[f'{name}_pw{block}']['pointwise']}}
  if name.startswith('sep_conv'):
    params = {'DilConv_0': dil(0), 'DilConv_1': dil(1)}
    stats = {'DilConv_0': {'BatchNorm_0': stats[0]}, 'DilConv_1': {'BatchNorm_0': stats[1]}}
  elif name.startswith('dil_conv'):
    params, stats = dil(0), {'BatchNorm_0': stats[0]}
  else:
    params, stats = {}, {'BatchNorm_0': stats[0]}
  return {'params': params, 'batch_stats': stats}


@pytest.mark.parametrize('hw,stride', [(8, 1), (8, 2), (9, 1), (10, 2)])
def test_mixed_op_equals_the_sum_of_its_ops(hw, stride):
  # the fused mixed op (one stacked depthwise product / BatchNorm per block) against
  # Σ_o w_o op_o(x) with each op its own module, in training mode (outputs and running
  # statistics) and in eval mode; 8x8 maps take the banded products, 9x9 and 10x10 the slices
  prims, c = darts.PRIMITIVES, 4
  op = cells.MixedOp(prims, c, stride, train=True, pool_bn=True)
  kx, kw = jax.random.split(jax.random.key(0))
  x = jax.random.normal(kx, (4, hw, hw, c))
  w = jax.random.normal(kw, (len(prims),))
  v = op.init(jax.random.key(1), x, w)
  v = {**v, 'batch_stats': jax.tree_util.tree_map(lambda a: a + 0.5, v['batch_stats'])}
  got, new = op.apply(v, x, w, mutable=['batch_stats'])
  got_eval = cells.MixedOp(prims, c, stride, train=False, pool_bn=True).apply(v, x, w)
  # stacking orders: pools as listed; conv chains two-block ops first
  chains = [n for n in prims if n.startswith('sep')] + [n for n in prims if n.startswith('dil')]
  bn = {n: {0: ('pool_bn', prims.index(n) - 1)} for n in ('max_pool_3x3', 'avg_pool_3x3')}
  bn.update({n: {0: ('bn0', chains.index(n)), 1: ('bn1', chains.index(n))} for n in chains[:2]})
  bn.update({n: {0: ('bn0', chains.index(n))} for n in chains[2:]})
  want = want_eval = 0
  for k, name in enumerate(prims):
    if name == 'none':
      continue
    if name.endswith('pool_3x3'):
      module = cells.PoolBN(name, stride)
    else:
      module = ops.get_op(name, c, c, stride, affine=False)
    if name == 'skip_connect':
      mv = {'params': v['params'].get(name, {}), 'batch_stats': v['batch_stats'].get(name, {})}
    else:
      mv = _per_op_variables(v, name, bn[name])
    y, upd = module.apply(mv, x, True, mutable=['batch_stats'])
    want = want + w[k] * y
    want_eval = want_eval + w[k] * module.apply(mv, x, False)
    if name != 'skip_connect':  # the running statistics moved as the op's own BatchNorms
      ref = _per_op_variables({'params': v['params'], **new}, name, bn[name])['batch_stats']
      chex.assert_trees_all_close(ref, flax.core.unfreeze(upd['batch_stats']), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)
  np.testing.assert_allclose(got_eval, want_eval, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize('select', ['chosen', 'chosen_and_rest'])
@pytest.mark.parametrize('stride', [1, 2])
def test_selected_op_runs_the_chosen_op_and_gives_autodls_gradients(select, stride):
  # weights one-hot in value, as GDAS' straight-through sample is: the output is the
  # chosen op's (its own module on the same variables), only its BatchNorms move, and the
  # weights' gradient is <g, op_k(x)> for the chosen op and, for the others, 0 ('chosen')
  # or Σ g ('chosen_and_rest': the scalars AutoDL adds in their place)
  prims, c = darts.PRIMITIVES, 4
  op = cells.SelectedOp(prims, c, stride, train=True, pool_bn=True, select=select)
  kx, kg = jax.random.split(jax.random.key(0))
  x = jax.random.normal(kx, (4, 8, 8, c))
  g = jax.random.normal(kg, (4, 8 // stride, 8 // stride, c))
  v = op.init(jax.random.key(1), x, jnp.eye(len(prims))[0])
  for k, name in enumerate(prims):
    w = jnp.eye(len(prims))[k]
    (y, new), vjp = jax.vjp(lambda w: op.apply(v, x, w, mutable=['batch_stats']), w)
    module = (cells.PoolBN(name, stride) if name.endswith('pool_3x3')
              else ops.get_op(name, c, c, stride, affine=False))
    mv = {'params': v['params'].get(name, {}), 'batch_stats': v['batch_stats'].get(name, {})}
    want, upd = module.apply(mv, x, True, mutable=['batch_stats'])
    np.testing.assert_allclose(y, want, rtol=1e-6, atol=1e-6)
    for other, stats in v['batch_stats'].items():
      moved = new['batch_stats'][other]
      chex.assert_trees_all_close(moved, upd['batch_stats'] if other == name else stats,
                                  rtol=1e-5, atol=1e-7)
    (dw,) = vjp((g, jax.tree_util.tree_map(jnp.zeros_like, new)))
    rest = float(jnp.sum(g)) if select == 'chosen_and_rest' else 0.0
    expected = np.full(len(prims), rest)
    expected[k] = float(jnp.sum(g * want))
    np.testing.assert_allclose(dw, expected, rtol=1e-5, atol=1e-5)


def test_the_one_op_supernet_is_the_mixed_supernet_at_one_hot_alpha():
  # NAS-Bench-201's supernet with one op per edge (zero-cost scoring's, GDAS' forward)
  # against the supernet that mixes every op, on the same variables at a one-hot α:
  # the same logits and parameter gradients, also for the cell whose nodes are all zero
  from jaxnas import relax
  sp = get_space('nb201')
  mixed = sp.supernet(4, 2, 10, relax.make('raw'))
  one_op = sp.supernet(4, 2, 10, relax.make('raw')._replace(hard=True))
  x = jax.random.normal(jax.random.key(0), (4, 8, 8, 3))
  genotypes = sp.sample_distinct(2, seed=0) + [sp.load_genotype(
      '|none~0|+|none~0|none~1|+|none~0|none~1|none~2|')]
  v = init_variables(mixed, jax.random.key(1), x[:1], sp.onehot(genotypes[0]))

  def value_and_grad(model):  # one trace per model, α an argument
    def loss(params, alpha):
      out, _ = model.apply({**v, 'params': params}, x, alpha, mutable=['batch_stats'])
      return jnp.sum(out ** 2), out
    return jax.jit(jax.value_and_grad(loss, has_aux=True))
  mixed_fn, one_op_fn = value_and_grad(mixed), value_and_grad(one_op)
  for genotype in genotypes:
    alpha = sp.onehot(genotype)
    (_, want), want_grad = mixed_fn(v['params'], alpha)
    (_, got), grad = one_op_fn(v['params'], alpha)
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(grad, want_grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize('stride,hw', [(1, 8), (1, 10), (2, 8)])
def test_mixed_cell_equals_edge_by_edge_loop(stride, hw):
  prims, c, n_in, n_nodes = darts.PRIMITIVES, 4, 2, 3
  cell = cells.MixedCell(prims, c, n_in, n_nodes, stride, train=True, pool_bn=True, remat=False)
  kx, kw = jax.random.split(jax.random.key(0))
  xs = [jax.random.normal(k, (2, hw, hw, c)) for k in jax.random.split(kx, n_in)]
  edges = cells.edge_list(n_in, n_nodes)
  w = jax.random.normal(kw, (len(edges), len(prims)))
  v = cell.init(jax.random.key(1), xs, w)
  got, _ = cell.apply(v, xs, w, mutable=['batch_stats'])

  # stride 1 on 8x8 maps: one group of every edge; else input edges, then the others
  if stride == 1 and hw * hw <= cells.ONE_SCAN_PIXELS:
    groups = {'all_edges': edges}
  else:
    groups = {'input_edges': [e for e in edges if e[0] < n_in],
              'inner_edges': [e for e in edges if e[0] >= n_in]}
  assert set(v['params']) == set(groups)
  apply = {s: jax.jit(functools.partial(cells.MixedOp(prims, c, s, True, True).apply,
                                        mutable=['batch_stats'])) for s in (1, stride)}
  states = list(xs)
  for j in range(n_nodes):
    total = 0
    for i in range(n_in + j):
      row = edges.index((i, j))
      name = next(g for g, e in groups.items() if (i, j) in e)
      k = groups[name].index((i, j))
      p = jax.tree_util.tree_map(lambda a: a[k], v['params'][name]['op'])
      b = jax.tree_util.tree_map(lambda a: a[k], v['batch_stats'][name]['op'])
      y, _ = apply[stride if i < n_in else 1]({'params': p, 'batch_stats': b}, states[i], w[row])
      total = total + y
    states.append(total)
  np.testing.assert_allclose(got, jnp.stack(states[n_in:]), rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize('select,stride', [(None, 1), (None, 2), ('chosen_and_rest', 2)])
def test_a_rematerialised_cell_has_the_variables_values_and_gradients_of_a_plain_one(
    select, stride):
  # remat (of each edge's op, with its read of a cell input) changes what the backward
  # pass keeps, not what it computes: the same variables, nodes, BatchNorm statistics, and
  # gradients in the weights, the op weights and the inputs. Both layouts (stride 1 on
  # 8x8: one scan; stride 2: input edges, then the others); GDAS' one-op edges on
  # NAS-Bench-201's ops (the DARTS ops' switch compiles for long)
  prims = darts.PRIMITIVES if select is None else nb201.PRIMITIVES
  hw, c, n_in, n_nodes = 8, 4, 2, 3
  kx, kw = jax.random.split(jax.random.key(0))
  xs = [jax.random.normal(k, (2, hw, hw, c)) for k in jax.random.split(kx, n_in)]
  w = jax.random.normal(kw, (len(cells.edge_list(n_in, n_nodes)), len(prims)))
  if select is not None:  # one-hot in value, as GDAS' hard sample
    w = jax.nn.one_hot(jnp.argmax(w, -1), len(prims)) + w - jax.lax.stop_gradient(w)
  out = {}
  for remat in (False, True):
    cell = cells.MixedCell(prims, c, n_in, n_nodes, stride, train=True, pool_bn=True,
                           remat=remat, select=select)
    v = cell.init(jax.random.key(1), xs, w)

    def loss(params, xs, w):
      nodes, stats = cell.apply({**v, 'params': params}, xs, w, mutable=['batch_stats'])
      return jnp.sum(nodes * jnp.cos(nodes)), (nodes, stats)
    out[remat] = v, jax.jit(jax.value_and_grad(loss, (0, 1, 2), has_aux=True))(v['params'], xs, w)
  (v0, ((_, (nodes0, stats0)), grads0)), (v1, ((_, (nodes1, stats1)), grads1)) = out[False], out[True]
  chex.assert_trees_all_equal_shapes_and_dtypes(v0, v1)
  chex.assert_trees_all_close(v0, v1)
  np.testing.assert_allclose(nodes1, nodes0, rtol=1e-5, atol=1e-5)
  chex.assert_trees_all_close(stats1, stats0, rtol=1e-5, atol=1e-5)
  # float32 rounding of sums in another order: relative to each gradient's scale, plus a
  # floor at the scale of all of them (a gradient that is zero but for rounding)
  leaves0, leaves1 = (list(map(np.asarray, jax.tree_util.tree_leaves(g))) for g in (grads0, grads1))
  floor = 1e-6 * max(np.abs(a).max() for a in leaves0)
  for a, b in zip(leaves0, leaves1):
    assert np.abs(b - a).max() <= 1e-5 * np.abs(a).max() + floor


# --- forward passes ---

def _models():
  d, n = get_space('darts'), get_space('nb201')
  return {
      'darts-supernet': (d.supernet(4, 3, 10), (d.init_alpha(jax.random.key(1)),)),
      'darts-network': (d.network(d.genotypes['DARTS_V2'], 4, 3, 10), ()),
      'nb201-supernet': (n.supernet(4, 1, 10), (n.init_alpha(jax.random.key(1)),)),
      'nb201-network': (n.network(n.genotypes['NB201_BEST'], 4, 1, 10), ()),
  }


@pytest.mark.parametrize('name', ['darts-supernet', 'darts-network', 'nb201-supernet', 'nb201-network'])
def test_forward_passes(name):
  model, extra = _models()[name]
  kw = {} if name.endswith('supernet') else {'drop_prob': 0.2}
  train_fn = jax.jit(lambda v, x, *a: model.apply(v, x, *a, train=True, mutable=['batch_stats'],
                                                  rngs={'dropout': jax.random.key(0)}, **kw))
  eval_fn = jax.jit(lambda v, x, *a: model.apply(v, x, *a, train=False))
  for batch, size in [(4, 8), (1, 16)]:  # dense (<= 64 pixels) and sliced depthwise kernels
    x = jax.random.normal(jax.random.key(size), (batch, size, size, 3))
    v = init_variables(model, jax.random.key(0), x, *extra)
    out, state = train_fn(v, x, *extra)
    logits = out if name.endswith('supernet') else out[0]
    assert logits.shape == (batch, 10) and np.isfinite(np.asarray(logits)).all()
    # BN running statistics move towards the batch statistics in training
    assert not np.allclose(state['batch_stats']['stem_bn']['mean'], v['batch_stats']['stem_bn']['mean'])
    if name == 'darts-network':
      assert out[1].shape == (batch, 10)  # auxiliary logits in training
    out = eval_fn(v, x, *extra)
    logits = out if name.endswith('supernet') else out[0]
    assert logits.shape == (batch, 10) and np.isfinite(np.asarray(logits)).all()
    if name == 'darts-network':
      assert out[1] is None


def test_a_node_with_one_input_or_none_builds_and_counts_its_parameters():
  # Fair DARTS' threshold keeps 0, 1 or 2 inputs per node. Dropping DARTS_V2's normal node 0
  # input ('sep_conv_3x3', 1) removes one 3x3 separable convolution per normal cell:
  # 2·(9C + C² + 2C) parameters (two ReLU-depthwise-pointwise-BN blocks, BN scale and shift).
  # C=8, 4 cells: normal cells 0 (C=8) and 3 (C=32); cells 1 and 2 reduce.
  v2 = darts.GENOTYPES['DARTS_V2']
  triples = list(v2.normal)
  assert triples[1] == ('sep_conv_3x3', 1, 0)
  one_input = darts.Genotype(triples[:1] + triples[2:], v2.normal_concat, v2.reduce, v2.reduce_concat)
  assert one_input.nodes('normal') == (0, 1, 2, 3) and one_input.normal_concat == (2, 3, 4, 5)
  sep = lambda c: 2 * (9 * c + c * c + 2 * c)
  full, _ = spaces.count_network_params('darts', v2, 8, 4, image_size=8)
  fewer, _ = spaces.count_network_params('darts', one_input, 8, 4, image_size=8)
  assert full - fewer == sep(8) + sep(32)
  # a node without inputs is absent: not computed, not concatenated (its readers dropped)
  absent = darts.Genotype([('sep_conv_3x3', 0, 0), ('skip_connect', 1, 1), ('sep_conv_3x3', 2, 3)],
                          [2, 3, 5], v2.reduce, v2.reduce_concat)
  net = darts.SPACE.network(absent, 8, 4, 10)
  x = jnp.ones((2, 8, 8, 3))
  variables = init_variables(net, jax.random.key(0), x)
  logits = net.apply(variables, x, train=False)
  logits = logits[0] if isinstance(logits, tuple) else logits
  assert logits.shape == (2, 10) and np.isfinite(np.asarray(logits)).all()
  # three concatenated nodes where DARTS_V2 has four: the next cell reads 3·C channels
  three, _ = spaces.count_network_params('darts', absent, 8, 4, image_size=8)
  assert three < fewer


def test_a_new_space_is_its_module_and_one_registration(monkeypatch, tmp_path):
  # a space registered with nothing but its SearchSpace: the features keyed by space
  # fall back to their defaults or say what to add
  import dataclasses
  from jaxnas import config as config_lib, free, search_config, train, xla, zc
  new = dataclasses.replace(nb201.SPACE, name='new', title='New')
  monkeypatch.setitem(spaces.SPACES, 'new', new)
  cfg = config_lib.build(search_config.SearchConfig, space='new', workdir=str(tmp_path))
  assert cfg.optim.weight_decay == 3e-4 and not cfg.optim.nesterov   # DARTS' (nb201's: 5e-4, Nesterov)
  assert zc.resolve_via(new, 'synflow', 'auto') == 'network'        # nb201: supernet
  monkeypatch.setenv('XLA_FLAGS', '')   # (conftest's sets the level, which would be kept)
  assert xla.run_once_options('new') == {'xla_backend_optimization_level': 0}
  assert free.convention('paper', 'new') == free.convention('paper', 'nb201')
  with pytest.raises(ValueError, match="notebooks do not cover the new space"):
    free.convention('code', 'new')
  with pytest.raises(ValueError, match='the New space has no evaluation recipe: add one to '
                                       'jaxnas.train_config.EVAL_RECIPES'):
    train.TrainConfig(space='new', genotype=NB201_ARCH)
  assert new.derive_genotype(new.onehot(new.load_genotype(NB201_ARCH))) == nb201.Genotype.from_text(NB201_ARCH)
