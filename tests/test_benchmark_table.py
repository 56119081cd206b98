"""The look-up of a derived cell in a tabular benchmark, and its errors."""
import json

import pytest

from conftest import table_row
from jaxnas import benchmark_table
from jaxnas.spaces import get_space

CELL = '|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_1x1~1|+|skip_connect~0|nor_conv_1x1~1|nor_conv_3x3~2|'


def test_a_cell_is_looked_up_by_its_arch_string(nb201_table):
  genotype = get_space('nb201').load_genotype(CELL)
  # 3·1 + 3·2 + 2·3 + 1·4 + 2·5 + 3·6 = 47
  assert table_row(CELL) == [47.0, 47.5]
  assert benchmark_table.lookup(str(nb201_table), 'nb201', genotype) == {'a': 47.0, 'b': 47.5}
  assert benchmark_table.lookup(None, 'nb201', genotype) is None
  assert len(benchmark_table.load(str(nb201_table)).rows) == 5 ** 6


def test_the_projects_table_is_nas_bench_201s():
  # the published optimum and DARTS' collapse onto skip connections (54.30 on CIFAR-10)
  table = benchmark_table.load('benchmarks/nb201_test_acc_200ep.json')
  assert len(table.rows) == 15_625
  assert [round(max(r[i] for r in table.rows.values()), 2) for i in range(3)] == [94.37, 73.51, 47.31]
  skip = '|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|'
  assert round(table.rows[skip][0], 2) == 54.30


def test_errors_say_what_is_wrong(tmp_path, nb201_table):
  genotype = get_space('nb201').load_genotype(CELL)
  short = tmp_path / 'short.json'
  short.write_text(json.dumps({'columns': ['a'], 'archs': {'|none~0|+|none~0|none~1|+|none~0|none~1|none~2|': [1]}}))
  not_json = tmp_path / 'table.json'
  not_json.write_text('{"columns": ["a"], "archs": {')
  bad_row = tmp_path / 'row.json'
  bad_row.write_text(json.dumps({'columns': ['a', 'b'], 'archs': {CELL: [1.0]}}))
  wrong_shape = tmp_path / 'list.json'
  wrong_shape.write_text('[1, 2]')
  cases = [(short, 'the cell |nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_1x1~1|+|skip_connect~0|'
                   'nor_conv_1x1~1|nor_conv_3x3~2| is not in the table (1 cells)'),
           (tmp_path / 'missing.json', 'missing.json: no such file'),
           (not_json, 'not readable as JSON'),
           (bad_row, f'the row of {CELL} is [1.0], not 2 finite numbers (columns a, b)'),
           (wrong_shape, 'not a benchmark table: expected a JSON object with "columns"')]
  for path, message in cases:
    with pytest.raises(ValueError, match='--benchmark-table ') as e:
      benchmark_table.lookup(str(path), 'nb201', genotype)
    assert message in str(e.value), str(e.value)
  with pytest.raises(ValueError, match='the darts space has no benchmark table'):
    benchmark_table.lookup(str(nb201_table), 'darts', genotype)
