"""experiments/nb201_tables.py end to end on a tiny config: rows written as they end,
cells looked up in the table, a second run continues instead of repeating."""
import json
import pathlib
import sys

import numpy as np
import pytest

from conftest import table_row
from jaxnas import data as data_lib

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'experiments'))

pytestmark = pytest.mark.usefixtures('cli_caches')  # conftest


def test_nb201_tables_looks_up_every_run_and_continues(tmp_path, nb201_table, capsys):
  import nb201_tables
  ds = data_lib.load('digits')
  npz = tmp_path / 'digits.npz'
  np.savez(npz, x_train=ds.x_train, y_train=ds.y_train, x_test=ds.x_test, y_test=ds.y_test)
  config = tmp_path / 'config.json'
  config.write_text(json.dumps({
      'protocols': {'tiny': {'about': 'C=4, one cell per stage', 'channels': 4, 'layers': 1}},
      'rows': [{'name': 'FreeDARTS SynFlow', 'kind': 'free', 'protocol': 'tiny', 'saliency': 'synflow',
                'seeds': [0, 1], 'paper': {'cifar10': '93.52 ± 0.11', 'source': 'FreeDARTS'}},
               {'name': 'zc SynFlow, N=3', 'kind': 'zc', 'protocol': 'tiny', 'proxy': 'synflow',
                'samples': 3, 'seeds': [0]},
               {'name': 'DARTS', 'kind': 'search', 'protocol': 'tiny', 'method': 'darts1',
                'epochs': 2, 'batch_size': 32, 'seeds': [0]},
               {'name': 'random baseline', 'kind': 'population'}]}))
  argv = ['--dataset', f'npz:{npz}', '--config', str(config), '--workdir', str(tmp_path / 'runs'),
          '--table', str(nb201_table), '--results', str(tmp_path / 'results')]
  assert nb201_tables.main(argv) == 0
  results = json.loads((tmp_path / 'results.json').read_text())
  assert [(r['row'], r['seed']) for r in results['runs']] == [
      ('FreeDARTS SynFlow', 0), ('FreeDARTS SynFlow', 1), ('zc SynFlow, N=3', 0), ('DARTS', 0)]
  for r in results['runs']:
    assert r['benchmark'] == dict(zip('ab', table_row(r['cell'])))
  darts = results['runs'][-1]
  assert len(darts['curve']) == 2 and darts['curve'][-1] == table_row(darts['cell'])[0]
  assert results['data']['train_images'] == len(ds.x_train)
  md = (tmp_path / 'results.md').read_text()
  assert (tmp_path / 'results_curves.png').stat().st_size > 0
  summary = (tmp_path / 'results_summary.md').read_text()
  assert '| FreeDARTS SynFlow | tiny | 2 |' in summary and '| random cell' in summary
  free = [table_row(r['cell'])[0] for r in results['runs'][:2]]
  assert f'| FreeDARTS SynFlow | tiny | 2 |' in md
  assert f'{np.mean(free):.2f} ± {np.std(free, ddof=1):.2f}' in md and '93.52 ± 0.11 [1] |' in md and '[1] FreeDARTS' in md
  everything = np.array([table_row(a) for a in json.loads(nb201_table.read_text())['archs']])
  assert f'| optimum | — | — | — | {everything[:, 0].max():.2f} | {everything[:, 1].max():.2f} | — |' in md
  assert (f'| random cell (all 15,625: mean ± std) | — | — | — | {everything[:, 0].mean():.2f} ± '
          f'{everything[:, 0].std():.2f} |') in md
  capsys.readouterr()
  assert nb201_tables.main(argv) == 0  # everything done: nothing runs again
  assert '0 runs to do (4 done in' in capsys.readouterr().out
