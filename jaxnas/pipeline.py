"""Search, derive, train and report in one resumable run (``jaxnas run``).

The work directory holds ``search/`` (the search's outputs), ``train/`` (the
evaluation training of the derived genotype) and ``report.json`` /
``report.md``. A stage that has finished writes ``done.json`` in its folder;
``resume=True`` skips finished stages and resumes an interrupted one from its
checkpoint.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import time
from typing import Annotated

import tyro

from jaxnas import config as config_lib
from jaxnas import data as data_lib
from jaxnas import sharding
from jaxnas.search import SearchConfig, search
from jaxnas.train import TrainConfig, format_report, train

# what the evaluation training takes from the search (its space, data and devices): the
# training's setting -> where the search config holds it
FROM_SEARCH = {'space': ('space',), 'dataset': ('data', 'dataset'), 'data_dir': ('data', 'data_dir'),
               'download': ('data', 'download'), 'devices': ('devices',)}
# the training settings with no --train.* flag: those, the genotype the search derives and
# the stage's folder
TRAIN_FROM_SEARCH = (*FROM_SEARCH, 'genotype', 'workdir')


def _from_search(search: SearchConfig) -> dict:
  return {k: functools.reduce(getattr, path, search) for k, path in FROM_SEARCH.items()}


@dataclasses.dataclass(frozen=True)
class RunConfig:
  """The search (its flags as for ``jaxnas search``), then the evaluation training of the
  derived genotype (``--train.*``; space, data and devices are the search's). On the
  command line each section is parsed as its settings (:func:`jaxnas.config.flags_of`)
  and built here, the training for the search's space and data."""
  search: Annotated[SearchConfig, tyro.conf.arg(
      name='', constructor=config_lib.flags_of(SearchConfig, ('workdir',)))]
  """the search"""
  train: Annotated[TrainConfig, tyro.conf.arg(
      name='train', constructor=config_lib.flags_of(TrainConfig, TRAIN_FROM_SEARCH))] = None
  """the evaluation training (None: its recipe for the search's space and data)"""
  workdir: str = 'runs/run'
  """output directory: search/, train/, report.json, report.md"""

  @config_lib.checked
  def __post_init__(self):
    config_lib.validate(self)
    search, train = self.search, self.train
    if not isinstance(search, SearchConfig):
      search = SearchConfig(**config_lib.settings(search), workdir=os.path.join(self.workdir, 'search'))
    if train is None or not isinstance(train, TrainConfig):
      given = {} if train is None else config_lib.settings(train)
      train = TrainConfig(**given, **_from_search(search), workdir=os.path.join(self.workdir, 'train'))
    mismatch = {k: (getattr(train, k), v) for k, v in _from_search(search).items()
                if getattr(train, k) != v}
    if mismatch:
      k, (a, b) = next(iter(mismatch.items()))
      raise ValueError(f"the training section's {k} is {a!r}, the search's {b!r}: build the training "
                       "for the search's space and data (leave it None: RunConfig does)")
    object.__setattr__(self, 'search', search)
    object.__setattr__(self, 'train', train)


def _done(folder: str) -> dict | None:
  path = os.path.join(folder, 'done.json')
  if os.path.exists(path):
    with open(path) as f:
      return json.load(f)
  return None


def _mark_done(folder: str, info: dict) -> None:
  if sharding.is_main_process():  # only process 0 writes
    with open(os.path.join(folder, 'done.json'), 'w') as f:
      json.dump(info, f, indent=1)


def run(config: RunConfig, resume: bool = False, progress: bool = True,
        dataset: data_lib.Dataset | None = None, programs: str | None = None) -> dict:
  """Runs the pipeline; returns the report (also written to ``config.workdir``).
  ``programs``: the folder of the search's and training's traced programs
  (:func:`jaxnas.xla.program_dir`)."""
  workdir = config.workdir
  search_dir, train_dir = os.path.join(workdir, 'search'), os.path.join(workdir, 'train')
  # every process looks before any writes (a collective: on several hosts process 0 would
  # otherwise make the folders before another has looked)
  if sharding.any_process(not resume and os.path.isdir(workdir) and bool(os.listdir(workdir))):
    raise ValueError(f'{workdir} is not empty: pass --resume to continue that run, or choose '
                     f'another --workdir')
  os.makedirs(workdir, exist_ok=True)
  scfg = dataclasses.replace(config.search, workdir=search_dir)
  info = _done(search_dir)
  if info is None:
    t0 = time.perf_counter()
    has_ckpt = os.path.isdir(os.path.join(search_dir, 'checkpoints'))
    result = search(scfg, resume=resume and has_ckpt, progress=progress, dataset=dataset,
                    programs=programs)
    info = {'genotype': result.genotype.to_json(), 'genotype_text': str(result.genotype),
            'seconds': time.perf_counter() - t0, 'config': result.config.to_json(),
            'benchmark': result.benchmark}
    _mark_done(search_dir, info)
  tcfg = dataclasses.replace(config.train, genotype=info['genotype_text'], workdir=train_dir)
  done = _done(train_dir)
  if done is None:
    has_ckpt = os.path.isdir(os.path.join(train_dir, 'checkpoints'))
    result = train(tcfg, resume=resume and has_ckpt, progress=progress, dataset=dataset,
                   programs=programs)
    done = {'report': result.report}
    _mark_done(train_dir, done)
  report = {**done['report'], 'method': scfg.method, 'relaxation': scfg.relaxation,
            'search_seconds': info['seconds'], 'search_epochs': info['config']['size']['epochs'],
            **({'benchmark': info['benchmark']} if info.get('benchmark') else {})}
  if not sharding.is_main_process():
    return report
  with open(os.path.join(workdir, 'report.json'), 'w') as f:
    json.dump(report, f, indent=1)
  text = format_report(report)
  with open(os.path.join(workdir, 'report.md'), 'w') as f:
    f.write(f"# jaxnas run: {scfg.method} ({scfg.relaxation}) on {scfg.data.dataset}\n\n"
            f"search: {info['seconds']:.1f} s, {info['config']['size']['epochs']} epochs\n\n"
            + '\n'.join(f'- {line}' for line in text.splitlines()) + '\n')
  return report
