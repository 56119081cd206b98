"""The evaluation training's configuration, and each space's evaluation recipe.

A :class:`TrainConfig` is complete when built: the fields left None are set by
the space's evaluation recipe (:data:`EVAL_RECIPES`: DARTS' ``train.py`` on the
DARTS space, NAS-Bench-201's on its own) and its sizes on the data set
(:meth:`jaxnas.spaces.base.SearchSpace.sizes`; on the embedded 8x8 digits the
networks and runs are scaled down so that a training finishes in a minute or two
on a CPU), before the config is frozen.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from jaxnas import config as config_lib
from jaxnas import data as data_lib
from jaxnas import sharding, spaces
from jaxnas.config import option
from jaxnas.spaces import get_space

def darts_recipe(small: bool) -> dict:
  """DARTS' evaluation recipe (quark0/darts ``train.py``): SGD momentum 0.9, lr 0.025
  cosine to 0, weight decay 3e-4, clipping 5, auxiliary head weight 0.4, drop-path 0.2
  rising linearly, batch 96, 600 epochs (cutout: the data set's; C=36 and 20 cells, the
  space's evaluation sizes). On the embedded digits: batch 64, 20 epochs."""
  return {'epochs': 20 if small else 600, 'batch_size': 64 if small else 96, 'lr': 0.025,
          'nesterov': False, 'weight_decay': 3e-4, 'grad_clip': 5.0, 'auxiliary': True,
          'drop_path': 0.2}


def nb201_recipe(small: bool) -> dict:
  """NAS-Bench-201's training recipe (Dong and Yang 2020, §3; AutoDL-Projects
  ``configs/nas-benchmark/hyper-opts/200E.config``): SGD 0.1 Nesterov, momentum 0.9,
  weight decay 5e-4, cosine to 0, batch 256, 200 epochs, no clipping (C=16, N=5: the
  space's evaluation sizes). On the embedded digits: batch 64, 20 epochs."""
  return {'epochs': 20 if small else 200, 'batch_size': 64 if small else 256, 'lr': 0.1,
          'nesterov': True, 'weight_decay': 5e-4, 'grad_clip': 0.0, 'auxiliary': False,
          'drop_path': 0.0, 'cutout': 0}


# space -> (small: bool) -> TrainConfig fields: how the space's networks were trained (their
# sizes: SearchSpace.sizes)
EVAL_RECIPES = {'darts': darts_recipe, 'nb201': nb201_recipe}


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Evaluation-training settings, complete when built: the fields left None are set
  by the space's evaluation recipe on the data set (the module docstring) before the
  config is frozen. The genotype may be left for later (``jaxnas run`` sets it from
  the search); training needs one."""
  space: str = option('darts', 'search space of the genotype', choices=lambda: spaces.SPACES)
  genotype: str | None = option(None, 'published name, genotype.json file or genotype string')
  dataset: str = option('digits', 'digits, a tensorflow-datasets name, or npz:PATH',
                        check=data_lib.check_name)
  data_dir: str | None = option(None, 'tensorflow-datasets directory')
  download: bool = option(False, 'let tensorflow-datasets download (needs TensorFlow and a connection)')
  epochs: int | None = option(None, 'epochs', min=1)
  batch_size: int | None = option(None, 'images per batch', min=1)
  channels: int | None = option(None, 'initial channels C', min=1)
  layers: int | None = option(None, 'cells (darts) or cells per stage (nb201)', min=1)
  lr: float | None = option(None, 'learning rate (cosine per epoch)', gt=0)
  lr_min: float = option(0.0, "the cosine schedule's final learning rate", min=0)
  momentum: float = option(0.9, 'SGD momentum', min=0, lt=1)
  nesterov: bool | None = option(None, 'Nesterov momentum')
  weight_decay: float | None = option(None, 'weight decay (L2 added to the gradient)', min=0)
  grad_clip: float | None = option(None, 'global gradient-norm clip (0: none)', min=0)
  auxiliary: bool | None = option(None, 'darts: auxiliary head')
  auxiliary_weight: float = option(0.4, 'darts: weight of the auxiliary loss', min=0)
  drop_path: float | None = option(None, 'darts: final drop-path probability', min=0, lt=1)
  cutout: int | None = option(None, "cutout length (0: none; None: the data set's recipe)", min=0)
  augment: bool = option(True, "the data set's crop and flip")
  seed: int = option(0, 'random seed')
  devices: str | None = config_lib.devices_option()
  workdir: str = option('runs/train', 'output directory')
  checkpoint_every: int = config_lib.checkpoint_every_option()

  RESUMABLE_CHANGES = ('epochs', 'checkpoint_every', 'workdir', 'data_dir', 'download', 'devices')
  # Settings whose change makes another recipe apply: a built config refuses to change them.
  RECIPE_KEYS = ('space', 'dataset')

  def __post_init__(self):
    config_lib.validate(self)
    space = get_space(self.space)
    if self.space not in EVAL_RECIPES:
      raise ValueError(f'the {space.title} space has no evaluation recipe: add one to '
                       'jaxnas.train_config.EVAL_RECIPES')
    recipe = {'cutout': data_lib.default_train_augment(self.dataset).cutout,
              **space.sizes(self.dataset, evaluation=True),
              **EVAL_RECIPES[self.space](self.dataset == 'digits'),
              'devices': sharding.default_devices()}
    config_lib.complete(self, recipe)   # the one place the recipe is applied
    if 'auxiliary' not in space.network_options and (self.auxiliary or self.drop_path):
      raise ValueError(f'the {space.title} network has no auxiliary head and no drop-path: '
                       'leave --auxiliary and --drop-path unset')
    if self.lr_min > self.lr:
      raise ValueError(f'lr_min (--lr-min) {self.lr_min} is above lr (--lr) {self.lr}')
    sharding.check_batch(self.batch_size, sharding.make_mesh(self.devices))

  def genotype_or_error(self) -> str:
    """The genotype to train; an error saying how to give one where there is none."""
    if self.genotype is None:
      raise ValueError('give --genotype: a published name '
                       f'({", ".join(get_space(self.space).genotypes)}), a genotype.json file or '
                       'a genotype string')
    return self.genotype

  def to_json(self) -> dict[str, Any]:
    return config_lib.to_json(self)
