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
from typing import Annotated, Any

from jaxnas import config as config_lib
from jaxnas import data as data_lib
from jaxnas import sharding, spaces
from jaxnas.config import Limits
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
  space: Annotated[str, Limits(choices=lambda: spaces.SPACES)] = 'darts'
  """search space of the genotype"""
  genotype: str | None = None
  """published name, genotype.json file or genotype string"""
  dataset: Annotated[str, Limits(check=data_lib.check_name)] = 'digits'
  """digits, a tensorflow-datasets name, or npz:PATH"""
  data_dir: str | None = None
  """tensorflow-datasets directory"""
  download: bool = False
  """let tensorflow-datasets download (needs TensorFlow and a connection)"""
  epochs: Annotated[int | None, Limits(min=1)] = None
  """epochs"""
  batch_size: Annotated[int | None, Limits(min=1)] = None
  """images per batch"""
  channels: Annotated[int | None, Limits(min=1)] = None
  """initial channels C"""
  layers: Annotated[int | None, Limits(min=1)] = None
  """cells (darts) or cells per stage (nb201)"""
  lr: Annotated[float | None, Limits(gt=0)] = None
  """learning rate (cosine per epoch)"""
  lr_min: Annotated[float, Limits(min=0)] = 0.0
  """the cosine schedule's final learning rate"""
  momentum: Annotated[float, Limits(min=0, lt=1)] = 0.9
  """SGD momentum"""
  nesterov: Annotated[bool | None, config_lib.FlagPair] = None
  """Nesterov momentum"""
  weight_decay: Annotated[float | None, Limits(min=0)] = None
  """weight decay (L2 added to the gradient)"""
  grad_clip: Annotated[float | None, Limits(min=0)] = None
  """global gradient-norm clip (0: none)"""
  auxiliary: Annotated[bool | None, config_lib.FlagPair] = None
  """darts: auxiliary head"""
  auxiliary_weight: Annotated[float, Limits(min=0)] = 0.4
  """darts: weight of the auxiliary loss"""
  drop_path: Annotated[float | None, Limits(min=0, lt=1)] = None
  """darts: final drop-path probability"""
  cutout: Annotated[int | None, Limits(min=0)] = None
  """cutout length (0: none; None: the data set's recipe)"""
  augment: bool = True
  """the data set's crop and flip"""
  seed: int = 0
  """random seed"""
  devices: config_lib.Devices = None
  """'all' or N: the data-parallel mesh (None: $JAXNAS_DEVICES, else all)"""
  workdir: str = 'runs/train'
  """output directory"""
  checkpoint_every: config_lib.CheckpointEvery = 0
  """also checkpoint every this many steps (0: at epoch ends only)"""

  RESUMABLE_CHANGES = ('epochs', 'checkpoint_every', 'workdir', 'data_dir', 'download', 'devices')
  # Settings whose change makes another recipe apply: a built config refuses to change them.
  RECIPE_KEYS = ('space', 'dataset')

  @config_lib.checked
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
