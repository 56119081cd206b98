"""Configurations: frozen dataclasses whose fields carry their help, their limits and their flag.

A config is a frozen dataclass. Each field is a *leaf* (a str, int, float or
bool, possibly None) declared with :func:`option`, which puts the help text
and the limits next to the default, or a *section*, a nested config declared
with :func:`section`. One function of this module does each job for every
config:

* :func:`validate` checks every leaf against its limits (each config calls it
  from ``__post_init__``, so the library API and the command line get the
  same checks, once, where the config is built);
* :func:`add_flags` makes one ``--flag`` per leaf, grouped by section in
  ``--help``; :func:`from_args` builds the config back from the parsed flags;
* :func:`to_json` / :func:`from_json` write and read it (``config.json``).

A leaf's flag is its name with ``-`` for ``_``, after its section's prefix
(``section(TrainConfig, prefix='train')``: ``--train-lr``; prefix ``''``: the
section's flags are the leaves' own names).
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import typing
from typing import Any, Callable, Iterator, NamedTuple

_META = 'jaxnas'


def option(default: Any, help: str = '', *, min: float | None = None,
           gt: float | None = None, max: float | None = None, lt: float | None = None,
           choices: Callable[[], Any] | tuple | None = None,
           check: Callable[[Any], str | None] | None = None) -> Any:
  """A config leaf: its default, its help and its limits.

  ``min``/``max`` are inclusive bounds, ``gt``/``lt`` exclusive ones;
  ``choices`` the allowed values (or a function returning them, read when the
  config is checked, so that a registry can grow after import); ``check`` a
  function returning an error message, or None when the value is fine. None
  is always allowed where the default is None (it means "resolved later").
  """
  meta = {'help': help, 'min': min, 'gt': gt, 'max': max, 'lt': lt, 'choices': choices,
          'check': check}
  return dataclasses.field(default=default, metadata={_META: meta})


def section(cls: type, help: str = '', prefix: str = '', skip: tuple[str, ...] = ()) -> Any:
  """A nested config of type ``cls`` (its defaults), shown as one group of flags named
  ``--{prefix}-{leaf}`` (``--{leaf}`` with no prefix); ``skip`` lists leaves that get
  no flag (set by the enclosing command instead)."""
  return dataclasses.field(default_factory=cls, metadata={
      _META: {'help': help, 'section': True, 'prefix': prefix, 'skip': skip}})


def _meta(f: dataclasses.Field) -> dict:
  return f.metadata.get(_META, {})


def flag_name(name: str, prefix: str = '') -> str:
  return '--' + (f'{prefix}_{name}' if prefix else name).replace('_', '-')


class Leaf(NamedTuple):
  path: tuple[str, ...]      # field names from the top config down
  flag: str                  # --flag-name
  kind: type                 # str, int, float or bool
  default: Any
  help: str
  group: str                 # the section's title ('' at the top)


def _kind(hint) -> type:
  args = [t for t in typing.get_args(hint) if t is not type(None)]
  return args[0] if args else hint


def leaves(cls: type, prefix: str = '', path: tuple[str, ...] = (), group: str = '',
           skip: tuple[str, ...] = ()) -> Iterator[Leaf]:
  """Every leaf of config class ``cls`` (depth first), with its flag."""
  hints = typing.get_type_hints(cls)
  for f in dataclasses.fields(cls):
    meta = _meta(f)
    if f.name in skip:
      continue
    if meta.get('section'):
      sub_prefix = '_'.join(p for p in (prefix, meta['prefix']) if p)
      title = meta['help'] or f.name
      yield from leaves(hints[f.name], sub_prefix, path + (f.name,), title, meta['skip'])
      continue
    default = f.default if f.default is not dataclasses.MISSING else None
    yield Leaf(path + (f.name,), flag_name(f.name, prefix), _kind(hints[f.name]), default,
               meta.get('help', ''), group)


def _parse(kind: type):
  def parse(text: str):
    if text.lower() == 'none':
      return None
    try:
      return kind(text)
    except ValueError:
      raise argparse.ArgumentTypeError(f'expected {kind.__name__}, got {text!r}') from None
  parse.__name__ = kind.__name__  # argparse names the type in its error messages
  return parse


def add_flags(parser: argparse.ArgumentParser, cls: type, prefix: str = '',
              skip: tuple[str, ...] = ()) -> None:
  """One ``--flag`` per leaf of ``cls``, the leaves of each section in one argument group."""
  groups: dict[str, Any] = {}
  for leaf in leaves(cls, prefix, skip=skip):
    if leaf.group not in groups:
      groups[leaf.group] = parser.add_argument_group(leaf.group) if leaf.group else parser
    target = groups[leaf.group]
    dest = '.'.join(leaf.path)
    default = 'None (resolved by data set and space)' if leaf.default is None else leaf.default
    help_text = f'{leaf.help} (default: {default})' if leaf.help else f'default: {default}'
    if leaf.kind is bool:
      target.add_argument(leaf.flag, dest=dest, action=argparse.BooleanOptionalAction,
                          default=leaf.default, help=help_text)
    else:
      target.add_argument(leaf.flag, dest=dest, type=_parse(leaf.kind), default=leaf.default,
                          metavar=leaf.kind.__name__.upper(), help=help_text)


class ConfigError(ValueError):
  """A config leaf out of its limits; the message names the field and its flag."""

  def __init__(self, field: str, problem: str, value: Any, prefix: str = ''):
    self.field, self.problem, self.value = field, problem, value
    super().__init__(f'{field} ({flag_name(field, prefix)}) {problem}, got {value!r}')


def _build(cls: type, values: dict[tuple[str, ...], Any], path: tuple[str, ...] = (),
           prefix: str = ''):
  hints = typing.get_type_hints(cls)
  kwargs = {}
  for f in dataclasses.fields(cls):
    meta = _meta(f)
    if meta.get('section'):
      sub_prefix = '_'.join(p for p in (prefix, meta['prefix']) if p)
      kwargs[f.name] = _build(hints[f.name], values, path + (f.name,), sub_prefix)
    elif path + (f.name,) in values:
      kwargs[f.name] = values[path + (f.name,)]
  try:
    return cls(**kwargs)
  except ConfigError as e:  # name the flag as the command line spells it
    raise ConfigError(e.field, e.problem, e.value, prefix) from None


def from_args(cls: type, args: argparse.Namespace, prefix: str = '', skip: tuple[str, ...] = ()):
  """The config of class ``cls`` from flags added by :func:`add_flags` (same prefix and skip)."""
  ns = vars(args)
  return _build(cls, {leaf.path: ns['.'.join(leaf.path)]
                      for leaf in leaves(cls, prefix, skip=skip) if '.'.join(leaf.path) in ns},
                prefix=prefix)


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
  return cls(**{k: from_json(hints[k], v) if _meta(fields[k]).get('section') else v
                for k, v in data.items()})


def _violation(value, meta: dict) -> str | None:
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    pass
  elif isinstance(value, float) and not math.isfinite(value):
    return 'must be a finite number'
  else:
    for key, ok, word in (('min', lambda b: value >= b, '>='), ('gt', lambda b: value > b, '>'),
                          ('max', lambda b: value <= b, '<='), ('lt', lambda b: value < b, '<')):
      bound = meta.get(key)
      if bound is not None and not ok(bound):
        return f'must be {word} {bound:g}'
  choices = meta.get('choices')
  if choices is not None:
    known = tuple(choices() if callable(choices) else choices)
    if value not in known:
      return f'must be one of {", ".join(map(str, known))}'
  check = meta.get('check')
  return check(value) if check is not None else None


def validate(config) -> None:
  """Raises :class:`ConfigError` (a ValueError) naming the field, its flag and its limit
  for the first leaf of ``config`` that breaks its limits (sections check themselves
  when they are built)."""
  for f in dataclasses.fields(config):
    meta, value = _meta(f), getattr(config, f.name)
    if meta.get('section') or value is None:
      continue
    problem = _violation(value, meta)
    if problem:
      raise ConfigError(f.name, problem, value)
