"""Configurations: frozen dataclasses, turned into command lines by tyro.

A config's field is written as tyro reads it: its type, its default, and its help
as the docstring under it. Its limits ride in the type, ``Annotated[int,
Limits(min=1)] = 16`` (:class:`jaxnas.options.Limits`); a field that a recipe may
set is ``Annotated[float | None, RecipeBase(0.025)] = None`` (None: the recipe's
value, else the base). A field whose type is a config class is a *section*: its
flags carry no prefix (``tyro.conf.arg(name='')``: ``--channels``) unless the
field names one (``--zen-warmup.epochs``). The options of a registry entry
chosen by another field (the method's, the relaxation's, the proxy's) are a dict
field whose flags are ``--{entry}-{option}`` (:func:`registry_field`).

Tyro parses; this module checks, for every config:

* :func:`parse`: the config of a class from command-line flags (the command line,
  the experiments and the tests spell a config the same way);
* :func:`validate`: every field of a config and of its sections against its
  limits, the error naming the field's flag (a root config calls it from
  ``__post_init__``; sections are checked by the config that holds them);
* :func:`recipe_values` and :func:`complete`: what a config left None, set when it
  is built, so that a built config is complete;
* :func:`to_json` / :func:`from_json`: ``config.json``.

(One module over 300 lines: what every config needs besides tyro, in one place.)
"""
from __future__ import annotations

import contextvars
import dataclasses
import functools
import inspect
import sys
import types
import typing
from typing import Annotated, Any, Callable, Mapping, NamedTuple, Sequence

import tyro

from jaxnas import sharding
# what a config's fields are declared and checked with (the core declares its options so too)
from jaxnas.options import (ConfigError, Limits, Recipe, Setting, bind_options,  # noqa: F401
                            option_flag, violation)


class RecipeBase(NamedTuple):
  """A field a recipe may set: None (its default) is set when the config is built to the
  recipe's value (:func:`recipe_values`), or to ``value`` (DARTS') where no recipe sets it."""
  value: Any


# The fields every runnable config has (each declares them, with its own help).
Devices = Annotated[str | None, Limits(check=sharding.check_devices)]
CheckpointEvery = Annotated[int, Limits(min=0)]
FLAT = tyro.conf.arg(name='')   # a section whose flags have no prefix
# a bool | None field (None: the recipe's) as --flag / --no-flag
FlagPair = tyro.conf.DisallowNone


def _hints(cls: type) -> dict[str, Any]:
  # the module's namespace as globals: without it a lambda in an annotation
  # (``Limits(choices=lambda: spaces.SPACES)``) would see the class' namespace as its globals
  return typing.get_type_hints(cls, vars(sys.modules[cls.__module__]), include_extras=True)


def _meta(hint, kind: type):
  return next((m for m in getattr(hint, '__metadata__', ()) if isinstance(m, kind)), None)


def _base_type(hint):
  """``int`` of ``Annotated[int | None, ...]``."""
  if hasattr(hint, '__metadata__'):
    hint = typing.get_args(hint)[0]
  if typing.get_origin(hint) in (typing.Union, types.UnionType):
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if len(args) == 1 else hint
  return hint


def sections(cls: type) -> dict[str, tuple[type, str]]:
  """{field: (config class, flag prefix)} of the sections of config class ``cls``."""
  out = {}
  for name, hint in _hints(cls).items():
    base = _base_type(hint)
    if dataclasses.is_dataclass(base):
      arg = next((m for m in getattr(hint, '__metadata__', ()) if type(m).__name__ == '_ArgConfig'), None)
      prefix = name if arg is None or arg.name is None else arg.name
      out[name] = (base, f'{prefix}.' if prefix else '')
  return out


def flag(name: str, prefix: str = '') -> str:
  return f'--{prefix}{name.replace("_", "-")}'


def validate(config, prefix: str = '') -> None:
  """Raises :class:`ConfigError` (a ValueError) naming the field and its flag for the
  first field of ``config`` or of its sections that breaks its limits."""
  hints, inner = _hints(type(config)), sections(type(config))
  for f in dataclasses.fields(config):
    value = getattr(config, f.name)
    if f.name in inner:
      validate(value, prefix + inner[f.name][1])
      continue
    limits = _meta(hints[f.name], Limits)
    problem = value is not None and limits is not None and violation(value, limits)
    if problem:
      raise ConfigError(f.name, problem, value, flag=flag(f.name, prefix))


def recipe_base(cls: type) -> dict[str, Any]:
  """{field: base value} of the recipe fields of config class ``cls``."""
  return {name: base.value for name, hint in _hints(cls).items()
          if (base := _meta(hint, RecipeBase)) is not None}


def recipe_values(cls: type, section, recipe: Recipe, epochs: int, name: str) -> dict[str, Any]:
  """The values of the recipe fields of ``section`` (an instance of config class ``cls``,
  the section ``name`` of its config) left None: the recipe's (``recipe`` keyed
  ``'{name}.{field}'``), else the field's base; an epoch count is scaled to ``epochs``
  (:class:`Setting`). A recipe key of this section that is no recipe field is an error."""
  bases = recipe_base(cls)
  mine = {k.split('.', 1)[1]: s for k, s in recipe.items() if k.split('.', 1)[0] == name}
  unknown = sorted(set(mine) - set(bases))
  if unknown:
    raise ValueError(f'a recipe sets {", ".join(f"{name}.{u}" for u in unknown)}, which no recipe '
                     f'may set; recipe settings of {name}: {", ".join(sorted(bases))}')
  values = {}
  for key, base in bases.items():
    if getattr(section, key) is not None:
      continue
    setting = mine.get(key)
    value = base if setting is None else setting.value
    if setting is not None and setting.of_epochs:
      value = int(round(value * epochs / setting.of_epochs))
    values[key] = value
  return values


def complete(config, values: Mapping[str, Any]) -> None:
  """Sets each field of ``config`` named in ``values`` and left None to its value: for a
  config's ``__post_init__``, so that a built config is complete before it is frozen."""
  for name, value in values.items():
    if getattr(config, name) is None:
      object.__setattr__(config, name, value)


# ----------------------------------------------------------------------------
# Registry options: --{entry}-{option}
# ----------------------------------------------------------------------------

def keyword_function(fn: Callable, params: Sequence[tuple[str, Any, Any]]) -> Callable:
  """``fn(**values)`` with the keyword-only parameters ``(name, type, default)`` (default
  ``inspect.Parameter.empty``: required) as its signature: what tyro reads flags from."""
  fn.__signature__ = inspect.Signature(
      [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default)
       for name, _, default in params], return_annotation=dict)
  fn.__annotations__ = {**{name: hint for name, hint, _ in params}, 'return': dict}
  return fn


def registry_field(registry: Callable[[], Mapping[str, Any]], what: str):
  """The type of a dict field holding the options of the ``what`` (method, relaxation,
  proxy) entry of ``registry()`` that another field chooses: on the command line one
  flag ``--{entry}-{option}`` per option of every entry, gathered as ``{entry:
  {option: value}}`` (:func:`chosen_options` keeps the chosen entry's)."""
  def flags():
    params, owner = [], {}
    for entry, spec in registry().items():
      for key, param in spec.options.items():
        name = f'{entry}_{key}'.replace('-', '_')   # the flag: option_flag(entry, key)
        # a bool option is a flag pair (--unroll-remat / --no-unroll-remat) from its default;
        # any other is None until given
        default = param.default if param.kind is bool else None
        owner[name] = entry, key, default
        help_ = f'{param.limits.help} ({what} {entry}; default: {param.default})'.lstrip()
        params.append((name, Annotated[param.kind if param.kind is bool else param.kind | None,
                                       tyro.conf.arg(help=help_, help_behavior_hint='')], default))

    def given(**values) -> dict:
      out: dict[str, dict] = {}
      for name, value in values.items():
        entry, key, default = owner[name]
        if value != default:
          out.setdefault(entry, {})[key] = value
      return out
    return keyword_function(given, params)
  return Annotated[dict, tyro.conf.arg(name='', constructor_factory=flags),
                   tyro.conf.OmitArgPrefixes]


def chosen_options(registry: Mapping[str, Any], chosen: str, given: Mapping[str, Any],
                   what: str) -> dict[str, Any]:
  """The options of entry ``chosen``: ``given`` as the command line gathers them
  (``{entry: {option: value}}``, where an option of another entry is an error: it
  would do nothing) or as the chosen entry's own ``{option: value}``; checked, with
  the defaults of the rest (:func:`bind_options`)."""
  if given and all(k in registry and isinstance(v, Mapping) for k, v in given.items()):
    for entry, options in given.items():
      if entry != chosen:
        raise ValueError(f'{option_flag(entry, next(iter(options)))} is an option of {what} '
                         f'{entry}, but the {what} is {chosen}: it would do nothing')
    given = given.get(chosen, {})
  return bind_options(registry, chosen, given, what)


def field_docs(cls: type) -> dict[str, str]:
  """{field: the docstring under it} of a dataclass written in a module (tyro's help)."""
  import ast
  import textwrap
  tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
  body, out = tree.body[0].body, {}
  for st, nxt in zip(body, body[1:]):
    if (isinstance(st, ast.AnnAssign) and isinstance(nxt, ast.Expr)
        and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str)):
      out[st.target.id] = inspect.cleandoc(nxt.value.value)
  return out


@functools.lru_cache(maxsize=None)
def flags_of(cls: type, skip: tuple[str, ...] = ()) -> type:
  """A dataclass with the fields of config class ``cls`` but ``skip``, their help, and no
  ``__post_init__``: the settings of a config that another config builds (``jaxnas
  run`` builds its training for the search's space and data). ``cls(**fields)``
  builds the config from an instance (:func:`settings`)."""
  hints, docs, out = _hints(cls), field_docs(cls), []
  for f in dataclasses.fields(cls):
    if f.name in skip:
      continue
    hint = Annotated[hints[f.name], tyro.conf.arg(help=docs.get(f.name, ''))]
    default = ({'default_factory': f.default_factory} if f.default_factory is not dataclasses.MISSING
               else {'default': f.default})
    out.append((f.name, hint, dataclasses.field(**default)))
  return dataclasses.make_dataclass(f'{cls.__name__}Flags', out, frozen=True)


def settings(flags) -> dict[str, Any]:
  """The fields of an instance of a :func:`flags_of` class, as keywords of its config."""
  return {f.name: getattr(flags, f.name) for f in dataclasses.fields(flags)}


# ----------------------------------------------------------------------------
# Parsing
# ----------------------------------------------------------------------------

class _Invalid(Exception):
  """A config's ValueError on its way through tyro (which would draw its own box around it)."""


_PARSING = contextvars.ContextVar('jaxnas_parsing', default=False)


def checked(post_init: Callable) -> Callable:
  """Decorates a config's ``__post_init__`` so that its errors reach :func:`parse`'s
  caller as they are, not as tyro's message box."""
  @functools.wraps(post_init)
  def run(self):
    try:
      post_init(self)
    except ValueError as e:
      if _PARSING.get():
        raise _Invalid(e) from e
      raise
  return run


def parse(cls: type | Callable, args: Sequence[str], **tyro_kwargs):
  """The config of class ``cls`` (or what function ``cls`` returns) from command-line
  flags, by tyro. A config's own error is raised as it is (a ValueError); a
  malformed flag is tyro's message and SystemExit(2)."""
  token = _PARSING.set(True)
  try:
    return tyro.cli(cls, args=[str(a) for a in args], **tyro_kwargs)
  except _Invalid as e:
    raise e.args[0] from None
  finally:
    _PARSING.reset(token)


def flags(**settings) -> list[str]:
  """Command-line flags for settings spelt as Python names (``batch_size=16`` is
  ``--batch-size 16``, ``remat=False`` is ``--no-remat``; ``None`` is ``None``)."""
  out = []
  for name, value in settings.items():
    text = name.replace('_', '-')
    if isinstance(value, bool):
      out.append(f'--{text}' if value else f'--no-{text}')
    else:
      out += [f'--{text}', str(value)]
  return out


def _path(cls: type, key: str) -> tuple[str, ...] | None:
  """The field path of setting ``key``, spelt as its flag is (``lr``, ``zen_warmup.epochs``)."""
  names = {f.name for f in dataclasses.fields(cls)}
  head, _, rest = key.partition('.')
  for name, (inner, prefix) in sections(cls).items():
    if rest and prefix.rstrip('.').replace('-', '_') == head:
      sub = _path(inner, rest)
      return None if sub is None else (name, *sub)
    if not prefix and not rest and (sub := _path(inner, key)) is not None:
      return (name, *sub)
  return (key,) if key in names and key not in sections(cls) else None


def replace(config, **changes):
  """``config`` with settings changed, spelt as their flags are (``lr=0.1``,
  ``**{'zen_warmup.epochs': 2}``), built again. A setting that chooses a recipe (the
  class' ``RECIPE_KEYS``: the method, the space...) cannot change: the built config
  holds its recipe's values, so build a new config instead."""
  cls, fixed = type(config), getattr(type(config), 'RECIPE_KEYS', ())
  values = dataclasses.asdict(config)
  for key, value in changes.items():
    path = _path(cls, key)
    if path is None:
      raise ValueError(f'{cls.__name__} has no setting {key}')
    if '.'.join(path) in fixed and value != _get(config, path):
      raise ValueError(f'{key} chooses a recipe, applied when the config was built: build a new '
                       'config instead of replacing it')
    *head, last = path
    node = values
    for name in head:
      node = node[name]
    node[last] = value
  return from_json(cls, values)


def _get(config, path):
  for name in path:
    config = getattr(config, name)
  return config


def build(cls: type, **settings):
  """The config of class ``cls`` from settings spelt as its flags are (``build(SearchConfig,
  channels=4, sge_q=3)`` is ``--channels 4 --sge-q 3``; a prefixed section's as
  ``**{'zen_warmup.epochs': 2}``): :func:`parse` of :func:`flags`."""
  return parse(cls, flags(**settings))


# ----------------------------------------------------------------------------
# JSON
# ----------------------------------------------------------------------------

def to_json(config) -> dict[str, Any]:
  """The config as a JSON-able dict (sections as nested dicts)."""
  return dataclasses.asdict(config)


def from_json(cls: type, data: dict[str, Any]):
  """Inverse of :func:`to_json`; unknown keys are an error naming them."""
  fields = {f.name for f in dataclasses.fields(cls)}
  unknown = sorted(set(data) - fields)
  if unknown:
    raise ValueError(f'{cls.__name__} has no field {", ".join(unknown)}')
  inner = sections(cls)
  return cls(**{k: from_json(inner[k][0], v) if k in inner else v for k, v in data.items()})
