"""The layers of the README's "Layout of the code": a module imports from its own layer,
the layers listed before it, and the infrastructure."""
import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1] / 'jaxnas'
LAYERS = [
    ('core', ['options', 'relax', 'hypergrad', 'optim']),
    ('models', ['kernels', 'ops', 'spaces.cells']),
    ('proxies', ['proxies']),
    ('spaces', ['spaces']),
    ('application', ['config', 'search_config', 'search', 'warmup', 'train_config', 'train',
                     'free', 'zc', 'pipeline', 'loop', 'checkpoint', 'outputs', 'plot',
                     'benchmark_table', 'cli']),
]
INFRASTRUCTURE = ['xla', 'sharding', 'data']
# what the infrastructure may read of the layers: the kernel path, which a program's key records
INFRASTRUCTURE_READS = {('xla', 'kernels')}


def _name(path: pathlib.Path) -> str:
  parts = path.relative_to(ROOT).with_suffix('').parts
  return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def _layer(module: str):
  """(rank, name) of a jaxnas module: the layer whose longest prefix names it."""
  best = None
  for rank, (layer, prefixes) in enumerate(LAYERS):
    for p in prefixes:
      if (module == p or module.startswith(p + '.')) and (best is None or len(p) > best[2]):
        best = (rank, layer, len(p))
  if any(module == p or module.startswith(p + '.') for p in INFRASTRUCTURE):
    return None
  assert best is not None, f'jaxnas.{module} is in no layer of this test (and the README)'
  return best[:2]


def _imports(path: pathlib.Path):
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith('jaxnas'):
      base = node.module.removeprefix('jaxnas').lstrip('.')
      for alias in node.names:   # a module (`from jaxnas.spaces import cells`), or a name in one
        module = f'{base}.{alias.name}'.lstrip('.')
        path = ROOT / module.replace('.', '/')
        yield module if path.is_dir() or path.with_suffix('.py').exists() else base
    elif isinstance(node, ast.Import):
      for alias in node.names:
        if alias.name.startswith('jaxnas.'):
          yield alias.name.removeprefix('jaxnas.')


def test_every_module_imports_only_its_layer_and_the_layers_before_it():
  wrong = []
  modules = sorted(p for p in ROOT.rglob('*.py') if _name(p))
  assert len(modules) > 30
  for path in modules:
    me = _name(path)
    mine = _layer(me)
    for target in _imports(path):
      if not target:
        continue
      theirs = _layer(target)
      if theirs is None:   # the infrastructure: for everyone
        continue
      if mine is None:
        if (me, target.split('.')[0]) not in INFRASTRUCTURE_READS:
          wrong.append(f'{me} (infrastructure) imports {target} ({theirs[1]})')
      elif theirs[0] > mine[0]:
        wrong.append(f'{me} ({mine[1]}) imports {target} ({theirs[1]})')
  assert not wrong, '\n'.join(wrong)
