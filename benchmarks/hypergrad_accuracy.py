"""How close each hypergradient estimator comes to the exact hypergradient, and at what cost.

    python benchmarks/hypergrad_accuracy.py                 # ridge and NAS-Bench-201 (~15 min)
    python benchmarks/hypergrad_accuracy.py --problems ridge

Two problems:

* ``ridge``: ridge regression with α = log of the per-feature penalty
  (jaxnas.hypergrad.ridge), float64, weights at the lower-level solution
  w*(α). Exact: the closed form ``dL_val(w*(α))/dα``.
* ``nb201``: a NAS-Bench-201 supernet (C=8, one cell per stage) on batches of
  the embedded digits, float32, weights after a short first-order search.
  Exact: reverse mode through the same N inner SGD steps (``unroll``), the
  quantity SGE estimates (N = 1 by default: see below).

Every estimator uses the same inner step size η (DARTS' ξ, SGE's p, the
Neumann step; default 0.01, SGE-NAS' p) and plain SGD (no momentum), so that
darts2 is unroll with N = 1, and reads the first of the same training
batches. On the supernet the reference is unroll with N = 1
(SGE-NAS' default N): the training-loss Hessian of this small supernet has
eigenvalues of magnitude ~3e3 (power iteration found λ ≈ −3.05e3 after the
warm-up), so with η = 0.01 every further unrolled step multiplies the
hypergradient by up to |1 − ηλ| ≈ 30 (measured norms: 0.74, 12.5, 244 for
N = 1, 2, 5) and a long unroll is no meaningful target; pass --n to see it. Printed per estimator: cosine similarity and relative error to the
exact hypergradient (SGE/ESJ: mean over seeds), and seconds per estimate
(compiled, median; compile time apart). Then the cost of one SGE estimate
against Q on the supernet (vmapped: it should grow sub-linearly until the
two cores are busy). Writes benchmarks/results/hypergrad_accuracy.json and
hypergrad_accuracy.png (error against seconds).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import RESULTS, write_results  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import jaxnas.xla

jaxnas.xla.configure()  # jaxnas' CPU flags, before JAX starts its backend
from jaxnas import hypergrad  # noqa: E402
from jaxnas.hypergrad import Batches, WeightOpt, Weights, ridge  # noqa: E402


def estimators(eta: float, n: int) -> dict[str, tuple[str, dict, int]]:
  """name -> (registered estimator, options, training batches per estimate)."""
  return {
      'darts1': ('darts1', {}),
      'darts2': ('darts2', {}),
      'darts2-fd': ('darts2-fd', {}),
      'multistep-5': ('multistep', {'n': 5}),
      'sge-q1': ('sge', {'q': 1, 'p': eta, 'n': n}),
      'sge-q10': ('sge', {'q': 10, 'p': eta, 'n': n}),
      'sge-q100': ('sge', {'q': 100, 'p': eta, 'chunk': 25, 'n': n}),
      'esj': ('esj', {'p': eta, 'n': n}),
      'implicit-cg': ('implicit', {'solver': 'cg', 'k': 20}),
      'implicit-neumann': ('implicit', {'solver': 'neumann', 'k': 20, 'eta': eta}),
      f'unroll-n{n}': ('unroll', {'p': eta, 'n': n}),
  }


def _sgd(eta):
  return WeightOpt(optax.sgd(eta), lambda step: eta)


def _time(fn, *args, repeats=3):
  t0 = time.perf_counter()
  jax.block_until_ready(fn(*args))
  first = time.perf_counter() - t0
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t0)
  return first - min(times), float(np.median(times))


def _compare(g, exact):
  g, exact = np.ravel(np.asarray(g, np.float64)), np.ravel(np.asarray(exact, np.float64))
  gn = np.linalg.norm(g)
  cos = float(g @ exact / (gn * np.linalg.norm(exact))) if gn > 0 else 0.0
  return cos, float(np.linalg.norm(g - exact) / np.linalg.norm(exact))


def evaluate(problem_name, problem, weights, alpha, make_batches, exact, eta, n, seeds):
  """One row per estimator: cosine, relative error, seconds."""
  flat = lambda t: jnp.concatenate([jnp.ravel(a) for a in jax.tree_util.tree_leaves(t)])
  rows = []
  for name, (method, options) in estimators(eta, n).items():
    est = hypergrad.make(method, **options)
    batches = make_batches(est.train_batches)
    fn = jax.jit(lambda w, a, b, k: flat(est(problem, _sgd(eta), w, a, b, k).alpha_grad))
    stochastic = method in ('sge', 'esj')
    compile_s, seconds = _time(fn, weights, alpha, batches, jax.random.key(0))
    scores = [_compare(fn(weights, alpha, batches, jax.random.key(s)), exact)
              for s in range(seeds if stochastic else 1)]
    cos, err = np.mean(scores, axis=0)
    rows.append(dict(problem=problem_name, estimator=name, cosine=float(cos), rel_error=float(err),
                     seconds=seconds, compile_s=compile_s))
    print(f'{problem_name:6s} {name:17s} {cos:8.4f} {err:10.3e} {seconds:10.4f} {compile_s:9.1f}',
          flush=True)
  return rows


def ridge_rows(eta, n, seeds):
  with jax.enable_x64():
    data = ridge.make_data(jax.random.key(0))
    alpha = jnp.log(jnp.linspace(0.05, 0.5, 6))
    w = ridge.solve(data, alpha)
    opt_state = optax.sgd(eta).init(w)
    weights = Weights(w, (), opt_state, jnp.asarray(0))
    train = (data.x_train, data.y_train)

    def make_batches(k):
      return Batches(jax.tree_util.tree_map(lambda a: jnp.stack([a] * k), train),
                     (data.x_val, data.y_val))
    return evaluate('ridge', ridge.problem(), weights, alpha, make_batches,
                    ridge.hypergradient(data, alpha), eta, n, seeds)


def _nb201_setup(batch_size, warmup_steps):
  from jaxnas import config as config_lib
  from jaxnas.search import Search, SearchConfig
  cfg = config_lib.build(SearchConfig, space='nb201', channels=8, layers=1, batch_size=batch_size,
                        epochs=1, workdir='/tmp/unused')
  run = Search(cfg)
  state = run.init_state()
  for i in range(warmup_steps):  # a short first-order search, so the weights are not at init
    state, _ = run.step_fn(state, run.batch(*divmod(i, run.steps_per_epoch)), run.epochs)
  rng = np.random.default_rng(0)
  norm = run.data.normalize  # the split holds images in [0, 1]

  def make_batches(k):
    tr = rng.choice(len(run.train.x), (k, batch_size), replace=True)
    va = np.random.default_rng(1).choice(len(run.val.x), batch_size, replace=False)
    return Batches((norm(run.train.x[tr]), run.train.y[tr]), (norm(run.val.x[va]), run.val.y[va]))
  weights = Weights(state.params, state.batch_stats, _sgd(1.0).tx.init(state.params),
                    jnp.asarray(0))
  from jaxnas.search import make_problem
  problem = make_problem(run.spec, jax.random.key(0), 0.0)
  return problem, weights, state.alpha, make_batches


def nb201_rows(eta, n, seeds, batch_size, warmup_steps, qs):
  problem, weights, alpha, make_batches = _nb201_setup(batch_size, warmup_steps)
  # Every estimator reads the first k of the same training batches, and the same validation batch.
  stack = make_batches(max(n, 5))

  def batches_for(k):
    return Batches(jax.tree_util.tree_map(lambda a: a[:k], stack.train), stack.val)
  exact_fn = jax.jit(lambda w, a, b: hypergrad.unrolled.unroll(problem, _sgd(eta), w, a, b, None,
                                                                n=n, p=eta).alpha_grad)
  exact = np.concatenate([np.ravel(v) for v in
                          jax.tree_util.tree_leaves(exact_fn(weights, alpha, batches_for(n)))])
  rows = evaluate('nb201', problem, weights, alpha, batches_for, exact, eta, n, seeds)
  curve = []
  print(f'\nSGE on the nb201 supernet: seconds per estimate against Q (N={n}, batch {batch_size})')
  print(f'{"Q":>5s} {"seconds":>9s} {"s per direction":>16s}')
  for q in qs:
    fn = jax.jit(lambda w, a, b, k: hypergrad.unrolled.sge(problem, _sgd(eta), w, a, b, k, q=q,
                                                             n=n, p=eta).alpha_grad)
    _, seconds = _time(fn, weights, alpha, batches_for(n), jax.random.key(0), repeats=2)
    curve.append(dict(problem='nb201-sge-cost', q=q, seconds=seconds))
    print(f'{q:5d} {seconds:9.3f} {seconds / q:16.4f}', flush=True)
  return rows + curve


def draw(rows, path):
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  problems = [p for p in ('ridge', 'nb201') if any(r['problem'] == p for r in rows)]
  fig, axes = plt.subplots(1, len(problems), figsize=(6 * len(problems), 4.5), squeeze=False)
  for ax, p in zip(axes[0], problems):
    for r in (r for r in rows if r['problem'] == p):
      ax.scatter(r['seconds'], max(r['rel_error'], 1e-16))
      ax.annotate(r['estimator'], (r['seconds'], max(r['rel_error'], 1e-16)), fontsize=7)
    ax.set(xscale='log', yscale='log', xlabel='seconds per estimate',
           ylabel='relative error to the exact hypergradient', title=p)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  print(f'wrote {path}')


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--problems', default='ridge,nb201')
  p.add_argument('--eta', type=float, default=0.01,
                 help='inner step size (ξ, p, Neumann step); SGE-NAS\' p')
  p.add_argument('--n', type=int, default=1, help='inner steps of unroll / sge / esj (nb201)')
  p.add_argument('--seeds', type=int, default=5, help='SGE/ESJ estimates averaged per row')
  p.add_argument('--batch-size', type=int, default=64)
  p.add_argument('--warmup-steps', type=int, default=20)
  p.add_argument('--qs', default='1,2,4,8,16,32')
  p.add_argument('--out', default=os.path.join(RESULTS, 'hypergrad_accuracy.json'))
  args = p.parse_args()
  print(f'{"problem":6s} {"estimator":17s} {"cosine":>8s} {"rel error":>10s} {"seconds":>10s} '
        f'{"compile s":>9s}', flush=True)
  rows = []
  problems = args.problems.split(',')
  if 'ridge' in problems:
    rows += ridge_rows(0.5, 20, args.seeds)
  if 'nb201' in problems:
    rows += nb201_rows(args.eta, args.n, args.seeds, args.batch_size, args.warmup_steps,
                       [int(q) for q in args.qs.split(',')])
  write_results(args.out, rows, key=('problem', 'estimator', 'q'))
  draw([r for r in rows if 'estimator' in r], args.out.replace('.json', '.png'))


if __name__ == '__main__':
  main()
