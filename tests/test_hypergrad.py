"""DARTS estimators against closed forms and invariants."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax import enable_x64

from jaxnas import ops
from jaxnas import hypergrad
from jaxnas.hypergrad import Batches, Problem, WeightOpt, Weights, darts, implicit, ridge, unrolled
from jaxnas.spaces import cells
from jaxnas.spaces.base import init_variables


def sgd(lr, momentum=0.0, wd=0.0):
  tx = optax.chain(optax.add_decayed_weights(wd), optax.sgd(lr, momentum=momentum or None))
  return WeightOpt(tx, lambda step: lr)


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


def virtual_weights(p, opt, weights, a, batches, xi):
  """w' as a function of α, for jax.grad through it: the oracle of darts2."""
  batch = darts.first(batches.train)
  g = jax.grad(lambda w: p.train_loss(w, a, batch, weights.state)[0])(weights.w)
  return darts.virtual_step(opt, weights, g, xi)[0]


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
      return p.val_loss(virtual_weights(p, opt, weights, a, batches, 0.05), a, batches.val, ())[0]
    np.testing.assert_allclose(est.alpha_grad, jax.grad(unrolled)(alpha), rtol=1e-10)


def _two_groups():
  """The ridge problem with its weights as two leaves, {'a': w[:3], 'b': w[3:]}."""
  base = ridge.problem()
  split = lambda w: jnp.concatenate([w['a'], w['b']])
  return Problem(lambda w, a, b, s: base.train_loss(split(w), a, b, s),
                 lambda w, a, b, s: base.val_loss(split(w), a, b, s))


@pytest.mark.parametrize('kind', ['momentum', 'nesterov', 'multi_transform'])
def test_the_virtual_step_is_the_weight_optimisers_own_update(kind):
  # darts2 against jax.grad through a virtual step written by hand (PyTorch's SGD with
  # momentum buffer m: d = g + λw, m' = μm + d, step d + μm' with Nesterov, else m'),
  # for a momentum chain, a Nesterov one, and per-group decay by optax.multi_transform
  # (two momentum traces in one state; one group without decay)
  lr, mu, wd = 0.05, 0.9, 3e-4
  with enable_x64():
    data, _, weights, alpha, batches = ridge_setup()
    w = {'a': weights.w[:3], 'b': weights.w[3:]}
    decayed = lambda lam: optax.chain(optax.add_decayed_weights(lam), optax.trace(mu, nesterov=kind == 'nesterov'),
                                      optax.scale(-lr))
    tx = (optax.multi_transform({'d': decayed(wd), 'p': decayed(0.0)}, {'a': 'd', 'b': 'p'})
          if kind == 'multi_transform' else decayed(wd))
    # a momentum buffer of 0.3 everywhere, as after some steps
    state = jax.tree_util.tree_map(lambda x: x + 0.3 if x.dtype == jnp.float64 else x, tx.init(w))
    p = _two_groups()
    est = darts.darts2(p, WeightOpt(tx, lambda step: lr), Weights(w, (), state, jnp.asarray(0)),
                       alpha, batches, None)

    def by_hand(w, g):
      out = {}
      for k in w:
        d = g[k] + (0.0 if kind == 'multi_transform' and k == 'b' else wd) * w[k]
        m = mu * 0.3 + d
        out[k] = w[k] - lr * (d + mu * m if kind == 'nesterov' else m)
      return out

    def through_virtual_step(a):
      g = jax.grad(lambda w: p.train_loss(w, a, darts.first(batches.train), ())[0])(w)
      return p.val_loss(by_hand(w, g), a, batches.val, ())[0]
    np.testing.assert_allclose(est.alpha_grad, jax.grad(through_virtual_step)(alpha), rtol=1e-10)


def test_second_order_with_zero_xi_is_first_order():
  with enable_x64():
    _, opt, weights, alpha, batches = ridge_setup(momentum=0.9, wd=3e-4)
    p = ridge.problem()
    e1 = darts.darts1(p, opt, weights, alpha, batches, None)
    e2 = darts.darts2(p, opt, weights, alpha, batches, None, xi=0.0)
    np.testing.assert_allclose(e2.alpha_grad, e1.alpha_grad, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize('name', ['darts1', 'darts2', 'darts2-fd', 'implicit'])
def test_the_darts_family_leaves_the_weights_to_the_search(name):
  # quark0/darts moves α first and then the weights at the new α: the estimator must not
  est = hypergrad.make(name)
  assert est.spec.weights_after_alpha
  with enable_x64():
    _, opt, weights, alpha, batches = ridge_setup(momentum=0.9, wd=3e-4)
    out = est(ridge.problem(), opt, weights, alpha, batches, None)
    assert out.weights is weights


def sgd_momentum_by_hand(w, buf, grads, lr, mu, wd):
  """torch.optim.SGD's update, written out: buf ← μ buf + (g + λ w); w ← w − lr buf."""
  for g in grads:
    buf = mu * buf + g(w) + wd * w
    w = w - lr * buf
  return w, buf


def test_multistep_takes_its_weight_steps_before_the_alpha_gradient():
  # Zero-Cost DARTS Eqs. 6-7: w_{k+1} = n optimiser steps from w_k; g_α = ∇α L_val(w_{k+1}, α).
  # The validation loss here is the training loss, ridge penalty included, so that ∇α L_val
  # = ½ e^α ⊙ w² depends on where the weights are.
  with enable_x64():
    data, opt, weights, alpha, batches = ridge_setup(momentum=0.9, wd=3e-4, n=3)
    ridge_p = ridge.problem()
    p = Problem(ridge_p.train_loss, ridge_p.train_loss)
    est = darts.multistep(p, opt, weights, alpha, batches, None, n=3)
    assert int(est.weights.step) == 3
    grad = lambda w: data.x_train.T @ (data.x_train @ w - data.y_train) / len(data.y_train) + \
        jnp.exp(alpha) * w
    w3, _ = sgd_momentum_by_hand(weights.w, weights.w * 0 + 0.3, [grad] * 3, 0.1, 0.9, 3e-4)
    np.testing.assert_allclose(est.weights.w, w3, rtol=1e-12)
    np.testing.assert_allclose(est.alpha_grad, 0.5 * np.exp(alpha) * w3 ** 2, rtol=1e-10)
    assert not np.allclose(est.alpha_grad, 0.5 * np.exp(alpha) * weights.w ** 2, rtol=1e-3)


def test_make_binds_checked_options_and_refuses_unknown_ones():
  with pytest.raises(ValueError, match=r"unknown method 'darts3'.*darts1, darts2, darts2-fd, multistep, "
                                      r"unroll, sge, esj, implicit"):
    hypergrad.make('darts3')
  with pytest.raises(ValueError, match='multistep has no option steps; its options: n'):
    hypergrad.make('multistep', steps=3)  # a misspelt option is an error, not ignored
  with pytest.raises(ValueError, match=r'p \(--unroll-p\) must be > 0, got 0.0'):
    hypergrad.make('unroll', p=0.0)
  est = hypergrad.make('sge', q=3)
  assert est.options == {'n': 1, 'q': 3, 'mu': 1e-2, 'p': 0.01, 'chunk': None}  # the signature's defaults
  assert est.train_batches == 1
  assert est.spec.recipe['optim.alpha_optimizer'].value == 'sgd'
  assert hypergrad.make('multistep').train_batches == 2
  assert repr(est) == "Estimator(sge, {'chunk': None, 'mu': 0.01, 'n': 1, 'p': 0.01, 'q': 3})"
  # the bound estimator computes what its function computes with those options
  with enable_x64():
    _, opt, weights, alpha, batches = ridge_setup(momentum=0.9, wd=3e-4, n=2)
    p = ridge.problem()
    got = hypergrad.make('unroll', n=2, p=0.05)(p, opt, weights, alpha, batches, None)
    want = unrolled.unroll(p, opt, weights, alpha, batches, None, n=2, p=0.05)
    np.testing.assert_array_equal(got.alpha_grad, want.alpha_grad)
    with pytest.raises(ValueError, match='the estimator takes n = 3 training batches per step, got 2'):
      hypergrad.make('unroll', n=3)(p, opt, weights, alpha, batches, None)


OPS = ('none', 'max_pool_3x3', 'skip_connect', 'dil_conv_3x3')


class TinySupernet(nn.Module):
  """A one-cell supernet: conv stem (XLA's convolution, as the DARTS supernet's), a mixed
  cell of DARTS ops (a depthwise convolution with its custom VJP, pooling with BN, skip)
  with 2 nodes (3 edges), head."""

  @nn.compact
  def __call__(self, x, alpha, train=True):
    x = ops.batch_norm(train, True)(ops.Conv(4, 3, 1, 1, hand_vjp=False)(x))
    nodes = cells.MixedCell(OPS, 4, 1, 2, 1, train, pool_bn=True, remat=False)(
        [x], jax.nn.softmax(alpha))
    return ops.Linear(3)(jnp.mean(nodes[-1], axis=(1, 2)))


def _supernet_problem():
  model = TinySupernet()
  # 9x9 maps: the depthwise convolution's shifted slices and their custom VJP (on
  # maps of <= 64 pixels it is a matrix product, tested in test_ops)
  x = jax.random.normal(jax.random.key(0), (2, 4, 9, 9, 3), jnp.float64)
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


@pytest.mark.parametrize('forward_over_reverse', [True, False])
def test_exact_second_order_on_a_supernet_and_finite_difference_agreement(forward_over_reverse):
  with enable_x64():
    p, opt, weights, alpha, batches = _supernet_problem()
    p = p._replace(forward_over_reverse=forward_over_reverse)
    def unrolled(a):
      w1 = virtual_weights(p, opt, weights, a, batches, 0.05)
      return p.val_loss(w1, a, batches.val, weights.state)[0]

    @jax.jit
    def all_three(w, a):
      # The central difference converges to the exact product as r shrinks. (At
      # DARTS' r = 1e-2 it is off by O(1) on this tiny ReLU/BN supernet: the
      # perturbation crosses ReLU kinks.)
      return (darts.darts2(p, opt, w, a, batches, None).alpha_grad, jax.grad(unrolled)(a),
              darts.darts2_fd(p, opt, w, a, batches, None, r=1e-6).alpha_grad)
    exact, want, fd = all_three(weights, alpha)
    g, w = exact, want
    assert np.linalg.norm(g - w) <= 1e-5 * np.linalg.norm(w)
    assert np.linalg.norm(fd - g) <= 1e-4 * np.linalg.norm(g)


def test_finite_difference_on_a_smooth_problem_at_darts_radius():
  with enable_x64():
    _, opt, weights, alpha, batches = ridge_setup(momentum=0.9, wd=3e-4)
    p = ridge.problem()
    exact = darts.darts2(p, opt, weights, alpha, batches, None).alpha_grad
    fd = darts.darts2_fd(p, opt, weights, alpha, batches, None, r=1e-2).alpha_grad
    np.testing.assert_allclose(fd, exact, rtol=1e-2)


# ----------------------------------------------------------------------------
# Unrolled, stochastic (SGE, ESJ) and implicit hypergradients
# ----------------------------------------------------------------------------

def _rel(a, b):
  return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(np.asarray(b)))


@pytest.mark.parametrize('solver,k', [('cg', 12), ('neumann', 300)])
def test_implicit_matches_the_closed_form_at_the_lower_solution(solver, k):
  with enable_x64():
    data, opt, weights, alpha, batches = ridge_setup()
    at_optimum = weights._replace(w=ridge.solve(data, alpha))
    est = implicit.implicit(ridge.problem(), opt, at_optimum, alpha, batches, None, solver=solver,
                            k=k, eta=0.5)
    assert _rel(est.alpha_grad, ridge.hypergradient(data, alpha)) < 1e-4


def test_implicit_with_few_iterations_is_not_exact_and_unknown_solver_is_refused():
  with enable_x64():
    data, opt, weights, alpha, batches = ridge_setup()
    at_optimum = weights._replace(w=ridge.solve(data, alpha))
    est = implicit.implicit(ridge.problem(), opt, at_optimum, alpha, batches, None,
                            solver='neumann', k=2, eta=0.5)
    assert _rel(est.alpha_grad, ridge.hypergradient(data, alpha)) > 1e-2
    with pytest.raises(ValueError, match="unknown implicit solver 'lu'.*cg, neumann"):
      implicit.implicit(ridge.problem(), opt, at_optimum, alpha, batches, None, solver='lu')


def test_unroll_converges_to_the_closed_form_with_many_inner_steps():
  with enable_x64():
    data, opt, weights, alpha, _ = ridge_setup()
    exact = ridge.hypergradient(data, alpha)
    errors = []
    for n in (1, 10, 200):
      _, _, _, _, batches = ridge_setup(n=n)
      est = jax.jit(lambda w, b: unrolled.unroll(ridge.problem(), opt, w, alpha, b, None, n=n, p=0.5))(
          weights, batches)
      assert int(est.weights.step) == n
      errors.append(_rel(est.alpha_grad, exact))
    assert errors[0] > errors[1] > errors[2] and errors[2] < 1e-6, errors


@pytest.mark.parametrize('remat', [False, True])
def test_unroll_matches_central_differences_of_the_unrolled_objective(remat):
  with enable_x64():
    _, opt, weights, alpha, batches = ridge_setup(n=4)
    p = ridge.problem()
    est = unrolled.unroll(p, opt, weights, alpha, batches, None, n=4, p=0.3, remat=remat)

    def objective(a):  # the unrolled objective, written out step by step in NumPy terms
      w = weights.w
      for i in range(4):
        x, y = batches.train[0][i], batches.train[1][i]
        w = w - 0.3 * (x.T @ (x @ w - y) / len(y) + jnp.exp(a) * w)
      return p.val_loss(w, a, batches.val, ())[0]
    h = 1e-6
    fd = np.array([(objective(alpha.at[i].add(h)) - objective(alpha.at[i].add(-h))) / (2 * h)
                   for i in range(alpha.size)])
    assert _rel(est.alpha_grad, fd) < 1e-5


def test_sge_mean_over_many_directions_is_the_unrolled_hypergradient_and_error_shrinks_with_q():
  with enable_x64():
    _, opt, weights, alpha, batches = ridge_setup(n=3)
    p = ridge.problem()
    exact = unrolled.unroll(p, opt, weights, alpha, batches, None, n=3, p=0.1).alpha_grad
    est = jax.jit(lambda key, q: unrolled.sge(p, opt, weights, alpha, batches, key, n=3, q=q, mu=1e-5,
                                              p=0.1).alpha_grad, static_argnums=1)
    g = est(jax.random.key(0), 4000)
    assert g @ exact / np.linalg.norm(g) / np.linalg.norm(exact) >= 0.99
    # mean error over seeds ~ 1/sqrt(Q): a factor 10 from Q = 10 to 1000 (asserted loosely)
    err = {q: np.mean([_rel(est(jax.random.key(s), q), exact) for s in range(8)])
           for q in (10, 100, 1000)}
    assert err[100] < err[10] / 2 and err[1000] < err[100] / 2, err



@pytest.mark.parametrize('name', ['sge', 'esj', 'unroll'])
def test_the_unrolled_estimators_move_the_weights_by_the_configured_optimiser(name):
  # SGE-NAS §3: the weights train by SGD with momentum and weight decay; the inner runs
  # (plain SGD of size p) only estimate the hypergradient
  with enable_x64():
    data, opt, weights, alpha, batches = ridge_setup(momentum=0.9, wd=3e-4, lr=0.05, n=3)
    est = hypergrad.make(name, n=3, p=0.2)
    out = est(ridge.problem(), opt, weights, alpha, batches, jax.random.key(0))
    grad = lambda w: data.x_train.T @ (data.x_train @ w - data.y_train) / len(data.y_train) + \
        jnp.exp(alpha) * w
    w3, buf = sgd_momentum_by_hand(weights.w, weights.w * 0 + 0.3, [grad] * 3, 0.05, 0.9, 3e-4)
    np.testing.assert_allclose(out.weights.w, w3, rtol=1e-12)
    np.testing.assert_allclose(jax.tree_util.tree_leaves(out.weights.opt_state)[0], buf, rtol=1e-12)
    assert int(out.weights.step) == 3


def test_esj_directions_are_normalised_per_tensor_and_its_mean_is_unbiased():
  with enable_x64():
    alpha = {'a': jnp.zeros((3, 4)), 'b': jnp.zeros((5,))}
    u = unrolled.gaussian_directions(jax.random.key(0), alpha, 7, normalize=True)
    np.testing.assert_allclose(np.linalg.norm(u['a'].reshape(7, -1), axis=1), np.sqrt(12))
    np.testing.assert_allclose(np.linalg.norm(u['b'], axis=1), np.sqrt(5))
    _, opt, weights, alpha, batches = ridge_setup(n=2)
    p = ridge.problem()
    exact = unrolled.unroll(p, opt, weights, alpha, batches, None, n=2, p=0.1).alpha_grad
    keys = jax.random.split(jax.random.key(1), 4000)
    g = jax.vmap(lambda k: unrolled.esj(p, opt, weights, alpha, batches, k, n=2, mu=1e-5,
                                        p=0.1).alpha_grad)(keys).mean(0)
    assert g @ exact / np.linalg.norm(g) / np.linalg.norm(exact) >= 0.99


def test_sge_on_a_supernet_in_chunks_equals_all_at_once():
  with enable_x64():
    p, opt, weights, alpha, batches = _supernet_problem()
    key = jax.random.key(4)
    run = jax.jit(lambda chunk: unrolled.sge(p, opt, weights, alpha, batches, key, q=3,
                                             chunk=chunk).alpha_grad, static_argnums=0)
    all_at_once = run(3)
    np.testing.assert_allclose(run(2), all_at_once, rtol=1e-9)   # the last chunk padded
    np.testing.assert_allclose(run(None), all_at_once, rtol=1e-9)  # on CPU: one at a time


def test_the_virtual_step_at_the_end_of_a_schedule_to_zero_is_finite():
  # a cosine schedule to lr_min = 0 (PC-DARTS' recipe) has η = 0 in its last epoch: the
  # virtual step with a given ξ is ξ times the update at learning rate 1, not ξ/η times
  # the real one (0/0)
  from jaxnas import optim
  mu, wd, xi = 0.9, 3e-4, 0.05
  lr = optim.cosine_per_epoch(0.1, 0.0, 2, 1)
  opt = WeightOpt(optim.sgd(lr, mu, wd, 5.0), lr, optim.sgd(lambda count: 1.0, mu, wd))
  with enable_x64():
    data, _, weights, alpha, batches = ridge_setup()
    weights = Weights(weights.w, (), opt.tx.init(weights.w), jnp.asarray(2))  # epoch 2: η = 0
    assert float(lr(weights.step)) == 0.0
    p = ridge.problem()

    def by_hand(a):   # PyTorch's SGD from an empty momentum buffer: w − ξ (g + λw)
      g = jax.grad(lambda w: p.train_loss(w, a, darts.first(batches.train), ())[0])(weights.w)
      return p.val_loss(weights.w - xi * (g + wd * weights.w), a, batches.val, ())[0]
    est = darts.darts2(p, opt, weights, alpha, batches, None, xi=xi)
    np.testing.assert_allclose(est.alpha_grad, jax.grad(by_hand)(alpha), rtol=1e-10)
    # ξ None is η = 0 there: first order
    np.testing.assert_allclose(darts.darts2(p, opt, weights, alpha, batches, None).alpha_grad,
                               darts.darts1(p, opt, weights, alpha, batches, None).alpha_grad,
                               rtol=1e-12)
