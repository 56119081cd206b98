"""FreeDARTS: saliencies against their definitions, a genotype planted in α is recovered,
every saliency gives a valid genotype."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxnas import data, free, relax
from jaxnas.spaces import get_space, nb201
from jaxnas.proxies.saliency import SaliencyConvention
from jaxnas.spaces.base import init_variables


def saliency_fn(model, name, forward_over_reverse=False, conv=SaliencyConvention()):
  """``(variables, alpha, batch) -> saliencies``: free.saliency_stages chained in one function."""
  stages = free.saliency_stages(model, name, forward_over_reverse, conv)

  def fn(variables, alpha, batch):
    out = None
    for stage in stages:
      out = stage(variables, alpha, batch, out)
    return out
  return fn


@pytest.fixture(scope='module')
def tiny():
  ds = data.load('digits')
  return data.from_arrays(ds.x_train[:64], ds.y_train[:64], ds.x_test[:16], ds.y_test[:16],
                          name='digits', num_classes=10)


def _setup(tiny, alpha):
  space = get_space('nb201')
  model = space.supernet(4, 1, 10, relax.make('raw'))
  v = init_variables(model, jax.random.key(1), jnp.zeros((1, 8, 8, 1)), alpha)
  x = data.NO_AUGMENT(jax.random.key(0), tiny.x_train[:16], tiny.mean, tiny.std)
  return space, model, v, (x, jnp.asarray(tiny.y_train[:16]))


def test_a_genotype_planted_in_alpha_dominates_the_saliency_and_is_recovered(tiny):
  planted = nb201.Genotype.from_text(
      '|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|avg_pool_3x3~0|nor_conv_3x3~1|skip_connect~2|')
  alpha = np.full((6, 5), 1e-6, np.float32)
  for row, (src, node) in enumerate(nb201.EDGES):
    op = dict((s, o) for o, s in planted.nodes[node])[src]
    alpha[row, nb201.PRIMITIVES.index(op)] = 1.0
  space, model, v, batch = _setup(tiny, {'cell': alpha})
  for name in ('snip', 'synflow'):
    scores = jax.jit(saliency_fn(model, name))(v, {'cell': jnp.asarray(alpha)}, batch)
    assert space.derive(scores) == planted, name


@pytest.mark.parametrize('space_name', ['nb201', 'darts'])
def test_snip_and_grasp_are_their_definitions(tiny, space_name):
  # H g by forward over reverse on both spaces (reverse over reverse: tests/test_hypergrad.py)
  with jax.enable_x64():  # float64: the oracle and the saliency agree to rounding
    if space_name == 'nb201':
      alpha = {'cell': 1e-2 * jax.random.normal(jax.random.key(3), (6, 5), jnp.float64)}
      space, model, v, batch = _setup(tiny, alpha)
    else:
      space = get_space('darts')
      model = space.supernet(4, 2, 10, relax.make('raw'))
      alpha = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64),
                                     space.init_alpha(jax.random.key(3), 1e-2))
      v = init_variables(model, jax.random.key(1), jnp.zeros((1, 8, 8, 1)), alpha)
      x = data.NO_AUGMENT(jax.random.key(0), tiny.x_train[:8], tiny.mean, tiny.std)
      batch = (x, jnp.asarray(tiny.y_train[:8]))
    assert space.forward_over_reverse
    v = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), v)
    batch = (batch[0].astype(jnp.float64), batch[1])

    def loss(a):
      logits, _ = model.apply(v, batch[0], a, train=True, mutable=['batch_stats'])
      return optax.softmax_cross_entropy_with_integer_labels(logits, batch[1]).mean()
    grad = jax.jit(jax.grad(loss))
    g = grad(alpha)
    snip = jax.jit(saliency_fn(model, 'snip', space.forward_over_reverse))(v, alpha, batch)
    for k in alpha:
      np.testing.assert_allclose(snip[k], np.abs(alpha[k] * g[k]), rtol=1e-9, atol=1e-15)
    # GraSP: −α ⊙ H g, the Hessian-gradient product by a central difference of the gradient
    # (a small step: at 1e-5·g/‖g‖ it already crosses ReLU kinks and is off by O(1))
    norm = float(jnp.sqrt(sum(jnp.sum(a ** 2) for a in g.values())))
    eps = 1e-7 / norm
    plus = grad({k: alpha[k] + eps * g[k] for k in alpha})
    minus = grad({k: alpha[k] - eps * g[k] for k in alpha})
    grasp = jax.jit(saliency_fn(model, 'grasp', space.forward_over_reverse))(v, alpha, batch)
    for k in alpha:
      hg = (plus[k] - minus[k]) / (2 * eps)
      assert np.linalg.norm(grasp[k] + alpha[k] * hg) <= 1e-5 * np.linalg.norm(grasp[k]), k


def test_snip_does_not_depend_on_the_order_of_the_batch(tiny):
  # α at its initial scale, 1e-3: with a one-pass BatchNorm variance, permuting the
  # rows moved SNIP by ~2% of its largest entry (tests/test_ops.py says why)
  alpha = {'cell': 1e-3 * jax.random.normal(jax.random.key(3), (6, 5))}
  space, model, v, (x, y) = _setup(tiny, alpha)
  fn = jax.jit(saliency_fn(model, 'snip'))
  perm = np.random.default_rng(1).permutation(len(y))
  a = np.asarray(fn(v, alpha, (x, y))['cell'])
  b = np.asarray(fn(v, alpha, (x[perm], y[perm]))['cell'])
  assert np.abs(a - b).max() <= 1e-4 * np.abs(a).max()


@pytest.mark.parametrize('space,saliencies', [('nb201', free.SALIENCIES),
                                              ('darts', ('synflow', 'grasp'))])
def test_every_saliency_gives_a_valid_genotype(tiny, space, saliencies, tmp_path):
  # (on DARTS, GraSP's program holds SNIP's gradient: SNIP adds a compile, not a path)
  for name in saliencies:
    result = free.free(free.FreeConfig(space=space, saliency=name, channels=4,
                                       layers=1 if space == 'nb201' else 3, batch_size=16,
                                       workdir=str(tmp_path / name)), tiny)
    sp = get_space(space)
    assert sp.load_genotype(str(result.genotype)) == result.genotype
    assert sp.load_genotype(str(tmp_path / name / 'genotype.json')) == result.genotype
    for k, s in result.saliency.items():
      assert np.isfinite(s).all()
      assert np.all(s[:, sp.primitives.index('none')] == 0)  # 'none' contributes nothing
  with pytest.raises(ValueError, match=r"saliency \(--saliency\) must be one of synflow, snip, "
                                       r"grasp, got 'fisher'"):
    free.FreeConfig(space=space, saliency='fisher')
  with pytest.raises(ValueError, match=r'alpha_scale \(--alpha-scale\) must be > 0, got 0'):
    free.FreeConfig(space=space, alpha_scale=0.0)  # every saliency would be zero


def test_a_second_run_loads_the_saliency_program(tiny, tmp_path, monkeypatch):
  traced = []
  losses = free._losses
  monkeypatch.setattr(free, '_losses', lambda *a: traced.append(1) or losses(*a))
  cfg = free.FreeConfig(space='nb201', saliency='grasp', channels=4, layers=1, batch_size=16)
  plain = free.free(cfg, tiny)
  n_plain = len(traced)
  programs = str(tmp_path / 'programs')
  first = free.free(cfg, tiny, programs)  # traces and exports
  n = len(traced)
  again = free.free(cfg, tiny, programs)  # loads
  # one program per stage (forward over reverse: the gradient, then H g along it)
  stages = len(free.saliency_stages(None, 'grasp', True))
  assert stages == 2
  assert n > n_plain and len(traced) == n
  assert len(list((tmp_path / 'programs').glob('*.jaxprogram'))) == stages
  for run in (first, again):
    assert run.genotype == plain.genotype
    for k in plain.saliency:
      np.testing.assert_allclose(run.saliency[k], plain.saliency[k], rtol=1e-5, atol=1e-12)


def _darts_setup(tiny, dtype=jnp.float64):
  space = get_space('darts')
  model = space.supernet(4, 2, 10, relax.make('raw'))
  alpha = jax.tree_util.tree_map(lambda a: a.astype(dtype), space.init_alpha(jax.random.key(3), 1e-2))
  v = init_variables(model, jax.random.key(1), jnp.zeros((1, 8, 8, 1)), alpha)
  v = jax.tree_util.tree_map(lambda a: a.astype(dtype), v)
  x = data.NO_AUGMENT(jax.random.key(0), tiny.x_train[:8], tiny.mean, tiny.std).astype(dtype)
  return space, model, v, alpha, (x, jnp.asarray(tiny.y_train[:8]))


def _adam_first_step(alpha, g, lr):
  """torch.optim.Adam(lr, betas=(0.5, 0.999), weight_decay=1e-3), its first step, in NumPy."""
  out = {}
  for k in alpha:
    a, gk = np.asarray(alpha[k]), np.asarray(g[k])
    d = gk + 1e-3 * a
    out[k] = a - lr * d / (np.abs(d) + 1e-8)
  return out


@pytest.mark.parametrize('space_name', ['darts', 'nb201'])
def test_the_code_convention_is_what_the_authors_notebooks_compute(tiny, space_name):
  # the notebooks' operations written out one by one (autograd of the scalars they backward)
  with jax.enable_x64():
    if space_name == 'darts':
      space, model, v, alpha, batch = _darts_setup(tiny)
    else:
      alpha = {'cell': 1e-2 * jax.random.normal(jax.random.key(3), (6, 5), jnp.float64)}
      space, model, v, batch = _setup(tiny, alpha)
      v = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), v)
      batch = (batch[0].astype(jnp.float64), batch[1])
    conv = free.convention('code', space_name)
    darts = space_name == 'darts'
    v_abs = {**v, 'params': jax.tree_util.tree_map(jnp.abs, v['params'])}   # param.abs_()

    def ce(variables):
      def loss(a):
        logits, _ = model.apply(variables, batch[0], a, train=True, mutable=['batch_stats'])
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch[1]).mean()
      return jax.jit(jax.grad(loss))  # jitted, here and below: op by op is several times slower
    grad = ce(v_abs if darts else v)
    sal = {name: jax.jit(saliency_fn(model, name, space.forward_over_reverse, conv))(v, alpha, batch)
           for name in free.SALIENCIES}
    # SNIP: |α ⊙ ∂L/∂α| (at |θ| on DARTS; on NAS-Bench-201 the paper's)
    g = grad(alpha)
    for k in alpha:
      np.testing.assert_allclose(sal['snip'][k], np.abs(alpha[k] * g[k]), rtol=1e-9, atol=1e-16)
    # GraSP: one Adam step, then the backward of Σ g(α')·v
    moved = _adam_first_step(alpha, g, 3e-4 if darts else 3e-2)
    if darts:   # v is α' itself: ∂(g(α')·α')/∂α'
      back = jax.jit(jax.grad(lambda a: sum(jnp.vdot(gi, a[k]) for k, gi in grad(a).items())))(moved)
      want = {k: np.abs(alpha[k] * back[k]) for k in alpha}
    else:       # v is the gradient at α: H(α') g(α)
      back = jax.jit(jax.grad(lambda a: sum(jnp.vdot(gi, g[k]) for k, gi in grad(a).items())))(moved)
      want = {k: alpha[k] * back[k] for k in alpha}
    for k in alpha:
      np.testing.assert_allclose(sal['grasp'][k], want[k], rtol=1e-7, atol=1e-14)
    # SynFlow: Σ logits of one all-ones image, BatchNorm in training mode, at |θ|; α signed on DARTS
    a_in = alpha if darts else jax.tree_util.tree_map(jnp.abs, alpha)
    r = jax.jit(jax.grad(lambda a: jnp.sum(model.apply(v_abs, jnp.ones((1, 8, 8, 1)), a, train=True,
                                                       mutable=['batch_stats'])[0])))(a_in)
    for k in alpha:
      np.testing.assert_allclose(sal['synflow'][k], np.abs(a_in[k] * r[k]), rtol=1e-5, atol=1e-12)
    # and the code's convention is not the paper's
    paper = jax.jit(saliency_fn(model, 'grasp', space.forward_over_reverse))(v, alpha, batch)
    flat = lambda t: np.concatenate([np.ravel(t[k]) for k in sorted(t)])
    assert not np.allclose(flat(paper), flat(sal['grasp']), rtol=1e-2, atol=0)


def test_an_unknown_convention_is_refused():
  # (the code convention end to end: tests/test_cli.py::test_free)
  with pytest.raises(ValueError, match=r"convention \(--convention\) must be one of paper, code"):
    free.FreeConfig(convention='notebook')
