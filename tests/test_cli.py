"""The command line as a user meets it: every sub-command through ``jaxnas.cli.main``,
the README's commands against the parser, errors as messages, and an import that
changes nothing global."""
import json
import os
import pathlib
import re
import shlex
import subprocess
import sys

import numpy as np
import pytest

from conftest import table_row
from jaxnas import cli, config as config_lib, search
from jaxnas.options import option_flag
from jaxnas.spaces import get_space

ROOT = pathlib.Path(__file__).resolve().parents[1]
NB201 = '|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|skip_connect~0|avg_pool_3x3~1|nor_conv_3x3~2|'
# the tiniest search that exercises a command: NAS-Bench-201, C=4, one cell per stage, 8x8 digits
TINY = ['--space', 'nb201', '--channels', '4', '--layers', '1', '--batch-size', '32']


pytestmark = pytest.mark.usefixtures('cli_caches')  # conftest


def run_cli(capsys, *argv):
  """(exit status, stdout, stderr) of ``jaxnas ARGV``."""
  status = cli.main([str(a) for a in argv])
  out, err = capsys.readouterr()
  return status, out, err


def test_params(capsys):
  status, out, _ = run_cli(capsys, 'params', '--space', 'darts', '--supernet', '--channels', 16,
                           '--layers', 8)
  assert status == 0 and out.splitlines() == ['darts supernet', '1930618']
  status, out, _ = run_cli(capsys, 'params', '--space', 'nb201', '--genotype', 'NB201_BEST')
  assert status == 0 and out.splitlines()[-1] == '1288506'


def _benchmark_line(row):
  return f'benchmark table: a {row[0]:.2f}, b {row[1]:.2f}'


def test_search_writes_its_genotype_and_resumes_longer(tmp_path, capsys, nb201_table, monkeypatch,
                                                       compilation_cache):
  wd = tmp_path / 'search'
  # the first run in a cache folder of its own: the command line keeps its traced steps there
  monkeypatch.setenv('JAXNAS_CACHE_DIR', str(tmp_path / 'cache'))
  status, out, err = run_cli(capsys, 'search', *TINY, '--epochs', 1, '--workdir', wd, '--no-progress',
                             '--benchmark-table', nb201_table)
  assert status == 0, err
  assert len(list((tmp_path / 'cache' / 'programs').glob('*.jaxprogram'))) == 1
  monkeypatch.setenv('JAXNAS_CACHE_DIR', str(compilation_cache))
  lines = out.splitlines()
  genotype = get_space('nb201').load_genotype(lines[0].removeprefix('genotype: '))
  assert lines[0].startswith('genotype: |')
  assert lines[1] == _benchmark_line(table_row(str(genotype)))
  for name in ('config.json', 'metrics.jsonl', 'genotype.json', 'genotype.txt', 'alpha.npz',
               'cell.png', 'alpha_cell.png', 'curves.png'):
    assert (wd / name).stat().st_size > 0 and name in lines[2], name
  assert get_space('nb201').load_genotype(str(wd / 'genotype.json')) == genotype
  assert json.load(open(wd / 'genotype.json'))['benchmark'] == dict(zip('ab', table_row(str(genotype))))
  # a used workdir is refused without --resume; --resume continues it for a longer run
  status, _, err = run_cli(capsys, 'search', *TINY, '--epochs', 1, '--workdir', wd, '--no-progress')
  assert status == 2 and 'pass --resume' in err and len(err.splitlines()) == 1
  status, _, err = run_cli(capsys, 'search', *TINY, '--epochs', 1, '--lr', 0.05, '--workdir', wd,
                           '--resume', '--no-progress')
  assert status == 2 and 'config differs in optim.lr: 0.025 -> 0.05' in err
  status, out, err = run_cli(capsys, 'search', *TINY, '--epochs', 2, '--workdir', wd, '--resume',
                             '--no-progress', '--benchmark-table', nb201_table)
  assert status == 0, err
  records = [json.loads(line) for line in open(wd / 'metrics.jsonl')]
  assert [r['epoch'] for r in records] == [0, 1]
  # every epoch: the cell derived at its end, looked up
  for r in records:
    assert r['benchmark'] == dict(zip('ab', table_row(r['genotype']))), r
  assert json.load(open(wd / 'config.json'))['size']['epochs'] == 2


def test_a_corrupt_checkpoint_is_a_message(tmp_path, capsys):
  wd = tmp_path / 'search'
  assert run_cli(capsys, 'search', *TINY, '--epochs', 1, '--workdir', wd, '--no-progress')[0] == 0
  for f in (wd / 'checkpoints').rglob('*'):
    if f.is_file() and f.name != '_CHECKPOINT_METADATA':
      f.write_bytes(b'\0garbage')
  status, _, err = run_cli(capsys, 'search', *TINY, '--epochs', 2, '--workdir', wd, '--resume',
                           '--no-progress')
  assert status == 2
  assert re.search(r'cannot read checkpoint \d+ in .*checkpoints .*Delete that step folder', err)
  assert 'Traceback' not in err


def test_free(tmp_path, capsys, nb201_table):
  wd = tmp_path / 'free'
  status, out, err = run_cli(capsys, 'free', '--space', 'nb201', '--saliency', 'synflow',
                             '--channels', 4, '--layers', 1, '--batch-size', 16, '--workdir', wd,
                             '--benchmark-table', nb201_table)
  assert status == 0, err
  lines = out.splitlines()
  genotype = get_space('nb201').load_genotype(lines[0].removeprefix('genotype: '))
  assert lines[1] == _benchmark_line(table_row(str(genotype)))
  assert re.fullmatch(r'wall time: [\d.]+ s \(compile included\), [\d.]+ s \(the saliency alone, '
                      r'compiled\)', lines[2])
  assert get_space('nb201').load_genotype(str(wd / 'genotype.json')) == genotype
  assert json.load(open(wd / 'genotype.json'))['benchmark'] == dict(zip('ab', table_row(str(genotype))))
  saliency = np.load(wd / 'saliency.npz')['cell']
  assert saliency.shape == (6, 5) and np.isfinite(saliency).all()
  # the authors' notebooks' GraSP (signed: α ⊙ H(α')g)
  status, out, err = run_cli(capsys, 'free', '--space', 'nb201', '--saliency', 'grasp', '--convention',
                             'code', '--channels', 4, '--layers', 1, '--batch-size', 16, '--workdir', wd)
  assert status == 0, err
  saliency = np.load(wd / 'saliency.npz')['cell']
  assert np.isfinite(saliency).all() and (saliency < 0).any()


def test_train(tmp_path, capsys):
  wd = tmp_path / 'train'
  status, out, err = run_cli(capsys, 'train', '--space', 'nb201', '--genotype', NB201, '--channels', 4,
                             '--layers', 1, '--batch-size', 32, '--epochs', 1, '--workdir', wd,
                             '--no-progress')
  assert status == 0, err
  report = json.load(open(wd / 'report.json'))
  assert f"parameters: {report['params']:,}" in out
  assert re.search(r'test accuracy on digits: [\d.]+% after 1 epochs', out)
  assert report['genotype'] == NB201 and 0 <= report['test_acc'] <= 1
  for name in ('metrics.jsonl', 'curves.png', 'config.json'):
    assert (wd / name).exists(), name


def test_run(tmp_path, capsys, nb201_table):
  wd = tmp_path / 'run'
  argv = ['run', *TINY, '--epochs', 1, '--train.channels', 4, '--train.layers', 1,
          '--train.batch-size', 32, '--train.epochs', 1, '--workdir', wd, '--no-progress',
          '--benchmark-table', nb201_table]
  status, out, err = run_cli(capsys, *argv)
  assert status == 0, err
  report = json.load(open(wd / 'report.json'))
  assert report['genotype'] == (wd / 'search' / 'genotype.txt').read_text().strip()
  assert report['benchmark'] == dict(zip('ab', table_row(report['genotype'])))
  assert _benchmark_line(table_row(report['genotype'])) in out.splitlines()
  assert report['epochs'] == 1 and report['search_epochs'] == 1
  assert re.search(r'search [\d.]+ s; written to ', out)
  assert (wd / 'report.md').read_text().startswith('# jaxnas run: darts1 (softmax) on digits')
  # the train section took its flags: C=4, one cell per stage
  assert json.load(open(wd / 'train' / 'config.json'))['channels'] == 4
  status, out2, err = run_cli(capsys, *argv, '--resume')  # finished stages are skipped
  assert status == 0 and out2.splitlines()[0] == out.splitlines()[0]


@pytest.mark.parametrize('via', ['supernet', 'network'])
def test_zc(tmp_path, capsys, via, nb201_table):
  wd = tmp_path / 'zc'
  status, out, err = run_cli(capsys, 'zc', '--space', 'nb201', '--proxy', 'synflow', '--samples', 3,
                             '--channels', 4, '--layers', 1, '--batch-size', 16, '--via', via,
                             '--workdir', wd, '--benchmark-table', nb201_table)
  assert status == 0, err
  lines = out.splitlines()
  assert lines[0] == f'synflow on 3 nb201 architectures (through the {via}); best first:'
  ranking = json.load(open(wd / 'ranking.json'))['ranking']
  scores = [r['score'] for r in ranking]
  assert len(ranking) == 3 and scores == sorted(scores, reverse=True)
  for r in ranking:
    assert r['benchmark'] == dict(zip('ab', table_row(r['genotype'])))
  assert lines[-2] == f"best: {ranking[0]['genotype']}"
  assert lines[-1] == _benchmark_line(table_row(ranking[0]['genotype']))
  assert (wd / 'genotype.txt').read_text().strip() == ranking[0]['genotype']


def test_zc_ranks_the_candidates_of_a_file(tmp_path, capsys):
  archs = ['|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|',
           '|avg_pool_3x3~0|+|none~0|skip_connect~1|+|none~0|none~1|nor_conv_1x1~2|',
           '|skip_connect~0|+|nor_conv_1x1~0|avg_pool_3x3~1|+|none~0|nor_conv_3x3~1|none~2|']
  text = tmp_path / 'candidates.txt'
  text.write_text('# three cells\n' + '\n'.join(archs + archs[:1]) + '\n\n')  # a repeat is dropped
  listed = tmp_path / 'candidates.json'
  listed.write_text(json.dumps({a: {'val_accuracy': 0} for a in archs}))  # an object keyed by arch
  for path in (text, listed):
    wd = tmp_path / path.suffix[1:]
    status, out, err = run_cli(capsys, 'zc', '--space', 'nb201', '--proxy', 'synflow', '--candidates',
                               path, '--channels', 4, '--layers', 1, '--no-progress', '--workdir', wd)
    assert status == 0, err
    assert out.splitlines()[0] == 'synflow on 3 nb201 architectures (through the supernet); best first:'
    ranking = json.load(open(wd / 'ranking.json'))['ranking']
    assert sorted(r['genotype'] for r in ranking) == sorted(archs)
    assert [r['score'] for r in ranking] == sorted((r['score'] for r in ranking), reverse=True)
  # the cell with the most convolutions has the most paths of the largest weights
  assert ranking[0]['genotype'] == archs[0]
  bad = tmp_path / 'bad.txt'
  bad.write_text(archs[0] + '\n|nor_conv_5x5~0|\n')
  for argv, message in [
      (['--candidates', bad], f'--candidates {bad}, line 2: '),
      (['--candidates', tmp_path / 'missing.txt'], 'missing.txt: no such file'),
      (['--candidates', text, '--samples', '5'], 'give --samples or --candidates, not both')]:
    status, out, err = run_cli(capsys, 'zc', '--space', 'nb201', *argv, '--no-progress',
                               '--workdir', tmp_path / 'err')
    assert status == 2 and message in err, err


def test_user_errors_are_one_message_and_exit_2(tmp_path, capsys):
  cases = [
      (['search', '--batch-size', '0'], 'batch_size (--batch-size) must be >= 1, got 0'),
      (['search', '--channels', '-1'], 'channels (--channels) must be >= 1, got -1'),
      (['search', '--lr', '-1'], 'lr (--lr) must be > 0, got -1.0'),
      (['search', '--epochs', '0'], 'epochs (--epochs) must be >= 1, got 0'),
      (['search', '--method', 'darts3'], "method (--method) must be one of darts1, "),
      (['free', '--alpha-scale', '0'], 'alpha_scale (--alpha-scale) must be > 0, got 0.0'),
      (['run', '--train.lr', '-1'], 'lr (--train.lr) must be > 0, got -1.0'),
      (['search', '--sge-q', '5'], '--sge-q is an option of method sge, but the method is darts1: '
                                  'it would do nothing'),
      (['search', '--method', 'sge', '--sge-q', '0'], 'q (--sge-q) must be >= 1, got 0'),
      (['train', '--space', 'nb201', '--workdir', tmp_path / 't'], 'give --genotype'),
      (['train', '--space', 'nb201', '--genotype', 'nope', '--workdir', tmp_path / 't'],
       "'nope' is not a known nb201 genotype name"),
      (['params', '--space', 'darts', '--genotype', '|nor_conv_3x3~0|'], 'malformed DARTS genotype'),
      (['search', '--dataset', 'npz:' + str(tmp_path / 'missing.npz')], 'no such .npz file'),
      (['zc', '--proxy', 'synflow', '--ntk-statistic', 'trace'],
       '--ntk-statistic is an option of proxy ntk, but the proxy is synflow: it would do nothing'),
      (['zc', '--proxy', 'ntk', '--ntk-statistic', 'rank'],
       "statistic (--ntk-statistic) must be one of cond, trace, logdet, got 'rank'"),
      (['free', '--space', 'darts', '--benchmark-table', tmp_path / 'table.json'],
       '--benchmark-table: the darts space has no benchmark table (spaces with one: nb201)'),
      (['search', '--space', 'nb201', '--benchmark-table', tmp_path / 'table.json',
        '--workdir', tmp_path / 's'], f"--benchmark-table {tmp_path / 'table.json'}: no such file"),
      (['search', '--dataset', 'cifar10', '--data-dir', tmp_path / 'tfds', '--workdir', tmp_path / 's'],
       "data set 'cifar10' (cifar10) is not prepared as ArrayRecord in"),
  ]
  for argv, message in cases:
    status, out, err = run_cli(capsys, *argv)
    assert status == 2, (argv, err)
    assert err.startswith(f'jaxnas {argv[0]}: error: ') and message in err, (argv, err)
    assert 'Traceback' not in err and out == ''
  # the parser's own refusals (tyro's): a value of the wrong type, an unknown flag
  for argv, message in ((['search', '--epochs', 'ten'], '--epochs'),
                        (['search', '--no-such-flag'], 'Unrecognized options: --no-such-flag')):
    with pytest.raises(SystemExit) as e:
      cli.main(argv)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_search_help_lists_every_flag_with_its_help_and_the_recipes(capsys, monkeypatch):
  monkeypatch.setenv('COLUMNS', '200')   # one line per flag
  with pytest.raises(SystemExit):
    cli.main(['search', '--help'])
  out = capsys.readouterr().out
  flags = set(re.findall(r'(--[a-z0-9.-]+)', out))
  # every section's fields, flat; the warm-up's under its prefix; every registry option
  for field in ('dataset', 'channels', 'lr', 'alpha_lr', 'seed', 'checkpoint_every'):
    assert config_lib.flag(field) in flags, field
  assert {'--zen-warmup.epochs', '--zen-warmup.moves', '--no-remat', '--resume', '--no-progress'} <= flags
  for registry in (search.hypergrad.ESTIMATORS, search.relax.RELAXATIONS):
    for entry, spec in registry.items():
      assert {option_flag(entry, key) for key in spec.options} <= flags, entry
  assert re.search(r'--sge-q \{None\}\|INT\s+Gaussian directions Q \(SGE-NAS: 10\) \(method sge; '
                   r'default: 10\)', out)
  assert re.search(r'--lr \{None\}\|FLOAT\s+weight learning rate \(cosine per epoch\) \(None: the '
                   r"recipe's, else 0.025\)", out)
  # the recipes, in the description
  assert re.search(r'--relaxation pc: --batch-size 256, --lr 0.1, --lr-min 0.0, --alpha-lr 0.0006,'
                   r'\s+--alpha-warmup-epochs 15', ' '.join(out.replace('│', ' ').split()))


def test_an_internal_error_is_a_message_and_debug_shows_the_traceback(tmp_path, capsys, monkeypatch):
  def broken(config, **kw):
    raise KeyError('a defect')
  monkeypatch.setitem(cli.COMMANDS, 'free', cli.COMMANDS['free']._replace(run=broken))
  status, _, err = run_cli(capsys, 'free')
  assert status == 1
  assert err.splitlines() == ["jaxnas free: error: 'a defect'",
                              '(KeyError inside jaxnas: run again with --debug for the traceback, '
                              'and report it with that output)']
  with pytest.raises(KeyError, match='a defect'):
    cli.main(['--debug', 'free'])
  monkeypatch.setenv('JAXNAS_DEBUG', '1')
  with pytest.raises(KeyError, match='a defect'):
    cli.main(['free'])


def _readme_commands():
  """Every ``jaxnas ...`` command in the READMEs' shell blocks, as argv lists."""
  for path in (ROOT / 'README.md', ROOT / 'experiments' / 'README.md'):
    blocks = re.findall(r'```bash\n(.*?)```', path.read_text(), re.S)
    for line in '\n'.join(blocks).splitlines():
      line = line.split(' # ')[0].split('  #')[0].strip()
      for part in line.split('&&'):
        words = shlex.split(part)
        while words and re.fullmatch(r'[A-Z_]+=\S*', words[0]):  # VAR=value prefixes
          words = words[1:]
        if words and words[0] == 'jaxnas':
          yield path.name, words[1:]


def test_every_readme_command_parses_and_builds_its_config():
  commands = list(_readme_commands())
  assert {argv[0] if argv[0] != '--distributed' else argv[1] for _, argv in commands} >= set(cli.COMMANDS)
  for source, argv in commands:
    args = cli.top_parser().parse_args(argv)
    try:
      cli.parse_command(args)   # the command's flags, names and limits checked
    except SystemExit:
      pytest.fail(f'{source}: jaxnas {" ".join(argv)} is refused by the parser')


def test_importing_jaxnas_changes_nothing_global(tmp_path):
  code = '''
import os, sys, matplotlib
before = (os.environ.get('XLA_FLAGS'), dict.__getitem__(matplotlib.rcParams, 'backend'))
import jaxnas, jaxnas.search, jaxnas.cli, jaxnas.plot
from jaxnas.spaces import nb201
jaxnas.plot.draw_cell(nb201.SPACE, nb201.GENOTYPES['NB201_BEST'], sys.argv[1], 'cell')
after = (os.environ.get('XLA_FLAGS'), dict.__getitem__(matplotlib.rcParams, 'backend'))
assert after == before, (before, after)
assert 'matplotlib.pyplot' not in sys.modules
assert callable(jaxnas.search.search) and jaxnas.search.SearchConfig is jaxnas.SearchConfig
print('ok')
'''
  env = {k: v for k, v in os.environ.items() if k not in ('XLA_FLAGS', 'MPLBACKEND')}
  out = subprocess.run([sys.executable, '-c', code, str(tmp_path / 'cell.png')], env=env,
                       capture_output=True, text=True, timeout=120)
  assert out.stdout.strip() == 'ok', out.stderr
  assert (tmp_path / 'cell.png').stat().st_size > 0


def _readme_recipes():
  """The rows of the README's "Recipes" table: (recipe, flag, value, DARTS' value, source)."""
  text = (ROOT / 'README.md').read_text().split('### Recipes', 1)[1].split('\n#', 1)[0]
  return [tuple(c.strip().strip('`') for c in line.strip().strip('|').split('|'))
          for line in text.splitlines() if line.startswith('| `--')]


def test_the_readme_recipe_table_is_what_each_recipe_resolves_to():
  from jaxnas.search_config import SearchConfig, recipe_rows
  rows = _readme_recipes()
  assert len(rows) >= 15
  assert {(r[0], r[1]) for r in rows} == {(r[0], r[1]) for r in recipe_rows()}  # both ways
  sources = {(r[0], r[1]): r[4] for r in recipe_rows()}
  paths = {config_lib.flag(field): (section, field)
           for section, (cls, _) in config_lib.sections(SearchConfig).items()
           for field in config_lib.recipe_base(cls)}
  plain = config_lib.build(SearchConfig, dataset='cifar10', devices='1')
  for recipe, flag, value, darts_value, source in rows:
    assert source == sources[recipe, flag]
    section, field = paths[flag]
    base = config_lib.recipe_base(config_lib.sections(SearchConfig)[section][0])[field]
    assert darts_value == str(base), (flag, darts_value, base)
    # what a run of that recipe resolves to, on real data's 50 epochs
    kind, name = recipe.split()
    got = cli.parse_command(cli.top_parser().parse_args(
        ['search', kind, name, '--dataset', 'cifar10', '--devices', '1']))['config']
    assert str(getattr(getattr(got, section), field)) == value, (recipe, flag, got, value)
    # and a run of DARTS resolves to DARTS' value
    assert getattr(getattr(plain, section), field) == base


def test_a_pc_darts_run_records_its_recipe(tmp_path, capsys):
  wd = tmp_path / 'pc'
  status, _, err = run_cli(capsys, 'search', '--space', 'nb201', '--channels', '4', '--layers', '1',
                           '--relaxation', 'pc', '--pc-k', '2', '--epochs', '1', '--workdir', wd,
                           '--no-progress')
  assert status == 0, err
  cfg = json.load(open(wd / 'config.json'))
  assert cfg['size']['batch_size'] == 256 and cfg['optim']['lr'] == 0.1
  assert cfg['optim']['lr_min'] == 0.0 and cfg['optim']['alpha_lr'] == 6e-4
  assert cfg['optim']['alpha_warmup_epochs'] == 0   # 15 of 50 epochs: 0 of 1
  assert cfg['optim']['weight_decay'] == 5e-4 and cfg['optim']['nesterov']   # NAS-Bench-201's


def test_a_fair_darts_search_below_its_threshold_is_a_message_and_keeps_alpha(tmp_path, capsys):
  # Fair DARTS starts at α = 0 (σ = 0.5): one epoch leaves every σ below 0.85
  wd = tmp_path / 'fair'
  status, _, err = run_cli(capsys, 'search', *TINY, '--relaxation', 'fair', '--epochs', 1,
                           '--workdir', wd, '--no-progress')
  assert status == 2 and 'reaches the threshold 0.85: lower it (--fair-threshold)' in err
  assert 'alpha.npz' in err and np.load(wd / 'alpha.npz')['alpha_cell'].shape == (6, 4)
  record = json.loads(open(wd / 'metrics.jsonl').readline())
  assert record['genotype'].startswith('none yet: no op of the cell reaches the threshold')
