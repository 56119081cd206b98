"""Every proxy against an oracle written out in NumPy (float64) on a network small
enough to differentiate by hand."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxnas import ops, proxies, relax
from jaxnas.proxies import gram as ntk_lib
from jaxnas.proxies import expressivity as zen
from jaxnas.proxies import saliency

D, H, C, B = 6, 32, 4, 8


class MLP(nn.Module):
  """``z = relu(x W1 + b1) W2 + b2``; the ReLU records its codes (NASWOT)."""

  @nn.compact
  def __call__(self, x, train=False):
    h = ops.Linear(H, name='l1')(x)
    a = ops.relu(self, h)
    return ops.Linear(C, name='l2')(a), None


def _mlp(seed=0):
  rng = np.random.default_rng(seed)
  params = {'l1': {'weight': rng.normal(0, 0.5, (D, H)), 'bias': rng.normal(0, 0.1, H)},
            'l2': {'weight': rng.normal(0, 0.5, (H, C)), 'bias': rng.normal(0, 0.1, C)}}
  x = rng.normal(size=(B, D))
  y = rng.integers(0, C, B)
  v = {'params': jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), params)}
  return params, x, y, v, (jnp.asarray(x, jnp.float32), jnp.asarray(y))


def _np_grads(p, x, y):
  """Per-weight gradients of the mean cross-entropy, backpropagation written out."""
  h = x @ p['l1']['weight'] + p['l1']['bias']
  a = np.maximum(h, 0)
  z = a @ p['l2']['weight'] + p['l2']['bias']
  e = np.exp(z - z.max(1, keepdims=True))
  prob = e / e.sum(1, keepdims=True)
  dz = (prob - np.eye(C)[y]) / len(x)
  dw2 = a.T @ dz
  dh = (dz @ p['l2']['weight'].T) * (h > 0)
  return {'l1': x.T @ dh, 'l2': dw2}


APPLY = proxies.network_apply(MLP())
KEY = jax.random.key(0)


def test_ntk_against_stacked_per_sample_gradients():
  p, x, _, v, batch = _mlp()
  w1, b1, w2 = p['l1']['weight'], p['l1']['bias'], p['l2']['weight']
  rows = []
  for xi in x:  # s_i = Σ_c z_ic; its gradient by hand
    h = xi @ w1 + b1
    d_w2 = np.outer(np.maximum(h, 0), np.ones(C))
    d_w1 = np.outer(xi, (w2 @ np.ones(C)) * (h > 0))
    rows.append(np.concatenate([d_w1.ravel(), d_w2.ravel()]))
  j = np.stack(rows)
  theta = j @ j.T
  for mode in ('rev', 'fwd'):
    np.testing.assert_allclose(ntk_lib.ntk_matrix(APPLY, v, batch[0], mode), theta, rtol=1e-4,
                               atol=1e-4)
  eig = np.linalg.eigvalsh(theta)
  expected = {'trace': np.trace(theta), 'cond': eig[-1] / eig[0],
              'logdet': np.linalg.slogdet(theta)[1]}
  for stat, value in expected.items():
    got = proxies.score('ntk', APPLY, v, batch, KEY, statistic=stat)
    np.testing.assert_allclose(got, value, rtol=2e-3, err_msg=stat)


def test_ntk_trace_estimate_is_unbiased():
  _, _, _, v, batch = _mlp()
  exact = float(jnp.trace(ntk_lib.ntk_matrix(APPLY, v, batch[0])))
  keys = jax.random.split(jax.random.key(1), 4000)
  est = jax.jit(jax.vmap(lambda k: ntk_lib.ntk_trace_estimate(APPLY, v, batch[0], k)[0]))(keys)
  se = float(jnp.std(est)) / np.sqrt(len(keys))
  assert abs(float(jnp.mean(est)) - exact) < 4 * se + 1e-3 * exact
  assert se < 0.05 * exact  # the test has power


def test_snip_grasp_grad_norm_against_their_definitions():
  p, x, y, v, batch = _mlp()
  g = _np_grads(p, x, y)
  w = {k: p[k]['weight'] for k in g}
  np.testing.assert_allclose(proxies.score('snip', APPLY, v, batch, KEY),
                             sum(np.abs(w[k] * g[k]).sum() for k in g), rtol=1e-4)
  np.testing.assert_allclose(proxies.score('grad_norm', APPLY, v, batch, KEY),
                             sum(np.linalg.norm(g[k]) for k in g), rtol=1e-4)
  # H g by a central difference of the hand-written gradient along g
  eps = 1e-5

  def shifted(s):
    q = {k: dict(p[k], weight=p[k]['weight'] + s * g[k]) for k in p}
    return _np_grads(q, x, y)
  plus, minus = shifted(eps), shifted(-eps)
  hg = {k: (plus[k] - minus[k]) / (2 * eps) for k in g}
  expected = sum((-w[k] * hg[k]).sum() for k in g)
  np.testing.assert_allclose(proxies.score('grasp', APPLY, v, batch, KEY), expected, rtol=2e-3)


def test_synflow_of_a_linear_network():
  ws = [np.random.default_rng(i).normal(size=s) for i, s in enumerate([(D, 5), (5, 7), (7, 3)])]
  params = {f'layer{i}': {'weight': jnp.asarray(w, jnp.float32)} for i, w in enumerate(ws)}

  def apply(variables, x, train, mutable=False):
    for i in range(3):
      x = x @ variables['params'][f'layer{i}']['weight']
    return (x, {}) if mutable else x
  batch = (jnp.zeros((4, D)), jnp.zeros(4, jnp.int32))
  a = [np.abs(w) for w in ws]
  r = np.ones(D) @ a[0] @ a[1] @ a[2] @ np.ones(3)
  per_weight = saliency.synflow_per_weight(apply, {'params': params}, batch)
  # ∂R/∂|W_l| = (1ᵀ Π_{k<l} |W_k|)ᵀ (Π_{k>l} |W_k| 1)ᵀ
  left = [np.ones(D), np.ones(D) @ a[0], np.ones(D) @ a[0] @ a[1]]
  right = [a[1] @ a[2] @ np.ones(3), a[2] @ np.ones(3), np.ones(3)]
  for i in range(3):
    np.testing.assert_allclose(per_weight[f"['layer{i}']['weight']"],
                               a[i] * np.outer(left[i], right[i]), rtol=1e-6)
  # each layer's saliencies sum to R (homogeneity), so the score is log 3R
  np.testing.assert_allclose(proxies.score('synflow', apply, {'params': params}, batch, KEY),
                             np.log(3 * r), rtol=1e-6)


def test_naswot_against_the_hand_built_code_kernel():
  p, x, _, v, batch = _mlp()
  codes = (x @ p['l1']['weight'] + p['l1']['bias'] > 0).astype(float)
  k = codes @ codes.T + (1 - codes) @ (1 - codes).T
  hamming = (codes[:, None, :] != codes[None, :, :]).sum(-1)
  np.testing.assert_array_equal(k, H - hamming)
  np.testing.assert_allclose(proxies.score('naswot', APPLY, v, batch, KEY),
                             np.linalg.slogdet(k)[1], rtol=1e-4)



def test_jacov_against_the_input_jacobian_written_out():
  # ∂(Σ_{n,c} z_nc)/∂x_n = (1[h_n > 0] ⊙ W2 1) W1ᵀ, by hand; then NumPy's correlation and
  # eigenvalues (NASLib: np.corrcoef, np.linalg.eig), k = 1e-5
  p, x, _, v, batch = _mlp()
  h = x @ p['l1']['weight'] + p['l1']['bias']
  jac = ((h > 0) * p['l2']['weight'].sum(1)) @ p['l1']['weight'].T
  lam = np.real(np.linalg.eig(np.corrcoef(jac))[0])
  expected = -np.sum(np.log(lam + 1e-5) + 1 / (lam + 1e-5))
  np.testing.assert_allclose(proxies.score('jacov', APPLY, v, batch, KEY), expected, rtol=1e-4)
  # 8 rows of 6 inputs, each centred: rank ≤ 5, so three eigenvalues are 0 and 1/k dominates
  assert -3.1e5 < expected < -2.9e5


def test_fisher_against_activations_and_their_gradients_written_out():
  # zero-cost-nas' fisher: per layer and channel ½ mean_n (a ⊙ ∂L/∂a)², a each linear
  # layer's output: h = x W1 + b1 and z, their gradients by backpropagation written out
  p, x, y, v, batch = _mlp()
  h = x @ p['l1']['weight'] + p['l1']['bias']
  z = np.maximum(h, 0) @ p['l2']['weight'] + p['l2']['bias']
  e = np.exp(z - z.max(1, keepdims=True))
  dz = (e / e.sum(1, keepdims=True) - np.eye(C)[y]) / len(x)
  dh = (dz @ p['l2']['weight'].T) * (h > 0)
  expected = sum(np.sum(0.5 * np.mean((a * g) ** 2, axis=0)) for a, g in ((h, dh), (z, dz)))
  np.testing.assert_allclose(proxies.score('fisher', APPLY, v, batch, KEY), expected, rtol=1e-4)


def test_fisher_reaches_the_layers_of_scanned_cells():
  # NAS-Bench-201's network scans the cells of a stage: its convolutions are probed in every
  # cell; with them probed in no cell the score would be the stem's, reductions' and
  # classifier's alone
  from jaxnas.proxies.saliency import _channel_probes
  net, v, batch = _nb201(CELL, cells=2)
  apply = proxies.network_apply(net)
  with nn.intercept_methods(_channel_probes):
    _, state = apply(v, batch[0], True, mutable=['batch_stats', ops.PROBES])
  probes = state[ops.PROBES]
  # CELL has three convolutions a cell: two cells per stage, stacked
  for s in range(3):
    stacked = [leaf.shape for leaf in jax.tree_util.tree_leaves(probes[f'stage{s}'])]
    assert len(stacked) == 3 and all(shape[0] == 2 for shape in stacked), stacked
  assert np.isfinite(proxies.score('fisher', apply, v, batch, KEY))

class TinyConv(nn.Module):
  """conv 3x3 -> BN -> ReLU -> (features) -> global pool -> linear."""

  @nn.compact
  def __call__(self, x, train=False):
    x = ops.Conv(3, 3, 1, 1)(x)
    x = ops.relu(self, ops.batch_norm(train, True)(x))
    self.sow(ops.FEATURES, 'features', x)
    return ops.Linear(C)(jnp.mean(x, axis=(1, 2))), None


def _np_tiny_conv(w, x):
  """The tiny conv net's pre-pooling features and BN batch variance, in NumPy."""
  b, h, wd, _ = x.shape
  xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  y = np.zeros((b, h, wd, w.shape[-1]))
  for i in range(3):
    for j in range(3):
      y += np.einsum('bhwc,cd->bhwd', xp[:, i:i + h, j:j + wd], w[i, j])
  var = y.var(axis=(0, 1, 2))
  f = np.maximum((y - y.mean(axis=(0, 1, 2))) / np.sqrt(var + 1e-5), 0)
  return f, var


def test_zen_against_numpy_on_a_tiny_conv_net():
  from jaxnas.spaces.base import init_variables
  net = TinyConv()
  x0 = jnp.zeros((6, 5, 5, 2))
  v = init_variables(net, jax.random.key(0), x0)
  batch = (x0, jnp.zeros(6, jnp.int32))
  apply = proxies.network_apply(net)
  # the draws Zen makes, with its own keys; the arithmetic in NumPy
  k_init, k_x, k_eps = jax.random.split(KEY, 3)
  w = np.asarray(zen.gaussian_init(v, k_init)['params']['Conv_0']['kernel'], np.float64)
  x = np.asarray(jax.random.normal(k_x, x0.shape), np.float64)
  eps = np.asarray(jax.random.normal(k_eps, x0.shape), np.float64)
  f, var = _np_tiny_conv(w, x)
  f_mixed, var_mixed = _np_tiny_conv(w, x + 1e-2 * eps)
  log_delta = np.log(np.abs(f - f_mixed).sum(axis=(1, 2, 3)).mean())
  # Zen-NAS' code: running_var after the clean and the mixed pass (momentum 0.1, from 1),
  # PyTorch's running update with the unbiased batch variance (n = 6·5·5 values a channel)
  n = 6 * 5 * 5
  var, var_mixed = var * n / (n - 1), var_mixed * n / (n - 1)
  running = 0.9 * (0.9 * 1 + 0.1 * var) + 0.1 * var_mixed
  bn_term = {'running': np.log(np.sqrt(running.mean())), 'batch': np.log(np.sqrt(var.mean() + 1e-5))}
  for variance, term in bn_term.items():
    np.testing.assert_allclose(proxies.score('zen', apply, v, batch, KEY, variance=variance),
                               log_delta + term, rtol=1e-4, err_msg=variance)
    # bn: the same term alone, from the same draws
    np.testing.assert_allclose(proxies.score('bn', apply, v, batch, KEY, variance=variance), term,
                               rtol=1e-4, err_msg=variance)
  assert abs(bn_term['running'] - bn_term['batch']) > 1e-2  # the two conventions differ here
  np.testing.assert_allclose(proxies.score('zen', apply, v, batch, KEY), log_delta + bn_term['running'],
                             rtol=1e-4)
  with pytest.raises(ValueError, match="unknown BatchNorm variance 'var'; known: running, batch"):
    proxies.score('bn', apply, v, batch, KEY, variance='var')


def test_zen_f_combines_log_ntk_trace_and_bn():
  from jaxnas.spaces.base import init_variables
  net = TinyConv()
  x0 = jnp.zeros((6, 5, 5, 2))
  v = init_variables(net, jax.random.key(0), x0)
  batch = (x0, jnp.zeros(6, jnp.int32))
  apply = proxies.network_apply(net)
  k_x, _ = jax.random.split(KEY)
  x = jax.random.normal(k_x, x0.shape)
  trace = float(jnp.trace(ntk_lib.ntk_matrix(apply, v, x)))
  conv = np.asarray(v['params']['Conv_0']['kernel'], np.float64)  # the given weights, not re-drawn
  _, var = _np_tiny_conv(conv, np.asarray(x, np.float64))
  got = proxies.score('zen_f', apply, v, batch, KEY, beta1=0.7, beta2=2.0)
  n = 6 * 5 * 5   # the unbiased batch variance, as the running statistics record it
  bn_term = np.log(np.sqrt(var.mean() * n / (n - 1) + 1e-5))
  np.testing.assert_allclose(got, 0.7 * np.log(trace) + 2.0 * bn_term, rtol=1e-4)
  # the warm-up's form: the trace estimated (tested unbiased above), the BN term of the clean pass
  estimate, _ = ntk_lib.ntk_trace_estimate(apply, v, x, jax.random.split(KEY)[1])
  got = zen.zen_f(apply, v, batch, KEY, beta1=0.7, beta2=2.0, estimate=True)
  np.testing.assert_allclose(got, 0.7 * np.log(estimate) + 2.0 * bn_term, rtol=1e-4)


def test_unknown_proxy_and_statistic():
  with pytest.raises(ValueError, match='known proxies'):
    proxies.get_proxy('zen-score')
  _, _, _, v, batch = _mlp()
  with pytest.raises(ValueError, match='known: cond'):
    proxies.score('ntk', APPLY, v, batch, KEY, statistic='max')
  # one entry a proxy: its options with their limits, its sign, where it is exact
  with pytest.raises(ValueError, match="must be one of cond, trace, logdet, got 'max'"):
    proxies.bind_options('ntk', {'statistic': 'max'})
  with pytest.raises(ValueError, match='ntk has no option gamma; its options: statistic, mode'):
    proxies.bind_options('ntk', {'gamma': 0.1})
  assert proxies.bind_options('zen', {'gamma': 0.1}) == {'gamma': 0.1, 'variance': 'running'}
  assert [proxies.sign('ntk'), proxies.sign('ntk', {'statistic': 'trace'}), proxies.sign('zen')] == [-1, 1, 1]
  assert proxies.names(of_alpha=True) == ('synflow', 'snip', 'grasp')
  assert set(proxies.names(supernet_exact=True)) == {'ntk', 'synflow', 'snip', 'grasp', 'grad_norm',
                                                    'jacov'}


# A NAS-Bench-201 cell with three convolutions (edges 1<-0, 2<-0, 3<-1) and one node
# that no op reaches in ZERO (node 1: 'none' from node 0, so the conv 3<-1 reads zeros)
CELL = '|nor_conv_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|none~0|nor_conv_3x3~1|avg_pool_3x3~2|'
ZERO = '|none~0|+|nor_conv_1x1~0|none~1|+|skip_connect~0|nor_conv_3x3~1|avg_pool_3x3~2|'


def _nb201(genotype, channels=4, cells=2, image=8):
  from jaxnas.spaces import get_space
  from jaxnas.spaces.base import init_variables
  sp = get_space('nb201')
  net = sp.network(sp.load_genotype(genotype), channels, cells, 10)
  x = jax.random.normal(jax.random.key(1), (8, image, image, 3))
  y = jnp.arange(8) % 10
  return net, init_variables(net, jax.random.key(0), x[:1]), (x, y)


def _weight_grads(apply, v, batch):
  def loss(params):
    logits, _ = apply(dict(v, params=params), batch[0], True, mutable=['batch_stats'])
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch[1]).mean()
  return jax.jit(jax.grad(loss))(v['params'])  # op by op it compiles every primitive


def test_grad_norm_takes_one_norm_per_layer_of_a_scanned_network():
  net, v, batch = _nb201(CELL, cells=2)
  g = _weight_grads(proxies.network_apply(net), v, batch)
  # the network's 26 layers, one by one: the stem, 3 convs in each of 2 cells of 3
  # stages (scanned: the leading axis is the cell), 3 per reduction block, the classifier
  layers = [g['stem_conv']['kernel'], g['classifier']['weight']]
  for s in range(3):
    for cell in range(2):
      layers += [g[f'stage{s}']['edge1<-0']['Conv_0']['kernel'][cell],
                 g[f'stage{s}']['edge2<-0']['Conv_0']['pointwise'][cell],
                 g[f'stage{s}']['edge3<-1']['Conv_0']['kernel'][cell]]
  for r in (1, 2):
    block = g[f'reduce{r}']
    layers += [block['ReLUConvBN_0']['Conv_0']['kernel'], block['ReLUConvBN_1']['Conv_0']['kernel'],
               block['Conv_0']['pointwise']]
  assert len(layers) == 26
  expected = sum(np.linalg.norm(np.asarray(x, np.float64)) for x in layers)
  got = proxies.score('grad_norm', proxies.network_apply(net), v, batch, KEY)
  np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_grad_norm_through_the_one_hot_supernet_is_the_networks_per_layer_sum():
  from jaxnas.spaces import get_space
  from jaxnas.spaces.base import init_variables
  sp = get_space('nb201')
  genotype = sp.load_genotype(CELL)
  model = sp.supernet(4, 1, 10, relax.make('raw'))
  alpha = sp.onehot(genotype)
  _, _, batch = _nb201(CELL)
  v = init_variables(model, jax.random.key(0), batch[0][:1], alpha)
  apply = proxies.supernet_apply(model, alpha)
  g = _weight_grads(apply, v, batch)
  # one cell per stage, all edges stacked in one leaf per op: (cell, edge, ...)
  layers = [g['stem_conv']['kernel'], g['classifier']['weight']]
  for r in (1, 2):
    block = g[f'reduce{r}']
    layers += [block['ReLUConvBN_0']['Conv_0']['kernel'], block['ReLUConvBN_1']['Conv_0']['kernel'],
               block['Conv_0']['pointwise']]
  onehot = np.asarray(alpha['cell'])
  for s in range(3):
    ops_ = g[f'stage{s}']['edges']['all_edges']['op']
    for e in range(onehot.shape[0]):
      for op, leaf in (('nor_conv_3x3', 'kernel'), ('nor_conv_1x1', 'pointwise')):
        layer = ops_[op]['Conv_0'][leaf][0, e]
        if onehot[e, sp.primitives.index(op)]:
          layers.append(layer)
        else:  # an op the architecture does not use: no gradient
          assert not np.any(np.asarray(layer))
  assert len(layers) == 2 + 6 + 3 * 3  # stem, classifier, 2 reductions, 3 convs a stage
  expected = sum(np.linalg.norm(np.asarray(x, np.float64)) for x in layers)
  np.testing.assert_allclose(proxies.score('grad_norm', apply, v, batch, KEY), expected, rtol=1e-5)


def test_zen_and_bn_are_finite_where_a_batchnorm_reads_an_always_zero_node():
  net, v, batch = _nb201(ZERO, cells=1)
  apply = proxies.network_apply(net)
  for name in ('zen', 'bn'):
    for variance in ('running', 'batch'):
      assert np.isfinite(proxies.score(name, apply, v, batch, KEY, variance=variance)), (name, variance)
  assert np.isfinite(proxies.score('zen_f', apply, v, batch, KEY))


def test_synflow_is_finite_and_ordered_on_the_largest_nas_bench_201_network():
  # NAS-Bench-201's size (C=16, 5 cells per stage, 32x32): every edge a 3x3 conv is
  # the largest network; its R is past float32's range
  largest = '|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|'
  smaller = largest.replace('nor_conv_3x3~2', 'nor_conv_1x1~2')
  scores = []
  for genotype in (largest, smaller):
    net, v, batch = _nb201(genotype, channels=16, cells=5, image=32)
    scores.append(proxies.score('synflow', proxies.network_apply(net), v, batch, KEY))
  assert np.all(np.isfinite(scores)) and scores[0] > 88.8  # log of float32's largest, 3.4e38
  assert scores[0] > scores[1]


def test_synflow_through_the_supernet_agrees_with_naslibs_scores():
  # NASLib's PyTorch SynFlow (the log of the sum) of 4 NAS-Bench-201 architectures at the
  # benchmark's size, benchmarks/nb201_ground_truth.json; the weights differ (each
  # library draws its own), which moves the log by up to ~0.2
  import json
  import os
  from jaxnas.spaces import get_space
  from jaxnas.zc import score_batch
  path = os.path.join(os.path.dirname(__file__), '..', 'benchmarks', 'nb201_ground_truth.json')
  with open(path) as f:
    truth = json.load(f)['datasets']['cifar10']
  archs = sorted(truth)[100::180]
  sp = get_space('nb201')
  batch = (jnp.zeros((1, 32, 32, 3)), jnp.zeros(1, jnp.int32))
  r = score_batch(sp, [sp.load_genotype(a) for a in archs], 'synflow', batch, 10, 16, 5,
                  via='supernet', chunk=4)
  expected = [truth[a]['synflow'] for a in archs]
  assert np.ptp(expected) > 5  # the architectures differ by far more than the tolerance
  np.testing.assert_allclose(r.scores, expected, atol=0.3)


def _network_with_supernet_weights(genotype, supernet_params, net_params):
  """The discrete network's params with every conv and linear weight taken from the
  one-hot supernet's (edge e's op from that op's leaf stacked over the edges of e's
  scan group: ``all_edges`` on small maps, else ``input_edges`` and ``inner_edges``);
  its BatchNorms keep their initial scale 1 and bias 0, as the supernet's are affine-free."""
  from jaxnas.spaces.nb201 import EDGES
  inputs = [r for r, (src, _) in enumerate(EDGES) if src == 0]
  inner = [r for r in range(len(EDGES)) if r not in inputs]
  out = jax.tree_util.tree_map(lambda a: a, net_params)
  for name, sub in supernet_params.items():
    if not name.startswith('stage'):
      out[name] = sub
      continue
    groups = sub['edges']
    for e, op in enumerate(genotype.edge_ops()):
      if op in ('nor_conv_3x3', 'nor_conv_1x1'):
        if 'all_edges' in groups:
          stacked, index = groups['all_edges']['op'], e
        elif e in inputs:
          stacked, index = groups['input_edges']['op'], inputs.index(e)
        else:
          stacked, index = groups['inner_edges']['op'], inner.index(e)
        src, node = EDGES[e]
        leaf = 'kernel' if op == 'nor_conv_3x3' else 'pointwise'
        out[name][f'edge{node + 1}<-{src}']['Conv_0'][leaf] = stacked[op]['Conv_0'][leaf][:, index]
  return out


def test_synflow_through_the_supernet_is_finite_and_equals_the_network_at_the_benchmarks_size():
  # the best cell of NASLib's file (91.36 % valid) and its two of highest SynFlow (NASLib's
  # log-scores 101.1, 114.8, 113.6): the supernet once cast their float64 activations to
  # α's float32 in the mixed op, and they scored NaN or +inf
  from jaxnas.spaces import get_space
  from jaxnas.spaces.base import init_variables
  from jaxnas.zc import score_batch
  archs = ['|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_1x1~1|+|skip_connect~0|nor_conv_1x1~1|nor_conv_3x3~2|',
           '|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|',
           '|nor_conv_3x3~0|+|nor_conv_1x1~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|']
  sp = get_space('nb201')
  genotypes = [sp.load_genotype(a) for a in archs]
  batch = (jnp.zeros((1, 32, 32, 3)), jnp.zeros(1, jnp.int32))
  via_supernet = score_batch(sp, genotypes, 'synflow', batch, 10, 16, 5, via='supernet',
                             chunk=3).scores
  assert np.all(np.isfinite(via_supernet)) and np.all(via_supernet > 88.8), via_supernet
  # score_batch's supernet weights, drawn as it draws them
  supernet = sp.supernet(16, 5, 10, relax.make('raw'))
  sv = init_variables(supernet, KEY, batch[0], sp.onehot(genotypes[0]))
  for g, expected in zip(genotypes, via_supernet):
    net = sp.network(g, 16, 5, 10, **{k: False for k in sp.network_options})
    nv = init_variables(net, KEY, batch[0])
    nv = dict(nv, params=_network_with_supernet_weights(g, sv['params'], nv['params']))
    got = proxies.score('synflow', proxies.network_apply(net), nv, batch, KEY)
    np.testing.assert_allclose(got, expected, rtol=1e-6)
  np.testing.assert_allclose(via_supernet, [101.13, 114.80, 113.64], atol=0.3)  # NASLib's


@pytest.mark.parametrize('proxy', ['jacov', 'snip'])
def test_a_supernet_exact_proxy_through_the_supernet_equals_the_network(proxy):
  # on a real-valued batch, BatchNorm in training mode: the one-hot supernet's score of
  # each cell is its discrete network's on the same weights (ZERO: a node no op reaches)
  from jaxnas.spaces import get_space
  from jaxnas.spaces.base import init_variables
  from jaxnas.zc import score_batch
  sp = get_space('nb201')
  genotypes = [sp.load_genotype(a) for a in (CELL, ZERO)]
  batch = (jax.random.normal(jax.random.key(1), (8, 8, 8, 3)), jnp.arange(8) % 10)
  via_supernet = score_batch(sp, genotypes, proxy, batch, 10, 4, 1, via='supernet').scores
  sv = init_variables(sp.supernet(4, 1, 10, relax.make('raw')), KEY, batch[0][:1],
                      sp.onehot(genotypes[0]))
  for g, expected in zip(genotypes, via_supernet):
    net = sp.network(g, 4, 1, 10, **{k: False for k in sp.network_options})
    nv = init_variables(net, KEY, batch[0][:1])
    nv = dict(nv, params=_network_with_supernet_weights(g, sv['params'], nv['params']))
    got = proxies.score(proxy, proxies.network_apply(net), nv, batch, KEY)
    np.testing.assert_allclose(got, expected, rtol=1e-4)


def test_the_supernet_scores_chunk_by_chunk_what_it_scores_one_by_one():
  # a chunk of one-hot α runs in sequence (the last chunk padded with copies of the
  # last architecture): the scores of 5 cells in chunks of 2 are those of each alone,
  # and those of the mixed op of every op at the same one-hot α and weights
  from jaxnas import zc
  from jaxnas.spaces import get_space
  from jaxnas.spaces.base import init_variables
  sp = get_space('nb201')
  genotypes = sp.sample_distinct(5, seed=0)
  batch = (jax.random.normal(KEY, (4, 8, 8, 3)), jnp.arange(4) % 10)

  def scores(chunk):
    return zc.score_batch(sp, genotypes, 'snip', batch, 10, 4, 1, via='supernet',
                          chunk=chunk).scores
  one_by_one = scores(1)
  np.testing.assert_allclose(scores(2), one_by_one, rtol=1e-6)
  mixed = sp.supernet(4, 1, 10, relax.make('raw'))
  variables = zc._without_edge_biases(init_variables(mixed, KEY, batch[0][:1],
                                                     sp.onehot(genotypes[0])))
  snip = jax.jit(lambda a: proxies.get_proxy('snip')(proxies.supernet_apply(mixed, a), variables,
                                                     batch, KEY))
  every_op = [float(snip(sp.onehot(g))) for g in genotypes]
  np.testing.assert_allclose(one_by_one, every_op, rtol=1e-4)
