"""Search, derive, train and report in one resumable run (``jaxnas run``).

The work directory holds ``search/`` (the search's outputs), ``train/`` (the
evaluation training of the derived genotype) and ``report.json`` /
``report.md``. A stage that has finished writes ``done.json`` in its folder;
``resume=True`` skips finished stages and resumes an interrupted one from its
checkpoint.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time

from jaxnas import data as data_lib
from jaxnas.search import SearchConfig, search
from jaxnas.train import TrainConfig, format_report, train


def _done(folder: str) -> dict | None:
  path = os.path.join(folder, 'done.json')
  if os.path.exists(path):
    with open(path) as f:
      return json.load(f)
  return None


def _mark_done(folder: str, info: dict) -> None:
  with open(os.path.join(folder, 'done.json'), 'w') as f:
    json.dump(info, f, indent=1)


def run(search_config: SearchConfig, train_overrides: dict | None = None, workdir: str = 'runs/run',
        resume: bool = False, progress: bool = True, dataset: data_lib.Dataset | None = None) -> dict:
  """Runs the pipeline; returns the report (also written to ``workdir``).

  ``train_overrides`` are :class:`TrainConfig` fields for the evaluation
  (space, data set and genotype come from the search).
  """
  search_dir, train_dir = os.path.join(workdir, 'search'), os.path.join(workdir, 'train')
  if not resume and os.path.isdir(workdir) and os.listdir(workdir):
    raise ValueError(f'{workdir} is not empty: pass --resume to continue that run, or choose '
                     f'another --workdir')
  os.makedirs(workdir, exist_ok=True)
  scfg = dataclasses.replace(search_config, workdir=search_dir)
  info = _done(search_dir)
  if info is None:
    t0 = time.perf_counter()
    has_ckpt = os.path.isdir(os.path.join(search_dir, 'checkpoints'))
    result = search(scfg, resume=resume and has_ckpt, progress=progress, dataset=dataset)
    info = {'genotype': result.genotype.to_json(), 'genotype_text': str(result.genotype),
            'seconds': time.perf_counter() - t0, 'config': result.config.to_json()}
    _mark_done(search_dir, info)
  tcfg = TrainConfig(**{**(train_overrides or {}), 'space': scfg.space,
                        'genotype': info['genotype_text'], 'dataset': scfg.dataset,
                        'data_dir': scfg.data_dir, 'download': scfg.download,
                        'devices': scfg.devices, 'workdir': train_dir})
  done = _done(train_dir)
  if done is None:
    has_ckpt = os.path.isdir(os.path.join(train_dir, 'checkpoints'))
    result = train(tcfg, resume=resume and has_ckpt, progress=progress, dataset=dataset)
    done = {'report': result.report}
    _mark_done(train_dir, done)
  report = {**done['report'], 'method': scfg.method, 'relaxation': scfg.relaxation,
            'search_seconds': info['seconds'], 'search_epochs': info['config']['epochs']}
  with open(os.path.join(workdir, 'report.json'), 'w') as f:
    json.dump(report, f, indent=1)
  text = format_report(report)
  with open(os.path.join(workdir, 'report.md'), 'w') as f:
    f.write(f"# jaxnas run: {scfg.method} ({scfg.relaxation}) on {scfg.dataset}\n\n"
            f"search: {info['seconds']:.1f} s, {info['config']['epochs']} epochs\n\n"
            + '\n'.join(f'- {line}' for line in text.splitlines()) + '\n')
  return report
