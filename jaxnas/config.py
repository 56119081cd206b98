"""Configurations: frozen dataclasses whose fields carry their help, their limits and their flag.

A config is a frozen dataclass of three kinds of field:

* a *leaf* (a str, int, float or bool, possibly None), declared with
  :func:`option`, which puts the help text and the limits beside the default;
* a *section*, a nested config, declared with :func:`section`;
* the *options* of a registry entry chosen by another field (the method's, the
  relaxation's), declared with :func:`registry_options`. Those options are the
  keyword parameters of the entry's function, their defaults in its signature
  and their limits in ``Annotated[type, Limits(...)]`` (:func:`signature_options`):
  each default is written once, beside the code it configures.

One function of this module does each job for every config:

* :func:`validate` checks every leaf against its limits (each config calls it
  from ``__post_init__``, so the library API and the command line get the
  same checks, once, where the config is built); :func:`bind_options` checks
  a registry entry's options and fills in their defaults;
* :func:`add_flags` makes one ``--flag`` per leaf, grouped by section in
  ``--help``, and ``--{entry}-{option}`` for every option of every entry of a
  registry; :func:`from_args` builds the config back from the parsed flags;
* :func:`to_json` / :func:`from_json` write and read it (``config.json``).

A leaf's flag is its name with ``-`` for ``_``, after its section's prefix
(``section(TrainConfig, prefix='train')``: ``--train-lr``; prefix ``''``: the
section's flags are the leaves' own names).
"""
from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any, Callable, Iterator, Mapping, NamedTuple

from jaxnas import sharding

# the options of registered functions, re-exported: what a config's fields are checked with
from jaxnas.options import (ConfigError, Limits, Recipe, Setting, _kind,  # noqa: F401
                            bind_options, flag_name, option_flag, violation)

_META = 'jaxnas'
BASE = 'jaxnas_recipe_base'   # a recipe leaf's metadata: its value where no recipe sets it


def option(default: Any, help: str = '', **limits) -> Any:
  """A config leaf: its default, its help and its :class:`Limits`. None is always
  allowed where the default is None (it means "resolved later")."""
  return dataclasses.field(default=default, metadata={_META: Limits(help, **limits)})


def recipe_option(base: Any, help: str = '', **limits) -> Any:
  """A config leaf that a recipe may set (:func:`recipe_values`): given None (its
  default), the config sets it when built to the recipe's value, or to ``base``
  (DARTS') where no recipe sets it."""
  return dataclasses.field(default=None, metadata={_META: Limits(help, **limits), BASE: base})


def devices_option(what: str = 'the data-parallel mesh') -> Any:
  """The ``devices`` leaf every runnable config has: 'all' or N devices for ``what``."""
  return option(None, f"'all' or N: {what} (None: $JAXNAS_DEVICES, else all)",
                check=sharding.check_devices)


def checkpoint_every_option() -> Any:
  """The ``checkpoint_every`` leaf of the resumable configs."""
  return option(0, 'also checkpoint every this many steps (0: at epoch ends only)', min=0)


def complete(config, values: Mapping[str, Any]) -> None:
  """Sets each field of ``config`` named in ``values`` and left None to its value: for a
  config's ``__post_init__``, so that a built config is complete before it is frozen."""
  for name, value in values.items():
    if getattr(config, name) is None:
      object.__setattr__(config, name, value)


def section(cls: type, help: str = '', prefix: str = '', skip: tuple[str, ...] = ()) -> Any:
  """A nested config of type ``cls`` (its defaults), shown as one group of flags named
  ``--{prefix}-{leaf}`` (``--{leaf}`` with no prefix); ``skip`` lists leaves that get
  no flag (set by the enclosing command instead)."""
  return dataclasses.field(default_factory=cls, metadata={
      _META: {'section': True, 'help': help, 'prefix': prefix, 'skip': skip}})


def registry_options(name_field: str, registry: Callable[[], Mapping[str, Any]], help: str = '') -> Any:
  """The options (a dict) of the entry of ``registry()`` that field ``name_field`` names.
  Each entry has ``options``, a dict of :class:`Param`; the flag of option ``o`` of
  entry ``e`` is ``--e-o``, and giving it while another entry is chosen is an error."""
  return dataclasses.field(default_factory=dict, metadata={
      _META: {'registry': registry, 'name_field': name_field, 'help': help}})


def _meta(f: dataclasses.Field):
  return f.metadata.get(_META, Limits())


def _is(f: dataclasses.Field, kind: str) -> bool:
  meta = _meta(f)
  return isinstance(meta, dict) and kind in meta


# ----------------------------------------------------------------------------
# Checking values
# ----------------------------------------------------------------------------

def validate(config) -> None:
  """Raises :class:`ConfigError` (a ValueError) naming the field, its flag and its limit
  for the first leaf of ``config`` that breaks its limits, and checks the options of
  every registry entry it names (:func:`bind_options`). Sections check themselves
  when they are built."""
  for f in dataclasses.fields(config):
    value = getattr(config, f.name)
    if _is(f, 'registry'):
      meta = _meta(f)
      bind_options(meta['registry'](), getattr(config, meta['name_field']), value, meta['name_field'])
    elif not _is(f, 'section') and value is not None:
      problem = violation(value, _meta(f))
      if problem:
        raise ConfigError(f.name, problem, value)


# ----------------------------------------------------------------------------
# Flags
# ----------------------------------------------------------------------------

class Leaf(NamedTuple):
  path: tuple[str, ...]      # field names from the top config down
  flag: str                  # --flag-name
  kind: type                 # str, int, float or bool
  default: Any
  help: str
  group: str                 # the section's title ('' at the top)
  recipe: bool = False       # a recipe sets it (:func:`recipe_option`)
  base: Any = None           # its value where no recipe sets it


def leaves(cls: type, prefix: str = '', path: tuple[str, ...] = (), group: str = '',
           skip: tuple[str, ...] = ()) -> Iterator[Leaf]:
  """Every leaf of config class ``cls`` (depth first), with its flag."""
  hints = typing.get_type_hints(cls)
  for f in dataclasses.fields(cls):
    if f.name in skip or _is(f, 'registry'):
      continue
    if _is(f, 'section'):
      meta = _meta(f)
      sub_prefix = '_'.join(p for p in (prefix, meta['prefix']) if p)
      yield from leaves(hints[f.name], sub_prefix, path + (f.name,), meta['help'] or f.name,
                        meta['skip'])
      continue
    default = f.default if f.default is not dataclasses.MISSING else None
    yield Leaf(path + (f.name,), flag_name(f.name, prefix), _kind(hints[f.name]), default,
               _meta(f).help, group, BASE in f.metadata, f.metadata.get(BASE))


def _registries(cls: type, path: tuple[str, ...] = ()):
  """(path of the options field, path of the name field, its metadata) of every registry field."""
  hints = typing.get_type_hints(cls)
  for f in dataclasses.fields(cls):
    if _is(f, 'section'):
      yield from _registries(hints[f.name], path + (f.name,))
    elif _is(f, 'registry'):
      yield path + (f.name,), path + (_meta(f)['name_field'],), _meta(f)


def _parse(kind: type):
  def parse(text: str):
    if text.lower() == 'none':
      return None
    if kind is bool:  # bool('false') is True
      if text.lower() not in ('true', 'false', '1', '0', 'yes', 'no'):
        raise argparse.ArgumentTypeError(f'expected true or false, got {text!r}')
      return text.lower() in ('true', '1', 'yes')
    try:
      return kind(text)
    except ValueError:
      raise argparse.ArgumentTypeError(f'expected {kind.__name__}, got {text!r}') from None
  parse.__name__ = kind.__name__  # argparse names the type in its error messages
  return parse


def _help(text: str, default, leaf: Leaf | None = None) -> str:
  if leaf is not None and leaf.recipe:
    shown = f"the recipe's (README: Recipes), else {leaf.base}"
  else:
    shown = 'None (resolved by data set, space and method)' if default is None else default
  return f'{text} (default: {shown})' if text else f'default: {shown}'


def add_flags(parser: argparse.ArgumentParser, cls: type, prefix: str = '',
              skip: tuple[str, ...] = ()) -> None:
  """One ``--flag`` per leaf of ``cls``, the leaves of each section in one argument group,
  and ``--{entry}-{option}`` for the options of every registry entry, a group per entry."""
  groups: dict[str, Any] = {}
  for leaf in leaves(cls, prefix, skip=skip):
    if leaf.group not in groups:
      groups[leaf.group] = parser.add_argument_group(leaf.group) if leaf.group else parser
    target, dest = groups[leaf.group], '.'.join(leaf.path)
    if leaf.kind is bool:
      target.add_argument(leaf.flag, dest=dest, action=argparse.BooleanOptionalAction,
                          default=leaf.default, help=_help(leaf.help, leaf.default, leaf))
    else:
      target.add_argument(leaf.flag, dest=dest, type=_parse(leaf.kind), default=leaf.default,
                          metavar=leaf.kind.__name__.upper(), help=_help(leaf.help, leaf.default, leaf))
  for options_path, name_path, meta in _registries(cls):
    for entry, spec in meta['registry']().items():
      if not spec.options:
        continue
      group = parser.add_argument_group(f'{name_path[-1]} {entry}')
      for key, param in spec.options.items():
        group.add_argument(option_flag(entry, key), dest=':'.join(['.'.join(options_path), entry, key]),
                           type=_parse(param.kind), default=argparse.SUPPRESS,
                           metavar=param.kind.__name__.upper(),
                           help=_help(param.limits.help, param.default))


def _build(cls: type, values: dict[tuple[str, ...], Any], path: tuple[str, ...] = (),
           prefix: str = ''):
  # a leaf another leaf decides (the class' LINKS: RunConfig's training takes the search's
  # space and data), set before its section is built, since a section completes itself
  links = getattr(cls, 'LINKS', {})
  if links:
    defaults = {leaf.path: leaf.default for leaf in leaves(cls)}
    values = {**values, **{path + dst: values.get(path + src, defaults.get(src))
                           for dst, src in links.items()}}
  hints = typing.get_type_hints(cls)
  kwargs = {}
  for f in dataclasses.fields(cls):
    if _is(f, 'section'):
      sub_prefix = '_'.join(p for p in (prefix, _meta(f)['prefix']) if p)
      kwargs[f.name] = _build(hints[f.name], values, path + (f.name,), sub_prefix)
    elif path + (f.name,) in values:
      kwargs[f.name] = values[path + (f.name,)]
  try:
    return cls(**kwargs)
  except ConfigError as e:  # name the flag as the command line spells it
    if e.flag:
      raise
    raise ConfigError(e.field, e.problem, e.value, prefix) from None


def _flat_registry_options(cls: type, prefix: str = '', skip: tuple[str, ...] = ()):
  """{flat name: (options path, name path, entry, option)} of every registry option."""
  out = {}
  for options_path, name_path, meta in _registries(cls):
    if options_path[0] in skip:
      continue
    for entry, spec in meta['registry']().items():
      for key in spec.options:
        out[option_flag(entry, key)[2:].replace('-', '_')] = (options_path, name_path, entry, key)
  return out


def make(cls: type, prefix: str = '', skip: tuple[str, ...] = (), **flat):
  """The config of class ``cls`` from its settings spelt as on the command line
  (``make(SearchConfig, channels=4, sge_q=3)`` is ``--channels 4 --sge-q 3``): a
  section's leaves by their flag names, a registry entry's options as
  ``{entry}_{option}``. An option of a registry entry other than the chosen one is
  an error (it would do nothing)."""
  by_flag = {leaf.flag[2:].replace('-', '_'): leaf.path for leaf in leaves(cls, prefix, skip=skip)}
  registry = _flat_registry_options(cls, prefix, skip)
  unknown = sorted(set(flat) - set(by_flag) - set(registry))
  if unknown:
    raise ValueError(f'{cls.__name__} has no setting {", ".join(unknown)}')
  values = {by_flag[k]: v for k, v in flat.items() if k in by_flag}
  defaults = {leaf.path: leaf.default for leaf in leaves(cls, prefix, skip=skip)}
  for options_path, name_path, _ in _registries(cls):
    values.setdefault(options_path, {})
  for k, v in flat.items():
    if k in registry:
      options_path, name_path, entry, key = registry[k]
      chosen = values.get(name_path, defaults.get(name_path))
      if entry != chosen:
        raise ValueError(f'{option_flag(entry, key)} is an option of {name_path[-1]} {entry}, '
                         f'but the {name_path[-1]} is {chosen}: it would do nothing')
      values[options_path] = {**values[options_path], key: v}
  return _build(cls, values, prefix=prefix)


def to_flat(config, prefix: str = '') -> dict[str, Any]:
  """The settings of ``config`` as :func:`make` takes them."""
  out = {leaf.flag[2:].replace('-', '_'): get(config, leaf.path) for leaf in leaves(type(config), prefix)}
  for options_path, name_path, _ in _registries(type(config)):
    entry = get(config, name_path)
    for key, value in get(config, options_path).items():
      out[option_flag(entry, key)[2:].replace('-', '_')] = value
  return out


def replace(config, **flat):
  """``config`` with some settings changed, spelt as for :func:`make`. A setting that
  chooses a recipe (the class' ``RECIPE_KEYS``: the method, the space...) cannot change:
  the built config holds its recipe's values, so build a new config instead."""
  old = to_flat(config)
  by_flag = {leaf.flag[2:].replace('-', '_'): '.'.join(leaf.path) for leaf in leaves(type(config))}
  keys = getattr(type(config), 'RECIPE_KEYS', ())
  fixed = sorted(k for k, v in flat.items() if by_flag.get(k) in keys and v != old[k])
  if fixed:
    raise ValueError(f'{", ".join(fixed)} chooses a recipe, applied when the config was built: '
                     f'build a new config (jaxnas.config.make) instead of replacing it')
  return make(type(config), **{**old, **flat})


def recipe_values(cls: type, section, recipe: Recipe, epochs: int, name: str) -> dict[str, Any]:
  """The values of the recipe leaves of ``section`` (an instance of config class ``cls``,
  the section ``name`` of its config) left None: the recipe's (``recipe`` keyed
  ``'{name}.{leaf}'``), else the leaf's base; an epoch count is scaled to ``epochs``
  (:class:`Setting`). A recipe key of this section that is no recipe leaf is an error."""
  recipe_leaves = {f.name: f for f in dataclasses.fields(cls) if BASE in f.metadata}
  mine = {k.split('.', 1)[1]: s for k, s in recipe.items() if k.split('.', 1)[0] == name}
  unknown = sorted(set(mine) - set(recipe_leaves))
  if unknown:
    raise ValueError(f'a recipe sets {", ".join(f"{name}.{u}" for u in unknown)}, which no recipe '
                     f'may set; recipe settings of {name}: {", ".join(sorted(recipe_leaves))}')
  values = {}
  for key, f in recipe_leaves.items():
    if getattr(section, key) is not None:
      continue
    setting = mine.get(key)
    value = f.metadata[BASE] if setting is None else setting.value
    if setting is not None and setting.of_epochs:
      value = int(round(value * epochs / setting.of_epochs))
    values[key] = value
  return values


def get(config, path):
  """The value at ``path`` (field names from the top) of ``config``."""
  for name in path:
    config = getattr(config, name)
  return config


def from_args(cls: type, args: argparse.Namespace, prefix: str = '', skip: tuple[str, ...] = ()):
  """The config of class ``cls`` from flags added by :func:`add_flags` (same prefix and skip)."""
  ns = vars(args)
  flat = {leaf.flag[2:].replace('-', '_'): ns['.'.join(leaf.path)]
          for leaf in leaves(cls, prefix, skip=skip) if '.'.join(leaf.path) in ns}
  for dest, value in ns.items():
    parts = dest.split(':')
    if len(parts) == 3:
      flat[option_flag(*parts[1:])[2:].replace('-', '_')] = value
  return make(cls, prefix, skip, **flat)


# ----------------------------------------------------------------------------
# JSON
# ----------------------------------------------------------------------------

def to_json(config) -> dict[str, Any]:
  """The config as a JSON-able dict (sections as nested dicts)."""
  return dataclasses.asdict(config)


def from_json(cls: type, data: dict[str, Any]):
  """Inverse of :func:`to_json`; unknown keys are an error naming them."""
  hints = typing.get_type_hints(cls)
  fields = {f.name: f for f in dataclasses.fields(cls)}
  unknown = sorted(set(data) - set(fields))
  if unknown:
    raise ValueError(f'{cls.__name__} has no field {", ".join(unknown)}')
  return cls(**{k: from_json(hints[k], v) if _is(fields[k], 'section') else v
                for k, v in data.items()})
