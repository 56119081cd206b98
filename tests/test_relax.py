"""Relaxations against hand-computed values: mixing weights, regularisers and their
gradients, PC-DARTS' channel split, shuffle and edge normalisation, Fair DARTS' threshold rule."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnas import relax
from jaxnas.spaces import cells, darts, get_space, nb201

A = np.array([[0.3, -1.0, 2.0], [0.0, 0.5, -0.5]], np.float32)


def mix(name, alpha, **options):
  return relax.make(name, **options).mix_all(alpha)


def regularizer(name, alpha, **options):
  return relax.make(name, **options).regularize(alpha)


def test_mixing_weights():
  e = np.exp(A)
  np.testing.assert_allclose(mix('softmax', {'c': A})['c'], e / e.sum(1, keepdims=True), rtol=1e-6)
  np.testing.assert_allclose(mix('beta', {'c': A})['c'], e / e.sum(1, keepdims=True), rtol=1e-6)
  np.testing.assert_allclose(mix('fair', {'c': A})['c'], 1 / (1 + np.exp(-A)), rtol=1e-6)
  np.testing.assert_allclose(mix('raw', {'c': A})['c'], A)
  # PC-DARTS' edge arrays are not op weights
  assert set(mix('pc', {'c': A, 'c_edges': np.zeros(2)})) == {'c'}


def test_make_checks_options_and_names():
  assert relax.make('pc').partial_channels == 4 and relax.make('pc', k=2).partial_channels == 2
  assert relax.make('fair').threshold == 0.85 and relax.make('fair', threshold=None).threshold is None
  with pytest.raises(ValueError, match="unknown relaxation 'gumbel'; known relaxations: softmax, raw, "
                                      "pc, fair, beta, gdas, drnas"):
    relax.make('gumbel')
  with pytest.raises(ValueError, match='pc has no option K; its options: k'):
    relax.make('pc', K=2)
  with pytest.raises(ValueError, match=r'k \(--pc-k\) must be >= 1, got 0'):
    relax.make('pc', k=0)
  assert repr(relax.make('beta')) == "Relaxation(beta, {'weight_per_epoch': 0.5, 'weight_start': 0.0})"


def test_fair_zero_one_loss_and_gradient():
  b = -A[:1] * 2
  alpha = {'normal': A, 'reduce': b}
  s = 1 / (1 + np.exp(-np.concatenate([A.ravel(), b.ravel()])))
  value, grad = jax.value_and_grad(lambda a: regularizer('fair', a))(alpha)
  np.testing.assert_allclose(value, -np.mean((s - 0.5) ** 2), rtol=1e-6)
  want = -2 * (s - 0.5) * s * (1 - s) / s.size  # d/dα of −mean((σ − ½)²)
  got = np.concatenate([np.ravel(grad['normal']), np.ravel(grad['reduce'])])
  np.testing.assert_allclose(got, want, rtol=1e-5)


def test_beta_decay_loss_and_gradient():
  alpha = {'normal': A, 'reduce': A[::-1] * 3}
  rows = np.concatenate([A, A[::-1] * 3])
  lse = np.log(np.exp(rows).sum(1))
  value, grad = jax.value_and_grad(lambda a: regularizer('beta', a))(alpha)
  np.testing.assert_allclose(value, lse.mean(), rtol=1e-6)
  # the gradient of mean_e logsumexp is the softmax of each edge over the number of edges
  soft = np.exp(rows) / np.exp(rows).sum(1, keepdims=True) / len(rows)
  np.testing.assert_allclose(np.concatenate([grad['normal'], grad['reduce']]), soft, rtol=1e-5)
  assert float(regularizer('softmax', alpha)) == 0.0


def test_regularizer_weight_schedules():
  # β-DARTS: λ_e = 0 + 50·e/100 whatever the number of epochs (Beta-DARTS architect.py)
  weight = relax.make('beta').weight
  assert [weight(e, 50) for e in (0, 10, 49)] == [0.0, 5.0, 24.5]
  assert [weight(e, 11) for e in (0, 10)] == [0.0, 5.0]
  assert relax.make('beta', weight_start=1.0, weight_per_epoch=2.0).weight(3, 10) == 7.0
  assert relax.make('fair', weight=10.0).weight(3, 1) == 10.0
  assert relax.make('softmax').weight(3, 10) == 0.0


def test_gdas_forward_is_exactly_one_hot_and_its_gradient_is_the_softmax_s():
  a = jnp.asarray(np.random.default_rng(0).normal(size=(6, 5)), jnp.float32)
  c = np.random.default_rng(1).normal(size=(6, 5))
  key = jax.random.key(3)
  r = relax.make('gdas')
  for progress, tau in ((0.0, 10.0), (0.5, 5.05), (1.0, 0.1)):
    w = np.asarray(r.mix(a, key, progress))
    g = np.asarray(jax.random.gumbel(key, a.shape, a.dtype), np.float64)
    z = (np.asarray(a, np.float64) - np.log(np.exp(np.asarray(a, np.float64)).sum(1, keepdims=True)) + g) / tau
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    # forward: exactly the one-hot of the sample's argmax
    assert set(np.unique(w)) == {0.0, 1.0}
    np.testing.assert_array_equal(w, np.eye(5)[p.argmax(1)])
    # backward: d/dα Σ c ⊙ w = that of the softmax p (NumPy): v = p(c − c·p), then the
    # log-softmax's Jacobian, (v − softmax(α) Σv) / τ
    got = np.asarray(jax.grad(lambda a: jnp.sum(jnp.asarray(c, jnp.float32) * r.mix(a, key, progress)))(a))
    v = p * (c - (c * p).sum(1, keepdims=True))
    s = np.exp(np.asarray(a, np.float64))
    s /= s.sum(1, keepdims=True)
    want = (v - s * v.sum(1, keepdims=True)) / tau
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=1e-6)
  # without a key (deriving): softmax(α)
  np.testing.assert_allclose(r.mix(a, None, None), jax.nn.softmax(a, -1), rtol=1e-6)


def test_drnas_samples_lie_on_the_simplex_and_their_pathwise_gradient_is_unbiased():
  a = jnp.asarray(np.random.default_rng(0).normal(size=(3, 5)), jnp.float32)
  c = jnp.asarray(np.random.default_rng(1).normal(size=(3, 5)), jnp.float32)
  r = relax.make('drnas')
  keys = jax.random.split(jax.random.key(0), 20000)
  w = jax.vmap(lambda k: r.mix(a, k, None))(keys)
  assert np.all(np.asarray(w) >= 0)  # (a small concentration's gamma draw may round to 0)
  np.testing.assert_allclose(np.asarray(w).sum(-1), 1.0, rtol=1e-5)
  conc = np.where(np.asarray(a) > 0, np.asarray(a), np.expm1(np.asarray(a))) + 1  # elu(α) + 1
  np.testing.assert_allclose(np.asarray(w).mean(0), conc / conc.sum(1, keepdims=True), atol=0.01)
  # E[c·w] = Σ c_i conc_i / conc_0: the mean of the pathwise gradients is its gradient
  pathwise = jax.vmap(jax.grad(lambda a, k: jnp.sum(c * r.mix(a, k, None))), (None, 0))(a, keys).mean(0)
  exact = jax.grad(lambda a: jnp.sum(c * r.mix(a, None, None)))(a)  # the mean's gradient, closed form
  np.testing.assert_allclose(pathwise, exact, atol=0.03 * float(jnp.abs(exact).max()))
  # the derive rule reads softmax(α)
  np.testing.assert_allclose(r.derive_weights({'cell': a})['cell'], jax.nn.softmax(a, -1), rtol=1e-6)


def test_drnas_kl_to_the_uniform_dirichlet_against_monte_carlo():
  from scipy import stats
  a = np.array([[0.5, -0.3, 1.2, 0.0], [2.0, 0.1, -0.9, 0.4]])
  conc = np.where(a > 0, a, np.expm1(a)) + 1
  value = float(regularizer('drnas', {'cell': jnp.asarray(a)}))  # Σ KL; the search weighs it
  rng = np.random.default_rng(0)
  mc = 0.0
  for row in conc:  # KL(q‖p) = E_q[log q − log p], p = Dir(1)
    x = rng.dirichlet(row, 200000)
    mc += np.mean(stats.dirichlet.logpdf(x.T, row) - stats.dirichlet.logpdf(x.T, np.ones(4)))
  assert value == pytest.approx(mc, rel=0.02)
  assert float(regularizer('drnas', {'cell': jnp.zeros((2, 4))})) == pytest.approx(0.0, abs=1e-5)
  # DrNAS' default --reg_type l2: no KL (α's weight decay instead); --reg_type kl: reg_scale 1e-3
  assert relax.make('drnas').weight(7, 50) == 0 and relax.make('drnas', kl_weight=1e-3).weight(0, 50) == 1e-3


def test_channel_shuffle_matches_pytorch_index_formula():
  x = jnp.arange(8.0).reshape(1, 1, 1, 8)
  # torch: view(B, G, C/G, H, W).transpose(1, 2): new channel c·G + g holds old g·(C/G) + c
  got = np.asarray(cells.channel_shuffle(x, 4)).ravel()
  want = [g * 2 + c for c in range(2) for g in range(4)]
  np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize('stride', [1, 2])
def test_partial_channels_send_a_quarter_through_the_ops_and_bypass_the_rest(stride):
  op = cells.MixedOp(darts.PRIMITIVES, 8, stride, train=True, pool_bn=True, partial=4)
  x = jax.random.normal(jax.random.key(0), (2, 4, 4, 8))
  w = jnp.full((len(darts.PRIMITIVES),), 0.125)
  v = op.init(jax.random.key(1), x, w)
  y, _ = op.apply(v, x, w, 0.5, mutable=['batch_stats'])
  assert y.shape == (2, 4 // stride, 4 // stride, 8)
  rest = np.asarray(x[..., 2:])
  if stride == 2:  # 2x2 max pooling of the bypass
    rest = rest.reshape(2, 2, 2, 2, 2, 6).max(axis=(2, 4))
  # after the shuffle, old channel g·2 + c sits at c·4 + g: the bypass is old channels 2..7,
  # scaled by the edge weight 0.5
  new_pos = [c * 4 + g for g in range(4) for c in range(2)]
  y = np.asarray(y)[..., new_pos]
  np.testing.assert_allclose(y[..., 2:], 0.5 * rest, rtol=1e-6)
  # the ops' parameters are those of a mixed op on 2 channels
  small = cells.MixedOp(darts.PRIMITIVES, 2, stride, train=True, pool_bn=True)
  v2 = small.init(jax.random.key(1), x[..., :2], w)
  shapes = lambda v: jax.tree_util.tree_map(np.shape, v['params'])
  assert shapes(v) == shapes(v2)


def test_edge_normalisation_is_a_softmax_per_node():
  beta = np.array([0.1, -0.2, 0.0, 1.0, 2.0, 0.3, -0.3, 0.5, 0.0, 0.0, 0.0, 0.0, 1.0, -1.0],
                  np.float32)
  got = np.asarray(relax.edge_weights(jnp.asarray(beta), 2))
  start = 0
  for size in (2, 3, 4, 5):
    part = beta[start:start + size]
    np.testing.assert_allclose(got[start:start + size], np.exp(part) / np.exp(part).sum(), rtol=1e-6)
    start += size
  with pytest.raises(ValueError, match='do not split'):
    relax.edge_groups(13, 2)


def test_pc_derive_multiplies_edge_strength_by_the_normalised_edge_weights():
  w = np.full((14, 8), 0.1)
  # node 0 (edges 0, 1), node 1 (edges 2, 3, 4): edge 2's op is strongest, but β favours 3 and 4
  w[2, darts.PRIMITIVES.index('sep_conv_3x3')] = 0.9
  w[3, darts.PRIMITIVES.index('dil_conv_3x3')] = 0.5
  w[4, darts.PRIMITIVES.index('max_pool_3x3')] = 0.4
  beta = np.zeros(14, np.float32)
  beta[2:5] = [-3.0, 1.0, 1.0]
  alpha = {'normal': np.log(w), 'reduce': np.log(w), 'normal_edges': beta, 'reduce_edges': beta}
  strength = relax.make('pc').edge_strength(alpha, 2)
  e = np.exp(beta[2:5])
  np.testing.assert_allclose(strength['normal'][2:5], e / e.sum(), rtol=1e-6)
  g = darts.derive({'normal': w, 'reduce': w}, strength)
  assert g.gene('normal')[2:4] == [('dil_conv_3x3', 1), ('max_pool_3x3', 2)]
  # without edge normalisation edge 2 wins
  assert darts.derive({'normal': w, 'reduce': w}).gene('normal')[2] == ('sep_conv_3x3', 0)


def _fair_sigmas():
  """Hand-built Fair DARTS σ over its 7 ops (no 'none'), (14, 7) per cell type."""
  ops = relax.make('fair').ops(darts.PRIMITIVES)
  assert 'none' not in ops and len(ops) == 7
  w = np.full((14, 7), 0.1)
  sep, skip = ops.index('sep_conv_3x3'), ops.index('skip_connect')
  w[0, sep], w[0, skip] = 0.95, 0.9     # node 0: two ops of edge 0 pass; one op per edge is kept
  w[1, sep] = 0.8                       # ... edge 1 (its second input) does not pass
  w[3, skip] = 0.86                     # node 1: edge 3 passes, edge 4 does not
  w[4, sep] = 0.5
  # node 2 (edges 5-8): nothing passes, the node is absent
  w[11, sep] = 0.9                      # node 3: edge 11 reads node 0 and passes; edge 13 passes
  w[13, skip] = 0.99                    # too but reads the absent node 2, so it is dropped
  return w, ops


def test_fair_threshold_rule():
  w, ops = _fair_sigmas()
  g = darts.derive({'normal': w, 'reduce': w}, threshold=0.85, primitives=ops)
  assert g.normal == (('sep_conv_3x3', 0, 0), ('skip_connect', 1, 1), ('sep_conv_3x3', 2, 3))
  assert g.normal_concat == (2, 3, 5) and g.nodes('normal') == (0, 1, 3)
  # threshold 0: two inputs on every node, DARTS' pair form (the best op of each of the top-2 edges)
  g0 = darts.derive({'normal': w, 'reduce': w}, threshold=0.0, primitives=ops)
  assert g0.gene('normal')[:4] == [('sep_conv_3x3', 0), ('sep_conv_3x3', 1),
                                   ('skip_connect', 1), ('sep_conv_3x3', 2)]
  assert g0.normal_concat == (2, 3, 4, 5) and g0 != g
  # 0.92 removes node 1's input (0.86) and node 3's (0.9): only node 0 remains
  g9 = darts.derive({'normal': w, 'reduce': w}, threshold=0.92, primitives=ops)
  assert g9.normal == (('sep_conv_3x3', 0, 0),) and g9.normal_concat == (2,)
  with pytest.raises(ValueError, match='reaches the threshold 1.01'):
    darts.derive({'normal': w, 'reduce': w}, threshold=1.01, primitives=ops)
  # the text and JSON forms keep the node of each op
  assert darts.Genotype.from_text(str(g)) == g
  assert darts.Genotype.from_json(g.to_json()) == g
  with pytest.raises(ValueError, match='reads state 4, a node without inputs'):
    darts.Genotype([('sep_conv_3x3', 0, 0), ('skip_connect', 4, 3)], [2, 5], g.reduce, g.reduce_concat)




def test_fair_threshold_rule_nb201():
  cell = np.full((6, 5), 0.2)
  cell[0, nb201.PRIMITIVES.index('nor_conv_3x3')] = 0.9
  cell[1, nb201.PRIMITIVES.index('none')] = 0.95
  cell[1, nb201.PRIMITIVES.index('skip_connect')] = 0.5
  g = nb201.derive({'cell': cell}, threshold=0.85)
  assert g.nodes[0] == (('nor_conv_3x3', 0),)
  assert g.nodes[1][0] == ('none', 0)


@pytest.mark.parametrize('space', ['nb201', 'darts'])
def test_pc_supernet_has_edge_arrays_and_fewer_weights(space):
  sp = get_space(space)
  pc = relax.make('pc')
  alpha = sp.init_alpha(jax.random.key(0), 1e-3, pc)
  sp.check_alpha(alpha, pc)
  with pytest.raises(ValueError, match='keys'):
    sp.check_alpha(alpha)
  x = jnp.zeros((1, 8, 8, 3))
  count = lambda r, a: sum(int(np.prod(l.shape)) for l in jax.tree_util.tree_leaves(
      jax.eval_shape(lambda: sp.supernet(8, 2, 10, relax.make(r)).init(jax.random.key(0), x, a))['params']))
  assert count('pc', alpha) < count('softmax', sp.init_alpha(jax.random.key(0)))
