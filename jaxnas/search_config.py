"""The search's configuration: the method and its options, the relaxation and its options,
and sections for the data, the sizes, the optimisers and the label-free warm-up.

The defaults are DARTS' search settings on CIFAR-10 (quark0/darts
``train_search.py``: batch 64, 50 epochs, SGD lr 0.025 cosine to 0.001,
momentum 0.9, weight decay 3e-4, clipping 5, C=16, 8 cells, train portion 0.5,
random crop (pad 4) and flip on both halves and no cutout; α by Adam 3e-4,
betas (0.5, 0.999), weight decay 1e-3, initialised 1e-3·N(0, 1)). Where a
method, a relaxation or a space ran with other settings, its *recipe* (a dict
of :class:`jaxnas.options.Setting`, written beside its code with its source)
sets them. A config is complete when built, in one place: a field marked
:class:`jaxnas.config.RecipeBase` and left None is set by
``SearchConfig.__post_init__`` to the method's recipe, else the relaxation's,
else the space's, else DARTS' value, and the sizes left None to the space's on
the data set, before the config is frozen; no built config holds a None there,
and a value given (on the command line, or to the constructor) always wins. The
README's "Recipes" table lists every recipe. A built config keeps its values:
to change its method, relaxation, space or data set, build a new one (the
recipe is applied when a config is built).
A method's and a relaxation's own options are the keyword parameters of its
function (``jaxnas.hypergrad``, ``jaxnas.relax``), where their defaults and
sources are written; on the command line they are ``--{method}-{option}`` and
``--{relaxation}-{option}`` (``--sge-q 10``, ``--pc-k 4``), and in Python
``jaxnas.config.parse(SearchConfig, ['--method', 'sge', '--sge-q', '10'])`` spells them
the same way (or ``SearchConfig(method='sge', method_options={'q': 10})``).
"""
from __future__ import annotations

import dataclasses
from typing import Annotated, Any

import tyro

from jaxnas import benchmark_table
from jaxnas import config as config_lib
from jaxnas import data as data_lib
from jaxnas import hypergrad, relax, sharding, spaces
from jaxnas.config import Limits, RecipeBase
from jaxnas.optim import ALPHA_OPTIMIZERS

WARMUP_MOVES = ('w', 'alpha', 'both')

# The search settings a space's reference ran with, where they differ from DARTS'.
# NAS-Bench-201's DARTS runs: SGD weight decay 5e-4 with Nesterov momentum, the rest
# as DARTS'.
_NB201_DARTS = 'D-X-Y/AutoDL-Projects configs/nas-benchmark/algos/DARTS.config'
SPACE_RECIPES: dict[str, dict[str, config_lib.Setting]] = {
    'nb201': {
        'optim.weight_decay': config_lib.Setting(5e-4, f'{_NB201_DARTS} (decay 0.0005)'),
        'optim.nesterov': config_lib.Setting(True, f'{_NB201_DARTS} (nesterov True)'),
    },
}


@dataclasses.dataclass(frozen=True)
class DataConfig:
  dataset: Annotated[str, Limits(check=data_lib.check_name)] = 'digits'
  """digits, a tensorflow-datasets name, or npz:PATH"""
  data_dir: str | None = None
  """tensorflow-datasets directory"""
  download: bool = False
  """let tensorflow-datasets download (needs TensorFlow and a connection)"""
  train_portion: Annotated[float, Limits(gt=0, lt=1)] = 0.5
  """share of the training set that trains the weights"""
  augment: bool = True
  """the data set's crop and flip, without cutout, on both halves (quark0/darts
  train_search.py)"""


COMPUTE_DTYPES = ('float32', 'bfloat16')


@dataclasses.dataclass(frozen=True)
class SizeConfig:
  """None: resolved by data set and space (the embedded 8x8 digits: the space's small
  sizes and 10 epochs; real data: the space's search sizes and 50 epochs)."""
  epochs: Annotated[int | None, Limits(min=1)] = None
  """epochs (None: 10 on digits, else 50)"""
  batch_size: Annotated[int | None, Limits(min=1), RecipeBase(64)] = None
  """images per batch (None: the recipe's, else 64)"""
  channels: Annotated[int | None, Limits(min=1)] = None
  """initial channels C (None: 8 on digits, else 16)"""
  layers: Annotated[int | None, Limits(min=1)] = None
  """cells (darts) or cells per stage (nb201)"""
  remat: bool = True
  """recompute each mixed op in the backward pass (less memory)"""
  # float32 by default everywhere: the papers' recipes ran in float32
  compute_dtype: Annotated[str, Limits(choices=COMPUTE_DTYPES)] = 'float32'
  """the activations' dtype: float32, or bfloat16 (mixed precision for GPUs and TPUs:
  parameters, BatchNorm statistics, α and optimiser states stay float32)"""


@dataclasses.dataclass(frozen=True)
class OptimConfig:
  # weights: SGD with momentum, cosine schedule per epoch, gradient clipping
  lr: Annotated[float | None, Limits(gt=0), RecipeBase(0.025)] = None
  """weight learning rate (cosine per epoch) (None: the recipe's, else 0.025)"""
  lr_min: Annotated[float | None, Limits(min=0), RecipeBase(0.001)] = None
  """the cosine schedule's final learning rate (None: the recipe's, else 0.001)"""
  momentum: Annotated[float | None, Limits(min=0, lt=1), RecipeBase(0.9)] = None
  """weight SGD momentum (None: the recipe's, else 0.9)"""
  nesterov: Annotated[bool | None, RecipeBase(False), config_lib.FlagPair] = None
  """Nesterov momentum (None: the recipe's, else False)"""
  weight_decay: Annotated[float | None, Limits(min=0), RecipeBase(3e-4)] = None
  """weight decay (L2 added to the gradient) (None: the recipe's, else 0.0003)"""
  grad_clip: Annotated[float, Limits(gt=0)] = 5.0
  """global gradient-norm clip"""
  # architecture
  alpha_optimizer: Annotated[str | None, Limits(choices=ALPHA_OPTIMIZERS), RecipeBase('adam')] = None
  """α optimiser: adam or sgd (None: the recipe's, else adam)"""
  alpha_lr: Annotated[float | None, Limits(gt=0), RecipeBase(3e-4)] = None
  """α learning rate (None: the recipe's, else 0.0003)"""
  alpha_beta1: Annotated[float | None, Limits(min=0, lt=1), RecipeBase(0.5)] = None
  """α Adam β1 (None: the recipe's, else 0.5)"""
  alpha_beta2: Annotated[float | None, Limits(min=0, lt=1), RecipeBase(0.999)] = None
  """α Adam β2 (None: the recipe's, else 0.999)"""
  alpha_weight_decay: Annotated[float | None, Limits(min=0), RecipeBase(1e-3)] = None
  """α weight decay (None: the recipe's, else 0.001)"""
  alpha_init_scale: Annotated[float | None, Limits(min=0), RecipeBase(1e-3)] = None
  """α = scale · N(0, 1) at the start (None: the recipe's, else 0.001)"""
  alpha_warmup_epochs: Annotated[int | None, Limits(min=0), RecipeBase(0)] = None
  """first epochs that train the weights only, α frozen (None: the recipe's, else 0)"""

  def check(self, given: 'OptimConfig') -> None:
    """Raises where the complete settings disagree, or one of ``given`` (the settings as
    given, None where not) would do nothing."""
    if self.lr_min > self.lr:
      raise ValueError(f'lr_min (--lr-min) {self.lr_min} is above lr (--lr) {self.lr}')
    if self.alpha_optimizer == 'sgd':
      for name, base in config_lib.recipe_base(OptimConfig).items():
        if name in ('alpha_beta1', 'alpha_beta2') and getattr(given, name) not in (None, base):
          raise ValueError(f'{config_lib.flag(name)} sets Adam, but the α optimiser is sgd: '
                           'it would do nothing')
    if self.nesterov and not self.momentum:
      raise ValueError('--nesterov needs momentum (--momentum > 0)')


@dataclasses.dataclass(frozen=True)
class WarmupConfig:
  """Multistep's label-free warm-up: the first epochs maximise Zen(F) = β1·log tr NTK +
  β2·BN on Gaussian inputs (no data is read). By default it moves the weights only: a
  label-free score that rewards NTK trace and BN variance favours ops by their gain,
  not by the task, so α is left to the labelled search."""
  epochs: Annotated[int, Limits(min=0)] = 0
  """label-free Zen(F) warm-up epochs (method multistep)"""
  moves: Annotated[str, Limits(choices=WARMUP_MOVES)] = 'w'
  """what the warm-up moves: w, alpha or both"""
  beta1: float = 1.0
  """Zen(F) weight of log tr NTK"""
  beta2: float = 1.0
  """Zen(F) weight of the BN term"""
  batch_size: Annotated[int, Limits(min=1)] = 16
  """Gaussian inputs per warm-up weight step"""


MethodOptions = config_lib.registry_field(lambda: hypergrad.ESTIMATORS, 'method')
RelaxationOptions = config_lib.registry_field(lambda: relax.RELAXATIONS, 'relaxation')


@dataclasses.dataclass(frozen=True)
class SearchConfig:
  """Search settings (module docstring). A config is complete and checked when built:
  what was left None is set from the recipes, the data set and the space, the method's
  and relaxation's options are filled in, and the batch is checked against the devices."""
  space: Annotated[str, Limits(choices=lambda: spaces.SPACES)] = 'darts'
  """search space"""
  method: Annotated[str, Limits(choices=lambda: hypergrad.ESTIMATORS)] = 'darts1'
  """hypergradient estimator"""
  method_options: MethodOptions = dataclasses.field(default_factory=dict)
  """the method's options (--{method}-{option})"""
  relaxation: Annotated[str, Limits(choices=lambda: relax.RELAXATIONS)] = 'softmax'
  """α -> mixing weights"""
  relaxation_options: RelaxationOptions = dataclasses.field(default_factory=dict)
  """the relaxation's options (--{relaxation}-{option})"""
  data: Annotated[DataConfig, config_lib.FLAT] = DataConfig()
  """data"""
  size: Annotated[SizeConfig, config_lib.FLAT] = SizeConfig()
  """sizes"""
  optim: Annotated[OptimConfig, config_lib.FLAT] = OptimConfig()
  """optimisers"""
  warmup: Annotated[WarmupConfig, tyro.conf.arg(name='zen-warmup')] = WarmupConfig()
  """label-free Zen(F) warm-up (method multistep)"""
  seed: int = 2
  """random seed (α, weights, batches)"""
  devices: config_lib.Devices = None
  """'all' or N: the data-parallel mesh (None: $JAXNAS_DEVICES, else all)"""
  workdir: str = 'runs/search'
  """output directory"""
  checkpoint_every: config_lib.CheckpointEvery = 0
  """also checkpoint every this many steps (0: at epoch ends only)"""
  benchmark_table: str | None = None
  """a tabular benchmark's real accuracies (nb201: benchmarks/nb201_test_acc_200ep.json): the
  cell derived at each epoch's end looked up there"""

  # What may change when a run is resumed: the length of the run, where and how often
  # it is saved, where the data lie, the devices, the table its cells are looked up in.
  RESUMABLE_CHANGES = ('size.epochs', 'checkpoint_every', 'workdir', 'data.data_dir', 'data.download',
                       'devices', 'benchmark_table')

  # Settings whose change makes another recipe apply: a built config refuses to change them.
  RECIPE_KEYS = ('space', 'method', 'relaxation', 'data.dataset')

  @config_lib.checked
  def __post_init__(self):
    config_lib.validate(self)
    self._complete()
    if self.benchmark_table is not None:
      benchmark_table.check_space(self.space)
    if self.warmup.epochs and self.method != 'multistep':
      raise ValueError(f'the Zen(F) warm-up (--zen-warmup.epochs) belongs to method multistep, '
                       f'not {self.method}')
    if not self.warmup.epochs:
      changed = [f.name for f in dataclasses.fields(WarmupConfig)
                 if getattr(self.warmup, f.name) != f.default]
      if changed:
        raise ValueError(f'{config_lib.flag(changed[0], "zen-warmup.")} sets the Zen(F) warm-up, '
                         'but it has no epochs (--zen-warmup.epochs 0): it would do nothing')

  def recipe(self) -> dict[str, config_lib.Setting]:
    """The settings this method, relaxation and space ran with (later ones win: the
    space's, then the relaxation's, then the method's)."""
    return {**SPACE_RECIPES.get(self.space, {}), **relax.RELAXATIONS[self.relaxation].recipe,
            **hypergrad.ESTIMATORS[self.method].recipe}

  def _complete(self) -> None:
    """Sets what was left None (the recipes', the space's sizes on the data set, the
    devices), fills in the options of the method and the relaxation, and checks what
    depends on them: the one place a recipe is applied, before the config is frozen
    (a complete config passes through unchanged)."""
    space = spaces.get_space(self.space)
    sizes = space.sizes(self.data.dataset)
    epochs = self.size.epochs or (10 if self.data.dataset == 'digits' else 50)
    size = dataclasses.replace(self.size, epochs=epochs,
                               channels=self.size.channels or sizes['channels'],
                               layers=self.size.layers or sizes['layers'])
    recipe = self.recipe()
    stray = sorted(k for k in recipe if k.split('.', 1)[0] not in ('size', 'optim'))
    if stray:
      raise ValueError(f'a recipe sets {", ".join(stray)}: recipes set sizes and optimisers only')
    given = self.optim
    if (given.alpha_optimizer is not None and given.alpha_lr is None and given.alpha_optimizer
        != recipe.get('optim.alpha_optimizer', config_lib.Setting('adam', '')).value):
      raise ValueError(f'--alpha-optimizer {given.alpha_optimizer} is not the one {self.method} '
                       f'ran with: give its learning rate (--alpha-lr)')
    optim = dataclasses.replace(given, **config_lib.recipe_values(OptimConfig, given, recipe,
                                                                  epochs, 'optim'))
    if given.nesterov is None and not optim.momentum:   # a recipe's Nesterov, without momentum
      optim = dataclasses.replace(optim, nesterov=False)
    size = dataclasses.replace(size, **config_lib.recipe_values(SizeConfig, size, recipe, epochs,
                                                                'size'))
    optim.check(given)
    estimator = hypergrad.make(self.method, **config_lib.chosen_options(
        hypergrad.ESTIMATORS, self.method, self.method_options, 'method'))
    relaxation = relax.make(self.relaxation, **config_lib.chosen_options(
        relax.RELAXATIONS, self.relaxation, self.relaxation_options, 'relaxation'))
    complete = {'size': size, 'optim': optim, 'method_options': dict(estimator.options),
                'relaxation_options': dict(relaxation.options),
                'devices': self.devices or sharding.default_devices()}
    for name, value in complete.items():
      object.__setattr__(self, name, value)   # frozen from here on
    if self.warmup.epochs + optim.alpha_warmup_epochs >= epochs:
      raise ValueError(f'the warm-ups (--zen-warmup.epochs {self.warmup.epochs}, --alpha-warmup-epochs '
                       f'{optim.alpha_warmup_epochs}) must leave epochs that move α: at most '
                       f'epochs - 1 = {epochs - 1} together')
    if size.channels % relaxation.partial_channels:
      raise ValueError(f'{size.channels} channels (--channels) do not split into the '
                       f'{relaxation.partial_channels} groups of partial channels')
    sharding.check_batch(size.batch_size, sharding.make_mesh(self.devices))

  def to_json(self) -> dict[str, Any]:
    return config_lib.to_json(self)


def recipe_rows() -> list[tuple[str, str, Any, Any, str]]:
  """Every registered recipe setting as ``(component flag, setting flag, value, DARTS'
  value, source)``, e.g. ``('--relaxation pc', '--batch-size', 256, 64, '...')``: the
  README's "Recipes" table."""
  bases = {f'{name}.{field}': base for name, (cls, _) in config_lib.sections(SearchConfig).items()
           for field, base in config_lib.recipe_base(cls).items()}
  components = ([('--space', n, r) for n, r in SPACE_RECIPES.items()]
                + [('--relaxation', n, r.recipe) for n, r in relax.RELAXATIONS.items()]
                + [('--method', n, e.recipe) for n, e in hypergrad.ESTIMATORS.items()])
  return [(f'{flag} {name}', config_lib.flag(path.split('.')[-1]), setting.value, bases[path],
           setting.source) for flag, name, recipe in components for path, setting in recipe.items()]
