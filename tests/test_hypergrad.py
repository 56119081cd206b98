"""DARTS estimators against closed forms and invariants."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax import enable_x64

from jaxnas import ops
from jaxnas.hypergrad import Batches, Problem, WeightOpt, Weights, darts, get_estimator, ridge
from jaxnas.spaces import cells
from jaxnas.spaces.base import init_variables


def sgd(lr, momentum=0.0, wd=0.0):
  tx = optax.chain(optax.add_decayed_weights(wd), optax.sgd(lr, momentum=momentum or None))
  return WeightOpt(tx, lambda step: lr, momentum, wd)


def ridge_setup(momentum=0.0, wd=0.0, lr=0.1, n=1):
  data = ridge.make_data(jax.random.key(0))
  opt = sgd(lr, momentum, wd)
  w0 = jax.random.normal(jax.random.key(1), (6,), jnp.float64)
  opt_state = opt.tx.init(w0)
  if momentum:  # a non-zero momentum buffer, as after some steps
    opt_state = jax.tree_util.tree_map(lambda a: a + 0.3 if a.shape == w0.shape else a, opt_state)
  weights = Weights(w0, (), opt_state, jnp.asarray(0))
  alpha = jnp.log(jnp.linspace(0.05, 0.5, 6))
  train = jax.tree_util.tree_map(lambda a: jnp.stack([a] * n), (data.x_train, data.y_train))
  return data, opt, weights, alpha, Batches(train, (data.x_val, data.y_val))


def test_darts2_one_step_matches_closed_form():
  with enable_x64():
    data, opt, weights, alpha, batches = ridge_setup(lr=0.1)
    est = darts.darts2(ridge.problem(), opt, weights, alpha, batches, None)
    want = ridge.one_step_hypergradient(data, alpha, weights.w, 0.1)
    np.testing.assert_allclose(est.alpha_grad, want, rtol=1e-10)


def test_darts2_is_the_gradient_through_the_virtual_step_with_momentum_and_decay():
  with enable_x64():
    data, opt, weights, alpha, batches = ridge_setup(momentum=0.9, wd=3e-4, lr=0.05)
    p = ridge.problem()
    est = darts.darts2(p, opt, weights, alpha, batches, None)

    def unrolled(a):
      w1 = darts.virtual_step(p, opt, weights, a, darts.first(batches.train), 0.05)
      return p.val_loss(w1, a, batches.val, ())[0]
    np.testing.assert_allclose(est.alpha_grad, jax.grad(unrolled)(alpha), rtol=1e-10)


def test_second_order_with_zero_xi_is_first_order():
  with enable_x64():
    _, opt, weights, alpha, batches = ridge_setup(momentum=0.9, wd=3e-4)
    p = ridge.problem()
    e1 = darts.darts1(p, opt, weights, alpha, batches, None)
    e2 = darts.darts2(p, opt, weights, alpha, batches, None, xi=0.0)
    np.testing.assert_allclose(e2.alpha_grad, e1.alpha_grad, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(e2.weights.w, e1.weights.w, rtol=1e-12)


def test_multistep_one_step_is_first_order_and_n_steps_move_n_times():
  with enable_x64():
    _, opt, weights, alpha, batches = ridge_setup(momentum=0.9, wd=3e-4, n=1)
    p = ridge.problem()
    e1 = darts.darts1(p, opt, weights, alpha, batches, None)
    em = darts.multistep(p, opt, weights, alpha, batches, None)
    np.testing.assert_allclose(em.alpha_grad, e1.alpha_grad, rtol=1e-12)
    np.testing.assert_allclose(em.weights.w, e1.weights.w, rtol=1e-12)
    _, _, _, _, batches3 = ridge_setup(momentum=0.9, wd=3e-4, n=3)
    e3 = darts.multistep(p, opt, weights, alpha, batches3, None)
    assert int(e3.weights.step) == 3
    w = weights
    for _ in range(3):
      w = darts.darts1(p, opt, w, alpha, batches, None).weights
    np.testing.assert_allclose(e3.weights.w, w.w, rtol=1e-12)


def test_unknown_method_lists_known():
  with pytest.raises(ValueError, match=r"unknown method 'darts3'.*darts1, darts2, darts2-fd, multistep"):
    get_estimator('darts3')


OPS = ('none', 'max_pool_3x3', 'skip_connect', 'dil_conv_3x3')


class TinySupernet(nn.Module):
  """A one-cell supernet: conv stem, a mixed cell of DARTS ops (a depthwise convolution with
  its custom VJP, pooling with BN, skip) with 2 nodes (3 edges), head."""

  @nn.compact
  def __call__(self, x, alpha, train=True):
    x = ops.batch_norm(train, True)(ops.Conv(4, 3, 1, 1)(x))
    nodes = cells.MixedCell(OPS, 4, 1, 2, 1, train, pool_bn=True, remat=False)(
        [x], jax.nn.softmax(alpha))
    return ops.Linear(3)(jnp.mean(nodes[-1], axis=(1, 2)))


def _supernet_problem():
  model = TinySupernet()
  x = jax.random.normal(jax.random.key(0), (2, 4, 8, 8, 3), jnp.float64)
  y = jax.random.randint(jax.random.key(3), (2, 4), 0, 3)

  def loss(params, alpha, batch, state):
    logits, new = model.apply({'params': params, 'batch_stats': state}, batch[0], alpha,
                              train=True, mutable=['batch_stats'])
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch[1]).mean()
    return ce, (new['batch_stats'], {'loss': ce})
  alpha = 0.3 * jax.random.normal(jax.random.key(1), (3, len(OPS)), jnp.float64)
  v = init_variables(model, jax.random.key(2), x[0], alpha)
  v = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), v)
  opt = sgd(0.05, 0.9, 3e-4)
  opt_state = opt.tx.init(v['params'])
  opt_state = jax.tree_util.tree_map(lambda a: a + 0.01 if a.ndim else a, opt_state)
  weights = Weights(v['params'], v['batch_stats'], opt_state, jnp.asarray(0))
  batches = Batches(jax.tree_util.tree_map(lambda a: a[:1], (x[0][None], y[0][None])), (x[1], y[1]))
  return Problem(loss, loss), opt, weights, alpha, batches


def test_exact_second_order_on_a_supernet_and_finite_difference_agreement():
  with enable_x64():
    p, opt, weights, alpha, batches = _supernet_problem()
    def unrolled(a):
      w1 = darts.virtual_step(p, opt, weights, a, darts.first(batches.train), 0.05)
      return p.val_loss(w1, a, batches.val, weights.state)[0]

    @jax.jit
    def all_three(w, a):
      # The central difference converges to the exact product as r shrinks. (At
      # DARTS' r = 1e-2 it is off by O(1) on this tiny ReLU/BN supernet: the
      # perturbation crosses ReLU kinks.)
      return (darts.darts2(p, opt, w, a, batches, None).alpha_grad, jax.grad(unrolled)(a),
              darts.darts2_fd(p, opt, w, a, batches, None, fd_r=1e-6).alpha_grad)
    exact, want, fd = all_three(weights, alpha)
    g, w = exact, want
    assert np.linalg.norm(g - w) <= 1e-5 * np.linalg.norm(w)
    assert np.linalg.norm(fd - g) <= 1e-4 * np.linalg.norm(g)


def test_finite_difference_on_a_smooth_problem_at_darts_radius():
  with enable_x64():
    _, opt, weights, alpha, batches = ridge_setup(momentum=0.9, wd=3e-4)
    p = ridge.problem()
    exact = darts.darts2(p, opt, weights, alpha, batches, None).alpha_grad
    fd = darts.darts2_fd(p, opt, weights, alpha, batches, None, fd_r=1e-2).alpha_grad
    np.testing.assert_allclose(fd, exact, rtol=1e-2)
